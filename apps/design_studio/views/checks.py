"""Metrics and checks page: metrics computed on a dataset and kept as history; checks with
hard and soft bounds, value-in-set, schema equals and distinct count in its typical range;
run them on demand; their history."""

from __future__ import annotations

from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from apps.common.context import get_settings, get_store
from apps.common.status import style_status
from apps.design_studio.state import current_project
from engine.core.errors import NodalError
from engine.project import checks, metrics

NODE = "design"

project = current_project()
store = get_store(get_settings())
st.title(f"Metrics and checks of {project.name}")

names = list(project.datasets)
default = names.index("transactions") if "transactions" in names else 0
dataset = st.selectbox("Dataset", names, index=default, key="checks_dataset")
ref = project.dataset(dataset)
try:
    columns = list(metrics.columns_of(project, dataset))
except NodalError:
    columns = []

declared_metrics = project.metrics.get(dataset, [])
declared_checks = project.checks.get(dataset, [])
cols = st.columns(2)
with cols[0]:
    st.subheader("Metrics")
    if declared_metrics:
        st.dataframe(pd.DataFrame(declared_metrics), hide_index=True, key="metrics_table")
    else:
        st.caption("No metric declared on this dataset yet.")
with cols[1]:
    st.subheader("Checks")
    if declared_checks:
        frame = pd.DataFrame(declared_checks).astype(str)
        st.dataframe(frame, hide_index=True, key="checks_table")
    else:
        st.caption("No check declared on this dataset yet.")

partition = None
if ref.partitioned_by and ref.exists():
    parts = ref.partitions()
    partition = st.selectbox("Partition to run on", list(reversed(parts)), key="checks_partition")
if st.button(
    "Run metrics and checks now", key="run_checks", icon=":material/play_arrow:", type="primary"
):
    try:
        values = metrics.compute(project, dataset, store, NODE, partition)
        results = checks.run_checks(project, dataset, partition, store, NODE)
    except NodalError as exc:
        st.error(f"Could not run: {exc}")
    else:
        outcome = checks.worst(results) if results else "no checks"
        st.markdown(f"**{len(results)} checks: {outcome}**, {len(values)} metrics recorded.")
        if results:
            st.dataframe(
                style_status(pd.DataFrame([r.__dict__ for r in results]), "outcome"),
                hide_index=True,
                width="stretch",
                key="check_results",
            )
        if values:
            st.dataframe(
                pd.DataFrame([v.__dict__ for v in values]), hide_index=True, key="metric_results"
            )


def _number(text: str, label: str) -> float | None:
    text = text.strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise NodalError(f"{label} {text!r} is not a number") from None


add_metric, add_check = st.tabs(["Add a metric", "Add a check"])
with add_metric, st.form("add_metric"):
    mcols = st.columns(3)
    m_name = mcols[0].text_input("Name", key="metric_name")
    m_type = mcols[1].selectbox("Type", metrics.METRIC_TYPES, key="metric_type")
    m_column = mcols[2].selectbox("Column", ["", *columns], key="metric_column")
    m_sql = st.text_input(
        "SQL (for type sql: one number, the dataset is the table `dataset`)", key="metric_sql"
    )
    if st.form_submit_button("Add metric"):
        try:
            metrics.add_metric(
                project,
                dataset,
                {"name": m_name.strip(), "type": m_type, "column": m_column, "sql": m_sql},
            )
        except NodalError as exc:
            st.error(f"Not added: {exc}")
        else:
            st.success(f"Metric {m_name} added to {dataset} (metrics.yaml).")

with add_check, st.form("add_check"):
    ccols = st.columns(4)
    c_name = ccols[0].text_input("Name", key="check_name")
    c_type = ccols[1].selectbox("Type", list(checks.CHECK_TYPES), key="check_type")
    c_severity = ccols[2].selectbox("Severity", checks.SEVERITIES, key="check_severity")
    c_column = ccols[3].selectbox(
        "Column (value in set, distinct count)", ["", *columns], key="check_column"
    )
    vcols = st.columns(5)
    c_metric = vcols[0].selectbox(
        "Metric (bounds)", ["", *(m["name"] for m in declared_metrics)], key="check_metric"
    )
    c_min = vcols[1].text_input("Hard min (error)", key="check_min")
    c_max = vcols[2].text_input("Hard max (error)", key="check_max")
    c_soft_min = vcols[3].text_input("Soft min (warning)", key="check_soft_min")
    c_soft_max = vcols[4].text_input("Soft max (warning)", key="check_soft_max")
    c_values = st.text_input("Allowed values (value in set), comma-separated", key="check_values")
    if st.form_submit_button("Add check"):
        try:
            spec: dict[str, Any] = {
                "name": c_name.strip(),
                "type": c_type,
                "severity": c_severity,
                "column": c_column or None,
                "metric": c_metric or None,
                "min": _number(c_min, "hard min"),
                "max": _number(c_max, "hard max"),
                "soft_min": _number(c_soft_min, "soft min"),
                "soft_max": _number(c_soft_max, "soft max"),
            }
            if c_values.strip():
                spec["values"] = [v.strip() for v in c_values.split(",") if v.strip()]
            if c_type not in ("value_in_set", "distinct_count_in_range"):
                spec.pop("column")
            checks.add_check(project, dataset, spec)
        except NodalError as exc:
            st.error(f"Not added: {exc}")
        else:
            st.success(f"Check {c_name} added to {dataset} (checks.yaml).")

st.subheader("History")
history = checks.history(store, project.name, dataset, limit=200)
if history.empty:
    st.caption("No check has run on this dataset yet.")
else:
    st.dataframe(
        style_status(history, "outcome"), hide_index=True, width="stretch", key="check_history"
    )
values = metrics.history(store, project.name, dataset, limit=1000)
if not values.empty:
    chosen = st.selectbox("Metric", sorted(values["metric"].unique()), key="history_metric")
    line = values[values["metric"] == chosen].copy()
    line["at"] = pd.to_datetime(line["at"], format="ISO8601")
    st.altair_chart(
        alt.Chart(line, title=f"{chosen} over time")
        .mark_line(point=True)
        .encode(
            x=alt.X("at:T", title="computed at"),
            y="value:Q",
            tooltip=["at", "partition", "value", "node"],
        ),
        width="stretch",
        key="metric_history_chart",
    )
