"""Design Studio: the analyst's view of a project (flow, datasets, model versions).

Run with ``streamlit run apps/design_studio/app.py``; ``NODAL_HOME`` names the home.
"""

from __future__ import annotations

import streamlit as st

from apps.common.context import get_settings, get_store
from engine import design

st.set_page_config(
    page_title="nodal · Design Studio", page_icon=":material/account_tree:", layout="wide"
)

settings = get_settings()
projects = [p["name"] for p in design.list_projects(get_store(settings))]

with st.sidebar:
    st.title("Design Studio")
    if projects:
        # Pages read the choice from here: widget keys of the entry script are not a stable
        # place to read it from once the user switches pages.
        st.session_state["design_project"] = st.selectbox(
            "Project", projects, key="project", help="Projects on the design node."
        )
    st.caption(f"Home: `{settings.home}`")

pages = [
    st.Page("pages/flow.py", title="Flow", icon=":material/account_tree:", default=True),
    st.Page("pages/model.py", title="Model", icon=":material/model_training:"),
]
if not projects:
    # Declare the pages anyway (hidden), or Streamlit would list pages/ on its own.
    st.navigation(pages, position="hidden")
    st.title("Design Studio")
    st.info(
        f"There is no project on the design node yet (home `{settings.home}`).\n\n"
        "Import the fraud example with `nodal project import examples/fraud`, "
        "or prepare the whole demo with `nodal demo --prepare-only`, then reload this page.",
        icon=":material/info:",
    )
    st.stop()

st.navigation(pages).run()
