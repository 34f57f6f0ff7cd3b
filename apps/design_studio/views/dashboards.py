"""Dashboards page: define what the business dashboard shows (scored dataset, threshold,
date column, columns, map layers) and preview it on this node's data. A map's roles
(``type: map``, ``roles:``, ``filters:``…) are edited in its YAML; saving keeps them."""

from __future__ import annotations

import altair as alt
import streamlit as st

from apps.design_studio.state import current_project, show_conflict, version_key
from engine.core import yamltext
from engine.core.errors import NodalError
from engine.design import projects as design
from engine.models.scoring import OUTPUT_COLUMNS
from engine.project import dashboard_spec, definitions
from engine.storage import datasets as ds

LAYERS = dashboard_spec.LAYERS
NEW = "+ New dashboard"

project = current_project()
st.title(f"Dashboards of {project.name}")
choice = st.selectbox("Dashboard", [NEW, *sorted(project.dashboards)], key="dashboard_choice")
rel = None if choice == NEW else f"dashboards/{choice}.yaml"
text, version = definitions.read(project.root, rel) if rel else (None, definitions.ABSENT)
spec = yamltext.load(text)
vkey = version_key("dashboard", choice)
st.session_state.setdefault(vkey, version)

datasets = list(project.datasets)
with st.form(f"dashboard_form::{choice}"):
    cols = st.columns(3)
    name = cols[0].text_input(
        "Name", spec.get("name", ""), disabled=choice != NEW, key=f"db_name::{choice}"
    )
    title = cols[1].text_input("Title", spec.get("title", ""), key=f"db_title::{choice}")
    date_column = cols[2].text_input(
        "Date column", spec.get("date_column", "day"), key=f"db_date::{choice}"
    )
    cols = st.columns(3)
    source = cols[0].selectbox(
        "Scored dataset shown",
        datasets,
        index=datasets.index(spec["source"]) if spec.get("source") in datasets else 0,
        key=f"db_source::{choice}",
    )
    output = cols[1].selectbox(
        "Published extract",
        datasets,
        index=datasets.index(spec["output"]) if spec.get("output") in datasets else 0,
        key=f"db_output::{choice}",
    )
    threshold = cols[2].number_input(
        "Threshold (0 = the model's own)",
        0.0,
        1.0,
        float(spec.get("threshold") or 0.0),
        0.01,
        key=f"db_threshold::{choice}",
    )
    try:
        source_columns = list(ds.schema(project.dataset(source)))
    except (NodalError, ds.DatasetError):
        source_columns = list(spec.get("columns") or [])
    columns = st.multiselect(
        "Columns shipped to the dashboard",
        sorted(set(source_columns) | set(spec.get("columns") or [])),
        default=list(spec.get("columns") or []),
        key=f"db_columns::{choice}",
    )
    layers = st.multiselect(
        "Map layers",
        LAYERS,
        default=[x for x in spec.get("layers", ["points", "city_labels"]) if x in LAYERS],
        key=f"db_layers::{choice}",
    )
    submitted = st.form_submit_button("Save", icon=":material/save:")

if submitted:
    target = name.strip() if choice == NEW else choice
    new_text = text or ""
    values = {
        "name": target,
        "title": title,
        "source": source,
        "output": output,
        "date_column": date_column,
        "threshold": float(threshold) or None,
        "columns": columns,
        "layers": layers,
    }
    for key, value in values.items():
        if value is None or value == []:
            new_text = yamltext.remove_entry(new_text, key)
        elif spec.get(key) != value:
            new_text = yamltext.set_entry(new_text, key, value)
    try:
        st.session_state[version_key("dashboard", target)] = design.save_folder_definition(
            project, "dashboards", target, new_text, st.session_state.get(vkey, definitions.ABSENT)
        )
    except definitions.DefinitionConflict as exc:
        show_conflict(exc)
    except NodalError as exc:
        st.error(f"Not saved: {exc}")
    else:
        st.success(f"Dashboard **{target}** saved (`dashboards/{target}.yaml`).")

if choice != NEW:
    st.subheader("Preview")
    ref = project.dataset(spec.get("source", source))
    parts = ref.partitions()
    if not ref.exists() or (ref.partitioned_by and not parts):
        st.info(
            f"`{ref.name}` has no data on the design node yet: run the scoring scenario here "
            "(Scenarios page) to preview the dashboard."
        )
        st.stop()
    day = st.selectbox("Day", list(reversed(parts)), key="db_preview_day") if parts else None
    cols_sql = ", ".join(f'"{c}"' for c in spec.get("columns") or []) or "*"
    frame = ds.query_df(f"SELECT {cols_sql} FROM d", {"d": (ref, [day] if day else None)})
    limit = float(spec.get("threshold") or 0.0)
    # A map names its columns in roles:; other dashboards get the batch scorer's columns.
    roles = dashboard_spec.map_spec(choice, spec, OUTPUT_COLUMNS[:2])
    score, flag = roles.score, roles.flag
    if score in frame:
        flagged = (
            frame[score] >= limit
            if limit or not (flag and flag in frame)
            else frame[flag].astype(bool)
        )
    else:
        flagged = frame[flag].astype(bool) if flag and flag in frame else None
    n_flagged = int(flagged.sum()) if flagged is not None else 0
    st.markdown(f"**{len(frame):,}** rows on {day}, **{n_flagged:,}** flagged.")
    lat, lon = roles.latitude, roles.longitude
    if dashboard_spec.is_map(spec) and {lat, lon} <= set(frame.columns) and flagged is not None:
        shown = frame[flagged.to_numpy()].head(5000)
        amount = roles.amount if roles.amount in shown else None
        tips = [c for c in (roles.id, roles.category, amount, score) if c and c in shown]
        st.altair_chart(
            alt.Chart(shown, title="Flagged rows (offline preview, no basemap)")
            .mark_circle(opacity=0.6)
            .encode(
                x=alt.X(f"{lon}:Q", scale=alt.Scale(zero=False), title="longitude"),
                y=alt.Y(f"{lat}:Q", scale=alt.Scale(zero=False), title="latitude"),
                size=alt.Size(f"{amount}:Q", legend=None) if amount else alt.value(30),
                color=alt.Color(f"{score}:Q", scale=alt.Scale(scheme="reds"))
                if score in shown
                else alt.value("red"),
                tooltip=tips,
            ),
            width="stretch",
            key="dashboard_preview_chart",
        )
    st.dataframe(frame.head(200), hide_index=True, width="stretch", key="dashboard_preview_rows")
