"""A recipe input read over a window of days before the day being built
(``{days_before: N}``), and ``all`` never reading a day after the one being built.

A day's build of per-key profiles must cost the same after a year as after a month, and
rebuilding an old day must give what it gave that day (issue 15 item 5, issue 18 item 7).
The probe recipes below write, for the day they build, the first and last day of the input
they saw and how many rows: what a build read is then a fact in its output.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from engine.cli import main as cli
from engine.core.errors import NodalError
from engine.project import definitions, flow, input_modes, recipes
from engine.project.project import ProjectError, load_project
from engine.storage import datasets as ds
from tests.engine.small_project import make_small

START = dt.date(2026, 3, 1)
N_DAYS = 10
EVENTS_PER_DAY = {i: 3 + i for i in range(N_DAYS)}  # day i has 3 + i events: counts tell days

# The days before each day built: first/last day read, rows read (only the built day's row
# is written).
PROBE_SQL = """\
SELECT a.day, min(e.day) AS first_read, max(e.day) AS last_read, count(*) AS n_rows
FROM (SELECT DISTINCT day + 1 AS day FROM events) a, events e
GROUP BY a.day
"""
PROBE_PY = """\
import pandas as pd

def run(inputs, variables):
    e = inputs["events"]
    days = sorted({d + pd.Timedelta(days=1) for d in pd.to_datetime(e["day"])})
    return pd.DataFrame({
        "day": [d.date() for d in days],
        "first_read": [pd.to_datetime(e["day"]).min().date()] * len(days),
        "last_read": [pd.to_datetime(e["day"]).max().date()] * len(days),
        "n_rows": [len(e)] * len(days),
    })
"""
# Read whole: one row, for the newest day it saw.
UPTO_SQL = "SELECT max(day) AS day, min(day) AS first_read, count(*) AS n_rows FROM events"
# Per key, the sum of the 3 days before each day (a profile "as of the start of the day").
PROFILE_SQL = """\
WITH daily AS (SELECT key, day, sum(amount) AS total FROM events GROUP BY ALL),
days AS (SELECT DISTINCT day FROM daily UNION SELECT DISTINCT day + 1 FROM daily),
grid AS (
    SELECT k.key, d.day, coalesce(x.total, 0) AS total
    FROM (SELECT DISTINCT key FROM daily) k CROSS JOIN days d
    LEFT JOIN daily x ON x.key = k.key AND x.day = d.day
)
SELECT key, day, coalesce(sum(total) OVER (PARTITION BY key ORDER BY day
    RANGE BETWEEN INTERVAL 3 DAY PRECEDING AND INTERVAL 1 DAY PRECEDING), 0) AS total_3d
