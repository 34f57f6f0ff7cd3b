"""Helpers for tests that compare real time's windowed answers with batch: batch's answer
for each key's first event of a day, and whether an API node's embedded store replayed a
published window state (the daily scenario's bootstrap; no test fills the state by hand)."""

from __future__ import annotations

from engine.project import windows
from engine.storage import datasets as ds

# The example's request fields: a transaction as a client sends it.
FIELDS = (
    "transaction_id",
    "ts",
    "card_id",
    "merchant_id",
    "merchant_category",
    "amount",
    "channel",
    "card_present",
    "merchant_latitude",
    "merchant_longitude",
)


def as_request(row: dict) -> dict:
    """A transaction row (numpy/pandas values) as a client sends it (JSON types)."""
    rec = {f: row[f].item() if hasattr(row[f], "item") else row[f] for f in FIELDS}
    rec["ts"] = row["ts"].isoformat()
    rec["card_present"] = bool(rec["card_present"])
    return rec


def batch_first_of_each_key(project, spec: windows.WindowSpec, model_name: str, day: str):
    """Batch's answer for the first event of each key on ``day`` (features built for that
    day, scored by the active model): events whose windows hold only earlier days, so
    real time answers them like batch in any order once the state is bootstrapped."""
    from engine.models.saved import SavedModel
    from engine.project import flow

    flow.build(project, "features", [day])
    tx = project.dataset(spec.events)
    k, t, i = (f'"{c}"' for c in (spec.key, spec.time, spec.id))
    firsts = (
        f"SELECT * FROM t QUALIFY row_number() OVER (PARTITION BY {k} ORDER BY {t}, {i}) = 1 "
        f"AND count(*) OVER (PARTITION BY {k}, {t}) = 1"
    )
    views = {"t": (tx, [day]), "f": (project.dataset("features"), [day])}
    rows = ds.query_df(f"SELECT * FROM ({firsts}) ORDER BY {i}", views)
    feats = ds.query_df(
        f"SELECT * FROM f WHERE {i} IN (SELECT {i} FROM ({firsts})) ORDER BY {i}", views
    )
    assert list(rows[spec.id]) == list(feats[spec.id])
    model = SavedModel.load(project.active_model_dir(model_name))
    for f in spec.features:  # the windowed features batch computed (as the features name them)
        if f.name in feats:
            rows[f"w_{f.name}"] = feats[f.name].to_numpy()
    rows["batch_proba"] = model.booster.predict(model.encode(feats), num_threads=1)
    return rows


def bootstrapped(state_file, space: str, sha256: str) -> bool:
    """Whether the embedded store ``state_file`` replayed the snapshot ``sha256``."""
    import sqlite3

    if not state_file.exists():
        return False
    con = sqlite3.connect(state_file)
    try:
        row = con.execute(
            "SELECT state FROM window_bootstraps WHERE space = ? AND tag = ?", (space, sha256)
        ).fetchone()
    except sqlite3.OperationalError:
        return False
    finally:
        con.close()
    return row is not None and row[0] == "done"
