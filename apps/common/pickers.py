"""Which deployment a Monitoring page shows: chosen on the page, shareable in the URL."""

from __future__ import annotations

import streamlit as st

from engine.deployer import deployments as deployer
from engine.deployer.deployments import Deployment
from engine.storage.control import ControlStore

URL_KEY = "deployment"


def project_deployment(store: ControlStore, key: str) -> Deployment | None:
    """The project deployment (a bundle on an automation node) the page shows.

    ``?deployment=<id>`` in the URL picks it; with several, a select box lets the user
    switch and the URL follows. None when no project is deployed yet.
    """
    deps = deployer.list_deployments(store, kind="project")
    if not deps:
        return None
    ids = [d.deployment_id for d in deps]
    wanted = st.query_params.get(URL_KEY)
    index = ids.index(wanted) if wanted in ids else 0
    chosen = ids[index]
    if len(ids) > 1:
        chosen = st.selectbox("Deployment", ids, index=index, key=key)
        st.query_params[URL_KEY] = chosen
    return deps[ids.index(chosen)]


NOTHING_DEPLOYED = (
    "No project is deployed to an automation node yet. Create a bundle in the Design "
    "Studio and deploy it from the Deployer Console (or `nodal deploy bundle`)."
)
