"""A package whose real-time features would differ from batch is refused, naming the
feature; a node refuses to load one whose parity sample no longer holds."""

from __future__ import annotations

import shutil

import pytest

from engine.apinode.realtime import load_service
from engine.core.artifacts import extract_verified
from engine.deployer import apipackages
from engine.design import projects as design
from engine.models import feature_parity
from engine.project import sql_functions, windows
from nodal_demo import demo
from tests.homes import copy_home


@pytest.fixture
def home(demo_env, tmp_path_factory):
    return copy_home(demo_env.settings, tmp_path_factory.mktemp("parity"))


def test_the_example_package_proves_real_time_equals_batch(home, tmp_path):
    settings, store = home
    info = apipackages.get_package(store, demo.SERVICE, "v1")
    extract_verified(info.path, tmp_path / "pkg", apipackages.KIND)
    ep_dir = tmp_path / "pkg" / "endpoints" / "predict_fraud"
    assert (ep_dir / "features.sql").read_text().startswith("-- Model features")
    assert {p.name for p in ep_dir.glob("parity*.parquet")} == {
        "parity.parquet",
        "parity_card_profiles.parquet",
        "parity_card_windows.parquet",  # batch's windowed features of the sampled rows
        "parity_events_card_windows.parquet",  # the events real time replays to recompute them
    }
    assert (ep_dir / "windows" / "card_windows.json").exists()
    _, endpoints = load_service(tmp_path / "pkg")  # re-checks the sample at load
    assert set(endpoints["predict_fraud"].request_fields) >= {"ts", "card_id", "amount"}


def test_a_package_whose_real_time_differs_is_refused_with_the_feature(home, monkeypatch):
    settings, store = home
    project = design.open_project(settings, demo.PROJECT)
    _break_hours(monkeypatch)
    with pytest.raises(apipackages.PackageError, match="feature 'hour_of_day' differently"):
        apipackages.create_package(
            settings.home, store, project, demo.SERVICE, "v-skewed", "", "analyst"
        )
    assert apipackages.get_package(store, demo.SERVICE, "v-skewed", missing_ok=True) is None


def test_a_node_refuses_a_package_whose_sample_no_longer_holds(home, tmp_path, monkeypatch):
    settings, store = home
    info = apipackages.get_package(store, demo.SERVICE, "v1")
    extract_verified(info.path, tmp_path / "pkg", apipackages.KIND)
    _break_hours(monkeypatch)
    with pytest.raises(feature_parity.ParityError, match="feature 'hour_of_day'"):
        load_service(tmp_path / "pkg")
    shutil.rmtree(tmp_path / "pkg")


def test_windowed_features_are_recomputed_from_the_events_not_copied(home, tmp_path, monkeypatch):
    """The sample's windowed features are replayed through a state store: real time that
    counted an event in its own window (not strictly before) is refused, at packaging and
    when a node loads a package built before."""
    settings, store = home
    info = apipackages.get_package(store, demo.SERVICE, "v1")
    extract_verified(info.path, tmp_path / "pkg", apipackages.KIND)
    real = windows.compute
    monkeypatch.setattr(windows, "compute", lambda spec, t, *a: real(spec, t + 1, *a))
    with pytest.raises(feature_parity.ParityError, match="feature 'card_txn_1h'"):
        load_service(tmp_path / "pkg")
    project = design.open_project(settings, demo.PROJECT)
    with pytest.raises(apipackages.PackageError, match="feature 'card_txn_1h' differently"):
        apipackages.create_package(settings.home, store, project, demo.SERVICE, "v-w", "", "test")


def _break_hours(monkeypatch):
    """A compiler bug on purpose: hour() one hour off (what a stale hand-written copy does)."""
    real = sql_functions.hour
    monkeypatch.setattr(sql_functions, "hour", lambda ts: (real(ts) + 1) % 24)
