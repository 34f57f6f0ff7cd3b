"""Scenario runs page: per deployment, the timeline of runs with step details, logs and
reporters; run a scenario now, abort a run; the deployment's triggers and variables."""

from __future__ import annotations

import json

import altair as alt
import pandas as pd
import streamlit as st

from apps.common.auth import current_user
from apps.common.context import get_settings, get_store
from apps.common.status import status_badge, style_status
from engine.automation import reporters, runs
from engine.automation.node import AutomationNode
from engine.core.errors import NodalError
from engine.deployer import deployments as deployer
from engine.project import checks, triggers
from engine.project.project import ProjectError

settings = get_settings()
store = get_store(settings)


def _when(iso: str | None) -> str:
    return (iso or "")[:19].replace("T", " ")


def _abort(run_id: int) -> None:
    try:
        status = runs.request_abort(store, run_id, current_user())
    except NodalError as exc:
        st.session_state["runs_outcome"] = ("error", f"Abort refused: {exc}")
        return
    st.session_state["runs_outcome"] = (
        "success",
        f"Run {run_id} aborted before it started."
        if status == runs.ABORTED
        else f"Abort of run {run_id} requested: the runner stops it before its next step "
        "(or between scoring chunks) and marks it ABORTED.",
    )


def _run_now(infra: str, project: str) -> None:
    scenario = st.session_state.get("run_scenario")
    try:
        run_id = runs.request_manual_run(store, current_user(), infra, project, scenario)
    except NodalError as exc:
        st.session_state["runs_outcome"] = ("error", str(exc))
        return
    st.session_state["runs_outcome"] = (
        "success",
        f"Run {run_id} of {scenario} queued on {infra}; the runner starts it at its next poll.",
    )


def _toggle(dep_id: str, scenario: str, index: int, key: str) -> None:
    deployer.set_trigger(
        store, dep_id, scenario, index, bool(st.session_state[key]), current_user()
    )


def _save_variables(dep_id: str, key: str) -> None:
    text = st.session_state.get(key) or "{}"
    try:
        deployer.set_variables(store, dep_id, json.loads(text), current_user())
    except json.JSONDecodeError as exc:
        st.session_state["variables_outcome"] = ("error", f"Not valid JSON: {exc.msg}")
        return
    except NodalError as exc:
        st.session_state["variables_outcome"] = ("error", f"Variables refused: {exc}")
        return
    st.session_state["variables_outcome"] = ("success", "Variables saved; the next run uses them.")


def _show_outcome(key: str) -> None:
    outcome = st.session_state.pop(key, None)
    if outcome:
        kind, message = outcome
        (st.success if kind == "success" else st.error)(message)


st.title("Scenario runs")
deps = deployer.visible_to(store, current_user(), deployer.list_deployments(store, kind="project"))
if not deps:
    st.info(
        "No project is deployed yet: deploy a bundle to an automation infrastructure first "
        "(Deployments page or `nodal deploy bundle`).",
        icon=":material/info:",
    )
    st.stop()

dep_id = st.selectbox(
    "Deployment",
    [d.deployment_id for d in deps],
    key="runs_deployment",
    index=[d.deployment_id for d in deps].index(st.query_params["deployment"])
    if st.query_params.get("deployment") in [d.deployment_id for d in deps]
    else 0,
)
st.query_params["deployment"] = dep_id
dep = deployer.get_deployment(store, dep_id)
st.markdown(
    f"{status_badge(dep.status)} bundle **{dep.node_version or '—'}** active on "
    f"**{dep.infra_id}** (desired {dep.version}). {dep.node_message}"
)
_show_outcome("runs_outcome")

dep_runs = [r for r in runs.list_runs(store, dep.infra_id, limit=200) if r["project"] == dep.target]
node = AutomationNode(settings, store, dep.infra_id)
try:
    project = node.project(dep.target)
except ProjectError:
    project = None

if project is not None:
    with st.container(border=True):
        c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
        c1.selectbox("Scenario", sorted(project.scenarios), key="run_scenario")
        c2.button(
            "Run now",
            key="run_now_button",
            icon=":material/play_arrow:",
            on_click=_run_now,
            args=(dep.infra_id, dep.target),
        )

if not dep_runs:
    st.info("No run on this deployment yet.", icon=":material/info:")
