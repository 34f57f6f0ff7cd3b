"""Recipes page: create and edit SQL or Python recipes, or windows declarations (YAML), with a
preview of the first rows and the output schema; save (refused on a concurrent edit, shown the
difference; a wrong declaration is refused naming its field) and build."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from apps.design_studio.state import current_project, show_conflict, version_key
from engine.core.errors import NodalError
from engine.project import definitions, flow, input_modes, python_recipes, recipes, windows

NEW = "+ New recipe"
LANGUAGE_NAMES = {
    "sql": "SQL (DuckDB)",
    "python": "Python (pandas)",
    "windows": "Windowed features (YAML)",
}
WINDOWS_TEMPLATE = """\
# Features of each event's key over its earlier events (engine.project.windows).
events: <the input dataset>
key: <column>
time: <a TIMESTAMP column>
id: <the event id column>
features:
  events_1h: {agg: count, window: 1h}
"""


def show_failure(prefix: str, exc: NodalError) -> None:
    """An error, and for Python the frames of the analyst's own code."""
    text = str(exc)
    st.error(f"{prefix}the recipe fails {text}" if text.startswith("at line") else prefix + text)
    tb = getattr(exc, "user_traceback", "")
    if tb:
        st.caption("Traceback (your code only):")
        st.code(tb, language="text")


project = current_project()
st.title(f"Recipes of {project.name}")

choice = st.selectbox("Recipe", [NEW, *sorted(project.recipes)], key="recipe_choice")
existing = project.recipes.get(choice)
cols = st.columns(2)
if existing:
    name, output = existing.name, existing.output
    cols[0].text_input("Name", value=name, disabled=True, key=f"name::{name}")
    cols[1].text_input("Output dataset", value=output, disabled=True, key=f"output::{name}")
    default_inputs, default_modes = list(existing.inputs), existing.inputs
    language = recipes.language_of(existing.sql_file)
else:
    name = cols[0].text_input("Name", key="new_recipe_name", help="Letters, digits and _.").strip()
    output = (
        cols[1]
        .text_input(
            "Output dataset",
            key="new_recipe_output",
            help="A new managed dataset (or an existing one without a recipe).",
        )
        .strip()
    )
    default_inputs, default_modes = [], {}
    language = st.radio(
        "Language",
        list(LANGUAGE_NAMES),
        format_func=LANGUAGE_NAMES.get,
        horizontal=True,
        key="new_recipe_language",
    )

sql_key, vkey = f"sql::{choice}", version_key("recipe", choice)
if not existing and language != "sql":  # its own editor, with a template to start
    sql_key = f"sql::{choice}::{language}"
if existing and sql_key not in st.session_state:
    text, version = recipes.read_recipe(project, choice)
    st.session_state[sql_key], st.session_state[vkey] = text, version
if not existing and sql_key not in st.session_state:
    templates = {"python": python_recipes.TEMPLATE, "windows": WINDOWS_TEMPLATE}
    st.session_state[sql_key] = templates.get(language, "")

inputs = st.multiselect(
    "Inputs",
    [n for n in project.datasets if n != output],
    default=[i for i in default_inputs if i in project.datasets],
    key=f"inputs::{choice}",
)
modes: dict[str, object] = {}
partitioned = [i for i in inputs if project.datasets[i].partitioned_by]
if partitioned:
    mode_cols = st.columns(len(partitioned))
    for col, ds_name in zip(mode_cols, partitioned, strict=True):
        current = default_modes.get(ds_name, "all")
        window = isinstance(current, input_modes.DaysBefore)
        picked = col.selectbox(
            f"{ds_name} is read",
            ["all", "same", "days before"],
            index=2 if window else ["all", "same"].index(current),
            key=f"mode::{choice}::{ds_name}",
            help="all: every partition (a day's build: up to that day). same: only the "
            "partitions being built (daily builds). days before: the N days before each day "
            "built, that day excluded (inputs and output partitioned by day).",
        )
        modes[ds_name] = picked
        if picked == "days before":
            days = col.number_input(
                "days before",
                min_value=1,
                max_value=input_modes.MAX_DAYS_BEFORE,
                value=current.days if window else 30,
                key=f"days::{choice}::{ds_name}",
            )
            modes[ds_name] = input_modes.DaysBefore(int(days))
