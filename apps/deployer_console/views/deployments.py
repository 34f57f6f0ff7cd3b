"""Deployments page: worst-of status, every deployment, deploy / promote / roll back (each with
a confirmation), and the audit history of who changed what, when, from which to which."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from apps.common.auth import current_user, may
from apps.common.context import get_settings, get_store
from apps.common.status import status_badge, style_status
from engine.core.errors import NodalError
from engine.deployer import bundles, rollback
from engine.deployer import deployments as deployer
from engine.design import projects as design

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
        dep = deployer.deploy_bundle(store, project, bundle, infra, current_user())
    except NodalError as exc:
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


def _promote() -> None:
    source = st.session_state.get("promote_from")
    target = st.session_state.get("promote_to")
    try:
        before = deployer.get_deployment(store, source).version
        dep = deployer.promote(store, source, target, current_user())
    except NodalError as exc:
        st.session_state["promote_outcome"] = ("error", f"Promotion refused: {exc}")
        return
    st.session_state["promote_outcome"] = (
        "success",
        f"**{dep.deployment_id}** now asks for bundle **{dep.version}**, the bundle "
        f"{source} runs ({before}). The node activates it at its next sync.",
    )
    st.session_state["promote_confirm"] = False


def _rollback() -> None:
    dep_id = st.session_state.get("rollback_deployment")
    to = st.session_state.get("rollback_to")
    try:
        was = deployer.get_deployment(store, dep_id).version
        dep = rollback.rollback(store, dep_id, current_user(), to)
    except NodalError as exc:
        st.session_state["rollback_outcome"] = ("error", f"Rollback refused: {exc}")
        return
    st.session_state["rollback_outcome"] = (
        "success",
        f"**{dep.deployment_id}** rolled back from **{was}** to **{dep.version}**: that "
        "bundle's model comes back as it was, nothing retrains.",
    )
    st.session_state["rollback_confirm"] = False


def _show_outcome(key: str) -> None:
    outcome = st.session_state.pop(key, None)
    if outcome:
        kind, message = outcome
        (st.success if kind == "success" else st.error)(message)


st.title("Deployments")
deployments = deployer.visible_to(store, current_user(), deployer.list_deployments(store))
stage_of = {i["infra_id"]: i["stage"] for i in deployer.list_infras(store)}

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
                "stage": stage_of.get(d.infra_id, "?"),
                "kind": d.kind,
                "target": d.target,
                "infrastructure": d.infra_id,
                "desired version": d.version,
                "on node": d.node_version or "—",
                "node message": d.node_message,
                "status since": (d.node_status_since or "")[:19].replace("T", " "),
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
        "OUT_OF_SYNC means the node has not caught up yet. Status since: when the node's "
        "status last changed (its changes are not history)."
    )

projects = [p["name"] for p in design.list_projects(store)]
# Only the infrastructures this person may deploy to (the engine refuses the others anyway).
automation = [i for i in deployer.list_infras(store) if i["kind"] == "automation"]
infras = [i for i in automation if may("deploy", infra=i["infra_id"])]
deployable = {i["infra_id"] for i in infras}
# Promote from any project deployment to one of those; roll back only those.
sources = [d for d in deployments if d.kind == "project"] if infras else []
project_deps = [d for d in sources if d.infra_id in deployable]
if automation and not infras:
    st.info(
        "You may not deploy to any automation infrastructure: deploying, promoting and "
        "rolling back need the `deploy` right on it (an administrator grants it).",
        icon=":material/lock:",
    )
else:
    st.subheader("Deploy or update a bundle")
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
        _show_outcome("deploy_outcome")

if sources:
    st.subheader("Promote to the next stage")
    with st.container(border=True):
        order = {s["name"]: s["position"] for s in deployer.list_stages(store)}
        c1, c2 = st.columns(2)
        source = c1.selectbox(
            "From deployment",
            [
                d.deployment_id
                for d in sorted(sources, key=lambda d: order.get(stage_of.get(d.infra_id), 0))
            ],
            format_func=lambda d: (
                f"{d} ({stage_of.get(deployer.get_deployment(store, d).infra_id)}, "
                f"bundle {deployer.get_deployment(store, d).version})"
            ),
            key="promote_from",
        )
        src = deployer.get_deployment(store, source)
        targets = sorted(
            (i for i in infras if i["infra_id"] != src.infra_id),
            key=lambda i: (
                order.get(i["stage"], 0) <= order.get(stage_of.get(src.infra_id), 0),
                order.get(i["stage"], 0),
            ),
        )
        c2.selectbox(
            "To infrastructure",
            [i["infra_id"] for i in targets],
            format_func=lambda i: f"{i} ({stage_of.get(i)})",
            key="promote_to",
            help="Later stages first. The same bundle, checksums verified again.",
        )
        confirmed = st.checkbox(
            f"I confirm: deploy bundle {src.version} of {src.target} to "
            f"{st.session_state.get('promote_to')}",
            key="promote_confirm",
        )
        st.button(
            "Promote",
            key="promote_button",
            type="primary",
            icon=":material/upgrade:",
            disabled=not confirmed or not targets,
            on_click=_promote,
        )
        _show_outcome("promote_outcome")

    if project_deps:
        st.subheader("Roll back")
        with st.container(border=True):
            c1, c2 = st.columns(2)
            dep_id = c1.selectbox(
                "Deployment to roll back",
                [d.deployment_id for d in project_deps],
                key="rollback_deployment",
            )
            dep = deployer.get_deployment(store, dep_id)
            try:
                previous = deployer.previous_version(store, dep_id)
            except deployer.DeployerError:
                previous = None
            choices = [
                b.bundle_id
                for b in bundles.list_bundles(store, dep.target)
                if b.bundle_id != dep.version
            ]
            if previous in choices:  # the previous bundle first: the one-click undo
                choices.remove(previous)
                choices.insert(0, previous)
            c2.selectbox(
                "Back to bundle",
                choices,
                key="rollback_to",
                placeholder="No earlier bundle",
                help="Default: the bundle deployed before the current one. Any earlier bundle works; "
                "its model comes back as it was.",
            )
            confirmed = st.checkbox(
                f"I confirm: roll {dep_id} back from {dep.version} to {st.session_state.get('rollback_to') or '…'}",
                key="rollback_confirm",
            )
            st.button(
                "Roll back",
                key="rollback_button",
                type="primary",
                icon=":material/undo:",
                disabled=not confirmed or not choices,
                on_click=_rollback,
            )
            _show_outcome("rollback_outcome")

if deployments:
    st.subheader("History")
    dep_id = st.selectbox(
        "Deployment", [d.deployment_id for d in deployments], key="history_deployment"
    )
    st.caption(
        "Real events only: what people did (deploy, update, promote, roll back, variables, "
        "triggers) and what the node did with it (a version activated, or an activation that "
        "failed). Status changes of a running version are in the table above."
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
