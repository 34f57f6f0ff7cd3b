"""Home: one worst-of status per project deployment and per API endpoint.

The page only reads: a change (e.g. HEALTHY → UNHEALTHY) is alerted once, through the log and,
when ``NODAL_STATUS_WEBHOOK`` is set, a webhook, by the automation runner (its tick calls
``status.alert_changes``), never because someone opened this page.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from apps.common.auth import current_user
from apps.common.context import get_settings, get_store
from apps.common.status import status_badge, style_status
from engine.monitoring import mirror, status

settings = get_settings()
store = get_store(settings)

st.title("Status")
statuses = status.all_statuses(store, mirror.querylog_home(settings, store), current_user())
if not statuses:
    st.info(
        "Nothing is deployed yet, so there is nothing to watch. Deploy a bundle to an "
        "automation node or an API package to an API node (Deployer Console, or "
        "`nodal deploy bundle …` / `nodal api deploy …`), and its status appears here.",
        icon=":material/info:",
    )
    st.stop()

overall = status.worst([s.status for s in statuses])
st.markdown(f"Overall: {status_badge(overall)}")

for kind, title in (("deployment", "Project deployments"), ("endpoint", "API endpoints")):
    rows = [s for s in statuses if s.kind == kind]
    st.subheader(title)
    if not rows:
        st.caption("None deployed yet." if kind == "deployment" else "No API service deployed yet.")
        continue
    frame = pd.DataFrame([{"what": s.label, "status": s.status, "why": s.message} for s in rows])
    st.dataframe(
        style_status(frame, "status"), hide_index=True, width="stretch", key=f"status_{kind}"
    )
st.caption(
    "Worst-of: a deployment is as bad as the worst of its node's report, its scenarios' last "
    "runs and its newest model evaluation; an endpoint, of its deployment and its last hour "
    "of traffic. Changes are alerted once by the automation runner (log"
    + (", webhook" if settings.status_webhook else "; set NODAL_STATUS_WEBHOOK for a webhook")
    + ")."
)
