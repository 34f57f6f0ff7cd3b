"""The whole fraud lifecycle with real processes: runner and API node as subprocesses,
the CLI as ops use it, and the official Dataiku client as applications use it."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import dataikuapi
import httpx
import numpy as np
import pandas as pd
import pytest
from dataikuapi.utils import DataikuException

from engine.apinode import online_state
from engine.automation import dashboards
from engine.automation.node import AutomationNode
from engine.core import home as layout
from engine.deployer import deployments as deployer
from engine.deployer import enrichments
from engine.models.saved import SavedModel
from engine.project import windows
from engine.storage import datasets as ds
from engine.storage.control import open_store
from nodal_demo import datagen, demo
from tests.conftest import SMALL, make_settings
from tests.e2e import procs
from tests.homes import seed_test_actors
from tests.window_state import batch_first_of_each_key, bootstrapped

DAYS = 20
CONFIG = dataclasses.replace(SMALL, n_days=DAYS)
RAW_FIELDS = list(datagen.TRANSACTION_COLUMNS)


def _records(frame) -> list[dict]:
    out = []
    for rec in frame[RAW_FIELDS].to_dict("records"):
        rec["ts"] = rec["ts"].isoformat()
        rec["card_present"] = bool(rec["card_present"])
        out.append(rec)
    return out


@pytest.fixture(scope="module")
def lifecycle(tmp_path_factory):
    root = tmp_path_factory.mktemp("lifecycle")
    settings = make_settings(root)
    store = open_store(settings.control_store_url)
    demo.prepare(settings, store, CONFIG)
    seed_test_actors(store)
    env = {
        "NODAL_HOME": str(settings.home),
        "NODAL_DATA_DIR": str(settings.data_dir),
        "NODAL_POLL_SECONDS": "0.5",
        "NODAL_BASEMAP": "none",
    }
    # As README's lifecycle: the CLI below names no project, it acts on the current one.
    used = procs.nodal(["project", "use", demo.PROJECT], env)
    assert used.returncode == 0, used.stderr
    port = procs.free_port()
    runner_log, api_log = root / "runner.log", root / "api.log"
    runner = procs.start(["-m", "engine.runner", "--infra", demo.AUTOMATION_INFRA], env, runner_log)
    api = procs.start(
        ["-m", "engine.serving", "--infra", demo.API_INFRA, "--port", str(port)], env, api_log
    )
    try:
        procs.wait_for(
            lambda: httpx.get(f"http://127.0.0.1:{port}/isAlive/").json()["services"],
            60,
            "the API node to load its package",
            api_log,
        )
        dep_id = deployer.deployment_id_for(demo.PROJECT, demo.AUTOMATION_INFRA)
        procs.wait_for(
            lambda: deployer.get_deployment(store, dep_id).status == "HEALTHY",
            60,
            "the runner to activate bundle v1",
            runner_log,
        )
        yield settings, store, env, port, runner_log
    finally:
        procs.stop(runner)
        procs.stop(api)


def test_new_day_is_scored_by_the_runner_and_the_api_agrees(lifecycle):
    settings, store, env, port, runner_log = lifecycle
    # A new day lands in the landing zone (the generator is deterministic: earlier days are unchanged).
    datagen.generate(dataclasses.replace(CONFIG, n_days=DAYS + 1), settings.data_dir)
    new_day = str(CONFIG.start_day + timedelta(days=DAYS))

    result = procs.nodal(
        ["scenario", "run", "daily_scoring", "--infra", demo.AUTOMATION_INFRA], env
    )
    assert result.returncode == 0, result.stdout + result.stderr + runner_log.read_text()[-2000:]
    assert "SUCCESS" in result.stdout and f"of {demo.PROJECT}/daily_scoring on" in result.stdout

    published = dashboards.published(store, demo.PROJECT, "fraud_map", demo.AUTOMATION_INFRA)
    assert published.iloc[0]["day"] == new_day
    node = AutomationNode(settings, store, demo.AUTOMATION_INFRA)
    scored = ds.read_df(node.project(demo.PROJECT).dataset("scored"), [new_day])
    assert len(scored) > 500
    # The API answers the day after the run's day: the run published the card profiles as of
    # that day and the card windows' state through its end (the transactions of the 7 days
    # before). The API node's online store was empty (nothing was scored yet): it replays
    # the published state at its next poll, no pre-fill by hand.
    project = node.project(demo.PROJECT)
    spec = windows.declared(project)["card_windows"]
    pub = next(
        p
        for p in enrichments.versions(store, demo.PROJECT, "card_windows")
        if p.rows_selection == enrichments.WINDOW_EVENTS
    )
    assert pub.as_of == new_day and pub.n_rows > 500
    state_file = layout.apinode_home(settings.home, demo.API_INFRA) / online_state.FILE
    procs.wait_for(
        lambda: bootstrapped(state_file, spec.space, pub.sha256),
        60,
        "the API node to replay the published window state",
        runner_log,
    )
    next_day = str(CONFIG.start_day + timedelta(days=DAYS + 1))
    datagen.generate(dataclasses.replace(CONFIG, n_days=DAYS + 2), settings.data_dir)
    # Batch of that day (features built from the same profiles and windows), for each card's
    # first transaction of the day: what real time answers in any order once bootstrapped.
    batch = batch_first_of_each_key(project, spec, "fraud_model", next_day)
    threshold = SavedModel.load(project.active_model_dir("fraud_model")).threshold
    top = batch.sort_values("batch_proba", ascending=False).head(20)
    sample = pd.concat([top, batch.drop(top.index).sample(30, random_state=1)])
    assert (sample["w_card_txn_24h"] > 0).sum() >= 5  # the bootstrapped windows matter

    # The official client scores the same transactions one by one and in one batch.
    client = dataikuapi.APINodeClient(f"http://127.0.0.1:{port}", "fraud_detection")
    records = _records(sample)
    single = [
        client.predict_record("predict_fraud", rec)["result"]["probas"]["1"] for rec in records
    ]
    multi = client.predict_records("predict_fraud", [{"features": r} for r in records])["results"]
    np.testing.assert_allclose(single, sample["batch_proba"].to_numpy(), rtol=1e-9, atol=0)
    np.testing.assert_allclose([r["probas"]["1"] for r in multi], single, rtol=1e-12, atol=0)
    # MLflow's protocol on the same model: the same probabilities.
    split = {"columns": RAW_FIELDS, "data": [[r[c] for c in RAW_FIELDS] for r in records]}
    mlflow = httpx.post(
        f"http://127.0.0.1:{port}/public/api/v1/fraud_detection/predict_fraud/invocations",
        json={"dataframe_split": split},
    ).json()["predictions"]
    np.testing.assert_allclose(mlflow, single, rtol=1e-12, atol=0)
    flagged = [r["prediction"] == "1" for r in multi]
    assert flagged == (sample["batch_proba"] >= threshold).tolist()


def test_bad_requests_get_a_clear_400_and_no_echo(lifecycle):
    _, _, _, port, _ = lifecycle
    client = dataikuapi.APINodeClient(f"http://127.0.0.1:{port}", "fraud_detection")
    with pytest.raises(DataikuException, match="InvalidRecord: missing feature.*amount"):
        client.predict_record("predict_fraud", {"card_id": "C0000001", "ts": "2026-10-21T10:00:00"})
    url = f"http://127.0.0.1:{port}/public/api/v1/fraud_detection/predict_fraud/predict"
    secret = "4111111111111111-do-not-echo"
    body = {
        "features": {
            "transaction_id": "T-bad-amount",
            "ts": "2026-10-21T10:00:00",
            "card_id": secret,
            "merchant_id": "M1",
            "merchant_category": "grocery",
            "amount": "twelve",
            "channel": "online",
            "card_present": False,
            "merchant_latitude": 40.7,
            "merchant_longitude": -74.0,
        }
    }
    resp = httpx.post(url, json=body)
    assert resp.status_code == 400
    assert resp.json()["errorType"] == "InvalidRecord"
    assert "amount" in resp.json()["message"]
    assert secret not in resp.text and "twelve" not in resp.text
    for raw in (b"{not json", b"[1, 2]"):
        resp = httpx.post(url, content=raw)
        assert resp.status_code == 400 and "errorType" in resp.json()
    assert httpx.post(url.replace("predict_fraud", "nope"), json={}).status_code == 404


def test_failed_check_leaves_the_published_map_untouched(lifecycle):
    settings, store, env, _, _ = lifecycle
    before = dashboards.published(store, demo.PROJECT, "fraud_map", demo.AUTOMATION_INFRA)
    node = AutomationNode(settings, store, demo.AUTOMATION_INFRA)
    map_ref = node.project(demo.PROJECT).dataset("fraud_map")
    files_before = {p: p.stat().st_mtime_ns for p in map_ref.path.rglob("*.parquet")}
    # The bank starts sending an extra column: the "no new columns" check must stop the scenario.
    drifted = dataclasses.replace(CONFIG, n_days=DAYS + 2, extra_column_from_day=DAYS + 1)
    datagen.generate(drifted, settings.data_dir)

    result = procs.nodal(
        ["scenario", "run", "daily_scoring", "--infra", demo.AUTOMATION_INFRA], env
    )
    assert result.returncode == 1
    assert "FAILED" in result.stdout and "new columns: device_id" in result.stdout
    assert "SKIPPED" in result.stdout  # publish_map did not run

    after = dashboards.published(store, demo.PROJECT, "fraud_map", demo.AUTOMATION_INFRA)
    assert after["day"].tolist() == before["day"].tolist()
    assert {p: p.stat().st_mtime_ns for p in map_ref.path.rglob("*.parquet")} == files_before
    dep = deployer.get_deployment(
        store, deployer.deployment_id_for(demo.PROJECT, demo.AUTOMATION_INFRA)
    )
    assert dep.status in (
        "UNHEALTHY",
        "HEALTHY",
    )  # the runner reports the failed run at its next tick
