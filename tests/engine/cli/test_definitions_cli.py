"""Definitions written from the command line (scenarios, dashboards, API services, output
datasets) go through the Studio's own saves: shown as saved, refused whole with every
problem in one line (exit 2), and a refused save leaves the project as it was."""

from __future__ import annotations

import io
import sys

import pytest

from engine.cli import main as cli
from engine.project.project import definition_files
from tests.engine.small_project import Small, make_small

SCENARIO = """\
name: nightly
description: Rebuild the shops table every night.
# A comment the save keeps.
triggers:
  - type: time
    every: daily at 02:00
steps:
  - name: rebuild
    type: build
    dataset: shops
"""

DASHBOARD = """\
name: shop_board
title: Shops
source: shops
output: shops
date_column: opened
"""

SERVICE = """\
service_id: shops_api
description: A shop's row by its id.
endpoints:
  # The whole row of one shop.
  - id: shop
    type: lookup
    dataset: shops
    key: shop_id
    columns: [city, channel]
    test_queries:
      - name: first shop
        data: {shop_id: 1}
"""


@pytest.fixture
def small(tmp_path, monkeypatch) -> Small:
    small = make_small(tmp_path)
    monkeypatch.setenv("NODAL_HOME", str(small.settings.home))
    monkeypatch.setenv("NODAL_DATA_DIR", str(small.settings.data_dir))
    assert cli.main(["project", "use", "shop"]) == 0
    return small


def _run(args: list[str], capsys) -> tuple[int, str, str]:
    code = cli.main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def _snapshot(small: Small) -> dict[str, str]:
    root = small.project().root
    return {str(rel): (root / rel).read_text() for rel in definition_files(root)}


def _refused(small: Small, capsys, args: list[str], *problems: str) -> str:
    """Run a save that must be refused; check the one-line error and that nothing changed."""
    before = _snapshot(small)
    code, out, err = _run(args, capsys)
    assert (code, out) == (2, ""), err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for problem in problems:
        assert problem in err, err
    assert _snapshot(small) == before
    return err


def test_a_scenario_round_trips_and_an_invalid_one_is_refused(small, tmp_path, capsys):
    path = tmp_path / "nightly.yaml"
    path.write_text(SCENARIO)
    code, out, _ = _run(["scenario", "define", "nightly", "--file", str(path)], capsys)
    assert code == 0
    assert out == "scenario nightly created in project shop (scenarios/nightly.yaml)\n"
    assert _run(["scenario", "definition", "nightly"], capsys) == (0, SCENARIO, "")
    assert small.project().scenarios["nightly"]["steps"][0]["dataset"] == "shops"

    path.write_text(SCENARIO.replace("steps:\n", "steps:\n  - {name: broken\n"))
    _refused(
        small,
        capsys,
        ["scenario", "define", "nightly", "--file", str(path)],
        "error: scenario nightly not saved: not valid YAML at line",
    )
    path.write_text(
        SCENARIO.replace("type: build", "type: teleport").replace(
            "every: daily at 02:00", "cron: '0 25 * * *'"
        )
    )
    _refused(
        small,
        capsys,
        ["scenario", "define", "nightly", "--file", str(path)],
        "error: scenario nightly not saved: ",
        "unknown type 'teleport'",
        "invalid cron '0 25 * * *'",
    )
    path.write_text(SCENARIO.replace("name: nightly", "name: daily"))
    _refused(
        small,
        capsys,
        ["scenario", "define", "nightly", "--file", str(path)],
        "the YAML must be a mapping with name: nightly",
    )
    code, _, err = _run(["scenario", "definition", "weekly"], capsys)
    assert code == 2 and "project 'shop' has no scenario 'weekly' (its scenarios: nightly)" in err


def test_a_scenario_can_be_piped_through_standard_input(small, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO(SCENARIO.replace("02:00", "03:00")))
    assert _run(["scenario", "define", "nightly", "--file", "-"], capsys)[0] == 0
    assert "daily at 03:00" in _run(["scenario", "definition", "nightly"], capsys)[1]
    monkeypatch.setattr(sys, "stdin", io.StringIO(SCENARIO))
    code, out, _ = _run(["scenario", "define", "nightly", "--file", "-"], capsys)
    assert code == 0 and "scenario nightly replaced" in out


