"""Audit trail page: who changed what, when, from what to what (read-only; filters only)."""

from __future__ import annotations

from dataclasses import asdict

import pandas as pd
import streamlit as st

from apps.common.context import get_settings, get_store
from engine.access import audit

store = get_store(get_settings())

st.title("Audit trail")
st.caption(
    "Every change made through nodal (deployments, runs, variables, triggers, bundles, "
    "packages, API access and keys, people and rights) and every failed sign-in, with the "
    "person who made it. Nothing here can be edited."
)
left, middle, right = st.columns(3)
actor = left.text_input("Person", key="audit_actor").strip() or None
action = middle.text_input("Action (e.g. deployment.deploy)", key="audit_action").strip() or None
obj = right.text_input("Object id", key="audit_object").strip() or None
events = audit.events(store, actor=actor, action=action, object_id=obj, limit=1000)
if not events:
    st.info("No change recorded" + (" with these filters." if actor or action or obj else " yet."))
else:
    frame = pd.DataFrame([asdict(e) for e in events]).drop(columns=["id"])
    for column in ("before", "after"):
        frame[column] = frame[column].map(lambda v: "" if v is None else str(v))
    st.dataframe(frame, hide_index=True, width="stretch")
