"""API health from the API node's query log: volume, errors and latency; generations A/B;
and the age of the enrichment rows each deployment serves."""

from __future__ import annotations

import altair as alt
import streamlit as st

from apps.common.auth import may
from apps.common.context import get_settings, get_store
from apps.common.status import style_status
from engine.deployer import deployments as deployer
from engine.monitoring import apihealth, enrichment_age, mirror

NONE = "(none)"  # a NULL name in the query log: a refused query has no generation
settings = get_settings()
store = get_store(settings)

st.title("API health")
every = [i["infra_id"] for i in deployer.list_infras(store) if i["kind"] == "apinode"]
# The query log holds the callers' records: only people with a right on the node see it.
infras = [i for i in every if may("view", infra=i)]
if every and not infras:
    st.info(
        "The API nodes' query logs are shown to people with a right on the node (`view` and "
        "up, e.g. ops); ask an administrator.",
        icon=":material/lock:",
    )
    st.stop()
if not infras:
    st.info(
        "No API node infrastructure yet. Create one in the Deployer Console (or `nodal infra "
        "create ID --kind apinode`) and deploy an API service to it.",
        icon=":material/info:",
    )
    st.stop()
infra = st.selectbox("API node", infras, key="api_infra")

# How old the looked-up rows (e.g. per-key profiles) each deployment serves are: they follow
# what the automation node's publish_enrichment steps publish, without a new package; and
# which window-state snapshot the online store replayed, for windowed features.
ages = enrichment_age.ages(store, infra)
if ages:
    st.subheader("Enrichment age")
    st.dataframe(
        style_status(enrichment_age.frame(ages), "status"),
        hide_index=True,
        width="stretch",
        key="api_enrichment_age",
        column_config={
            "age (h)": st.column_config.NumberColumn(format="%.1f"),
            "max age (h)": st.column_config.NumberColumn(format="%.1f"),
        },
    )
    st.caption(
        "Stale (UNHEALTHY) when a newer version was published and a worker still serves an "
        "older one past a few poll intervals, or when the table is older than the "
        "enrichment's max_age_hours (the batch stopped publishing). A windows output's row "
        "(served: window state vN, as of: the day it runs through) is the snapshot the "
        "online store replayed; stale when a newer one was published and not replayed "
        "within a few poll intervals."
    )

# Another host's API node: its compacted query logs, mirrored from the object store.
table = apihealth.source(mirror.querylog_home(settings, store), infra)
if table is None:
    st.info(
        f"No API traffic on {infra} yet. Every query the API node answers is logged; volume, "
        "errors and latency appear here after the first ones (try the `curl` that "
        "`make demo` prints).",
        icon=":material/info:",
    )
    st.stop()

c_bucket, c_group = st.columns(2)
bucket = c_bucket.selectbox("Per", list(apihealth.BUCKETS), index=0, key="api_bucket")
group = c_group.selectbox("By", ["endpoint", "generation", "service"], index=1, key="api_group")
over = apihealth.over_time(
    table, bucket, ("service", "endpoint", group) if group != "service" else ("service",)
)
# A refused query has no generation (NULL): name it, as "/".join takes only strings.
over["series"] = (
    over[["service", "endpoint", group] if group != "service" else ["service"]]
    .astype(object)
    .fillna(NONE)
    .astype(str)
    .agg("/".join, axis=1)
)

summary = apihealth.summary(table)
t1, t2, t3, t4, t5 = st.columns(5)
total = int(summary["queries"].sum())
t1.metric("Queries", f"{total:,}")
t2.metric(
    "Error rate",
    f"{summary['server_errors'].sum() / max(total, 1):.2%}",
    help="Server errors (5xx): what an endpoint's status is judged on.",
)
t3.metric(
    "Client errors",
    f"{summary['client_errors'].sum() / max(total, 1):.2%}",
    help="Answers 4xx (bad records, unknown keys, refused API keys): the callers' side, "
    "shown but never alarmed.",
)
t4.metric("p95 latency", f"{summary['p95_ms'].max():.1f} ms")
t5.metric("Generations", f"{summary['generation'].nunique()}")

for field, title in (
    ("queries", "Volume"),
    ("error_rate", "Error rate (5xx)"),
    ("client_error_rate", "Client errors (4xx)"),
    ("p95_ms", "p95 latency (ms)"),
):
    st.altair_chart(
        alt.Chart(over)
        .mark_line(point=True)
        .encode(
            x=alt.X("bucket:T", title=None),
            y=alt.Y(f"{field}:Q", title=title),
            color="series:N",
            tooltip=[
                "bucket",
                "series",
                "queries",
                "error_rate",
                "client_error_rate",
                "p50_ms",
                "p95_ms",
                "p99_ms",
            ],
        )
        .properties(height=180),
        width="stretch",
        key=f"api_{field}",
    )

st.subheader("By service, endpoint and generation")
st.dataframe(summary, hide_index=True, width="stretch", key="api_summary")

errors = apihealth.errors(table)
st.subheader("Errors")
if errors.empty:
    st.success("No query answered with an error.", icon=":material/check_circle:")
else:
    st.dataframe(errors, hide_index=True, width="stretch", key="api_errors")

st.subheader("A/B: generations on the same traffic")
# Only named endpoints that some generation answered (a refused query has no generation).
answered = summary.dropna(subset=["service", "endpoint", "generation"])
endpoints = answered[["service", "endpoint"]].drop_duplicates().to_dict("records")
labels = [f"{e['service']}/{e['endpoint']}" for e in endpoints]
if not labels:
    st.caption("No query was answered by a generation yet: every one was refused.")
    st.stop()
pick = st.selectbox("Endpoint", labels, key="api_ab_endpoint")
chosen = endpoints[labels.index(pick)]
ab = apihealth.ab_compare(table, chosen["service"], chosen["endpoint"])
if ab["generation"].nunique() < 2:
    st.caption(
        "Only one generation answered this endpoint: deploy a second package version with a "
        "traffic split to compare them here."
    )
st.dataframe(ab, hide_index=True, width="stretch", key="api_ab")