def test_a_dashboard_round_trips_and_an_invalid_one_is_refused(small, tmp_path, capsys):
    path = tmp_path / "board.yaml"
    path.write_text(DASHBOARD)
    code, out, _ = _run(["dashboard", "save", "shop_board", "--file", str(path)], capsys)
    assert code == 0 and "dashboard shop_board created in project shop" in out
    assert _run(["dashboard", "show", "shop_board"], capsys) == (0, DASHBOARD, "")

    path.write_text(DASHBOARD.replace("source: shops", "source: nowhere"))
    _refused(
        small,
        capsys,
        ["dashboard", "save", "shop_board", "--file", str(path)],
        "error: dashboard shop_board not saved: ",
        "source 'nowhere' is not a dataset of the project",
    )
    assert _run(["dashboard", "show", "shop_board"], capsys)[1] == DASHBOARD


def test_an_api_service_round_trips_packages_and_passes_its_test_queries(small, tmp_path, capsys):
    path = tmp_path / "service.yaml"
    path.write_text(SERVICE)
    code, out, _ = _run(["api", "service", "save", "shops_api", "--file", str(path)], capsys)
    assert code == 0
    assert out == "API service shops_api created in project shop (api_services/shops_api.yaml)\n"
    assert _run(["api", "service", "show", "shops_api"], capsys) == (0, SERVICE, "")
    # The saved file is a real service: it packages, and its test query passes in process.
    code, out, _ = _run(["api", "package", "v1"], capsys)
    assert code == 0 and "package v1 of shops_api (project shop) created" in out
    code, out, _ = _run(["api", "test", "v1"], capsys)
    assert code == 0 and "shops_api v1 (in process): 1/1 test queries passed" in out


def test_an_invalid_api_service_is_refused_with_every_problem(small, tmp_path, capsys):
    path = tmp_path / "service.yaml"
    path.write_text(SERVICE)
    assert _run(["api", "service", "save", "shops_api", "--file", str(path)], capsys)[0] == 0
    broken = (
        SERVICE.replace("key: shop_id", "key: shop_code")
        + "  - id: score\n    model: no_such_model\n"
        + "  - id: score\n    type: lookup\n"
        + "  - id: odd\n    type: magic\n"
    )
    path.write_text(broken)
    _refused(
        small,
        capsys,
        ["api", "service", "save", "shops_api", "--file", str(path)],
        "error: API service shops_api not saved: ",
        "endpoint shop: dataset 'shops' has no column shop_code",
        "endpoint score: project 'shop' has no saved model 'no_such_model'",
        "endpoint score: defined twice",
        "endpoint odd: type must be one of prediction, lookup, not 'magic'",
    )
    bad_query = SERVICE.replace("data: {shop_id: 1}", "data: {city: Austin}")
    path.write_text(bad_query)
    _refused(
        small,
        capsys,
        ["api", "service", "save", "shops_api", "--file", str(path)],
        "endpoint shop: test query first shop: test query refused: missing lookup key(s): shop_id",
    )
    path.write_text("service_id: shops_api\nendpoints: [\n")
    _refused(
        small,
        capsys,
        ["api", "service", "save", "shops_api", "--file", str(path)],
        "not valid YAML at line",
    )
    path.write_text(SERVICE.replace("service_id: shops_api", "service_id: other_api"))
    _refused(
        small,
        capsys,
        ["api", "service", "save", "shops_api", "--file", str(path)],
        "the YAML must be a mapping with service_id: shops_api",
    )
    assert _run(["api", "service", "show", "shops_api"], capsys)[1] == SERVICE


def test_an_output_dataset_is_declared_and_an_invalid_one_refused(small, capsys):
    code, out, _ = _run(
        [
            "dataset",
            "create",
            "alerts",
            "--schema",
            "day:date,shop_id:BIGINT,score:DOUBLE",
            "--partition-by",
            "day",
            "--description",
            "Shops to look at.",
        ],
        capsys,
    )
    assert code == 0
    assert "dataset alerts declared in project shop (managed, 3 columns, partitioned by day" in out
    alerts = small.project().datasets["alerts"]
    assert (alerts.kind, alerts.partitioned_by) == ("managed", "day")
    assert alerts.schema == {"day": "DATE", "shop_id": "BIGINT", "score": "DOUBLE"}
    assert alerts.description == "Shops to look at."
    code, out, _ = _run(["dataset", "list"], capsys)
    assert code == 0 and "alerts" in out

    _refused(
        small,
        capsys,
        ["dataset", "create", "alerts2", "--schema", "day:DAYTIME,x y:INT", "--partition-by", "d"],
        "error: dataset alerts2 not saved: ",
        "column day: 'DAYTIME' is not a DuckDB type",
        "'x y' is not a valid name",
        "partition column 'd' is not in the schema",
    )
    _refused(
        small,
        capsys,
        ["dataset", "create", "shops"],
        "project 'shop' already has a dataset 'shops'",
    )
    _refused(
        small,
        capsys,
        ["dataset", "create", "x", "--schema", "day"],
        "--schema 'day': write each column as NAME:TYPE",
    )
