"""Model quality: drift and performance per day, champion and challenger side by side.

Fed by the ``evaluate`` scenario step (``scenarios/daily_evaluation.yaml``); see
:mod:`engine.automation.evaluation` for what each metric means and when it alarms.
"""

from __future__ import annotations

import altair as alt
import streamlit as st

from apps.common.context import get_settings, get_store
from apps.common.pickers import NOTHING_DEPLOYED, project_deployment
from apps.common.status import style_status
from engine.monitoring import deployed, model_quality

settings = get_settings()
store = get_store(settings)

st.title("Model quality")
deployment = project_deployment(
    store, key="quality_deployment", newest=model_quality.newest_evaluations(store)
)
if deployment is None:
    st.info(NOTHING_DEPLOYED, icon=":material/info:")
    st.stop()
PROJECT, AUTOMATION_INFRA = deployment.target, deployment.infra_id
metrics = model_quality.read_metrics(store, AUTOMATION_INFRA, PROJECT)
if metrics.empty:
    node_project = deployed.try_node_project(settings, store, AUTOMATION_INFRA, PROJECT)
    evaluating = deployed.scenarios_with_step(node_project, "evaluate")
    if node_project is None:
        todo = (
            f"Project {PROJECT} is not active on {AUTOMATION_INFRA} yet: once the node has "
            "activated its bundle, a scenario with an `evaluate` step fills this page."
        )
    elif evaluating:
        todo = (
            f"Its scenario {' or '.join(evaluating)} does: run it with "
            f"{deployed.run_hint(evaluating, PROJECT, AUTOMATION_INFRA)}."
        )
    else:
        todo = (
            f"Project {PROJECT} has no scenario with an `evaluate` step yet: add one "
            "(`type: evaluate`, `model:`, `input:` its scored dataset) to its bundle."
        )
    st.info(
        f"No model evaluation of {PROJECT} on {AUTOMATION_INFRA} yet. A scenario with an "
        "`evaluate` step compares each scored day with the model's validation days (drift) "
        "and, once the delayed labels arrive, measures performance. " + todo,
        icon=":material/info:",
    )
    st.stop()

model = st.selectbox("Model", sorted(metrics["model"].unique()), key="mq_model")
metrics = metrics[metrics["model"] == model]
newest_day = metrics["day"].max()
skipped = model_quality.not_applicable(metrics[metrics["day"] == newest_day])
metrics = metrics[metrics["metric"] != model_quality.NOT_APPLICABLE]
roles = sorted(metrics["role"].unique())
st.caption(
    "Champion: "
    + ", ".join(sorted(metrics.loc[metrics["role"] == "champion", "model_version"].unique()))
    + (
        " · challenger: "
        + ", ".join(sorted(metrics.loc[metrics["role"] == "challenger", "model_version"].unique()))
        if "challenger" in roles
        else " · no challenger evaluated"
    )
)

alarms = model_quality.latest_alarms(store, AUTOMATION_INFRA, PROJECT)
alarms = alarms[alarms["model"] == model] if not alarms.empty else alarms
st.subheader("Newest day")
if alarms.empty:
    st.success(
        "No drift or performance alarm on the newest evaluated day.", icon=":material/check_circle:"
    )
else:
    st.dataframe(
        style_status(alarms[["day", "role", "family", "feature", "status", "message"]], "status"),
        hide_index=True,
        width="stretch",
        key="mq_alarms",
    )

if skipped:
    st.caption(
        "Not computed for this model (what its YAML does not declare): "
        + "; ".join(f"**{family.replace('_', ' ')}**: {why}" for family, why in skipped.items())
    )

status_colours = alt.Scale(
    domain=["OK", "INFO", "WARNING", "ERROR"], range=["#16a34a", "#64748b", "#f59e0b", "#dc2626"]
)

st.subheader("Input drift (PSI per feature)")
psi = metrics[(metrics["family"] == "input_drift") & (metrics["metric"] == "psi")]
if psi.empty:
    st.caption("No input drift measured yet.")
