"""CLI parity for the design node: every Studio action ops or CI need is a command."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.cli import main as cli
from engine.deployer import bundles
from tests.engine.small_project import SHOPS_CSV, add_labelled, make_small

REPO = Path(__file__).resolve().parents[3]
GROUPS = {
    "project": ["create", "use"],
    "dataset": ["import", "create", "list", "profile"],
    "scenario": ["define", "definition"],
    "dashboard": ["save", "show"],
    "recipe": ["create", "preview"],
    "metric": ["add", "compute", "history"],
    "check": ["add", "run", "history"],
    "lab": ["train", "list", "deploy"],
    "bundle": ["create", "diff", "revert"],
}


@pytest.mark.parametrize(("group", "cmd"), [(g, c) for g, cs in GROUPS.items() for c in cs])
def test_every_design_command_has_help(group, cmd, capsys):
    with pytest.raises(SystemExit) as done:
        cli.main([group, cmd, "--help"])
    assert done.value.code == 0
    assert "usage: nodal" in capsys.readouterr().out


def _run(args: list[str], capsys) -> tuple[int, str]:
    code = cli.main(args)
    out = capsys.readouterr()
    return code, out.out + out.err


def test_the_analyst_journey_from_the_command_line(tmp_path, monkeypatch, capsys):
    small = make_small(tmp_path, with_shops=False)
    add_labelled(small)
    monkeypatch.setenv("NODAL_HOME", str(small.settings.home))
    monkeypatch.setenv("NODAL_DATA_DIR", str(small.settings.data_dir))
    csv = small.settings.data_dir / "shops.csv"  # a file of the landing zone
    csv.write_text(SHOPS_CSV + "5,2024-01-08,Austin,oops,online\n")
    p = ["--project", "shop"]
    code, out = _run(["dataset", "import", str(csv), *p, "--type", "monthly_sales=DOUBLE"], capsys)
    assert code == 2 and "line 6" in out and "Nothing was imported" in out
    code, out = _run(["dataset", "import", str(csv), *p, "--partition-by", "opened"], capsys)
    assert code == 0 and "5 rows" in out and "4 day partitions" in out
    code, out = _run(["dataset", "profile", "shops", *p], capsys)
    assert code == 0 and "monthly_sales" in out
    sql = "SELECT city, count(*) AS n FROM shops GROUP BY city"
    code, out = _run(
        [
            "recipe",
            "create",
            "by_city",
            *p,
            "--input",
            "shops",
            "--output",
            "by_city",
            "--sql",
            sql,
        ],
        capsys,
    )
    assert code == 0, out
    code, out = _run(["recipe", "preview", "by_city", *p], capsys)
    assert code == 0 and "schema: city VARCHAR, n BIGINT" in out
    code, out = _run(["flow", "build", "shops", "--downstream", *p], capsys)
    assert code == 0 and "by_city" in out
    code, out = _run(
        [
            "check",
            "add",
            "by_city",
            "--name",
            "x",
            "--type",
            "value_in_set",
            "--column",
            "town",
            "--values",
            "a",
            *p,
        ],
        capsys,
    )
    assert code == 2 and "has no column 'town'" in out
    code, out = _run(
        ["metric", "add", "by_city", "--name", "rows", "--type", "record_count", *p], capsys
    )
    assert code == 0
    code, out = _run(
        [
            "check",
            "add",
            "by_city",
            "--name",
            "enough",
            "--type",
            "metric_bounds",
            "--metric",
            "rows",
            "--min",
            "5",
            *p,
        ],
        capsys,
    )
    assert code == 0
    code, out = _run(["check", "run", "by_city", *p], capsys)
    assert code == 1 and "ERROR" in out and "outside the hard bounds" in out
    code, out = _run(
        [
            "lab",
            "train",
            "--dataset",
            "labelled",
            "--target",
            "is_fraud",
            "--feature",
            "x",
            "--feature",
            "cat",
            "--model",
            "risk",
            "--param",
            "num_boost_round=20",
            *p,
        ],
        capsys,
    )
    assert code == 0 and "risk lab run r1" in out and "best possible AUC" in out
    code, out = _run(["lab", "deploy", "r1", "--model", "risk", *p], capsys)
    assert code == 0 and "risk v1" in out
    code, out = _run(
        ["bundle", "create", "b1", "--dataset", "by_city", "--notes", "cli", *p], capsys
    )
    assert code == 0
    assert bundles.verify_bundle(bundles.get_bundle(small.store, "shop", "b1").path)["datasets"][
        "by_city"
    ]
    code, out = _run(["bundle", "create", "b1", *p], capsys)
    assert code == 2 and "already" in out
    code, out = _run(["bundle", "diff", *p], capsys)
    assert code == 0 and "b1 -> (project now)" in out and "data     by_city: 3 rows -> -" in out
    code, out = _run(["bundle", "revert", "b1", *p], capsys)
    assert code == 0 and "reverted to bundle b1" in out


def test_dataset_import_drops_and_renames_columns_as_typed_in_a_shell(tmp_path):
    """``--drop ''`` and ``--rename ''=NAME`` reach nodal intact through a POSIX shell."""
    import shlex
    import subprocess
    import sys

    small = make_small(tmp_path, with_shops=False)
    csv = small.settings.data_dir / "indexed.csv"  # a file of the landing zone
    csv.write_text(",shop_id,opened,city\n0,1,2024-01-05,Austin\n1,2,2024-01-06,Boston\n")
    nodal = f"{shlex.quote(sys.executable)} -m engine.cli.main dataset import indexed.csv"
    env = {
        "PATH": "/usr/bin:/bin",
        "NODAL_HOME": str(small.settings.home),
        "NODAL_DATA_DIR": str(small.settings.data_dir),
        "NODAL_USER": "test",
    }

    def shell(options: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["sh", "-c", f"{nodal} --project shop {options}"],
            cwd=small.settings.data_dir,
            env={**env, "PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
            check=False,
        )

    refused = shell("")
    assert refused.returncode == 2, refused.stderr
    assert "column 1 has no name" in refused.stderr
    assert "--drop '' to leave it out, or --rename ''=NAME to name it" in refused.stderr
    clash = shell("--drop '' --rename city=shop_id")
    assert clash.returncode == 2 and "would be named 'shop_id'" in clash.stderr
    unknown = shell("--rename ''=row --drop town")
    assert unknown.returncode == 2 and "has no column 'town' to drop" in unknown.stderr
    assert "indexed" not in small.project().datasets

    named = shell("--rename ''=row_id --rename city=town --partition-by opened")
    assert named.returncode == 0, named.stderr
    assert "dataset indexed: 2 rows, 4 columns, 2 day partitions" in named.stdout
    assert list(small.project().datasets["indexed"].schema) == [
        "row_id",
        "shop_id",
        "opened",
        "town",
    ]
    dropped = shell("--drop '' --drop city --name without_index")
    assert dropped.returncode == 0, dropped.stderr
    assert list(small.project().datasets["without_index"].schema) == ["shop_id", "opened"]
