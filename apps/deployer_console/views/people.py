"""People & rights page: administrators manage accounts, groups and rights; a project's
administrators grant rights on that project; everyone sees their own rights.

Everything here goes through engine.access, which refuses anyone without the right; the
page only hides the forms from them.
"""

from __future__ import annotations

from dataclasses import asdict

import pandas as pd
import streamlit as st

from apps.common.auth import current_user, signed_in
from apps.common.context import get_settings, get_store
from engine.access import accounts, rights
from engine.core.errors import NodalError

store = get_store(get_settings())
me = current_user()


def _do(fn, *args, success: str, **kwargs) -> None:  # noqa: ANN001
    try:
        fn(store, me, *args, **kwargs)
    except NodalError as exc:
        st.session_state["people_outcome"] = ("error", str(exc))
    else:
        st.session_state["people_outcome"] = ("success", success)


def _show_outcome() -> None:
    outcome = st.session_state.pop("people_outcome", None)
    if outcome:
        getattr(st, outcome[0])(outcome[1])


def _grant_form(key: str, projects: list[str] | None) -> None:
    """Grant or revoke a right. ``projects``: the projects a project administrator grants
    on (rights on them only); None: any scope, for administrators."""
    with st.form(key, clear_on_submit=True):
        c1, c2, c3 = st.columns(3)
        principal = c1.text_input("User or group name")
        kind = c1.radio("is a", ["user", "group"], horizontal=True)
        if projects is None:
            on = c2.text_input(
                "On (KIND:NAME)",
                help="project:NAME, stage:NAME, infra:ID or service:ID; NAME * means every one",
            )
            right = c3.selectbox("Right", sorted({r for rs in rights.RIGHTS.values() for r in rs}))
            c3.caption(
                "project: read, write, admin · infra or stage: view, run, configure, deploy · "
                "service: keys, access"
            )
        else:
            on = "project:" + (c2.selectbox("On project", projects) or "")
            right = c3.selectbox("Right", list(rights.RIGHTS["project"]))
        scope_kind, _, scope = on.strip().partition(":")
        args = (kind, principal.strip(), scope_kind, scope.strip(), right)
        grant_it, revoke_it = st.columns(2)
        if grant_it.form_submit_button("Grant", type="primary"):
            _do(
                rights.grant,
                *args,
                success=f"{principal} may now {right} on {scope_kind} {scope}; it takes effect now.",
            )
            st.rerun()
        if revoke_it.form_submit_button("Revoke"):
            _do(
                rights.revoke,
                *args,
                success=f"Revoked {right} on {scope_kind} {scope} from {principal}.",
            )
            st.rerun()


st.title("People & rights")
who = signed_in()
if who is None or not who.is_admin:
    st.info("Administrators manage people and rights. Ask one for the rights you need.")
    st.subheader("Your rights")
    every_grant = rights.list_grants(store)
    mine = [
        asdict(g)
        for g in every_grant
        if (g.principal_kind == "user" and g.principal == me)
        or (g.principal_kind == "group" and who and g.principal in who.groups)
    ]
    if mine:
        st.dataframe(pd.DataFrame(mine), hide_index=True)
    else:
        st.caption("None yet.")
    administered = sorted(rights.scopes_with(store, me, "project", "admin") or ())
    if administered:
        # A project's administrators grant rights on it (rights.grant checks that too).
        st.subheader("Rights on the projects you administer")
        _show_outcome()
        on_them = [
            asdict(g) for g in every_grant if g.scope_kind == "project" and g.scope in administered
        ]
        if on_them:
            st.dataframe(pd.DataFrame(on_them), hide_index=True, width="stretch")
        _grant_form("project_grant", administered)
    st.stop()

_show_outcome()

users = accounts.list_users(store)
st.subheader("Accounts")
st.dataframe(
    pd.DataFrame([{**asdict(u), "groups": ", ".join(u.groups)} for u in users]),
    hide_index=True,
    width="stretch",
)
with st.form("new_user", clear_on_submit=True):
    st.markdown("**New account** (no rights until granted)")
    c1, c2, c3 = st.columns(3)
    name = c1.text_input("User name")
    password = c2.text_input("Password", type="password")
    admin = c3.checkbox("Administrator")
    if st.form_submit_button("Create account"):
        _do(
            accounts.create_user,
            name.strip(),
            password=password or None,
            admin=admin,
            success=f"Account {name.strip()} created.",
        )
        st.rerun()

groups = accounts.list_groups(store)
st.subheader("Groups")
if groups:
    st.dataframe(
        pd.DataFrame([{**g, "members": ", ".join(g["members"])} for g in groups]),
        hide_index=True,
        width="stretch",
    )
with st.form("membership", clear_on_submit=True):
    c1, c2, c3 = st.columns(3)
    group = c1.text_input("Group (created if new)")
    user = c2.selectbox("Person", [u.name for u in users], index=None)
    add = c3.radio("Change", ["add", "remove"], horizontal=True)
    if st.form_submit_button("Apply"):
        if group.strip() and group.strip() not in {g["name"] for g in groups}:
            _do(accounts.create_group, group.strip(), success=f"Group {group.strip()} created.")
        _do(
            accounts.set_membership,
            group.strip(),
            user or "",
            add == "add",
            success=f"{user} {'added to' if add == 'add' else 'removed from'} {group.strip()}.",
        )
        st.rerun()

st.subheader("Rights")
granted = rights.list_grants(store)
if granted:
    st.dataframe(pd.DataFrame([asdict(g) for g in granted]), hide_index=True, width="stretch")
_grant_form("grant", None)
