"""Nodes on separate hosts share only the control store and an S3 object store, no folder.

Four "hosts", each its own NODAL_HOME (and landing zone, compiled-model cache): the design
node + deployer, an automation node, an API node, Monitoring. They share the control store
and a real S3 server (SeaweedFS on loopback). The deployer's own folder is deleted once the
bundle and the package are published and deployed, so a node that read it instead of the
store would fail. Monitoring (a read-only S3 key) shows the map the automation node
published and the API node's query log, from the store. Deleting a host's home (its cache)
changes nothing but downloads. A changed object is refused naming it; an unreachable store
is a clear error.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import replace
from pathlib import Path

import httpx
import pandas as pd
import pytest

from engine.apinode import querylog
from engine.automation import runs
from engine.automation.node import AutomationNode
from engine.core.settings import Settings, load_settings
from engine.deployer import api_deployer, apipackages, bundles
from engine.deployer import deployments as deployer
from engine.design import projects as design
from engine.monitoring import apihealth, maps, mirror
from engine.storage.control import open_store
from engine.storage.objects import open_store as open_objects
from nodal_demo import demo
from tests.e2e import procs
from tests.homes import copy_home
from tests.s3server import S3Server, seaweedfs

PREFIX = "cluster"
BUNDLE, PACKAGE = "s3-b1", "s3-v1"
RECORD = {
    "transaction_id": "T-hosts-1",
    "ts": "2026-11-10T02:13:00",
    "card_id": "C0000042",
    "merchant_id": "M000017",
    "merchant_category": "electronics",
    "amount": 412.5,
    "channel": "online",
    "card_present": False,
    "merchant_latitude": 25.76,
    "merchant_longitude": -80.19,
}


@pytest.fixture(scope="module")
def s3(tmp_path_factory) -> S3Server:
    with seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


def _host(root: Path, control_url: str, store: dict[str, str], compiled: Path) -> Settings:
    """A host's settings: its own home, landing zone and compiled-model cache (a copy)."""
    root.mkdir(parents=True, exist_ok=True)
    if not (root / "compiled").exists():
        shutil.copytree(compiled, root / "compiled")  # a copy, not a shared folder
    return load_settings(
        environ={},
        home=root / "var",
        data_dir=root / "data",
        basemap="none",
        control_url=control_url,
        compiled_cache_dir=str(root / "compiled"),
        **store,
    )


def _env(settings: Settings) -> dict[str, str]:
    return {
        "NODAL_HOME": str(settings.home),
        "NODAL_DATA_DIR": str(settings.data_dir),
        "NODAL_CONTROL_URL": settings.control_url,
        "NODAL_COMPILED_CACHE": settings.compiled_cache_dir,
        "NODAL_BASEMAP": "none",
        "NODAL_POLL_SECONDS": "0.5",
        "NODAL_STORE_URL": settings.store_url,
        "NODAL_STORE_ENDPOINT": settings.store_endpoint,
        "NODAL_STORE_REGION": settings.store_region,
        "NODAL_STORE_ACCESS_KEY": settings.store_access_key,
        "NODAL_STORE_SECRET_KEY": settings.store_secret_key,
    }


@pytest.fixture(scope="module")
def cluster(demo_env, s3, tmp_path_factory):
    """The design/deployer host publishes bundle s3-b1 and package s3-v1 to S3 with the real
    CLI, deploys both, then loses its deployer folder."""
    root = tmp_path_factory.mktemp("hosts")
    copy, _ = copy_home(demo_env.settings, root / "design")
    compiled = demo_env.settings.compiled_cache
    design_host = replace(  # the copied home and landing zone, the S3 store
        _host(root / "design", copy.control_store_url, s3.settings(PREFIX), compiled),
        home=copy.home,
        data_dir=copy.data_dir,
    )
    store = open_store(design_host.control_store_url)
    env = _env(design_host)
    made = procs.nodal(["bundle", "create", BUNDLE, "--project", demo.PROJECT], env)
    assert made.returncode == 0, made.stderr
    made = procs.nodal(["api", "package", PACKAGE, "--project", demo.PROJECT], env)
    assert made.returncode == 0, made.stderr
    deployer.deploy_bundle(store, demo.PROJECT, BUNDLE, demo.AUTOMATION_INFRA, "test")
    api_deployer.deploy(store, demo.SERVICE, demo.API_INFRA, [(PACKAGE, 1.0)], "test")
    shutil.rmtree(design_host.home / "deployer")  # nodes must not need the deployer's folder
    # Nodes write what they produce (published extracts, compacted query logs); Monitoring
    # only reads (its key may read and list, nothing else).
    automation = _host(root / "automation", design_host.control_url, s3.settings(PREFIX), compiled)
    shutil.copytree(demo_env.settings.data_dir, automation.data_dir)  # its own landing zone
    api = _host(root / "api", design_host.control_url, s3.settings(PREFIX), compiled)
    homes = [design_host.home, automation.home, api.home]
    for a in homes:  # no home inside another: nothing shared through a folder
        assert all(a == b or not (a.is_relative_to(b) or b.is_relative_to(a)) for b in homes)
    return design_host, automation, api, store, root