FROM grid
"""


def _day(i: int) -> str:
    return str(START + dt.timedelta(days=i))


def _write_events(ref: ds.DatasetRef, days: range, bump: float = 0.0) -> None:
    rows = [
        {"day": START + dt.timedelta(days=i), "key": f"k{j % 3}", "amount": 1.0 + j + bump}
        for i in days
        for j in range(EVENTS_PER_DAY.get(i, 3))
    ]
    ds.write(ref, pd.DataFrame(rows), partitions=[_day(i) for i in days])


def _project(tmp_path: Path, recipes_yaml: str, files: dict[str, str], outputs: dict[str, str]):
    """The small project with a landing-zone dataset ``events`` (days 0..N_DAYS-1 but the
    last two, which arrive later in the tests) and the given recipes."""
    small = make_small(tmp_path, with_shops=False)
    root = small.project().root
    events = ds.DatasetRef("events", small.settings.data_dir / "events", "day")
    _write_events(events, range(N_DAYS - 2))
    text = 'events: {kind: source, path: "{data_dir}/events", partitioned_by: day}\n'
    text += "plain: {kind: managed}\n"
    for name, key in outputs.items():
        text += f"{name}: {{kind: managed{', partitioned_by: ' + key if key else ''}}}\n"
    (root / "datasets.yaml").write_text(text)
    (root / "recipes").mkdir(exist_ok=True)
    for rel, body in files.items():
        (root / rel).write_text(body)
    (root / "flow.yaml").write_text("recipes:\n" + recipes_yaml)
    return small, events


def _recipe(name: str, inputs: str, file: str | None = None) -> str:
    file = file or f"recipes/{name}.sql"
    key = "python" if file.endswith(".py") else "sql"
    return f"  {name}:\n    {key}: {file}\n    inputs: {inputs}\n    output: {name}\n"


def _row(project, name: str, day: str) -> dict:
    frame = ds.read_df(project.dataset(name), [day])
    assert len(frame) == 1
    rec = frame.iloc[0].to_dict()
    return {k: str(v.date()) if hasattr(v, "date") else v for k, v in rec.items()}


@pytest.mark.parametrize("language", ["sql", "py"])
def test_a_days_build_reads_the_window_before_it_and_not_the_day_itself(tmp_path, language):
    file = "recipes/probe.py" if language == "py" else "recipes/probe.sql"
    small, events = _project(
        tmp_path,
        _recipe("probe", "{events: {days_before: 3}}", file),
        {file: PROBE_PY if language == "py" else PROBE_SQL},
        {"probe": "day"},
    )
    project = small.project()
    assert project.recipes["probe"].inputs == {"events": input_modes.DaysBefore(3)}
    (run,) = flow.build(project, "probe", [_day(6)]).runs
    # Days 3, 4 and 5: never day 6 itself, nor day 7 (present), nor anything earlier.
    row = _row(project, "probe", _day(6))
    assert (row["first_read"], row["last_read"]) == (_day(3), _day(5))
    assert row["n_rows"] == EVENTS_PER_DAY[3] + EVENTS_PER_DAY[4] + EVENTS_PER_DAY[5]
    assert run.partitions == [_day(6)] and run.rows == 1
    assert project.dataset("probe").partitions() == [_day(6)]

    # A day whose window is only partly there reads what there is; the first day reads
    # nothing and so writes nothing (the note says so).
    flow.build(project, "probe", [_day(1)])
    assert _row(project, "probe", _day(1))["n_rows"] == EVENTS_PER_DAY[0]
    (run,) = flow.build(project, "probe", [_day(0)]).runs
    assert run.rows == 0 and run.note.startswith(f"no rows for {_day(0)}")

    # The day after the newest partition (tomorrow's profile) reads the last 3 days.
    flow.build(project, "probe", [_day(8)])
    assert _row(project, "probe", _day(8))["last_read"] == _day(7)


def test_rebuilding_an_old_day_gives_what_it_gave_that_day(tmp_path):
    """Later days arriving, and the built day's own rows changing, do not change it."""
    small, events = _project(
        tmp_path,
        _recipe("probe", "{events: {days_before: 3}}")
        + _recipe("upto", "{events: all}")
        + _recipe("profile", "{events: {days_before: 3}}"),
        {
            "recipes/probe.sql": PROBE_SQL,
            "recipes/upto.sql": UPTO_SQL,
            "recipes/profile.sql": PROFILE_SQL,
        },
        {"probe": "day", "upto": "day", "profile": "day"},
    )
    project = small.project()
    day = _day(5)
    for name in ("probe", "upto", "profile"):
        flow.build(project, name, [day])

    def read(name: str) -> pd.DataFrame:  # rows in a stable order (SQL gives none)
        frame = ds.read_df(project.dataset(name), [day])
        return frame.sort_values(list(frame.columns)).reset_index(drop=True)

    first = {n: read(n) for n in ("probe", "upto", "profile")}
    # `all` on a day-partitioned input: a build of day 5 reads days 0..5, not 6 and 7.
    assert _row(project, "upto", day) == {
        "day": day,
        "first_read": _day(0),
        "n_rows": sum(EVENTS_PER_DAY[i] for i in range(6)),
    }

    _write_events(events, range(N_DAYS - 2, N_DAYS))  # two later days arrive
    _write_events(events, range(5, 6), bump=100.0)  # and day 5 itself is corrected
    assert events.partitions()[-1] == _day(N_DAYS - 1)
    for name in ("probe", "profile"):
        flow.build(project, name, [day])
        pd.testing.assert_frame_equal(read(name), first[name])
    # `upto` reads day 5 (its own day, whole), so its correction shows, but no later day.
    flow.build(project, "upto", [day])
    assert _row(project, "upto", day)["n_rows"] == first["upto"].n_rows.iloc[0]
    assert _row(project, "upto", day)["day"] == day