else:
    frame = pd.DataFrame(
        [
            {
                "run": r["run_id"],
                "scenario": r["scenario"],
                "status": r["status"],
                "trigger": r["trigger"],
                "bundle": r["bundle_id"] or "—",
                "start": pd.to_datetime(r["started_at"] or r["requested_at"]),
                "end": pd.to_datetime(r["ended_at"] or r["started_at"] or r["requested_at"]),
                "message": r["message"],
            }
            for r in dep_runs
        ]
    )
    colors = alt.Scale(
        domain=["SUCCESS", "WARNING", "FAILED", "ABORTED", "RUNNING", "QUEUED"],
        range=["#16a34a", "#f59e0b", "#dc2626", "#7f1d1d", "#2563eb", "#94a3b8"],
    )
    chart = (
        alt.Chart(frame)
        .mark_bar(minBandSize=1, size=14)
        .encode(
            x=alt.X("start:T", title="time (UTC)", axis=alt.Axis(format="%m-%d %H:%M:%S")),
            x2="end:T",
            y=alt.Y("scenario:N", title=None),
            color=alt.Color("status:N", scale=colors),
            tooltip=["run", "scenario", "status", "trigger", "bundle", "start", "end"],
        )
        .properties(height=60 + 30 * frame["scenario"].nunique())
    )
    st.altair_chart(chart, width="stretch", key="runs_timeline")
    table = frame.assign(
        start=frame["start"].dt.strftime("%Y-%m-%d %H:%M:%S"),
        end=frame["end"].dt.strftime("%Y-%m-%d %H:%M:%S"),
    )
    st.dataframe(style_status(table, "status"), hide_index=True, width="stretch", key="runs_table")

    run_id = st.selectbox(
        "Run details",
        [r["run_id"] for r in dep_runs],
        format_func=lambda i: next(
            f"run {i}: {r['scenario']} {r['status']} ({_when(r['requested_at'])})"
            for r in dep_runs
            if r["run_id"] == i
        ),
        key="run_detail",
    )
    run = runs.get_run(store, run_id)
    st.markdown(
        f"{status_badge(run['status'])} **{run['scenario']}** run {run_id}, trigger "
        f"*{run['trigger']}*, bundle {run['bundle_id'] or '—'}: {run['message']}"
    )
    if run["status"] in (runs.QUEUED, runs.RUNNING):
        st.button(
            "Abort this run",
            key="abort_button",
            icon=":material/cancel:",
            on_click=_abort,
            args=(run_id,),
        )
    steps = pd.DataFrame(
        [
            {
                "step": s["name"],
                "type": s["step_type"],
                "status": s["status"],
                "seconds": json.loads(s["outputs_json"] or "{}").get("seconds"),
                "started": _when(s["started_at"]),
                "ended": _when(s["ended_at"]),
                "message": s["message"],
            }
            for s in run["steps"]
        ],
        columns=["step", "type", "status", "seconds", "started", "ended", "message"],
    )
    st.dataframe(style_status(steps, "status"), hide_index=True, width="stretch", key="steps_table")
    for s in run["steps"]:
        outputs = json.loads(s["outputs_json"] or "{}")
        lines = outputs.pop("log", [])
        with st.expander(f"{s['name']}: log and outputs"):
            st.code("\n".join(lines) or "(no log lines)", language=None)
            st.json(outputs, expanded=False)
    reports = reporters.list_reports(store, run_id)
    if reports:
        st.dataframe(
            style_status(
                pd.DataFrame(reports)[["reporter", "reporter_type", "outcome", "message"]],
                "outcome",
            ),
            hide_index=True,
            width="stretch",
            key="reports_table",
        )
    run_checks = checks.run_results(store, run_id)  # what failed: rows and a few values
    if not run_checks.empty:
        st.markdown("**Data checks of this run**")
        st.dataframe(
            style_status(run_checks, "outcome"),
            hide_index=True,
            width="stretch",
            key="run_checks_table",
        )

if project is not None:
    st.subheader("Triggers of this deployment")
    flags = deployer.trigger_flags(store, dep_id)
    for name, spec in sorted(project.scenarios.items()):
        for i, trig in enumerate(spec.get("triggers") or []):
            key = f"trigger_{name}_{i}"
            st.session_state[key] = flags.get((name, i), bool(trig.get("enabled", True)))
            st.toggle(
                f"{name}: {triggers.describe(trig)}",
                key=key,
                on_change=_toggle,
                args=(dep_id, name, i, key),
            )
    st.subheader("Variables of this deployment")
    st.caption("They override the project's variables on this node (JSON object).")
    st.text_area(
        "Variables",
        value=json.dumps(dep.variables, indent=2, sort_keys=True),
        key=f"variables_text_{dep_id}",
    )
    st.button(
        "Save variables",
        key="variables_button",
        on_click=_save_variables,
        args=(dep_id, f"variables_text_{dep_id}"),
    )
    _show_outcome("variables_outcome")
