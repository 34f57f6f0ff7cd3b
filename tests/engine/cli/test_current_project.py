"""No hidden defaults: a command acts on --project, else the current project (`nodal project
use`), else it stops with one line naming both ways; --model / --service, not given, are the
only one there is, else the command names the candidates."""

from __future__ import annotations

import pytest

from engine.cli import main as cli
from engine.core import home as layout
from tests.e2e.procs import nodal
from tests.engine.small_project import Small, make_small

NO_PROJECT = "error: no project given: pass --project NAME or set one with nodal project use NAME\n"


@pytest.fixture
def small(tmp_path, monkeypatch) -> Small:
    small = make_small(tmp_path)
    monkeypatch.setenv("NODAL_HOME", str(small.settings.home))
    monkeypatch.setenv("NODAL_DATA_DIR", str(small.settings.data_dir))
    return small


def _run(args: list[str], capsys) -> tuple[int, str, str]:
    code = cli.main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize(
    "args",
    [
        ["dataset", "list"],
        ["dataset", "profile", "shops"],
        ["dataset", "create", "alerts"],
        ["flow", "build", "shops"],
        ["recipe", "preview", "x"],
        ["metric", "history", "shops"],
        ["check", "history"],
        ["model", "list"],
        ["lab", "list"],
        ["bundle", "create", "b1"],
        ["bundle", "diff"],
        ["deploy", "bundle", "b1", "--infra", "automation-prod"],
        ["scenario", "run", "daily", "--infra", "automation-prod"],
        ["scenario", "definition", "daily"],
        ["dashboard", "show", "map"],
        ["api", "package", "v1"],
        ["api", "service", "show", "svc"],
    ],
)
def test_without_a_project_every_project_command_stops_naming_both_ways(small, capsys, args):
    code, out, err = _run(args, capsys)
    assert (code, out, err) == (2, "", NO_PROJECT)
    assert not layout.current_project_file(small.settings.home).exists()


def test_the_real_command_has_no_default_project_either(small):
    result = nodal(["dataset", "list"], {"NODAL_HOME": str(small.settings.home)})
    assert (result.returncode, result.stdout, result.stderr) == (2, "", NO_PROJECT)


def test_project_use_sets_prints_switches_and_clears_the_current_project(small, capsys):
    home = small.settings.home
    code, out, err = _run(["project", "use"], capsys)
    assert (code, out) == (1, "") and "no current project" in err

    code, out, err = _run(["project", "use", "nope"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "error: no project 'nope' on the design node (its projects: shop)" in err
    assert not layout.current_project_file(home).exists()

    assert _run(["project", "use", "shop"], capsys)[0] == 0
    assert layout.current_project_file(home).read_text() == "shop\n"
    assert _run(["project", "use"], capsys)[:2] == (0, "shop\n")
    code, out, _ = _run(["dataset", "list"], capsys)
    assert code == 0 and "datasets of project shop:" in out and "shops" in out
    code, out, _ = _run(["project", "list"], capsys)
    assert any(line.split()[:2] == ["shop", "*"] for line in out.splitlines())

    # --project still wins; another project becomes current only when asked.
    assert _run(["project", "create", "other"], capsys)[0] == 0
    code, out, _ = _run(["dataset", "list", "--project", "other"], capsys)
    assert code == 0 and "datasets of project other:" in out and "shops" not in out
    assert _run(["project", "use"], capsys)[1] == "shop\n"
    assert _run(["project", "use", "other"], capsys)[0] == 0
    assert "datasets of project other:" in _run(["dataset", "list"], capsys)[1]

    assert _run(["project", "use", "--clear"], capsys)[0] == 0
    assert _run(["dataset", "list"], capsys) == (2, "", NO_PROJECT)


def test_a_current_project_that_is_gone_is_named(small, capsys):
    layout.current_project_file(small.settings.home).write_text("gone\n")
    code, out, err = _run(["dataset", "list"], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "the current project 'gone' is not on the design node any more" in err


def test_commands_without_project_act_on_the_current_one_end_to_end(small, capsys):
    assert _run(["project", "use", "shop"], capsys)[0] == 0
    code, out, _ = _run(["dataset", "profile", "shops"], capsys)
    assert code == 0 and "dataset shops of project shop:" in out and "monthly_sales" in out
    sql = "SELECT city, count(*) AS n FROM shops GROUP BY city"
    args = ["recipe", "create", "by_city", "--input", "shops", "--output", "by_city"]
    code, out, _ = _run([*args, "--sql", sql], capsys)
    assert code == 0 and "recipe by_city of project shop saved" in out
    code, out, _ = _run(["flow", "build", "by_city"], capsys)
    assert code == 0 and "project shop: 1 recipe run" in out
    code, out, _ = _run(["bundle", "create", "b1"], capsys)
    assert code == 0 and "bundle b1 of shop created" in out
    code, out, _ = _run(["bundle", "list"], capsys)
    assert code == 0 and "b1" in out


def test_model_and_service_default_to_the_only_one_or_name_the_candidates(small, capsys):
    assert _run(["project", "use", "shop"], capsys)[0] == 0
    root = small.project().root
    code, _, err = _run(["model", "list"], capsys)
    assert code == 2 and "no model given and project shop has no model: pass --model NAME" in err
    (root / "models").mkdir()
    (root / "models" / "risk.yaml").write_text("name: risk\ntrain_on: shops\n")
    code, out, _ = _run(["model", "list"], capsys)
    assert code == 0 and "versions of risk in project shop:" in out
    (root / "models" / "churn.yaml").write_text("name: churn\ntrain_on: shops\n")
    code, _, err = _run(["model", "list"], capsys)
    assert code == 2 and err == (
        "error: no model given and project shop has 2 models (churn, risk): pass --model NAME\n"
    )
    assert _run(["model", "list", "--model", "churn"], capsys)[0] == 0
    code, _, err = _run(["lab", "deploy", "r1"], capsys)
    assert code == 2 and "project shop has no model with a lab run r1: pass --model NAME" in err

    code, _, err = _run(["api", "package", "v1"], capsys)
    assert code == 2
    assert "no API service given and project shop has no API service: pass --service ID" in err
    code, _, err = _run(["api", "history", "--infra", "api-prod"], capsys)
    assert code == 2
    assert "no API service given and infrastructure api-prod has no API service" in err
