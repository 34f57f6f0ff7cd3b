"""Monitoring: what business users look at, starting with the daily fraud map.

Run with ``streamlit run apps/monitoring/app.py``; ``NODAL_HOME`` names the home and
``NODAL_BASEMAP=none`` draws the map without online tiles.
"""

from __future__ import annotations

import streamlit as st

from apps.common.context import get_settings

st.set_page_config(
    page_title="nodal · Monitoring", page_icon=":material/monitoring:", layout="wide"
)

with st.sidebar:
    st.title("Monitoring")
    st.caption(f"Home: `{get_settings().home}`")

page = st.navigation(
    [st.Page("pages/fraud_map.py", title="Fraud map", icon=":material/map:", default=True)]
)
page.run()
