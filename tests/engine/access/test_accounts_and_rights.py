"""Accounts, groups, rights and the audit trail, on a real control store."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from engine.access import accounts, audit, rights
from engine.access.rights import PermissionDenied
from engine.deployer import deployments as deployer
from engine.storage.control import open_store, users


@pytest.fixture
def store(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'control.db'}")
    assert accounts.bootstrap_admin(store, "root", "root-password")
    return store


def test_the_first_admin_is_made_once_and_nobody_else_bootstraps(store):
    assert not accounts.bootstrap_admin(store, "mallory", "mallory-pw1")
    assert [u.name for u in accounts.list_users(store)] == ["root"]


def test_a_new_user_can_do_nothing_until_granted(store):
    accounts.create_user(store, "root", "ana", password="ana-password")
    for kind, scope, right in [
        ("project", "p", "read"),
        ("infra", "prod-node", "deploy"),
        ("service", "svc", "keys"),
    ]:
        assert not rights.allowed(store, "ana", right, **{kind: scope})
    with pytest.raises(PermissionDenied, match="ana may not deploy to infra 'prod-node'"):
        rights.require(store, "ana", "deploy", infra="prod-node")


def test_unknown_and_disabled_people_are_refused(store):
    with pytest.raises(PermissionDenied, match="has no enabled account"):
        rights.require(store, "ghost", "read", project="p")
    accounts.create_user(store, "root", "bob", password="bob-password")
    rights.grant(store, "root", "user", "bob", "project", "p", "read")
    assert rights.allowed(store, "bob", "read", project="p")
    accounts.update_user(store, "root", "bob", enabled=False)
    assert not rights.allowed(store, "bob", "read", project="p")


def test_rights_imply_the_lesser_ones_and_stage_grants_cover_its_infras(store):
    accounts.create_user(store, "root", "ops1")
    deployer.create_infra(store, "node-prod", "automation", "prod", actor="root")
    rights.grant(store, "root", "user", "ops1", "stage", "prod", "deploy")
    assert rights.allowed(store, "ops1", "deploy", infra="node-prod")
    assert rights.allowed(store, "ops1", "view", infra="node-prod")
    assert not rights.allowed(store, "ops1", "run", infra="node-prod")
    rights.grant(store, "root", "user", "ops1", "project", "p", "admin")
    assert rights.allowed(store, "ops1", "read", project="p")
    assert not rights.allowed(store, "ops1", "read", project="other")


def test_group_grants_and_wildcards(store):
    accounts.create_user(store, "root", "viv")
    accounts.create_group(store, "root", "viewers")
    rights.grant(store, "root", "group", "viewers", "project", "*", "read")
    assert not rights.allowed(store, "viv", "read", project="any")
    accounts.set_membership(store, "root", "viewers", "viv", True)
    assert rights.allowed(store, "viv", "read", project="any")
    assert not rights.allowed(store, "viv", "write", project="any")
    assert rights.scopes_with(store, "viv", "project", "read") is None  # every project
    assert rights.scopes_with(store, "viv", "project", "write") == set()


def test_only_admins_manage_people_and_rights(store):
    accounts.create_user(store, "root", "eve", password="eve-password")
    with pytest.raises(PermissionDenied, match="not an administrator"):
        accounts.create_user(store, "eve", "eve2")
    with pytest.raises(PermissionDenied):
        rights.grant(store, "eve", "user", "eve", "project", "*", "admin")
    with pytest.raises(PermissionDenied):
        accounts.update_user(store, "eve", "eve", admin=True)
    assert not accounts.get_user(store, "eve").is_admin


@pytest.mark.parametrize(
    "args, message",
    [
        (("user", "root", "project", "p", "deploy"), "not a right on a project"),
        (("user", "root", "galaxy", "p", "read"), "no such scope kind"),
        (("user", "nobody", "project", "p", "read"), "no user called"),
        (("role", "root", "project", "p", "read"), "a user or a group"),
    ],
)
def test_bad_grants_are_refused_and_change_nothing(store, args, message):
    with pytest.raises(rights.NodalError, match=message):
        rights.grant(store, "root", *args)
    assert rights.list_grants(store) == []


def test_the_last_admin_cannot_be_removed(store):
    with pytest.raises(accounts.AccountError, match="no enabled administrator"):
        accounts.update_user(store, "root", "root", enabled=False)
    assert accounts.get_user(store, "root").enabled


def test_passwords_are_hashed_and_sign_in_backs_off(store):
    accounts.create_user(store, "root", "ana", password="correct horse")
    with store.read() as conn:
        stored = conn.execute(
            sa.select(users.c.password_hash).where(users.c.name == "ana")
        ).scalar()
    assert "correct horse" not in stored and stored.startswith("$argon2id$")
    assert accounts.sign_in(store, "ana", "correct horse").name == "ana"
    for _ in range(accounts.FREE_FAILURES):
        with pytest.raises(accounts.SignInRefused, match="wrong user name or password"):
            accounts.sign_in(store, "ana", "wrong")
    # now the account waits: even the right password is not checked
    with pytest.raises(accounts.SignInRefused, match="too many failed sign-ins"):
        accounts.sign_in(store, "ana", "correct horse")
    failures = audit.events(store, action="sign_in.failed", object_id="ana")
    assert len(failures) == accounts.FREE_FAILURES


def test_an_unknown_name_gets_the_same_answer_as_a_wrong_password(store):
    with pytest.raises(accounts.SignInRefused, match="wrong user name or password"):
        accounts.sign_in(store, "nobody", "whatever1")


def test_sessions_survive_until_they_expire_or_the_person_signs_out(store):
    token = accounts.open_session(store, "root", hours=1)
    assert accounts.session_principal(store, token).name == "root"
    assert accounts.session_principal(store, token + "x") is None
    accounts.close_session(store, token)
    assert accounts.session_principal(store, token) is None
    expired = accounts.open_session(store, "root", hours=-1)
    assert accounts.session_principal(store, expired) is None


def test_a_password_change_ends_the_sessions(store):
    token = accounts.open_session(store, "root")
    accounts.set_password(store, "root", "root", "a-new-password")
    assert accounts.session_principal(store, token) is None


def test_external_sign_in_maps_groups_both_ways(store):
    accounts.create_group(store, "root", "analysts")
    accounts.create_group(store, "root", "ops")
    group_map = {"data-science": "analysts", "platform": "ops"}
    who = accounts.sign_in_external(store, "kim", "Kim", ["data-science", "hr"], group_map)
    assert who.groups == ("analysts",) and not who.is_admin
    who = accounts.sign_in_external(store, "kim", "Kim", ["platform"], group_map)
    assert who.groups == ("ops",)


def test_every_change_is_in_the_audit_trail_with_its_person(store):
    accounts.create_user(store, "root", "ana")
    accounts.create_group(store, "root", "analysts")
    accounts.set_membership(store, "root", "analysts", "ana", True)
    rights.grant(store, "root", "group", "analysts", "project", "p", "write")
    rights.revoke(store, "root", "group", "analysts", "project", "p", "write")
    actions = [(e.actor, e.action) for e in audit.events(store)][::-1]
    assert actions == [
        ("root", "user.create"),  # the bootstrap admin
        ("root", "user.create"),
        ("root", "group.create"),
        ("root", "group.add"),
        ("root", "grant"),
        ("root", "revoke"),
    ]


def test_a_projects_admin_grants_rights_on_that_project_only(store):
    accounts.create_user(store, "root", "lead")
    accounts.create_user(store, "root", "junior")
    rights.grant(store, "root", "user", "lead", "project", "p", "admin")
    rights.grant(store, "lead", "user", "junior", "project", "p", "write")
    assert rights.allowed(store, "junior", "write", project="p")
    assert rights.revoke(store, "lead", "user", "junior", "project", "p", "write")
    with pytest.raises(PermissionDenied, match="may not administer project 'q'"):
        rights.grant(store, "lead", "user", "junior", "project", "q", "read")
    with pytest.raises(PermissionDenied, match="not an administrator"):
        rights.grant(store, "lead", "user", "junior", "project", "*", "read")
    with pytest.raises(PermissionDenied, match="not an administrator"):
        rights.grant(store, "lead", "user", "junior", "stage", "prod", "deploy")