def test_a_window_build_of_a_day_equals_the_full_build_of_that_day(tmp_path):
    small, _ = _project(
        tmp_path,
        _recipe("profile", "{events: {days_before: 3}}"),
        {"recipes/profile.sql": PROFILE_SQL},
        {"profile": "day"},
    )
    project = small.project()
    (full,) = flow.build(project, "profile").runs  # a full rebuild reads everything
    assert full.partitions is None
    whole = ds.read_df(project.dataset("profile"))
    for i in (1, 4, 7):
        flow.build(project, "profile", [_day(i)])
        one = ds.read_df(project.dataset("profile"), [_day(i)]).sort_values("key")
        expected = whole[whole.day.astype(str) == _day(i)].sort_values("key")
        assert one.total_3d.tolist() == expected.total_3d.tolist()
    # A build of several days reads the union of their windows.
    (run,) = flow.build(project, "profile", [_day(2), _day(6)]).runs
    assert sorted(run.partitions) == [_day(2), _day(6)]


@pytest.mark.parametrize(
    "mode, problem",
    [
        ("{days_before: -3}", "between 1 and 3660 days, not -3"),
        ("{days_before: 0}", "between 1 and 3660 days, not 0"),
        ("{days_before: 2.5}", "whole number of days, not 2.5"),
        ("{days_before: '30'}", "whole number of days, not '30'"),
        ("{days_before: true}", "whole number of days, not True"),
        ("{days_before: 99999}", "between 1 and 3660 days"),
        ("{days_before: 3, days_after: 1}", "unknown key 'days_after'"),
        ("{window: 3}", "unknown key 'window'"),
        ("{}", "a window needs days_before: N"),
        ("whole", "mode must be all, same or {days_before: N}, not 'whole'"),
        ("[3]", "mode must be all, same or {days_before: N}"),
    ],
)
def test_bad_windows_are_refused_with_the_reason(tmp_path, mode, problem):
    small, _ = _project(
        tmp_path,
        _recipe("probe", f"{{events: {mode}}}"),
        {"recipes/probe.sql": PROBE_SQL},
        {"probe": "day"},
    )
    with pytest.raises(ProjectError) as err:
        small.project()
    assert "flow.yaml: recipe probe: input 'events'" in str(err.value)
    assert problem in str(err.value)


@pytest.mark.parametrize(
    "inputs, outputs, problem",
    [
        # cards-like reference data has no days to count back
        ("{plain: {days_before: 3}}", {"probe": "day"}, "needs a partitioned input"),
        # the window is counted back from the day being built: the output must have days
        ("{events: {days_before: 3}}", {"probe": ""}, "output to be partitioned by day"),
        ("{events: {days_before: 3}}", {"probe": "region"}, "output to be partitioned by day"),
    ],
)
def test_a_window_where_there_are_no_days_is_refused(tmp_path, inputs, outputs, problem):
    small, _ = _project(
        tmp_path, _recipe("probe", inputs), {"recipes/probe.sql": PROBE_SQL}, outputs
    )
    with pytest.raises(ProjectError, match=problem):
        small.project()


def test_a_window_on_an_input_partitioned_by_something_else_is_refused(tmp_path):
    small, _ = _project(tmp_path, "", {}, {"probe": "day"})
    root = small.project().root
    with open(root / "datasets.yaml", "a") as fh:
        fh.write('regions: {kind: source, path: "{data_dir}/regions", partitioned_by: region}\n')
    (root / "recipes" / "probe.sql").write_text(PROBE_SQL)
    (root / "flow.yaml").write_text("recipes:\n" + _recipe("probe", "{regions: {days_before: 3}}"))
    with pytest.raises(ProjectError, match="needs an input partitioned by day"):
        small.project()


