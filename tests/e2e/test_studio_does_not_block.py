"""Working in the Design Studio never blocks the CLI (or the runner, or the API node): while a
real Studio process has the project open in a browser and is itself building it,
``nodal flow build`` and ``nodal check run`` from the command line complete on the same
project, and the Studio process holds no DuckDB database file open."""

from __future__ import annotations

import os
from pathlib import Path

from playwright.sync_api import expect

from engine.design import projects as design
from tests.e2e import procs
from tests.e2e.browser import with_session
from tests.e2e.test_browser_studio import chromium, design_studio
from tests.homes import copy_home, environ


def _open_database_files(pid: int) -> list[str]:
    """Database files a process (and its threads) has open, except the SQLite control store."""
    out = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.endswith((".duckdb", ".db", ".wal")) and "control.db" not in target:
            out.append(target)
    return out


def test_the_cli_builds_while_the_studio_is_open_and_busy_on_the_same_project(demo_env, tmp_path):
    settings, store = copy_home(demo_env.settings, tmp_path)
    env = environ(settings)
    with design_studio(settings, tmp_path / "studio.log") as (url, proc), chromium() as page:
        with_session(page, url, settings, "analyst")
        page.goto(f"{url}/?project=fraud")
        expect(page.get_by_text("Flow of fraud")).to_be_visible(timeout=60_000)
        # The Studio builds the flow (training_set and everything upstream) ...
        page.get_by_role("button", name="Build", exact=True).click()
        # ... and meanwhile the CLI builds and checks the same project.
        built = procs.nodal(
            ["flow", "build", "training_set", "--project", "fraud"], env, timeout=240
        )
        assert built.returncode == 0, built.stderr
        assert "training_set" in built.stdout
        checked = procs.nodal(
            ["check", "run", "transactions", "--project", "fraud"], env, timeout=120
        )
        assert checked.returncode in (0, 1), checked.stderr  # 1: a check found an ERROR
        assert "columns_unchanged" in checked.stdout
        assert _open_database_files(proc.pid) == []
        expect(page.get_by_text("Built training_set: 4 recipes")).to_be_visible(timeout=180_000)
        page.screenshot(path=str(tmp_path / "studio-while-cli.png"))
    project = design.open_project(settings, "fraud")
    assert project.dataset("training_set").exists()
