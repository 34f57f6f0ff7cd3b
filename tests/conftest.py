"""Shared fixtures: one small but real nodal home, prepared once per test session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine.automation import runs
from engine.automation.node import AutomationNode
from engine.core.settings import Settings, load_settings
from engine.project.project import Project
from engine.storage.control import ControlStore, open_store
from nodal_demo import datagen, demo
from tests.homes import seed_test_actors

EXAMPLE = demo.EXAMPLE
SMALL = datagen.GeneratorConfig(n_cards=800, n_merchants=200, n_days=30, txns_per_day=1500)


@dataclass(frozen=True)
class DemoEnv:
    settings: Settings
    store: ControlStore
    project: Project
    run_id: int

    def environ(self) -> dict[str, str]:
        """Environment a process (or an AppTest) needs to see this home."""
        return {
            "NODAL_HOME": str(self.settings.home),
            "NODAL_DATA_DIR": str(self.settings.data_dir),
            "NODAL_BASEMAP": "none",
            "NODAL_POLL_SECONDS": "0.5",
        }


def make_settings(root: Path, **overrides: object) -> Settings:
    overrides.setdefault("compiled_cache_dir", os.environ.get("NODAL_COMPILED_CACHE"))
    return load_settings(
        environ={}, home=root / "var", data_dir=root / "data", basemap="none", **overrides
    )


@pytest.fixture(scope="session", autouse=True)
def compiled_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One compiled-model cache for the session and the processes it starts: each distinct
    model is compiled once, not once per temporary home (compiling takes seconds)."""
    path = tmp_path_factory.mktemp("compiled")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NODAL_COMPILED_CACHE", str(path))
        # The CLI (in process and in subprocesses) acts as this person, an administrator of
        # every test home (tests/homes.py seed_test_actors), whoever runs the suite.
        mp.setenv("NODAL_USER", "test")
        yield path


@pytest.fixture(scope="session")
def demo_env(tmp_path_factory: pytest.TempPathFactory) -> DemoEnv:
    """A home with the fraud project built, trained, bundled, deployed and scored once."""
    root = tmp_path_factory.mktemp("nodal")
    settings = make_settings(root)
    # tests/homes.py's copies use the default <home>/cache/compiled: copying this link's
    # target gives them the session's compiled models instead of compiling again.
    (settings.home / "cache").mkdir(parents=True)
    (settings.home / "cache" / "compiled").symlink_to(settings.compiled_cache)
    store = open_store(settings.control_store_url)
    project = demo.prepare(settings, store, SMALL)
    seed_test_actors(store)
    node = AutomationNode(settings, store, demo.AUTOMATION_INFRA)
    node.sync()
    run_id = runs.request_run(store, demo.AUTOMATION_INFRA, demo.PROJECT, "daily_scoring", "test")
    assert node.run(run_id) == runs.SUCCESS, runs.get_run(store, run_id)
    return DemoEnv(settings, store, project, run_id)


@pytest.fixture
def demo_environ(demo_env: DemoEnv, monkeypatch: pytest.MonkeyPatch) -> DemoEnv:
    """``demo_env`` with its variables set in this process's environment (for AppTest)."""
    for key, value in demo_env.environ().items():
        monkeypatch.setenv(key, value)
    return demo_env


@pytest.fixture(scope="session")
def claims_env(tmp_path_factory: pytest.TempPathFactory):
    """A home with a project in another vocabulary (insurance claims, tests/engine/
    small_project.py) deployed to two automation nodes and run on the first."""
    from tests.engine.small_project import make_claims

    return make_claims(tmp_path_factory.mktemp("claims"))
