"""Settings and control store of a Streamlit app process, opened once and cached.

Settings are read from the ``NODAL_*`` environment at the app's entry, as for every other
nodal process. The cache is keyed on those variables, so tests that point the same process
at another home (``AppTest`` with a different ``NODAL_HOME``) get that home, not a stale one.
"""

from __future__ import annotations

import os

import streamlit as st

from engine.core.settings import Settings, load_settings
from engine.storage.control import ControlStore, open_store


@st.cache_resource(show_spinner=False)
def _settings_for(environ: tuple[tuple[str, str], ...]) -> Settings:
    return load_settings(environ=dict(environ))


def get_settings() -> Settings:
    """This process's settings (from the ``NODAL_*`` environment variables)."""
    nodal_vars = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("NODAL_")))
    return _settings_for(nodal_vars)


@st.cache_resource(show_spinner=False)
def _store_for(url: str) -> ControlStore:
    return open_store(url)


def get_store(settings: Settings) -> ControlStore:
    """The control store named by ``settings`` (one per URL and process)."""
    return _store_for(settings.control_store_url)
