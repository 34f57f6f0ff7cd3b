"""Projects page: list the design node's projects, open one, create a new one."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from apps.common.auth import current_user
from apps.common.context import get_settings, get_store
from apps.design_studio.state import OPEN_REQUEST, PROJECT_KEY
from engine.core.errors import NodalError
from engine.design import projects as design

settings = get_settings()
store = get_store(settings)
projects = design.visible_projects(store, current_user())

st.title("Projects")
if not projects:
    st.info(
        f"There is no project on the design node yet (home `{settings.home}`).\n\n"
        "Create one below, or import the fraud example with "
        "`nodal project import examples/fraud` (or prepare the whole demo with "
        "`nodal demo --prepare-only`), then reload this page.",
        icon=":material/info:",
    )
else:
    st.dataframe(
        pd.DataFrame(projects)[["name", "created_at", "path"]],
        hide_index=True,
        width="stretch",
        key="projects_table",
    )
    names = [p["name"] for p in projects]
    current = st.session_state.get(PROJECT_KEY)
    choice = st.selectbox(
        "Open a project",
        names,
        index=names.index(current) if current in names else 0,
        key="open_project_choice",
    )
    if st.button("Open", key="open_project", icon=":material/folder_open:"):
        st.session_state[OPEN_REQUEST] = choice  # for the sidebar's picker
        st.session_state[PROJECT_KEY] = choice
        st.switch_page("views/flow.py")

st.subheader("New project")
with st.form("new_project", clear_on_submit=False):
    name = st.text_input("Name", key="new_project_name", help="Letters, digits and _.")
    description = st.text_area("Description", key="new_project_description")
    submitted = st.form_submit_button("Create project", icon=":material/add:")
if submitted:
    try:
        project = design.create_project(
            settings, store, name.strip(), description, actor=current_user()
        )
    except NodalError as exc:
        st.error(f"The project was not created: {exc}")
    else:
        st.session_state[OPEN_REQUEST] = project.name
        st.session_state[PROJECT_KEY] = project.name
        st.switch_page("views/flow.py")
