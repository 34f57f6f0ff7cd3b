"""API keys page: create (shown once), list and revoke the keys of API services."""

from __future__ import annotations

from dataclasses import asdict

import pandas as pd
import streamlit as st

from apps.common.auth import current_user, may
from apps.common.context import get_settings, get_store
from engine.core.errors import NodalError
from engine.deployer import apikeys, apipackages
from engine.deployer import deployments as deployer

settings = get_settings()
store = get_store(settings)


def _create() -> None:
    service = st.session_state.get("key_service")
    infra = st.session_state.get("key_infra") or None
    try:
        key, secret = apikeys.create_key(
            store,
            service,
            current_user(),
            None if infra == "every infrastructure" else infra,
            st.session_state.get("key_label", ""),
        )
    except NodalError as exc:
        st.session_state["key_outcome"] = ("error", str(exc))
        return
    st.session_state["key_outcome"] = ("secret", (key.key_id, secret))


def _revoke() -> None:
    try:
        key = apikeys.revoke_key(store, st.session_state.get("key_revoke", ""), current_user())
    except NodalError as exc:
        st.session_state["key_outcome"] = ("error", str(exc))
        return
    st.session_state["key_outcome"] = (
        "success",
        f"Key **{key.key_id}** revoked; API nodes refuse it from their next sync.",
    )


st.title("API keys")
outcome = st.session_state.pop("key_outcome", None)
if outcome:
    kind, payload = outcome
    if kind == "secret":
        st.success(
            f"Key **{payload[0]}** created. Copy it now: it is stored hashed and never shown again."
        )
        st.code(payload[1], language=None)
    else:
        (st.success if kind == "success" else st.error)(payload)

# Only the services whose keys this person manages (the engine refuses the others anyway).
services = sorted(
    s for s in {p.service for p in apipackages.list_packages(store)} if may("keys", service=s)
)
keys = [k for k in apikeys.list_keys(store) if k.service in services]
if keys:
    frame = pd.DataFrame([asdict(k) for k in keys])
    frame["infra_id"] = frame["infra_id"].fillna("*")
    frame["state"] = ["revoked" if r else "active" for r in frame["revoked_at"]]
    st.dataframe(
        frame[["key_id", "service", "infra_id", "label", "state", "created_by", "created_at"]],
        hide_index=True,
        width="stretch",
        key="keys_table",
    )
elif services:
    st.info(
        "No API key yet. A service whose access is `keys` refuses every request until one exists."
    )
if not services:
    st.info(
        "You manage the keys of no API service: that needs the `keys` right on the service "
        "(an administrator grants it).",
        icon=":material/lock:",
    )
    st.stop()
infras = [i["infra_id"] for i in deployer.list_infras(store) if i["kind"] == "apinode"]
with st.container(border=True):
    st.markdown("**New key**")
    c1, c2, c3 = st.columns(3)
    c1.selectbox("Service", services, key="key_service")
    c2.selectbox("Valid on", ["every infrastructure", *infras], key="key_infra")
    c3.text_input("Label", key="key_label", placeholder="who or what uses it")
    st.button("Create key", key="key_create", on_click=_create, disabled=not services)

active = [k.key_id for k in keys if k.revoked_at is None]
if active:
    with st.container(border=True):
        st.markdown("**Revoke a key**")
        st.selectbox("Key", active, key="key_revoke")
        st.button("Revoke", key="key_revoke_button", on_click=_revoke)
