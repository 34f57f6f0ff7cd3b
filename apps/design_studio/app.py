"""Design Studio: where analysts build, check and package a project in the browser.

Run with ``streamlit run apps/design_studio/app.py``; ``NODAL_HOME`` names the home. Every
page is a thin adapter over engine functions; everything it saves lands as plain files in
the project folder (so the CLI, git and bundles see it).
"""

from __future__ import annotations

import streamlit as st

from apps.common.auth import current_user, require_sign_in
from apps.common.context import get_settings, get_store
from apps.design_studio.state import OPEN_REQUEST, PROJECT_KEY
from engine.design import dataset_import
from engine.design import projects as design

st.set_page_config(
    page_title="nodal · Design Studio", page_icon=":material/account_tree:", layout="wide"
)

require_sign_in("Design Studio")
settings = get_settings()


@st.cache_resource
def _once_per_process(home: str) -> int:
    """At start: remove uploads a stopped Studio left behind (or abandoned long ago)."""
    return dataset_import.sweep_uploads(settings.home)


_once_per_process(str(settings.home))
projects = [p["name"] for p in design.visible_projects(get_store(settings), current_user())]

with st.sidebar:
    st.title("Design Studio")
    if projects:
        request = st.session_state.pop(OPEN_REQUEST, None)
        if request in projects:
            st.session_state["project"] = request  # before the picker exists in this run
        wanted = st.session_state.get(PROJECT_KEY) or st.query_params.get("project")
        # Pages read the choice from session state: widget keys of the entry script are not a
        # stable place to read it from once the user switches pages.
        st.session_state[PROJECT_KEY] = st.selectbox(
            "Project",
            projects,
            index=projects.index(wanted) if wanted in projects else 0,
            key="project",
            help="Projects on the design node.",
        )
        st.query_params["project"] = st.session_state[PROJECT_KEY]
    st.caption(f"Home: `{settings.home}`")


def page(file: str, title: str, icon: str, default: str) -> st.Page:
    return st.Page(f"views/{file}", title=title, icon=f":material/{icon}:", default=file == default)


def all_pages(default: str) -> dict[str, list[st.Page]]:
    pages = {
        "Project": [
            page("flow.py", "Flow", "account_tree", default),
            page("projects.py", "Projects", "folder_open", default),
        ],
        "Data": [
            page("datasets.py", "Datasets", "table", default),
            page("recipes.py", "Recipes", "code", default),
            page("checks.py", "Metrics and checks", "rule", default),
        ],
        "Models": [
            page("lab.py", "Lab", "science", default),
            page("model.py", "Saved models", "model_training", default),
        ],
        "Production": [
            page("scenarios.py", "Scenarios", "schedule", default),
            page("dashboards.py", "Dashboards", "map", default),
            page("bundles.py", "Bundles", "inventory_2", default),
            page("api_designer.py", "API Designer", "api", default),
        ],
    }
    return pages


if not projects:
    # Only the Projects page makes sense; the others stay declared (hidden) so a bookmarked
    # page URL still lands somewhere that explains what to do.
    st.navigation(all_pages("projects.py"), position="hidden").run()
else:
    st.navigation(all_pages("flow.py")).run()
