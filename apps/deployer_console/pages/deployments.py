"""Deployments page: worst-of status, every deployment, a deploy form, and the audit history."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from apps.common.context import get_settings, get_store
from apps.common.status import status_badge, style_status
from engine import bundles, deployer, design

settings = get_settings()
store = get_store(settings)


def _deploy() -> None:
    """Button callback: runs before the page redraws, so the table shows the new state."""
    project = st.session_state.get("deploy_project")
    bundle = st.session_state.get("deploy_bundle")
    infra = st.session_state.get("deploy_infra")
    if not (project and bundle and infra):
        st.session_state["deploy_outcome"] = (
            "error",
            "Pick a project, a bundle and an infrastructure.",
        )
        return
    try:
        before = {
            d.deployment_id: d.version for d in deployer.list_deployments(store, infra, "project")
        }
        dep = deployer.deploy_bundle(store, project, bundle, infra, settings.user)
    except (bundles.BundleError, deployer.DeployerError) as exc:
        st.session_state["deploy_outcome"] = ("error", f"Deployment refused: {exc}")
        return
    was = before.get(dep.deployment_id)
    if was == dep.version:
        message = (
            f"**{dep.deployment_id}** already asks for bundle **{dep.version}**: nothing changes "
            "on the node (the request is recorded in the history)."
        )
    else:
        message = (
            f"**{dep.deployment_id}** now asks for bundle **{dep.version}**"
            + (f" (was {was})" if was else " (new deployment)")
            + f". The automation node activates it at its next sync (every {settings.poll_seconds:g} s "
            "while its runner runs); until then the deployment shows OUT_OF_SYNC."
        )
    st.session_state["deploy_outcome"] = ("success", message)
    st.session_state["deploy_confirm"] = False


st.title("Deployments")
deployments = deployer.list_deployments(store)

if not deployments:
    st.info(
        "Nothing is deployed yet. Create a bundle (`nodal bundle create …`) and an automation "
        "infrastructure (`nodal infra create …`), then deploy below, or prepare the whole demo "
        "with `nodal demo --prepare-only`.",
        icon=":material/info:",
    )
else:
    worst = deployer.worst_status([d.status for d in deployments])
    counts = pd.Series([d.status for d in deployments]).value_counts()
    st.markdown(
        f"**Overall** {status_badge(worst)} — worst of {len(deployments)} deployments: "
        + ", ".join(f"{n} {status}" for status, n in counts.items()),
        help="The worst status among all deployments, the one to look at first.",
    )
    table = pd.DataFrame(
        [
            {
                "deployment": d.deployment_id,
                "status": d.status,
                "kind": d.kind,
                "target": d.target,
                "infrastructure": d.infra_id,
                "desired version": d.version,
                "on node": d.node_version or "—",
                "node message": d.node_message,
                "reported at": (d.node_reported_at or "")[:19].replace("T", " "),
            }
            for d in deployments
        ]
    )
    st.dataframe(
        style_status(table, "status"),
        hide_index=True,
        width="stretch",
        key="deployments_table",
    )
    st.caption(
        "Desired version: what ops asked for. On node: what the node reports as active. "
        "OUT_OF_SYNC means the node has not caught up yet."
    )

st.subheader("Deploy a bundle")
projects = [p["name"] for p in design.list_projects(store)]
infras = [i for i in deployer.list_infras(store) if i["kind"] == "automation"]
with st.container(border=True):
    if not projects or not infras:
        st.info(
            "To deploy you need a project on the design node and an automation infrastructure "
            "(`nodal infra create <id> --kind automation --stage prod`).",
            icon=":material/info:",
        )
    else:
        c1, c2, c3 = st.columns(3)
        project = c1.selectbox("Project", projects, key="deploy_project")
        bundle_ids = [b.bundle_id for b in bundles.list_bundles(store, project)]
        c2.selectbox(
            "Bundle",
            bundle_ids,
            key="deploy_bundle",
            placeholder="No bundle yet",
            help="Bundles of the project, newest first. Every file's checksum is verified "
            "before the deployment changes.",
        )
        infra_labels = {i["infra_id"]: f"{i['infra_id']} ({i['stage']})" for i in infras}
        c3.selectbox(
            "Automation infrastructure",
            list(infra_labels),
            format_func=infra_labels.get,
            key="deploy_infra",
        )
        chosen = st.session_state.get("deploy_bundle")
        confirmed = st.checkbox(
            f"I confirm: deploy bundle {chosen or '…'} of {project} to {st.session_state.get('deploy_infra')}",
            key="deploy_confirm",
        )
        st.button(
            "Deploy",
            key="deploy_button",
            type="primary",
            icon=":material/rocket_launch:",
            disabled=not confirmed,
            on_click=_deploy,
        )
    outcome = st.session_state.pop("deploy_outcome", None)
    if outcome:
        kind, message = outcome
        (st.success if kind == "success" else st.error)(message)

if deployments:
    st.subheader("History")
    dep_id = st.selectbox(
        "Deployment", [d.deployment_id for d in deployments], key="history_deployment"
    )
    rows = deployer.history(store, dep_id)
    history = pd.DataFrame(
        [
            {
                "at": h["at"][:19].replace("T", " "),
                "action": h["action"],
                "from": h["from_version"] or "—",
                "to": h["to_version"] or "—",
                "outcome": h["outcome"],
                "actor": h["actor"],
                "message": h["message"],
            }
            for h in rows
        ],
        columns=["at", "action", "from", "to", "outcome", "actor", "message"],
    )
    st.dataframe(
        style_status(history, "outcome"),
        hide_index=True,
        width="stretch",
        key="history_table",
    )
