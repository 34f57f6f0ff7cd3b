"""Metrics and checks page: metrics computed on a dataset and kept as history; column checks
(pandera schemas run inside DuckDB: type, missing values, uniqueness, range, allowed values,
pattern, row condition, schema), metric bounds and distinct count in its typical range; run
them on demand; what failed (rows, a few values); their history; accept a drifted day as the
new baseline; the schema as pandera YAML."""

from __future__ import annotations

from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from apps.common.auth import current_user
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
            shown = pd.DataFrame(
                [
                    {
                        "name": r.name,
                        "outcome": r.outcome,
                        "value": r.value,
                        "failing rows": checks.describe_details(r.details)[0],
                        "examples": checks.describe_details(r.details)[1],
                        "message": r.message,
                    }
                    for r in results
                ]
            )
            st.dataframe(
                style_status(shown, "outcome"),
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
    c_column = ccols[3].selectbox("Column (column checks)", ["", *columns], key="check_column")
    vcols = st.columns(5)
    c_metric = vcols[0].selectbox(
        "Metric (bounds)", ["", *(m["name"] for m in declared_metrics)], key="check_metric"
    )
    c_min = vcols[1].text_input("Min (hard bound; in range)", key="check_min")
    c_max = vcols[2].text_input("Max (hard bound; in range)", key="check_max")
    c_soft_min = vcols[3].text_input("Soft min (warning)", key="check_soft_min")
    c_soft_max = vcols[4].text_input("Soft max (warning)", key="check_soft_max")
    c_values = st.text_input("Allowed values (value in set), comma-separated", key="check_values")
    pcols = st.columns(3)
    c_dtype = pcols[0].text_input("Type (dtype), e.g. VARCHAR", key="check_dtype")
    c_pattern = pcols[1].text_input("Pattern (matches), a regular expression", key="check_pattern")
    c_expression = pcols[2].text_input(
        "Row condition (SQL), e.g. low <= high AND qty > 0", key="check_expression"
    )
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
            for key, text in (
                ("dtype", c_dtype),
                ("pattern", c_pattern),
                ("expression", c_expression),
            ):
                spec[key] = text.strip() or None
            for key in ("min", "max"):
                if spec[key] is not None and float(spec[key]).is_integer():
                    spec[key] = int(spec[key])
            if c_type in ("metric_bounds", "schema_equals", "row_condition"):
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
    described = [checks.describe_details(d) for d in history.pop("details")]
    history.insert(6, "failing rows", [d[0] for d in described])
    history.insert(7, "examples", [d[1] for d in described])
    st.dataframe(
        style_status(history, "outcome"), hide_index=True, width="stretch", key="check_history"
    )

st.subheader("Accept as the new baseline")
st.caption(
    "A check learned from history (distinct count in its typical range) learns only from "
    "days that passed: a drifted day keeps failing until you accept it as the new normal."
)
waiting = checks.awaiting_acceptance(project, store, dataset)
if not waiting:
    st.caption("No failed learned check waits for a decision.")
else:
    labels = [
        f"{w['check_name']} on {w['partition'] or 'the latest run'} ({w['node']})" for w in waiting
    ]
    chosen = st.selectbox(
        "Failed result", range(len(waiting)), format_func=labels.__getitem__, key="baseline_choice"
    )
    st.caption(waiting[chosen]["message"] or "")
    if st.button("Accept as the new baseline", key="accept_baseline", icon=":material/verified:"):
        w = waiting[chosen]
        try:
            base = checks.accept_baseline(
                project,
                dataset,
                w["check_name"],
                w["partition"],
                store,
                w["node"],
                current_user(),
            )
        except NodalError as exc:
            st.error(f"Not accepted: {exc}")
        else:
            st.success(
                f"{base.check_name} learns from {base.partition or 'this run'} on "
                f"(accepted by {base.actor})."
            )

st.subheader("pandera schema")
try:
    schema_yaml = checks.export_schema(project, dataset)
except NodalError as exc:
    st.caption(f"Cannot export: {exc}")
else:
    st.download_button(
        "Download as pandera YAML",
        schema_yaml,
        file_name=f"{dataset}.pandera.yaml",
        mime="application/x-yaml",
        key="export_schema",
    )
with st.form("import_schema"):
    imported = st.text_area("Import a pandera YAML schema into checks.yaml", key="schema_text")
    if st.form_submit_button("Import checks"):
        try:
            names = checks.import_schema(project, dataset, imported)
        except NodalError as exc:
            st.error(f"Not imported: {exc}")
        else:
            st.success(f"{len(names)} checks added to {dataset}: {', '.join(names)}")
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
