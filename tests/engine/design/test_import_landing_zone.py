""" "Import a file by path" reads only the landing zone (and the Studio's own uploads): a host
file, the home's control store, a ``..`` path or a symbolic link leading out are refused
before anything is read, by the engine, the CLI and the Studio alike."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.cli import main as cli
from engine.design import dataset_import as di
from tests.engine.small_project import SHOPS_CSV, make_small


@pytest.fixture
def small(tmp_path):
    small = make_small(tmp_path, with_shops=False)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.csv").write_text("secret,key\nthe bank's key,42\n")
    return small


def _refused(small, path: Path | str, match: str = "outside the landing zone") -> str:
    project = small.project()
    before = (project.root / "datasets.yaml").read_text()
    with pytest.raises(di.OutsideLandingZone, match=match) as inferred:
        di.infer_schema(path, project=project)
    with pytest.raises(di.OutsideLandingZone, match=match):
        di.import_file(project, "stolen", path)
    assert (project.root / "datasets.yaml").read_text() == before
    assert not (project.data_root / "stolen").exists()
    message = str(inferred.value)
    assert "the bank's key" not in message and "root:" not in message
    return message


def test_files_outside_the_landing_zone_are_refused(small, tmp_path):
    landing = small.settings.data_dir
    message = _refused(small, tmp_path / "outside" / "secret.csv")
    assert str(landing.absolute()) in message  # says where files may come from
    _refused(small, "/etc/passwd")
    _refused(small, small.settings.home / "control.db")
    _refused(small, small.project().root / "datasets.yaml")


def test_a_dotdot_path_is_refused_even_when_it_leads_back_inside(small):
    landing = small.settings.data_dir
    (landing / "shops.csv").write_text(SHOPS_CSV)
    _refused(small, landing / ".." / "outside" / "secret.csv", match="'..' is refused")
    _refused(small, landing / ".." / landing.name / "shops.csv", match="'..' is refused")


def test_a_symbolic_link_is_followed(small, tmp_path):
    landing = small.settings.data_dir
    (landing / "innocent.csv").symlink_to(tmp_path / "outside" / "secret.csv")
    message = _refused(small, landing / "innocent.csv")
    assert "it leads to" in message and "secret.csv" in message
    (landing / "etc").symlink_to("/etc")
    _refused(small, landing / "etc" / "passwd")
    # A link that stays inside the landing zone is fine.
    (landing / "real.csv").write_text(SHOPS_CSV)
    (landing / "alias.csv").symlink_to(landing / "real.csv")
    assert di.import_file(small.project(), "alias", landing / "alias.csv").rows == 4


def test_files_of_the_landing_zone_and_uploads_still_import(small, tmp_path, monkeypatch):
    landing = small.settings.data_dir
    (landing / "in").mkdir()
    (landing / "in" / "shops.csv").write_text(SHOPS_CSV)
    assert di.import_file(small.project(), "shops", landing / "in" / "shops.csv").rows == 4
    monkeypatch.chdir(landing)  # a relative path starts from the current folder
    assert di.infer_schema("in/shops.csv", project=small.project())["opened"] == "DATE"
    # What the Studio staged from a browser upload, in this process.
    home = small.settings.home
    staged = di.stage_upload(home, "uploaded.csv", SHOPS_CSV.encode())
    assert di.import_file(small.project(), "uploaded", staged).rows == 4
    # Another process's staged upload (or a file planted there) is not this Studio's.
    planted = di.uploads_dir(home) / f"{os.getpid() + 1}-abc" / "other.csv"
    planted.parent.mkdir(parents=True)
    planted.write_text(SHOPS_CSV)
    _refused(small, planted)


def test_the_cli_refuses_a_path_outside_with_exit_code_2(small, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NODAL_HOME", str(small.settings.home))
    monkeypatch.setenv("NODAL_DATA_DIR", str(small.settings.data_dir))
    for args in (["--infer-only"], []):
        code = cli.main(
            ["dataset", "import", str(tmp_path / "outside" / "secret.csv"), "--project", "shop"]
            + args
        )
        out = capsys.readouterr()
        assert code == 2
        assert "outside the landing zone" in out.err and "Traceback" not in out.err
        assert "the bank's key" not in out.out + out.err
