"""The guard of "one feature definition": real time must reproduce batch on the project's
own rows, or the API package is refused (and a node refuses to load it).

:func:`sample` takes rows of the request dataset (its newest partition), runs the feature
recipe on them with DuckDB exactly as the flow does, and keeps for each row the enrichment
rows the batch join matched, the features and the model's probability. :func:`verify`
computes the same rows through the compiled real-time path (typing the raw JSON record,
:class:`~engine.project.feature_sql.FeaturePlan`, ``SavedModel.encode_record``) and names
the first feature whose value differs beyond ``rtol`` 1e-9. The package carries the sample
(``parity.parquet`` and one ``parity_<dataset>.parquet`` per enrichment), so the API node
re-checks it when it loads the package, without the project.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import sqlglot
from sqlglot import exp

from engine.core.errors import NodalError
from engine.models.saved import SavedModel
from engine.project import feature_sql, windows
from engine.project.feature_sql import FeaturePlan
from engine.project.project import Project
from engine.storage import datasets as ds

SAMPLE_ROWS = 200
RTOL = 1e-9
ROW = "__nodal_row"
EXPECTED = "__expected__"
PROBA = "__expected_proba"


class ParityError(NodalError):
    """Real time would answer differently from batch; the message names the feature."""


@dataclass
class ParitySample:
    """Rows of the request dataset with what batch computed for them."""

    records: list[dict[str, Any]]  # the request fields, as a client would send them (JSON)
    rows: list[tuple[dict[str, Any], ...]]  # per record, the matched row of each enrichment
    features: list[dict[str, Any]]  # batch features per record
    probas: list[float]  # batch probability per record
    # Windowed joins (by dataset): the events of the sampled keys from the longest window
    # before the first sampled record to the last one, which verify() replays through a
    # state store to compute the windowed features as real time does.
    events: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def to_parquet(self, plan: FeaturePlan) -> dict[str, bytes]:
        """Package members: ``parity.parquet`` and ``parity_<dataset>.parquet``."""
        main = {ROW: list(range(len(self.records)))}
        for f in plan.request_fields:
            main[f] = [r.get(f) for r in self.records]
        for name in plan.features:
            main[EXPECTED + name] = [_plain(feat.get(name)) for feat in self.features]
        main[PROBA] = self.probas
        out = {"parity.parquet": _parquet(pa.table(main))}
        for j, join in enumerate(plan.joins):
            found = [(i, rows[j]) for i, rows in enumerate(self.rows) if rows[j]]
            columns = sorted({c for _, row in found for c in row})
            table = {ROW: [i for i, _ in found]}
            for c in columns:
                table[c] = [row.get(c) for _, row in found]
            out[f"parity_{join.dataset}.parquet"] = _parquet(pa.table(table))
        for dataset, events in self.events.items():
            out[f"parity_events_{dataset}.parquet"] = _parquet(pa.Table.from_pylist(events))
        return out

    @classmethod
    def from_parquet(
        cls,
        plan: FeaturePlan,
        members: dict[str, bytes],
        windowed: dict[str, windows.WindowSpec] | None = None,
    ) -> ParitySample:
        main = pq.read_table(io.BytesIO(members["parity.parquet"])).to_pylist()
        per_join = []
        for join in plan.joins:
            rows = pq.read_table(io.BytesIO(members[f"parity_{join.dataset}.parquet"])).to_pylist()
            per_join.append({r.pop(ROW): r for r in rows})
        records, rows, features, probas = [], [], [], []
        for r in main:
            i = r[ROW]
            records.append({f: _json(r[f]) for f in plan.request_fields})
            rows.append(tuple(found.get(i, {}) for found in per_join))
            features.append({n: r[EXPECTED + n] for n in plan.features})
            probas.append(r[PROBA])
        events = {
            d: pq.read_table(io.BytesIO(members[f"parity_events_{d}.parquet"])).to_pylist()
            for d in windowed or {}
            if f"parity_events_{d}.parquet" in members
        }
        return cls(records, rows, features, probas, events)


def _parquet(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def _plain(value: Any) -> Any:
    return float(value) if isinstance(value, (np.floating, np.integer)) else value


def _json(value: Any) -> Any:
    """A stored value as a client sends it: timestamps and dates as ISO-8601 text."""
    return value.isoformat() if isinstance(value, (datetime, date)) else value


def sample(
    project: Project,
    recipe_sql: str,
    plan: FeaturePlan,
    model: SavedModel,
    n: int = SAMPLE_ROWS,
    windowed: dict[str, windows.WindowSpec] | None = None,
) -> ParitySample:
    """Batch's answer for up to ``n`` rows of the request dataset's newest partition
    (and, for the ``windowed`` joins, the events real time needs to recompute them)."""
    request = project.dataset(plan.request_dataset)
    parts = request.partitions()
    scan = ds.scan_sql(request, parts[-1:] if parts else None)
    select = sqlglot.parse_one(recipe_sql, read="duckdb")
    request_alias = select.args["from_"].this.alias_or_name
    tagged = select.copy().select(exp.column(ROW, request_alias), copy=False)
    views = {j.dataset: project.dataset(j.dataset) for j in plan.joins}
    fields = ", ".join(f'"{f}"' for f in plan.request_fields)
    with ds.session(views) as con:
        con.execute(
            f'CREATE TEMP TABLE "{plan.request_dataset}" AS SELECT *, '
            f"(row_number() OVER () - 1) AS {ROW} FROM (SELECT * FROM {scan} LIMIT {int(n)})"
        )
        batch = con.sql(tagged.sql(dialect="duckdb")).to_arrow_table().to_pylist()
        requests = (
            con.sql(f'SELECT {ROW}, {fields} FROM "{plan.request_dataset}" ORDER BY {ROW}')
            .to_arrow_table()
            .to_pylist()
        )
        candidates = [_candidates(con, plan, j) for j in range(len(plan.joins))]
        history = {
            d: _history(con, request, parts[-1:], spec, plan.request_dataset)
            for d, spec in (windowed or {}).items()
        }
    first: dict[int, dict[str, Any]] = {}
    for row in batch:  # several matches of a join: batch has several rows, keep the first
        first.setdefault(row[ROW], row)
    records, rows, features = [], [], []
    for req in requests:
        i = req.pop(ROW)
        if i not in first or any(v is None for v in req.values()):
            continue  # a record the API would refuse (a missing field) is not a parity case
        typed = {f: req[f] for f in plan.request_fields}
        matched = tuple(_match(plan.joins[j], typed, candidates[j]) for j in range(len(plan.joins)))
        records.append({f: _json(v) for f, v in typed.items()})
        rows.append(matched)
        features.append({name: first[i].get(name) for name in plan.features})
    probas = _batch_probas(model, features)
    return ParitySample(records, rows, features, probas, history)


def _history(
    con: Any, ref: ds.DatasetRef, newest: list[str], spec: windows.WindowSpec, sampled: str
) -> list[dict[str, Any]]:
    """The events of the sampled keys a replay needs: from the longest window before the
    first sampled record to the last one."""
    scan = ds.scan_sql(ref, windows.needed_partitions(spec, ref, newest))
    cols = ", ".join(f'e."{c}"' for c in spec.fields)
    key, t = f'"{spec.key}"', f'epoch_us("{spec.time}")'
    result = con.execute(
        f'SELECT {cols} FROM {scan} e WHERE e.{key} IN (SELECT {key} FROM "{sampled}") '
        f'AND epoch_us(e."{spec.time}") >= (SELECT min({t}) FROM "{sampled}") - $back '
        f'AND epoch_us(e."{spec.time}") <= (SELECT max({t}) FROM "{sampled}")',
        {"back": spec.longest_us},
    )
    names = [d[0] for d in result.description]
    return [dict(zip(names, row, strict=True)) for row in result.fetchall()]


def _candidates(con: Any, plan: FeaturePlan, j: int) -> dict[Any, list[dict[str, Any]]]:
    """The enrichment rows whose key matches a sampled record, by key."""
    join = plan.joins[j]
    on = " AND ".join(f'e."{col}" = r."{f}"' for f, col in join.keys.items())
    rows = (
        con.sql(
            f'SELECT e.* FROM "{join.dataset}" e WHERE EXISTS '
            f'(SELECT 1 FROM "{plan.request_dataset}" r WHERE {on})'
        )
        .to_arrow_table()
        .to_pylist()
    )
    out: dict[Any, list[dict[str, Any]]] = {}
    for row in rows:
        out.setdefault(tuple(row[c] for c in join.keys.values()), []).append(row)
    return out


def _match(join: Any, record: dict[str, Any], candidates: dict[Any, list[dict]]) -> dict:
    key = tuple(record.get(f) for f in join.keys)
    for row in candidates.get(key, []):
        if join.condition is None or feature_sql.sql_functions.truthy(join.condition(record, row)):
            return row
    return {}


def _batch_probas(model: SavedModel, features: list[dict[str, Any]]) -> list[float]:
    if not features:
        return []
    import pandas as pd

    frame = pd.DataFrame(features, columns=model.feature_names)
    return [float(p) for p in model.predict_proba(model.encode(frame), num_threads=1)]


def _same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        na = a is None or (isinstance(a, float) and math.isnan(a))
        nb = b is None or (isinstance(b, float) and math.isnan(b))
        return na and nb
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        a, b = float(a), float(b)
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        if math.isinf(a) or math.isinf(b):
            return a == b
        return math.isclose(a, b, rel_tol=RTOL, abs_tol=1e-12)
    return a == b


def _replayed(
    plan: FeaturePlan, parity: ParitySample, windowed: dict[str, windows.WindowSpec]
) -> list[dict[str, dict[str, Any]]]:
    """Per sampled record, its windowed rows as real time computes them: every event of the
    sample's history (and the sampled records) recorded in time order through a state store."""
    out: list[dict[str, dict[str, Any]]] = [{} for _ in parity.records]
    joined = {j.dataset for j in plan.joins}
    for dataset, spec in windowed.items():
        if dataset not in joined:
            continue
        live = windows.Windowed(spec, windows.MemoryState())
        mine = {str(r[spec.id]): i for i, r in enumerate(parity.records)}
        replay = [(e, None) for e in parity.events.get(dataset, []) if str(e[spec.id]) not in mine]
        replay += [
            (feature_sql.typed_record(plan.request_fields, r), i)
            for i, r in enumerate(parity.records)
        ]
        replay.sort(key=lambda x: (windows.epoch_us(x[0][spec.time]), str(x[0][spec.id])))
        for event, i in replay:
            row = live.find(event)
            if i is not None:
                out[i][dataset] = row
    return out


