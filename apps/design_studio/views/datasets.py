"""Datasets page: import a CSV or Parquet file (schema the analyst can correct), explore a
sample and a profile of every column."""

from __future__ import annotations

from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

from apps.common.context import get_settings
from apps.design_studio.state import current_project
from engine.core.errors import NodalError
from engine.design import dataset_import, profiling
from engine.storage.datasets import DatasetError

home = get_settings().home
project = current_project()
st.title(f"Datasets of {project.name}")
import_tab, explore_tab = st.tabs(["Import a file", "Explore"])
UPLOAD = "upload_file"  # (file id, staged path) of the file in the uploader
IMPORTED = "upload_imported"  # file id of the upload imported last (not staged again)


def _staged_upload(upload) -> Path | None:  # noqa: ANN001 - Streamlit's UploadedFile
    """The uploaded file on disk, under its own name (errors then name the file the user
    knows); written once per upload and removed when it is replaced, cleared or imported."""
    cached = st.session_state.get(UPLOAD)
    if cached and (upload is None or cached[0] != upload.file_id):
        dataset_import.discard_upload(home, cached[1])
        st.session_state.pop(UPLOAD)
        cached = None
    if upload is None or st.session_state.get(IMPORTED) == upload.file_id:
        return None
    if cached is None:
        path = dataset_import.stage_upload(home, upload.name, upload.getvalue())
        st.session_state[UPLOAD] = cached = (upload.file_id, path)
    return cached[1]


def _done_with_upload(imported: bool) -> None:
    """An import ended (either way): the staged file goes; a refused one is staged again on
    the next run, so the analyst can correct a type and retry."""
    cached = st.session_state.pop(UPLOAD, None)
    if cached:
        dataset_import.discard_upload(home, cached[1])
        if imported:
            st.session_state[IMPORTED] = cached[0]


NO_NAME = "(no name)"


def import_form(path: Path, form_id: str) -> None:
    try:
        inferred = dataset_import.infer_schema(path, project=project)
    except NodalError as exc:
        st.error(str(exc))
        return
    columns = list(inferred)  # the file's names, in order: the editor's rows
    st.markdown(
        f"**{path.name}**: {len(inferred)} columns. Correct a type if it was guessed wrong, "
        "rename a column, or untick **keep** to leave it out."
    )
    edited = st.data_editor(
        pd.DataFrame(
            {
                "keep": [True] * len(columns),
                "column": [c or NO_NAME for c in columns],
                "name": columns,
                "type": list(inferred.values()),
            }
        ),
        hide_index=True,
        disabled=["column"],
        column_config={
            "keep": st.column_config.CheckboxColumn(help="Untick to leave the column out."),
            "column": st.column_config.TextColumn(help="The column's name in the file."),
            "name": st.column_config.TextColumn(help="Its name in the dataset."),
            "type": st.column_config.SelectboxColumn(
                options=sorted(set(dataset_import.TYPES) | set(inferred.values())),
                required=True,
            ),
        },
        key=f"schema_editor::{form_id}",
    )
    keep = [bool(k) for k in edited["keep"]]
    names = ["" if n is None or pd.isna(n) else str(n).strip() for n in edited["name"]]
    drop = [c for c, k in zip(columns, keep, strict=True) if not k]
    rename = {c: n for c, n, k in zip(columns, names, keep, strict=True) if k and n != c}
    unnamed = [i + 1 for i, (n, k) in enumerate(zip(names, keep, strict=True)) if k and not n]
    if unnamed:
        st.warning(
            f"Column {unnamed[0]} has no name (often the index a DataFrame was saved with): "
            "give it one in **name**, or untick **keep** to leave it out.",
            icon=":material/edit:",
        )
    dates = [
        c
        for c, t, k in zip(columns, edited["type"], keep, strict=True)
        if k and t in ("DATE", "TIMESTAMP")
    ]
    shown = dict(zip(columns, names, strict=True))
    cols = st.columns(2)
    name = cols[0].text_input(
        "Dataset name",
        value=path.stem.replace("-", "_").replace(" ", "_"),
        key=f"import_name::{form_id}",
    )
    partition = cols[1].selectbox(
        "Partition by day of",
        [None, *dates],
        format_func=lambda c: "(not partitioned)" if c is None else shown[c] or NO_NAME,
        key=f"import_partition::{form_id}",
        help="A date or timestamp column: one partition per day, as the flow builds them.",
    )
    if st.button("Import", key="import", icon=":material/upload:", type="primary"):
        schema = dict(zip(columns, edited["type"], strict=True))
        try:
            result = dataset_import.import_file(
                project,
                name.strip(),
                path,
                schema,
                partition_column=partition,
                drop=drop,
                rename=rename,
            )
        except NodalError as exc:
            _done_with_upload(imported=False)
            st.error(f"Nothing was imported: {exc}")
        else:
            _done_with_upload(imported=True)
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
        path = _staged_upload(upload)
        form_id = f"upload:{upload.file_id}" if upload is not None else ""
        if upload is not None and path is None:
            st.caption(f"**{upload.name}** was imported: upload another file to import more.")
    else:
        _staged_upload(None)  # switching away from an upload drops its staged file
        typed = st.text_input(
            "Path of a .csv or .parquet file in the landing zone",
            key="import_path",
            help=f"Only files under {get_settings().data_dir.absolute()} can be imported by path.",
        )
        path = Path(typed.strip()) if typed.strip() else None
        form_id = f"path:{path}"

    if path is not None:
        import_form(path, form_id)

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
    exact = all(p.distinct_exact for p in profiles)
    st.caption(
        f"{profiles[0].rows if profiles else 0:,} rows. "
        + (
            "Distinct counts are exact."
            if exact
            else f"Distinct counts are estimates (≈) above "
            f"{profiling.EXACT_DISTINCT_MAX_ROWS:,} rows."
        )
    )
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