@pytest.fixture(scope="module")
def monitoring(cluster, s3, demo_env):
    design_host, _, _, _, root = cluster
    return _host(
        root / "monitoring",
        design_host.control_url,
        s3.settings(PREFIX, node=True),
        demo_env.settings.compiled_cache,
    )


def _scored(settings: Settings, store) -> pd.DataFrame:
    node = AutomationNode(settings, store, demo.AUTOMATION_INFRA)
    ref = node.project(demo.PROJECT).dataset("scored")
    day = ref.partitions()[-1]
    frame = pd.read_parquet(ref.path / f"day={day}")
    return frame.sort_values(list(frame.columns[:1])).reset_index(drop=True)


def _run_scenario(settings: Settings, store) -> pd.DataFrame:
    node = AutomationNode(settings, store, demo.AUTOMATION_INFRA)
    [result] = node.sync()
    assert (result.status, result.active) == ("HEALTHY", BUNDLE), result.message
    run_id = runs.request_run(store, demo.AUTOMATION_INFRA, demo.PROJECT, "daily_scoring", "t")
    assert node.run(run_id) == runs.SUCCESS, runs.get_run(store, run_id)
    return _scored(settings, store)


def test_the_automation_node_runs_a_bundle_it_downloaded_from_s3(cluster, demo_env):
    _, automation, _, store, _ = cluster
    scored = _run_scenario(automation, store)
    cached = (
        automation.home / "automation" / demo.AUTOMATION_INFRA / "cache"
        / bundles.object_key(demo.PROJECT, BUNDLE)
    )  # fmt: skip
    assert cached.is_file()  # downloaded into the node's own home
    # The same scores as the single-home demo node computed with the same model and data.
    expected = _scored(demo_env.settings, demo_env.store)
    pd.testing.assert_frame_equal(scored, expected)
    # Deleting the node's home (cache, extracted bundle, data) changes nothing but a download.
    shutil.rmtree(automation.home)
    again = _run_scenario(automation, store)
    assert cached.is_file()
    pd.testing.assert_frame_equal(again, scored)


def test_monitoring_on_its_own_host_shows_the_map_the_node_published(cluster, monitoring, demo_env):
    """Monitoring mirrors the active bundle and the published extract from S3 into its own
    home; its map of the day is the single-home demo's, and survives losing that home."""
    _, automation, _, store, _ = cluster
    day = maps.load_map_day(demo_env.settings, demo_env.store, demo.PROJECT, demo.AUTOMATION_INFRA)
    assert day.ok, day.message
    seen = maps.load_map_day(monitoring, store, demo.PROJECT, demo.AUTOMATION_INFRA)
    assert seen.ok, seen.message
    assert (seen.day, seen.bundle_id) == (day.day, BUNDLE)
    assert seen.kpis == day.kpis and seen.model_threshold == day.model_threshold
    pd.testing.assert_frame_equal(seen.points, day.points)
    assert not automation.home.is_relative_to(monitoring.home)
    assert list((monitoring.home / "monitoring").rglob("data.parquet"))  # its own copy
    shutil.rmtree(monitoring.home)
    again = maps.load_map_day(monitoring, store, demo.PROJECT, demo.AUTOMATION_INFRA)
    assert again.ok and again.kpis == day.kpis


def _serve(settings: Settings, log: Path) -> tuple[object, str]:
    port = procs.free_port()
    proc = procs.start(
        ["-m", "engine.serving", "--infra", demo.API_INFRA, "--port", str(port)],
        _env(settings),
        log,
    )
    url = f"http://127.0.0.1:{port}"
    procs.wait_for(lambda: httpx.get(f"{url}/isAlive/").json()["services"], 90, "the API node", log)
    return proc, url


