"""Monitoring: statuses, the daily map of any project's map dashboards, pipeline health,
model quality and API health.

Run with ``streamlit run apps/monitoring/app.py``; ``NODAL_HOME`` names the home and
``NODAL_BASEMAP=none`` draws the map without online tiles.
"""

from __future__ import annotations

import streamlit as st

from apps.common.auth import require_sign_in
from apps.common.context import get_settings

st.set_page_config(
    page_title="nodal · Monitoring", page_icon=":material/monitoring:", layout="wide"
)

require_sign_in("Monitoring")

with st.sidebar:
    st.title("Monitoring")
    st.caption(f"Home: `{get_settings().home}`")

page = st.navigation(
    [
        st.Page(
            "views/status.py", title="Status", icon=":material/health_and_safety:", default=True
        ),
        # The file (and so the URL, /fraud_map) is kept for the links already shared.
        st.Page("views/fraud_map.py", title="Map", icon=":material/map:"),
        st.Page(
            "views/pipeline_health.py", title="Pipeline health", icon=":material/account_tree:"
        ),
        st.Page("views/model_quality.py", title="Model quality", icon=":material/insights:"),
        st.Page("views/api_health.py", title="API health", icon=":material/api:"),
    ]
)
page.run()
