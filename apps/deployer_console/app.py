"""Deployer Console: ops deploy bundles to automation nodes and watch every deployment.

Run with ``streamlit run apps/deployer_console/app.py``; ``NODAL_HOME`` names the home.
"""

from __future__ import annotations

import streamlit as st

from apps.common.auth import require_sign_in
from apps.common.context import get_settings

st.set_page_config(
    page_title="nodal · Deployer Console", page_icon=":material/rocket_launch:", layout="wide"
)

require_sign_in("Deployer Console")

with st.sidebar:
    st.title("Deployer Console")
    st.caption(f"Home: `{get_settings().home}`")

page = st.navigation(
    [
        st.Page(
            "views/deployments.py",
            title="Deployments",
            icon=":material/rocket_launch:",
            default=True,
        ),
        st.Page("views/bundles.py", title="Bundles & packages", icon=":material/inventory_2:"),
        st.Page("views/api_deployments.py", title="API deployments", icon=":material/api:"),
        st.Page("views/api_keys.py", title="API keys", icon=":material/key:"),
        st.Page("views/infrastructures.py", title="Infrastructures", icon=":material/dns:"),
        st.Page("views/runs.py", title="Scenario runs", icon=":material/timeline:"),
        st.Page("views/people.py", title="People & rights", icon=":material/group:"),
        st.Page("views/audit.py", title="Audit trail", icon=":material/history:"),
    ]
)
page.run()