def _predict(url: str) -> dict:
    answer = httpx.post(
        f"{url}/public/api/v1/{demo.SERVICE}/{demo.ENDPOINT}/predict", json={"features": RECORD}
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["apiContext"]["serviceGeneration"] == PACKAGE
    return body["result"]


def test_the_api_node_serves_a_package_it_downloaded_from_s3(cluster):
    _, _, api, _, root = cluster
    proc, url = _serve(api, root / "api.log")
    try:
        first = _predict(url)
    finally:
        procs.stop(proc)
    cached = (
        api.home / "apinode" / demo.API_INFRA / "cache"
        / apipackages.object_key(demo.SERVICE, PACKAGE)
    )  # fmt: skip
    assert cached.is_file() and 0 < first["probas"]["1"] < 1
    shutil.rmtree(api.home)  # a new host, or a wiped cache: the same answers
    proc, url = _serve(api, root / "api2.log")
    try:
        assert _predict(url) == first
    finally:
        procs.stop(proc)
    assert cached.is_file()
    secret = api.store_secret_key
    assert secret not in (root / "api.log").read_text() + (root / "api2.log").read_text()


def test_monitoring_reads_the_api_nodes_query_log_from_s3(cluster, monitoring):
    """The API host's compacted query log (written when its processes stopped, above) reaches
    Monitoring on its own host through the store: the two predictions it answered."""
    _, _, api, store, _ = cluster
    assert list(querylog.read_queries(monitoring.home, demo.API_INFRA)) == []  # not its folder
    home = mirror.querylog_home(monitoring, store)
    assert home.is_relative_to(monitoring.home)
    seen = [
        q
        for q in querylog.read_queries(home, demo.API_INFRA)
        if q["generation"] == PACKAGE and q["status"] == 200
    ]
    assert [q["features"] for q in seen] and len(seen) == 2
    health = apihealth.endpoint_health(apihealth.source(home, demo.API_INFRA))
    assert health, "API health sees no query"


def test_a_changed_object_in_s3_is_refused_naming_it(cluster, s3, caplog):
    design_host, automation, api, store, root = cluster
    objects = open_objects(design_host)
    project = design.open_project(design_host, demo.PROJECT)
    bundles.create_bundle(design_host.home, store, project, "s3-b2", "", "test", objects=objects)
    deployer.create_infra(store, "auto-2", "automation", "prod", exist_ok=True, actor="test")
    deployer.deploy_bundle(store, demo.PROJECT, "s3-b2", "auto-2", "test")
    apipackages.create_package(
        design_host.home, store, project, demo.SERVICE, "s3-v2", "", "test", objects=objects
    )
    deployer.create_infra(store, "api-2", "apinode", "prod", exist_ok=True, actor="test")
    api_deployer.deploy(store, demo.SERVICE, "api-2", [("s3-v2", 1.0)], "test")
    # Someone with write access to the bucket swaps in other, self-consistent artifacts.
    bundle_key = bundles.object_key(demo.PROJECT, "s3-b2")
    package_key = apipackages.object_key(demo.SERVICE, "s3-v2")
    s3.overwrite(
        f"{PREFIX}/{bundle_key}", s3.read(f"{PREFIX}/{bundles.object_key(demo.PROJECT, BUNDLE)}")
    )
    s3.overwrite(
        f"{PREFIX}/{package_key}",
        s3.read(f"{PREFIX}/{apipackages.object_key(demo.SERVICE, PACKAGE)}"),
    )
    caplog.set_level(logging.INFO)
    node = AutomationNode(automation, store, "auto-2")
    [result] = node.sync()
    assert result.status == "ERROR" and result.active is None
    assert f"s3://{s3.bucket}/{PREFIX}/{bundle_key}" in result.message
    assert "recorded in the control store" in result.message
    assert not (node.home / "cache" / bundle_key).exists()  # nothing kept of it

    from engine.apinode.node import ApiNode

    apinode = ApiNode(api, store, "api-2")
    apinode.sync()
    assert apinode.services == {}
    status = deployer.get_deployment(store, deployer.deployment_id_for(demo.SERVICE, "api-2"))
    assert status.node_status == "ERROR"
    assert f"s3://{s3.bucket}/{PREFIX}/{package_key}" in status.node_message
    assert not any(r.exc_info for r in caplog.records)  # an expected refusal: no traceback


def test_an_unreachable_store_is_a_clear_error(cluster, s3, caplog, tmp_path):
    design_host, automation, api, store, root = cluster
    dead = f"http://127.0.0.1:{procs.free_port()}"
    caplog.set_level(logging.INFO)
    # A node: the deployment reports the store, the object and the reason; no traceback.
    fresh = replace(automation, home=tmp_path / "auto", store_endpoint=dead)
    node = AutomationNode(fresh, store, demo.AUTOMATION_INFRA)
    [result] = node.sync()
    assert result.status == "ERROR" and result.active is None
    assert f"object store s3://{s3.bucket}/{PREFIX} (endpoint {dead})" in result.message
    assert "connect" in result.message.lower()
    assert not any(r.exc_info for r in caplog.records)
    # The deployer: `nodal bundle create` exits 2 with the reason, records and keeps nothing.
    env = {**_env(design_host), "NODAL_STORE_ENDPOINT": dead}
    made = procs.nodal(["bundle", "create", "s3-b3", "--project", demo.PROJECT], env)
    assert made.returncode == 2, made.stderr
    assert made.stderr.startswith("error: bundle s3-b3 was not published: object store")
    assert "Traceback" not in made.stderr and design_host.store_secret_key not in made.stderr
    assert bundles.get_bundle(store, demo.PROJECT, "s3-b3", missing_ok=True) is None
    assert not (design_host.home / bundles.object_key(demo.PROJECT, "s3-b3")).exists()
    # Secrets are in no status message.
    for dep in deployer.list_deployments(store):
        assert design_host.store_secret_key not in (dep.node_message or "")
        assert s3.node_secret_key not in (dep.node_message or "")