else:
    st.altair_chart(
        alt.Chart(psi)
        .mark_rect()
        .encode(
            x=alt.X("day:O"),
            y=alt.Y("feature:N", title=None),
            color=alt.Color(
                "value:Q",
                title="PSI",
                scale=alt.Scale(scheme="orangered", domain=[0, 0.5], clamp=True),
            ),
            stroke=alt.Stroke("status:N", scale=status_colours),
            tooltip=["day", "feature", "value", "status", "message"],
        )
        .facet(column=alt.Column("role:N", title=None)),
        key="mq_psi",
    )

st.subheader("Data: unseen values, hot spots, domain classifier")
data_rows = metrics[
    (
        (metrics["family"] == "unseen_values")
        & (metrics["metric"] == "unseen_share")
        & (metrics["role"] == "champion")
    )
    | ((metrics["family"] == "location") & (metrics["metric"] == "share_rise"))
    | (metrics["family"] == "domain_classifier")
].assign(series=lambda f: f["family"] + " " + f["feature"].where(f["family"] != "location", ""))
st.altair_chart(
    alt.Chart(data_rows)
    .mark_line(point=True)
    .encode(
        x="day:O",
        y=alt.Y("value:Q"),
        color=alt.Color("series:N"),
        tooltip=["day", "family", "feature", "value", "status", "message"],
    )
    .properties(height=260),
    width="stretch",
    key="mq_data",
)

st.subheader("Prediction drift")
pred = metrics[
    (metrics["family"] == "prediction_drift") & metrics["metric"].isin(["psi", "flag_rate"])
]
st.altair_chart(
    alt.Chart(pred)
    .mark_line(point=True)
    .encode(
        x="day:O",
        y="value:Q",
        color=alt.Color("role:N"),
        strokeDash="metric:N",
        tooltip=["day", "role", "model_version", "metric", "value", "message"],
    )
    .properties(height=240),
    width="stretch",
    key="mq_prediction",
)

st.subheader("Performance once labels arrive")
perf = metrics[
    (metrics["family"] == "performance")
    & metrics["metric"].isin(["roc_auc", "pr_auc", "recall", "precision"])
]
if perf.empty:
    st.info(
        "No labels yet for the evaluated days: labels arrive days after the scored rows, "
        "so performance shows once a scored day's labels have landed."
        if "performance" not in skipped
        else f"Performance is not measured: {skipped['performance']}.",
        icon=":material/hourglass_top:",
    )
else:
    st.altair_chart(
        alt.Chart(perf)
        .mark_line(point=True)
        .encode(
            x="day:O",
            y=alt.Y("value:Q", scale=alt.Scale(domain=[0, 1])),
            color=alt.Color("role:N"),
            tooltip=["day", "role", "model_version", "metric", "value", "message"],
        )
        .properties(height=180, width=260)
        .facet(facet=alt.Facet("metric:N", title=None), columns=4),
        key="mq_performance",
    )
    money = metrics[
        (metrics["family"] == "performance")
        & metrics["metric"].isin(["fraud_caught_amount", "fraud_missed_amount"])
    ]
    if not money.empty:
        st.altair_chart(
            alt.Chart(money)
            .mark_bar()
            .encode(
                x="day:O",
                y=alt.Y("value:Q", title="amount"),
                color=alt.Color("metric:N", scale=alt.Scale(range=["#16a34a", "#dc2626"])),
                column=alt.Column("role:N", title=None),
                tooltip=["day", "role", "metric", "value"],
            ),
            key="mq_money",
        )
decay = metrics[metrics["family"].isin(["performance_decay", "missed_fraud"])].drop_duplicates(
    ["day", "role", "family"], keep="last"
)
if not decay.empty:
    st.dataframe(
        style_status(decay[["day", "role", "family", "feature", "status", "message"]], "status"),
        hide_index=True,
        width="stretch",
        key="mq_decay",
    )
