"""The API node loads only the package that was published, and one broken package does not
stop the others: its service is reported as ERROR, the other services are served (real
zips, a real control store)."""

from __future__ import annotations

import pandas as pd
import pytest
import sqlalchemy as sa

import engine.apinode.node as api_node
from engine.apinode.node import ApiNode
from engine.core.artifacts import sha256_file
from engine.deployer import api_deployer, apipackages
from engine.deployer import deployments as deployer
from engine.storage.control import api_packages as package_rows
from tests.engine.core.zips import patch_member, swap
from tests.engine.small_project import make_small

INFRA = "api"
SERVICE = """\
service_id: {name}
endpoints:
  - id: shop
    type: lookup
    dataset: shops
    key: shop_id
    columns: [city]
"""
LOOKUP = "endpoints/shop/lookup.parquet"


@pytest.fixture
def two_services(tmp_path):
    """``shops_api`` and ``cities_api`` (lookups of the shop project), v1 each, deployed."""
    small = make_small(tmp_path)
    (small.project().root / "api_services").mkdir(exist_ok=True)
    for name in ("shops_api", "cities_api"):
        (small.project().root / "api_services" / f"{name}.yaml").write_text(
            SERVICE.format(name=name)
        )
    deployer.create_infra(small.store, INFRA, "apinode", "prod", actor="test")
    infos = {}
    for name in ("shops_api", "cities_api"):
        infos[name] = apipackages.create_package(
            small.settings.home, small.store, small.project(), name, "v1", "", "ops"
        )
        api_deployer.deploy_package(small.store, name, "v1", INFRA, "ops")
    return small.settings, small.store, infos


def _status(store, service):
    dep = deployer.get_deployment(store, deployer.deployment_id_for(service, INFRA))
    return dep.status, dep.node_version, dep.node_message


def _serves_shops(node):
    found = node.services["shops_api"].pick(None).endpoints["shop"].lookup({"shop_id": 3})
    return found == {"data": {"shop_id": 3, "city": "Austin"}, "found": True}


def test_a_swapped_package_with_a_self_consistent_manifest_is_refused(two_services):
    settings, store, infos = two_services
    path = infos["cities_api"].path
    rows = pd.DataFrame({"shop_id": [3], "city": ["Elsewhere"]})  # valid, not published
    swap(path, {LOOKUP: rows.to_parquet(index=False)})
    apipackages.verify_package(path, "cities_api", "v1")  # the manifest agrees with itself

    node = ApiNode(settings, store, INFRA)
    node.sync()
    assert _serves_shops(node) and "cities_api" not in node.services
    status, version, message = _status(store, "cities_api")
    assert (status, version) == ("ERROR", None)
    assert message.startswith("cannot load v1 (api_package v1.zip: the file's SHA-256")
    assert "recorded in the control store" in message and "still serving nothing" in message
    assert not (node.home / "packages" / "cities_api" / "v1").exists()


@pytest.mark.parametrize("how", ["unreadable member", "unexpected error"])
def test_one_broken_package_does_not_stop_the_other_services(
    two_services, monkeypatch, caplog, how
):
    settings, store, infos = two_services
    info = infos["cities_api"]
    if how == "unreadable member":
        # A member no zip reader can decompress, in the zip the control store vouches for.
        patch_member(info.path, LOOKUP, method=99)
        with store.write() as conn:
            conn.execute(
                sa.update(package_rows)
                .where(package_rows.c.service == "cities_api")
                .values(sha256=sha256_file(info.path))
            )
        expected = f"cannot load v1 (api_package v1.zip: member {LOOKUP} is corrupted"
    else:
        load = api_node.load_service

        def failing(root):
            if "cities_api" in str(root):
                raise RuntimeError("boom while loading")
            return load(root)

        monkeypatch.setattr(api_node, "load_service", failing)
        expected = "cannot load v1 (unexpected RuntimeError: boom while loading"

    node = ApiNode(settings, store, INFRA)
    node.sync()
    assert _serves_shops(node) and "cities_api" not in node.services
    assert _status(store, "shops_api")[:2] == ("HEALTHY", "v1")
    status, version, message = _status(store, "cities_api")
    assert (status, version) == ("ERROR", None)
    assert message.startswith(expected), message
    if how == "unexpected error":
        assert "Traceback" in caplog.text and "boom while loading" in caplog.text