def verify(
    plan: FeaturePlan,
    model: SavedModel,
    parity: ParitySample,
    where: str,
    windowed: dict[str, windows.WindowSpec] | None = None,
) -> int:
    """Recompute every sampled record the real-time way; raise :class:`ParityError` naming
    the first feature (or the probability) that differs. Returns the number of rows checked.

    The ``windowed`` joins are recomputed from the sample's events, not taken from batch."""
    if not parity.records:
        raise ParityError(
            f"{where}: no row of {plan.request_dataset} to check real time against batch "
            "(build the flow first)"
        )
    try:
        live = _replayed(plan, parity, windowed or {})
    except (feature_sql.RecordError, ValueError, TypeError, KeyError) as exc:
        raise ParityError(f"{where}: real time cannot replay the windowed events: {exc}") from None
    for i, (raw, rows, expected, proba) in enumerate(
        zip(parity.records, parity.rows, parity.features, parity.probas, strict=True)
    ):
        if live[i]:
            rows = tuple(live[i].get(j.dataset, r) for j, r in zip(plan.joins, rows, strict=True))
        try:
            record = feature_sql.typed_record(plan.request_fields, raw)
            got = plan.compute(record, rows)
        except (feature_sql.RecordError, ValueError, TypeError, ArithmeticError) as exc:
            raise ParityError(f"{where}: real time cannot compute sample row {i}: {exc}") from None
        for name, value in got.items():
            if not _same(value, expected.get(name)):
                raise ParityError(
                    f"{where}: real time computes feature {name!r} differently from batch "
                    f"(sample row {i}: {value!r} vs {expected.get(name)!r})"
                )
        p = float(model.predict_proba(model.encode_record(got), num_threads=1)[0])
        if not _same(p, proba):
            raise ParityError(f"{where}: real time scores sample row {i} {p!r}, batch {proba!r}")
    return len(parity.records)