def test_the_studio_and_the_command_line_save_a_window(tmp_path, monkeypatch, capsys):
    small, _ = _project(tmp_path, "", {}, {"probe": "day"})
    project = small.project()
    recipes.save_recipe(
        project,
        "probe",
        PROBE_SQL,
        {"events": input_modes.DaysBefore(3)},
        "probe",
        definitions.ABSENT,
    )
    saved = yaml.safe_load((project.root / "flow.yaml").read_text())
    assert saved["recipes"]["probe"]["inputs"] == {"events": {"days_before": 3}}
    assert small.project().recipes["probe"].inputs == {"events": input_modes.DaysBefore(3)}
    with pytest.raises(NodalError, match="needs a partitioned input"):
        recipes.save_recipe(
            small.project(), "p2", PROBE_SQL, {"plain": input_modes.DaysBefore(3)}, "probe2"
        )
    # A preview reads what a build of the day after the newest would: days 5, 6 and 7.
    preview = recipes.preview(small.project(), PROBE_SQL, {"events": input_modes.DaysBefore(3)})
    assert str(preview.rows.first_read.min().date()) == _day(5)

    monkeypatch.setenv("NODAL_HOME", str(small.settings.home))
    monkeypatch.setenv("NODAL_DATA_DIR", str(small.settings.data_dir))
    base = ["recipe", "create", "probe", "--project", "shop", "--output", "probe", "--force"]
    for bad, says in (
        ("events:days_before=-1", "between 1 and 3660 days, not -1"),
        ("events:days_before=x", "whole number of days, not 'x'"),
        ("events:weeks_before=1", "mode must be all, same or days_before=N"),
    ):
        before = (project.root / "flow.yaml").read_text()
        code = cli.main([*base, "--input", bad, "--sql", PROBE_SQL])
        out = capsys.readouterr()
        assert code == 2 and says in out.err + out.out and "Traceback" not in out.err
        assert (project.root / "flow.yaml").read_text() == before  # nothing changed
    code = cli.main([*base, "--input", "events:days_before=4", "--sql", PROBE_SQL])
    assert code == 0, capsys.readouterr()
    assert small.project().recipes["probe"].inputs == {"events": input_modes.DaysBefore(4)}


def test_the_fraud_examples_card_profiles_read_30_days_and_no_later_day(tmp_path):
    """examples/fraud: a day's card profiles equal the full build's, and do not change
    when later days land."""
    from nodal_demo import datagen

    data = tmp_path / "data"
    cfg = datagen.GeneratorConfig(n_cards=300, n_merchants=80, n_days=36, txns_per_day=400)
    datagen.generate(cfg, data)
    root = tmp_path / "fraud"
    shutil.copytree(Path(__file__).parents[3] / "examples" / "fraud", root)
    project = load_project(root, root / "data", {"data_dir": str(data)})
    assert project.recipes["card_profiles"].inputs["transactions"] == input_modes.DaysBefore(30)
    flow.build(project, "card_profiles")
    ref = project.dataset("card_profiles")
    day = str(cfg.start_day + dt.timedelta(days=33))
    whole = ds.read_df(ref, [day]).sort_values("card_id").reset_index(drop=True)
    assert "card_txn_history" not in whole.columns  # a lifetime count grows by construction
    assert whole.card_txn_rate_30d.sum() > 0

    more = tmp_path / "more"  # two more days land: day 33's profile does not move
    datagen.generate(dataclasses.replace(cfg, n_days=38), more)
    project = load_project(root, root / "data", {"data_dir": str(more)})
    (run,) = flow.build(project, "card_profiles", [day]).runs
    one = ds.read_df(ref, [day]).sort_values("card_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(one, whole)
    assert "3 later partition(s) of card_profiles" in run.note  # 34, 35 and the day after
