"""The daily scenario bootstraps the API nodes' windowed state (issue 15, item 3).

A copy of the demo home whose automation node ran ``daily_scoring`` for a new day (its
``publish_card_windows`` step publishes the card transactions of the 7 days before the end
of that day). A real ``nodal serve`` started on that home with an EMPTY online store answers
transactions of the next day with batch's probabilities (1e-9), without any hand pre-fill;
so does a second replica started after the bootstrap, which replays nothing; the store holds
each card's events once.
"""

from __future__ import annotations

import dataclasses
import io
import shutil
from datetime import timedelta

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest

from engine.apinode import online_state
from engine.automation import runs
from engine.automation.node import AutomationNode
from engine.core import home as layout
from engine.deployer import enrichments
from engine.project import windows
from engine.storage.objects import LocalObjectStore
from nodal_demo import demo
from tests.e2e import procs
from tests.e2e.test_fresh_enrichment import _land_next_day
from tests.homes import copy_home, environ
from tests.window_state import as_request, batch_first_of_each_key, bootstrapped

URL = f"/public/api/v1/{demo.SERVICE}/{demo.ENDPOINT}/predict"


def _proba(port: int, rec: dict) -> float:
    answer = httpx.post(f"http://127.0.0.1:{port}{URL}", json={"features": rec}, timeout=30)
    assert answer.status_code == 200, answer.text
    return float(answer.json()["result"]["probas"]["1"])


def _serve(env: dict, log):
    port = procs.free_port()
    proc = procs.start(
        ["-m", "engine.serving", "--infra", demo.API_INFRA, "--port", str(port)], env, log
    )
    procs.wait_for(
        lambda: httpx.get(f"http://127.0.0.1:{port}/isAlive/").json()["services"],
        90,
        "the API node to load its package",
        log,
    )
    return proc, port


@pytest.fixture(scope="module")
def after_run(demo_env, tmp_path_factory):
    """The daily run of a new day on a copy of the demo home, and the day after landed."""
    root = tmp_path_factory.mktemp("window_bootstrap")
    copy, store = copy_home(demo_env.settings, root)
    shutil.copytree(demo_env.settings.data_dir, root / "data")
    settings = dataclasses.replace(copy, data_dir=root / "data")
    state_file = layout.apinode_home(settings.home, demo.API_INFRA) / online_state.FILE
    state_file.unlink(missing_ok=True)  # an EMPTY online store
    day = _land_next_day(settings.data_dir)
    node = AutomationNode(settings, store, demo.AUTOMATION_INFRA)
    node.sync()
    run_id = runs.request_run(
        store, demo.AUTOMATION_INFRA, demo.PROJECT, "daily_scoring", "test", {"day": day}
    )
    assert node.run(run_id) in (runs.SUCCESS, runs.WARNING), runs.get_run(store, run_id)
    pub = next(
        p
        for p in enrichments.versions(store, demo.PROJECT, "card_windows")
        if p.rows_selection == enrichments.WINDOW_EVENTS
    )
    assert pub.run_id == run_id and pub.as_of == day and pub.n_rows > 1000
    next_day = _land_next_day(settings.data_dir)
    project = node.project(demo.PROJECT)
    spec = windows.declared(project)["card_windows"]
    batch = batch_first_of_each_key(project, spec, "fraud_model", next_day)
    assert not state_file.exists() or not online_state.SqliteState(state_file).key_events(
        spec.space
    )
    return settings, root, spec, pub, state_file, batch


def test_a_fresh_api_node_answers_the_next_day_like_batch_from_its_first_request(after_run):
    settings, root, spec, pub, state_file, batch = after_run
    env = {**environ(settings), "NODAL_POLL_SECONDS": "0.5"}
    # The first sync replays the window state before the services are swapped in: the
    # node answers nothing before its windows are bootstrapped.
    proc, port = _serve(env, root / "api1.log")
    try:
        first, rest = batch.iloc[:40], batch.iloc[40:80]
        probas = [_proba(port, as_request(r)) for r in first.to_dict("records")]
        np.testing.assert_allclose(probas, first["batch_proba"], rtol=1e-9, atol=1e-12)
        assert bootstrapped(state_file, spec.space, pub.sha256)
        state = online_state.SqliteState(state_file)
        # The windows really mattered: many of these cards had transactions in the 24 h
        # before (all on the batch day, which only the bootstrap brought).
        assert (first["w_card_txn_24h"] > 0).sum() >= 10

        # A replica that starts after the bootstrap replays nothing and answers like batch.
        before = state.key_events(spec.space)
        proc2, port2 = _serve(env, root / "api2.log")
        try:
            assert state.key_events(spec.space) == before
            assert "replayed" not in (root / "api2.log").read_text()
            probas = [_proba(port2, as_request(r)) for r in rest.to_dict("records")]
            np.testing.assert_allclose(probas, rest["batch_proba"], rtol=1e-9, atol=1e-12)
        finally:
            procs.stop(proc2)
        # Each card holds its events once: those of the snapshot a scored transaction did
        # not move out of its 7 days, plus the transaction itself; other cards as replayed.
        snapshot = pq.read_table(
            io.BytesIO(enrichments.verified_bytes(LocalObjectStore(settings.home), pub))
        ).to_pandas()
        scored = {windows.key_text(r["card_id"]): r["ts"] for _, r in batch.iloc[:80].iterrows()}
        after = state.key_events(spec.space)
        held = snapshot["card_id"].map(windows.key_text).value_counts().to_dict()
        assert set(after) == set(held) | set(scored)
        for key, n in after.items():
            if key in scored:
                mine = snapshot[snapshot["card_id"].map(windows.key_text) == key]
                kept = int((mine["ts"] >= scored[key] - timedelta(days=7)).sum())
                assert n == kept + 1, key
            else:
                assert n == held[key], key
    finally:
        procs.stop(proc)