modes.update({i: "all" for i in inputs if i not in modes})
partition_output = False
if not existing and output not in project.datasets:
    partition_output = st.checkbox(
        "Partition the output by day (the SQL must return a `day` column)",
        key="new_recipe_partitioned",
    )
if language == "python":
    sql = st.text_area(
        "Python: run(inputs, variables) returns the output DataFrame",
        key=sql_key,
        height=300,
        help="inputs: one pandas DataFrame per input dataset; variables: the project's "
        "variables. Runs in its own process; set TIMEOUT = <seconds> to change the "
        f"{python_recipes.DEFAULT_TIMEOUT:g} s default.",
    )
elif language == "windows":
    sql = st.text_area(
        "Windowed features (YAML: events, key, time, id, features)",
        key=sql_key,
        height=300,
        help="Each feature is {agg, of, window}: agg one of "
        f"{', '.join(windows.AGGREGATES)}; window like 90s, 30m, 1h or 7d. An event counts "
        "only its key's events strictly before it. The input is the events, read same.",
    )
else:
    sql = st.text_area("SQL (DuckDB; each input is a table of its name)", key=sql_key, height=260)

buttons = st.columns(3)
do_preview = buttons[0].button("Preview", key="preview", icon=":material/visibility:")
do_save = buttons[1].button("Save", key="save_recipe", icon=":material/save:", type="primary")
do_build = buttons[2].button(
    "Save and build downstream", key="save_and_build", icon=":material/play_arrow:"
)

if do_preview:
    try:
        with st.spinner("running the recipe …" if language == "python" else "previewing …"):
            preview = recipes.preview(
                project, sql, modes, language=language, output=output, name=name or None
            )
    except NodalError as exc:
        show_failure("", exc)
    else:
        st.caption(
            f'First {len(preview.rows)} rows (inputs read "same" show their newest partition, '
            "windows the days before it)."
        )
        st.dataframe(preview.rows, hide_index=True, width="stretch", key="preview_rows")
        st.dataframe(
            pd.DataFrame({"column": list(preview.schema), "type": list(preview.schema.values())}),
            hide_index=True,
            key="preview_schema",
        )

if do_save or do_build:
    base = st.session_state.get(vkey, definitions.ABSENT)
    try:
        new_version = recipes.save_recipe(
            project,
            name,
            sql,
            modes,
            output,
            base,
            "day" if partition_output else None,
            language,
        )
    except definitions.DefinitionConflict as exc:
        st.session_state["recipe_conflict"] = (choice, exc)
    except NodalError as exc:
        show_failure("Not saved: ", exc)
    else:
        st.session_state.pop("recipe_conflict", None)
        st.session_state[version_key("recipe", name)] = new_version
        if not existing:  # the new recipe's own editor starts from what was saved
            st.session_state[f"sql::{name}"] = sql
        st.success(f"Recipe **{name}** saved (`{recipes.sql_path(name, language)}`, `flow.yaml`).")
        if do_build:
            bar = st.progress(0.0, text="building …")

            def progress(done: int, total: int, recipe: str) -> None:
                bar.progress(done / max(total, 1), text=f"running {recipe}" if recipe else "done")

            try:
                result = flow.build_downstream(current_project(), output, progress=progress)
            except NodalError as exc:
                show_failure("Build failed: ", exc)
            else:
                st.success(
                    "Built " + ", ".join(f"{r.output} ({r.rows:,} rows)" for r in result.runs) + "."
                )

conflict = st.session_state.get("recipe_conflict")
if conflict and conflict[0] == choice:
    show_conflict(conflict[1])
    if st.button("Load their version (your text is replaced)", key="reload_recipe"):
        st.session_state.pop(sql_key, None)
        st.session_state.pop(vkey, None)
        st.session_state.pop("recipe_conflict", None)
        st.rerun()
