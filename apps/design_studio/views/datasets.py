"""Datasets page: import a CSV or Parquet file (schema the analyst can correct), explore a
sample and a profile of every column."""

from __future__ import annotations

import tempfile
from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

from apps.design_studio.state import current_project
from engine import dataset_import, profiling
from engine.errors import NodalError
from engine.storage.datasets import DatasetError

project = current_project()
st.title(f"Datasets of {project.name}")
import_tab, explore_tab = st.tabs(["Import a file", "Explore"])


def _upload_to_file(upload) -> Path:  # noqa: ANN001 - Streamlit's UploadedFile
    """Keep an uploaded file under its own name (errors then name the file the user knows)."""
    folder = Path(tempfile.mkdtemp(prefix="nodal-upload-"))
    path = folder / Path(upload.name).name
    path.write_bytes(upload.getvalue())
    return path


def import_form(path: Path) -> None:
    try:
        inferred = dataset_import.infer_schema(path)
    except NodalError as exc:
        st.error(str(exc))
        return
    st.markdown(
        f"**{path.name}**: {len(inferred)} columns. Correct a type if it was guessed wrong."
    )
    edited = st.data_editor(
        pd.DataFrame({"column": list(inferred), "type": list(inferred.values())}),
        hide_index=True,
        disabled=["column"],
        column_config={
            "type": st.column_config.SelectboxColumn(
                options=sorted(set(dataset_import.TYPES) | set(inferred.values())),
                required=True,
            )
        },
        key=f"schema_editor::{path}",
    )
    dates = [
        c
        for c, t in zip(edited["column"], edited["type"], strict=True)
        if t in ("DATE", "TIMESTAMP")
    ]
    cols = st.columns(2)
    name = cols[0].text_input(
        "Dataset name",
        value=path.stem.replace("-", "_").replace(" ", "_"),
        key=f"import_name::{path}",
    )
    partition = cols[1].selectbox(
        "Partition by day of",
        ["(not partitioned)", *dates],
        key=f"import_partition::{path}",
        help="A date or timestamp column: one partition per day, as the flow builds them.",
    )
    if st.button("Import", key="import", icon=":material/upload:", type="primary"):
        schema = dict(zip(edited["column"], edited["type"], strict=True))
        try:
            result = dataset_import.import_file(
                project,
                name.strip(),
                path,
                schema,
                partition_column=None if partition.startswith("(") else partition,
            )
        except NodalError as exc:
            st.error(f"Nothing was imported: {exc}")
        else:
            parts = f" in {len(result.partitions)} day partitions" if result.partitions else ""
            st.success(
                f"Imported **{result.dataset}**: {result.rows:,} rows, "
                f"{len(result.schema)} columns{parts}."
            )


with import_tab:
    source = st.radio(
        "Source",
        ["Upload a file", "A path on the design node"],
        key="import_source",
        horizontal=True,
    )
    path: Path | None = None
    if source == "Upload a file":
        upload = st.file_uploader("CSV or Parquet file", type=["csv", "parquet"], key="upload")
        if upload is not None:
            cached = st.session_state.get("upload_file")
            if not cached or cached[0] != upload.file_id:
                st.session_state["upload_file"] = (upload.file_id, _upload_to_file(upload))
            path = st.session_state["upload_file"][1]
    else:
        typed = st.text_input("Path of a .csv or .parquet file", key="import_path")
        path = Path(typed.strip()) if typed.strip() else None

    if path is not None:
        import_form(path)

with explore_tab:
    project = current_project()  # includes what was just imported
    names = [n for n in project.datasets if project.dataset(n).exists()]
    if not names:
        st.info("No dataset has data yet: import a file or build the flow.")
        st.stop()
    cols = st.columns(2)
    dataset = cols[0].selectbox("Dataset", names, key="explore_dataset")
    ref = project.dataset(dataset)
    parts = ref.partitions()
    part = None
    if parts:
        choice = cols[1].selectbox("Partition", ["all", *reversed(parts)], key="explore_partition")
        part = None if choice == "all" else [choice]
    try:
        sample = profiling.sample(ref, 100, part)
        profiles = profiling.profile(ref, part)
    except (DatasetError, NodalError) as exc:
        st.error(str(exc))
        st.stop()
    st.subheader("Sample")
    st.dataframe(sample, hide_index=True, width="stretch", key="sample_table")
    st.subheader("Profile")
    st.caption(f"{profiles[0].rows if profiles else 0:,} rows. Distinct counts are approximate.")
    st.dataframe(
        profiling.summary_frame(profiles),
        hide_index=True,
        width="stretch",
        column_config={
            "missing": st.column_config.NumberColumn(format="percent"),
            "mean": st.column_config.NumberColumn(format="%.4g"),
            "median": st.column_config.NumberColumn(format="%.4g"),
        },
        key="profile_table",
    )
    by_name = {p.name: p for p in profiles}
    column = st.selectbox("Column", list(by_name), key="profile_column")
    prof = by_name[column]
    if prof.histogram:
        hist = pd.DataFrame(prof.histogram, columns=["from", "to", "rows"])
        chart = (
            alt.Chart(hist)
            .mark_bar()
            .encode(
                x=alt.X("from:Q", bin="binned", title=column),
                x2="to:Q",
                y=alt.Y("rows:Q", title="rows"),
                tooltip=["from", "to", "rows"],
            )
        )
        q = prof.quantiles
        st.caption(
            f"min {prof.min:,.4g} · p05 {q['p05']:,.4g} · p25 {q['p25']:,.4g} · median "
            f"{q['p50']:,.4g} · p75 {q['p75']:,.4g} · p95 {q['p95']:,.4g} · max {prof.max:,.4g}"
        )
    else:
        tops = pd.DataFrame(prof.top_values, columns=["value", "rows"])
        chart = (
            alt.Chart(tops)
            .mark_bar()
            .encode(
                x=alt.X("rows:Q"),
                y=alt.Y("value:N", sort="-x", title=column),
                tooltip=["value", "rows"],
            )
        )
    st.altair_chart(chart, width="stretch", key="profile_chart")
