"""Windowed per-key features: the declaration, batch SQL over partitions, and real time
(the same features from a state store, event by event) agreeing on a project that is not
the fraud example (user logins: a user, a device, a duration)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from engine.project import flow, windows
from engine.project.project import ProjectError, load_project
from engine.storage import datasets as ds

DECLARATION = """\
events: logins
key: user_id
time: at
id: login_id
features:
  logins_10m: {agg: count, window: 10m}
  seconds_1h: {agg: sum, of: seconds, window: 1h}
  mean_seconds_2d: {agg: mean, of: seconds, window: 2d}
  longest_1h: {agg: max, of: seconds, window: 1h}
  shortest_1h: {agg: min, of: seconds, window: 1h}
  devices_1d: {agg: distinct_count, of: device, window: 1d}
  since_last_1d: {agg: since_last, window: 1d}
  new_device_2d: {agg: first_seen, of: device, window: 2d}
"""

DAYS = ["2026-03-01", "2026-03-02", "2026-03-03", "2026-03-04"]


def _project(tmp: Path, declaration: str = DECLARATION, inputs: str = "{logins: same}"):
    root = tmp / "logins_project"
    (root / "recipes").mkdir(parents=True, exist_ok=True)
    (root / "project.yaml").write_text("name: logins\n")
    (root / "datasets.yaml").write_text(
        "logins:\n  kind: source\n  path: '{data_dir}/logins'\n  partitioned_by: day\n"
        "  schema: {login_id: VARCHAR, user_id: BIGINT, at: TIMESTAMP, device: VARCHAR,"
        " seconds: DOUBLE}\n"
        "user_windows:\n  kind: managed\n  partitioned_by: day\n"
    )
    (root / "flow.yaml").write_text(
        "recipes:\n  user_windows:\n    windows: recipes/user_windows.yaml\n"
        f"    inputs: {inputs}\n    output: user_windows\n"
    )
    (root / "recipes" / "user_windows.yaml").write_text(declaration)
    return load_project(root, tmp / "managed", {"data_dir": str(tmp / "landing")})


def _events(tmp: Path, n_per_day: int = 400, seed: int = 5) -> list[dict]:
    """Logins of a few users over DAYS, with same-second ties, NULL devices and durations,
    and a repeated timestamp across users."""
    rng = np.random.default_rng(seed)
    rows = []
    ref = ds.DatasetRef("logins", tmp / "landing" / "logins", "day")
    for d, day in enumerate(DAYS):
        start = datetime.fromisoformat(day)
        secs = np.sort(rng.integers(0, 86400, n_per_day))
        secs[5:9] = secs[5]  # a tie of four events
        part = []
        for i, s in enumerate(secs):
            part.append(
                {
                    "login_id": f"L{d}-{i}",
                    "user_id": int(rng.integers(0, 12)),
                    "at": start + timedelta(seconds=int(s), microseconds=int(rng.integers(0, 3))),
                    "device": None if rng.random() < 0.1 else f"dev{rng.integers(0, 5)}",
                    "seconds": None if rng.random() < 0.1 else float(rng.gamma(2.0, 30.0)),
                }
            )
        ds.write(ref, pa.Table.from_pylist([{**r, "day": day} for r in part]), partitions=[day])
        rows.extend(part)
    return rows


def _replay(spec: windows.WindowSpec, events: list[dict]) -> dict[str, dict]:
    """Real time's answer for every event, recorded in time order through one store."""
    state = windows.MemoryState()
    live = windows.Windowed(spec, state)
    return {e["login_id"]: live.find(e) for e in sorted(events, key=lambda e: e["at"])}


def _same(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) or isinstance(b, float):
        return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))
    return a == b


def test_batch_and_real_time_agree_on_a_second_project(tmp_path):
    project = _project(tmp_path)
    events = _events(tmp_path)
    flow.build(project, "user_windows")
    batch = {
        r["login_id"]: r
        for r in ds.query_df("SELECT * FROM w", {"w": project.dataset("user_windows")}).to_dict(
            "records"
        )
    }
    spec = windows.parse(project, project.recipes["user_windows"])
    live = _replay(spec, events)
    assert set(batch) == set(live) and len(live) == 4 * 400
    for f in spec.features:
        for login_id, row in live.items():
            b = batch[login_id][f.name]
            b = None if b is None or (isinstance(b, float) and np.isnan(b)) else b
            b = b.item() if hasattr(b, "item") else b
            assert _same(row[f.name], b), (f.name, login_id, row[f.name], b)
    # Ties never count each other; a retried event (already recorded) gets the same row.
    tied = [e for e in events if e["login_id"] in ("L1-5", "L1-6", "L1-7", "L1-8")]
    assert len({e["at"].replace(microsecond=0) for e in tied}) == 1
    state = windows.MemoryState()
    once = windows.Windowed(spec, state)
    for e in sorted(events, key=lambda e: e["at"]):
        first = once.find(e)
        assert once.find(e) == first  # a retry: counted once, same answer


def test_a_daily_build_reads_the_window_back_and_writes_its_day(tmp_path):
    project = _project(tmp_path)
    _events(tmp_path)
    flow.build(project, "user_windows")
    whole = ds.query_df(
        "SELECT * FROM w WHERE day = '2026-03-04' ORDER BY login_id",
        {"w": project.dataset("user_windows")},
    )
    ds.delete(project.dataset("user_windows"))
    run = flow.run_recipe(project, "user_windows", ["2026-03-04"])
    assert run.partitions == ["2026-03-04"] and run.rows == 400
    assert project.dataset("user_windows").partitions() == ["2026-03-04"]
    daily = ds.query_df("SELECT * FROM w ORDER BY login_id", {"w": project.dataset("user_windows")})
    assert daily.equals(whole)  # the days the longest window reaches (2d) were read
    spec = windows.parse(project, project.recipes["user_windows"])
    ref = project.dataset("logins")
    assert windows.needed_partitions(spec, ref, ["2026-03-04"]) == DAYS[1:]


@pytest.mark.parametrize(
    ("declaration", "inputs", "names"),
    [
        (DECLARATION.replace("window: 10m", "window: 10x"), None, "features.logins_10m.window"),
        (DECLARATION.replace("agg: count, window: 10m", "agg: median, window: 10m"), None, "agg"),
        (DECLARATION.replace("of: seconds, window: 1h}", "window: 1h}", 1), None, "of"),
        (DECLARATION.replace("key: user_id", "key: person"), None, "key"),
        (DECLARATION.replace("time: at", "time: seconds"), None, "time"),
        (DECLARATION.replace("window: 2d}", "window: 400d}", 1), None, "366d"),
        (DECLARATION + "extra: 1\n", None, "extra"),
        (DECLARATION.replace("sum, of: seconds", "sum, of: device"), None, "needs a number"),
        (DECLARATION, "{logins: all}", "inputs"),
    ],
)
def test_a_wrong_declaration_is_refused_naming_the_field(tmp_path, declaration, inputs, names):
    project = _project(tmp_path, declaration, inputs or "{logins: same}")
    with pytest.raises(ProjectError, match=names.replace(".", r"\.")):
        windows.parse(project, project.recipes["user_windows"])
