"""Infrastructures page: stages in lifecycle order, each with the infrastructures the person
holds a right on and what they run; for administrators, forms to add a stage and an
infrastructure."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from apps.common.auth import current_user, signed_in
from apps.common.context import get_settings, get_store
from apps.common.status import status_badge, style_status
from engine.core.errors import NodalError
from engine.deployer import deployments as deployer
from engine.deployer import visibility

settings = get_settings()
store = get_store(settings)


def _add_stage() -> None:
    name = (st.session_state.get("stage_name") or "").strip()
    after = st.session_state.get("stage_after")
    try:
        deployer.create_stage(store, name, after, actor=current_user())
    except NodalError as exc:
        st.session_state["stage_outcome"] = ("error", f"Stage refused: {exc}")
        return
    st.session_state["stage_outcome"] = ("success", f"Stage **{name}** added after {after}.")
    st.session_state["stage_name"] = ""


def _add_infra() -> None:
    infra_id = (st.session_state.get("infra_id") or "").strip()
    kind, stage = st.session_state.get("infra_kind"), st.session_state.get("infra_stage")
    try:
        deployer.create_infra(store, infra_id, kind, stage, actor=current_user())
    except NodalError as exc:
        st.session_state["infra_outcome"] = ("error", f"Infrastructure refused: {exc}")
        return
    st.session_state["infra_outcome"] = (
        "success",
        f"Infrastructure **{infra_id}** ({kind}) added to stage **{stage}**. Start its node "
        f"with `nodal {'runner' if kind == 'automation' else 'serve'} --infra {infra_id}`.",
    )
    st.session_state["infra_id"] = ""


def _show_outcome(key: str) -> None:
    outcome = st.session_state.pop(key, None)
    if outcome:
        kind, message = outcome
        (st.success if kind == "success" else st.error)(message)


st.title("Infrastructures")
st.caption(
    "An infrastructure is one automation node (batch scenarios) or API node home, on one "
    "stage. Stages are yours to define; their order is the promotion path."
)
stages = deployer.list_stages(store)
me = current_user()
infras = visibility.infras_for(store, me, deployer.list_infras(store))
by_stage = dict(
    (s["name"], deployer.visible_to(store, me, deps))
    for s, deps in deployer.deployments_by_stage(store)
)
for stage in stages:
    name = stage["name"]
    on_stage = [i for i in infras if i["stage"] == name]
    deps = by_stage.get(name, [])
    worst = deployer.worst_status([d.status for d in deps]) if deps else None
    st.subheader(f"Stage {name}")
    if worst:
        st.markdown(f"{status_badge(worst)} worst of {len(deps)} deployment(s)")
    if not on_stage:
        st.caption("No infrastructure on this stage that you hold a right on.")
        continue
    rows = []
    for infra in on_stage:
        mine = [d for d in deps if d.infra_id == infra["infra_id"]]
        rows.append(
            {
                "infrastructure": infra["infra_id"],
                "kind": infra["kind"],
                "status": deployer.worst_status([d.status for d in mine]) if mine else "—",
                "runs": ", ".join(f"{d.target} {d.version}" for d in mine) or "nothing yet",
                "created at": infra["created_at"][:19].replace("T", " "),
            }
        )
    st.dataframe(
        style_status(pd.DataFrame(rows), "status"),
        hide_index=True,
        width="stretch",
        key=f"infras_{name}",
    )

who = signed_in()
if who is None or not who.is_admin:
    st.stop()  # stages and infrastructures are added by administrators (the engine refuses others)
st.divider()
c1, c2 = st.columns(2)
with c1, st.container(border=True):
    st.markdown("**Add a stage**")
    st.text_input("Stage name", key="stage_name", placeholder="e.g. staging")
    st.selectbox("After", [s["name"] for s in stages], key="stage_after")
    st.button("Add stage", key="stage_button", on_click=_add_stage, icon=":material/add:")
    _show_outcome("stage_outcome")
with c2, st.container(border=True):
    st.markdown("**Add an infrastructure**")
    st.text_input("Infrastructure id", key="infra_id", placeholder="e.g. automation-test")
    st.selectbox("Kind", list(deployer.KINDS), key="infra_kind")
    st.selectbox("Stage", [s["name"] for s in stages], key="infra_stage")
    st.button("Add infrastructure", key="infra_button", on_click=_add_infra, icon=":material/add:")
    _show_outcome("infra_outcome")
