"""API Designer saves go through the definitions guard: two editors of one service never
silently overwrite each other (the second is refused and shown the difference)."""

from __future__ import annotations

import pytest

from engine.design import apidesigner
from engine.project import definitions
from engine.project.definitions import DefinitionConflict
from tests.engine.small_project import make_small

SERVICE = "shops_api"


@pytest.fixture
def small(tmp_path):
    return make_small(tmp_path)


def _file(small) -> bytes:
    return (small.project().root / "api_services" / f"{SERVICE}.yaml").read_bytes()


def _lookup(small, endpoint: str, loaded=None, **kw) -> str:
    return apidesigner.save_lookup_endpoint(
        small.project(), SERVICE, endpoint, "shops", "shop_id", loaded=loaded, **kw
    )


def test_second_editor_of_an_endpoint_is_refused_with_the_difference(small):
    _lookup(small, "by_shop")
    alice = apidesigner.read_service(small.project(), SERVICE)
    bob = apidesigner.read_service(small.project(), SERVICE)
    assert alice == bob and alice.version != definitions.ABSENT
    new_version = _lookup(small, "by_city_shop", alice, columns=["city"])
    after_alice = _file(small)
    assert definitions.version_of(after_alice.decode()) == new_version

    with pytest.raises(DefinitionConflict) as refused:
        _lookup(small, "bob_endpoint", bob, columns=["monthly_sales"])
    assert _file(small) == after_alice  # nothing written
    diff = refused.value.diff
    assert refused.value.path == f"api_services/{SERVICE}.yaml"
    assert "-- id: by_city_shop" in diff  # theirs, which bob never saw
    assert "+- id: bob_endpoint" in diff  # bob's own change
    assert refused.value.current_version == new_version

    # Reloaded, bob's save lands on top of alice's.
    bob = apidesigner.read_service(small.project(), SERVICE)
    _lookup(small, "bob_endpoint", bob)
    ids = [e["id"] for e in small.project().api_services[SERVICE]["endpoints"]]
    assert ids == ["by_shop", "by_city_shop", "bob_endpoint"]


def test_a_new_service_created_twice_at_once_is_refused_the_second_time(small):
    alice = apidesigner.read_service(small.project(), SERVICE)
    bob = apidesigner.read_service(small.project(), SERVICE)
    assert alice.version == definitions.ABSENT
    _lookup(small, "alice", alice)
    with pytest.raises(DefinitionConflict):
        _lookup(small, "bob", bob)
    assert [e["id"] for e in small.project().api_services[SERVICE]["endpoints"]] == ["alice"]


def test_test_query_add_and_remove_are_guarded_too(small):
    _lookup(small, "by_shop")
    project = small.project()
    apidesigner.add_test_queries(
        project, SERVICE, "by_shop", [{"name": "q1", "data": {"shop_id": 1}}]
    )
    alice = apidesigner.read_service(project, SERVICE)
    bob = apidesigner.read_service(project, SERVICE)
    apidesigner.add_test_queries(
        project, SERVICE, "by_shop", [{"name": "q2", "data": {"shop_id": 2}}], alice
    )
    before = _file(small)
    with pytest.raises(DefinitionConflict) as refused:
        apidesigner.add_test_queries(
            project, SERVICE, "by_shop", [{"name": "q3", "data": {"shop_id": 3}}], bob
        )
    assert "name: q2" in refused.value.diff and "name: q3" in refused.value.diff
    with pytest.raises(DefinitionConflict):
        apidesigner.remove_test_query(project, SERVICE, "by_shop", "q1", bob)
    assert _file(small) == before

    fresh = apidesigner.read_service(project, SERVICE)
    apidesigner.remove_test_query(project, SERVICE, "by_shop", "q1", fresh)
    queries = small.project().api_services[SERVICE]["endpoints"][0]["test_queries"]
    assert [q["name"] for q in queries] == ["q2"]


def test_refused_edits_change_nothing_and_cli_edits_apply_to_the_current_file(small):
    _lookup(small, "by_shop")
    project = small.project()
    before = _file(small)
    with pytest.raises(apidesigner.DesignerError, match="missing lookup key"):
        apidesigner.add_test_queries(project, SERVICE, "by_shop", [{"name": "x", "data": {}}])
    with pytest.raises(apidesigner.DesignerError, match="no test query 'nope'"):
        apidesigner.remove_test_query(project, SERVICE, "by_shop", "nope")
    with pytest.raises(apidesigner.DesignerError, match="no endpoint"):
        apidesigner.add_test_queries(project, SERVICE, "ghost", [{"name": "x", "data": {}}])
    assert _file(small) == before
    # Without a loaded version (the CLI), two structured edits both land.
    apidesigner.add_test_queries(
        project, SERVICE, "by_shop", [{"name": "a", "data": {"shop_id": 1}}]
    )
    apidesigner.add_test_queries(
        project, SERVICE, "by_shop", [{"name": "b", "data": {"shop_id": 2}}]
    )
    queries = small.project().api_services[SERVICE]["endpoints"][0]["test_queries"]
    assert [q["name"] for q in queries] == ["a", "b"]
    assert not list((project.root / "api_services").glob(".*.tmp"))
