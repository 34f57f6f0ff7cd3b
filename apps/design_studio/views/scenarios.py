"""Scenarios page: edit a scenario's steps, conditions, triggers and reporters (YAML, checked
before it is saved), and run it here on the design node while watching its steps."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from apps.common.auth import current_user
from apps.common.context import get_settings, get_store
from apps.common.status import status_badge, style_status
from apps.design_studio.state import current_project, show_conflict, version_key
from engine.automation import runs
from engine.core.errors import NodalError
from engine.design import projects as design
from engine.project import definitions, triggers

NEW = "+ New scenario"
TEMPLATE = """name: {name}
description: What this scenario does.
triggers:
  - type: time
    every: daily at 06:00            # plain words, or cron: "0 6 * * *" (UTC)
  # - type: dataset_changed          # a new partition of a dataset landed
  #   dataset: transactions
  # - type: after_scenario           # another scenario of the project ended
  #   scenario: daily_scoring
steps:
  - name: check_incoming
    type: run_checks                 # build, run_checks, train, score, publish_dashboard, sql, python
    dataset: transactions
    partition: "{{day}}"
  # - name: notify
  #   type: sql
  #   run_if: prior_failure          # no_prior_failure (default), always, prior_failure
  #   sql: SELECT 1
reporters:
  - type: log                        # or webhook, with url:
"""
RUN_KEY = "design_scenario_run"

project = current_project()
settings = get_settings()
store = get_store(settings)
st.title(f"Scenarios of {project.name}")

choice = st.selectbox("Scenario", [NEW, *sorted(project.scenarios)], key="scenario_choice")
if choice == NEW:
    name = st.text_input("Name of the new scenario", key="new_scenario_name").strip()
else:
    name = choice
text_key, vkey = f"scenario_text::{choice}", version_key("scenario", choice)
if text_key not in st.session_state:
    if choice == NEW:
        st.session_state[text_key], st.session_state[vkey] = (
            TEMPLATE.format(name="my_scenario"),
            None,
        )
    else:
        text, version = definitions.read(project.root, f"scenarios/{choice}.yaml")
        st.session_state[text_key], st.session_state[vkey] = text or "", version

with st.expander("Schedule in plain words"):
    words = st.text_input(
        "When",
        "daily at 06:00",
        key="schedule_words",
        help="e.g. every 15 minutes, weekdays at 07:30",
    )
    try:
        st.code(
            f'triggers:\n  - type: time\n    cron: "{triggers.schedule_to_cron(words)}"   # {words}',
            language="yaml",
        )
    except ValueError as exc:
        st.error(str(exc))

text = st.text_area("Definition (YAML)", key=text_key, height=420)
cols = st.columns(2)
if cols[0].button("Save", key="save_scenario", icon=":material/save:", type="primary"):
    base = st.session_state.get(vkey) if choice != NEW else definitions.ABSENT
    try:
        if choice == NEW and not name:
            raise NodalError("give the new scenario a name")
        st.session_state[version_key("scenario", name)] = design.save_folder_definition(
            project, "scenarios", name, text, base
        )
    except definitions.DefinitionConflict as exc:
        show_conflict(exc)
    except design.DefinitionInvalid as exc:
        st.error("Not saved: the scenario has problems.")
        for problem in exc.problems:
            st.markdown(f"- {problem}")
    except NodalError as exc:
        st.error(f"Not saved: {exc}")
    else:
        if choice == NEW:  # open it as an existing scenario from now on
            st.session_state[f"scenario_text::{name}"] = text
        st.success(f"Scenario **{name}** saved (`scenarios/{name}.yaml`).")

if choice != NEW:
    day = cols[1].text_input("Day to run for", "latest", key="scenario_day")
    if cols[1].button(
        "Run here on the design node", key="run_scenario", icon=":material/play_arrow:"
    ):
        try:
            st.session_state[RUN_KEY] = design.run_scenario_here(
                store, current_project(), name, current_user(), {"day": day.strip() or "latest"}
            )
        except NodalError as exc:
            st.error(f"Not started: {exc}")


def _steps_frame(run: dict) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "step": s["name"],
                "type": s["step_type"],
                "status": s["status"],
                "message": s["message"],
                "started": (s["started_at"] or "")[11:19],
                "ended": (s["ended_at"] or "")[11:19],
            }
            for s in run["steps"]
        ],
        columns=["step", "type", "status", "message", "started", "ended"],
    )


@st.fragment(run_every=1.0)
def watch_run() -> None:
    """The run's steps, redrawn every second until it ends."""
    run_id = st.session_state.get(RUN_KEY)
    if run_id is None:
        return
    run = runs.get_run(store, run_id)
    st.markdown(
        f"Run **{run_id}** of {run['scenario']}: {status_badge(run['status'])} {run['message']}"
    )
    st.dataframe(
        style_status(_steps_frame(run), "status"),
        hide_index=True,
        width="stretch",
        key=f"steps_{run_id}",
    )
    if run["status"] not in (runs.QUEUED, runs.RUNNING):
        st.session_state.pop(RUN_KEY, None)


watch_run()

st.subheader("Runs on the design node")
design_runs = [
    r for r in runs.list_runs(store, design.DESIGN_NODE, limit=20) if r["project"] == project.name
]
if design_runs:
    st.dataframe(
        style_status(
            pd.DataFrame(design_runs)[
                ["run_id", "scenario", "status", "message", "requested_at", "ended_at"]
            ],
            "status",
        ),
        hide_index=True,
        width="stretch",
        key="design_runs",
    )
else:
    st.caption("No scenario has run on the design node yet.")
