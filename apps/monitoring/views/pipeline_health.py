"""Pipeline health: scenario runs per deployment over time, failing steps, checks over time."""

from __future__ import annotations

import json

import altair as alt
import streamlit as st

from apps.common.context import get_settings, get_store
from apps.common.pickers import NOTHING_DEPLOYED, project_deployment
from apps.common.status import style_status
from engine.monitoring import deployed, status

settings = get_settings()
store = get_store(settings)

st.title("Pipeline health")
deployment = project_deployment(store, key="ph_deployment", newest=status.newest_runs(store))
if deployment is None:
    st.info(NOTHING_DEPLOYED, icon=":material/info:")
    st.stop()
chosen = deployment.deployment_id
stray = deployed.stray_partitions(
    deployed.try_node_project(settings, store, deployment.infra_id, deployment.target)
)
for dataset, folders in stray.items():
    st.warning(
        f"Dataset {dataset} has folders that are not valid partitions, ignored by every run: "
        + ", ".join(repr(f) for f in folders[:5])
        + (f" and {len(folders) - 5} more" if len(folders) > 5 else ""),
        icon=":material/warning:",
    )
runs = status.runs_frame(store)
mine = runs[runs["deployment"] == chosen] if not runs.empty else runs
if mine.empty:
    node_project = deployed.try_node_project(
        settings, store, deployment.infra_id, deployment.target
    )
    scheduled = sorted(node_project.scenarios) if node_project is not None else []
    todo = (
        f"Its scenarios: {', '.join(scheduled)}; run one now with "
        f"{deployed.run_hint(scheduled[:1], deployment.target, deployment.infra_id)}."
        if scheduled
        else f"Project {deployment.target} is not active on {deployment.infra_id} yet, or "
        "declares no scenario."
    )
    st.info(
        f"No scenario of {deployment.target} has run on {deployment.infra_id} yet. Runs appear "
        "here once the automation node runs one (on its triggers, or on demand). " + todo,
        icon=":material/info:",
    )
    st.stop()

c1, c2, c3 = st.columns(3)
c1.metric("Runs", f"{len(mine):,}")
c2.metric("Failed", f"{int((mine['status'] == 'FAILED').sum()):,}")
c3.metric("Median duration", f"{mine['seconds'].median():.1f} s")

colours = alt.Scale(
    domain=["SUCCESS", "WARNING", "FAILED", "ABORTED", "RUNNING", "QUEUED"],
    range=["#16a34a", "#f59e0b", "#dc2626", "#7f1d1d", "#2563eb", "#94a3b8"],
)
timeline = (
    alt.Chart(mine)
    .mark_circle(size=90)
    .encode(
        x=alt.X("requested_at:T", title="requested"),
        y=alt.Y("scenario:N", title=None),
        color=alt.Color("status:N", scale=colours),
        size=alt.Size("seconds:Q", title="duration (s)"),
        tooltip=["run_id", "scenario", "status", "seconds", "day", "message"],
    )
    .properties(height=60 + 40 * mine["scenario"].nunique(), title="Runs (size: duration)")
)
st.altair_chart(timeline, width="stretch", key="ph_timeline")

st.subheader("Runs")
st.dataframe(
    style_status(
        mine[["run_id", "scenario", "status", "day", "requested_at", "seconds", "message"]],
        "status",
    ),
    hide_index=True,
    width="stretch",
    key="ph_runs",
)

failing = status.failed_steps(store, chosen)
st.subheader("Failing steps")
if failing.empty:
    st.success("No step of this deployment has failed.", icon=":material/check_circle:")
else:
    for row in failing.head(10).to_dict("records"):
        with st.expander(f"run {row['run_id']} · {row['scenario']} · step {row['name']} failed"):
            st.write(row["message"])
            outputs = json.loads(row["outputs_json"] or "{}")
            if outputs.get("traceback"):
                st.code(outputs["traceback"], language="text")

st.subheader("Checks over time")
checks = status.checks_frame(store, chosen)
if checks.empty:
    st.caption("No check has run on this deployment yet.")
else:
    chart = (
        alt.Chart(checks)
        .mark_square(size=120)
        .encode(
            x=alt.X("partition:O", title="day"),
            y=alt.Y("check:N", title=None),
            color=alt.Color(
                "outcome:N",
                scale=alt.Scale(
                    domain=["OK", "WARNING", "ERROR"], range=["#16a34a", "#f59e0b", "#dc2626"]
                ),
            ),
            tooltip=["partition", "check", "outcome", "value", "message", "at"],
        )
        .properties(height=40 + 28 * checks["check"].nunique())
    )
    st.altair_chart(chart, width="stretch", key="ph_checks")
metrics = status.step_metrics(mine)
if not metrics.empty:
    st.subheader("Step metrics over time")
    st.altair_chart(
        alt.Chart(metrics)
        .mark_line(point=True)
        .encode(
            x=alt.X("day:O"),
            y=alt.Y("value:Q"),
            color="metric:N",
            tooltip=["day", "metric", "value"],
        )
        .properties(height=240),
        width="stretch",
        key="ph_metrics",
    )
