"""What every Design Studio page needs: the open project, and how to show a refused save."""

from __future__ import annotations

import streamlit as st

from apps.common.auth import current_user
from apps.common.context import get_settings, get_store
from engine.design import projects as design
from engine.project.definitions import DefinitionConflict
from engine.project.project import Project, ProjectError

PROJECT_KEY = "design_project"
OPEN_REQUEST = "open_project_request"  # a page asks the sidebar to switch project


def current_project() -> Project:
    """The project chosen in the sidebar, read from disk now (so others' saves show)."""
    name = st.session_state.get(PROJECT_KEY)
    if not name:
        st.info(
            "No project is open: create or open one on the Projects page.",
            icon=":material/info:",
        )
        st.stop()
    try:
        return design.open_as(get_settings(), get_store(get_settings()), current_user(), name)
    except ProjectError as exc:
        st.error(f"The project cannot be read: {exc}")
        st.stop()


def show_conflict(exc: DefinitionConflict) -> None:
    """A refused save: what happened, and their version against ours."""
    st.error(str(exc), icon=":material/sync_problem:")
    if exc.diff:
        st.caption("Their saved version (−) against yours (+):")
        st.code(exc.diff, language="diff")


def version_key(kind: str, name: str) -> str:
    """Session key holding the version of a definition an editor started from."""
    return f"base_version::{kind}::{name}"
