"""Which deployment (and dashboard) a Monitoring page shows: chosen on the page, shareable in
the URL, defaulting to the newest activity."""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from apps.common.auth import current_user
from engine.access import rights
from engine.deployer import deployments as deployer
from engine.deployer.deployments import Deployment
from engine.storage.control import ControlStore

URL_KEY = "deployment"
DASHBOARD_URL_KEY = "dashboard"


def from_url(
    label: str,
    options: list[str],
    key: str,
    url_key: str,
    default: str | None = None,
    format_func: Callable[[str], str] = str,
) -> str | None:
    """One of ``options``: the URL's ``?<url_key>=`` if it names one, else ``default`` (else
    the first). With several options a select box lets the user switch; the URL always names
    the choice, so a link keeps showing it when more options appear. None without options."""
    if not options:
        return None
    wanted = st.query_params.get(url_key)
    if wanted in options:
        index = options.index(wanted)
    else:
        index = options.index(default) if default in options else 0
    chosen = options[index]
    if len(options) > 1:
        if st.session_state.get(key) not in options:
            st.session_state.pop(key, None)
        chosen = st.selectbox(label, options, index=index, key=key, format_func=format_func)
    st.query_params[url_key] = chosen
    return chosen


def project_deployment(
    store: ControlStore, key: str, newest: dict[tuple[str, str], str] | None = None
) -> Deployment | None:
    """The project deployment (a bundle on an automation node) the page shows.

    ``?deployment=<id>`` in the URL picks it; otherwise the one with the newest activity in
    ``newest`` (``(infra_id, project) → a date or timestamp``: what the page shows, e.g. its
    newest published day), else the first. With several, a select box lets the user switch
    and the URL follows. None when no project is deployed yet.
    """
    readable = rights.scopes_with(store, current_user(), "project", "read")
    every = deployer.list_deployments(store, kind="project")
    deps = [d for d in every if readable is None or d.target in readable]
    if every and not deps:  # deployed, but nothing this person may read
        st.info(NOTHING_GRANTED, icon=":material/lock:")
        st.stop()
    if not deps:
        return None
    ids = [d.deployment_id for d in deps]
    active = {d.deployment_id: (newest or {}).get((d.infra_id, d.target)) for d in deps}
    ranked = sorted((when, dep) for dep, when in active.items() if when)
    default = ranked[-1][1] if ranked else ids[0]
    chosen = from_url("Deployment", ids, key, URL_KEY, default)
    return deps[ids.index(chosen)] if chosen else None


NOTHING_GRANTED = (
    "No deployed project you may read: an administrator grants `read` on a project "
    "(`nodal grant read --user NAME --on project:NAME`)."
)
NOTHING_DEPLOYED = (
    "No project is deployed to an automation node yet. Create a bundle in the Design "
    "Studio and deploy it from the Deployer Console (or `nodal deploy bundle`)."
)
