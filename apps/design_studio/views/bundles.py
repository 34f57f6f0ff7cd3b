"""Bundles page: create a bundle (id, release notes, which datasets and model versions
travel), see its difference with the previous bundle, list bundles, revert the project."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from apps.common.auth import current_user
from apps.common.context import get_settings, get_store
from apps.design_studio.state import current_project
from engine.core.errors import NodalError
from engine.deployer import bundles
from engine.design import bundle_contents
from engine.models import saved as models
from engine.storage.objects import open_store as open_objects

project = current_project()
settings = get_settings()
store = get_store(settings)
st.title(f"Bundles of {project.name}")


def show_diff(diff: bundle_contents.BundleDiff, key: str) -> None:
    if diff.before is None:
        st.caption("There is no earlier bundle: everything is new.")
    if diff.empty:
        st.info("No difference.")
        return
    if diff.models:
        st.markdown("**Model versions**")
        st.dataframe(pd.DataFrame(diff.models), hide_index=True, key=f"{key}_models")
    if diff.data:
        st.markdown("**Data**")
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "dataset": d["dataset"],
                        "before": f"{d['before']['rows']:,} rows" if d["before"] else "—",
                        "after": f"{d['after']['rows']:,} rows" if d["after"] else "—",
                    }
                    for d in diff.data
                ]
            ),
            hide_index=True,
            key=f"{key}_data",
        )
    if diff.files:
        st.markdown("**Definitions**")
        st.dataframe(
            pd.DataFrame([{"file": f["path"], "change": f["change"]} for f in diff.files]),
            hide_index=True,
            key=f"{key}_files",
        )
        for f in diff.files:
            with st.expander(f"{f['change']}: {f['path']}"):
                st.code(f["diff"] or "(no text difference)", language="diff")


st.subheader("New bundle")
managed = [
    n for n, d in project.datasets.items() if d.kind == "managed" and project.dataset(n).exists()
]
cols = st.columns([1, 2])
bundle_id = cols[0].text_input("Bundle id", key="bundle_id", help="e.g. v2: letters, digits, . _ -")
notes = cols[1].text_input("Release notes", key="bundle_notes")
carried = st.multiselect(
    "Datasets whose data travel with the bundle",
    managed,
    key="bundle_datasets",
    help="Definitions always travel; data only for the datasets chosen here.",
)
chosen_versions: dict[str, str] = {}
if project.models:
    vcols = st.columns(len(project.models))
    for col, model in zip(vcols, sorted(project.models), strict=True):
        versions = [v["version"] for v in models.list_versions(project, model)]
        active = project.active_model_version(model)
        if versions:
            chosen_versions[model] = col.selectbox(
                f"Version of {model}",
                versions,
                index=versions.index(active) if active in versions else 0,
                key=f"bundle_version::{model}",
            )
        else:
            col.warning(f"{model} has no version yet: train it before bundling.")

with st.expander("Difference with the newest bundle", expanded=False):
    try:
        show_diff(bundle_contents.diff_project(store, project, carried, chosen_versions), "pending")
    except NodalError as exc:
        st.error(str(exc))

if st.button("Create bundle", key="create_bundle", icon=":material/inventory_2:", type="primary"):
    try:
        info = bundle_contents.create_bundle(
            settings.home,
            store,
            project,
            bundle_id.strip(),
            notes,
            current_user(),
            carried,
            chosen_versions,
            objects=open_objects(settings),  # NODAL_STORE_URL, else the home
        )
    except NodalError as exc:
        st.error(f"No bundle created: {exc}")
    else:
        st.success(f"Bundle **{info.bundle_id}** created (sha256 `{info.sha256[:12]}…`).")

st.subheader("Bundles")
existing = bundles.list_bundles(store, project.name)
if not existing:
    st.caption("No bundle yet.")
    st.stop()
st.dataframe(
    pd.DataFrame(
        [
            {
                "bundle": b.bundle_id,
                "created at": b.created_at[:19].replace("T", " "),
                "created by": b.created_by,
                "release notes": b.release_notes,
                "sha256": b.sha256[:12],
            }
            for b in existing
        ]
    ),
    hide_index=True,
    width="stretch",
    key="bundles_table",
)
ids = [b.bundle_id for b in existing]
chosen = st.selectbox("Bundle", ids, key="bundle_choice")
st.markdown(f"**What {chosen} changed against the bundle before it**")
try:
    show_diff(bundle_contents.diff_bundles(store, project.name, chosen), "history")
except NodalError as exc:
    st.error(str(exc))

st.subheader("Revert the project")
st.caption(
    f"Replace the project's definitions with those of **{chosen}**, make its model versions "
    "active again and restore the data it carries. The bundles themselves never change."
)
sure = st.checkbox(f"Yes, revert {project.name} to {chosen}", key="revert_sure")
if st.button("Revert", key="revert", icon=":material/history:", disabled=not sure):
    try:
        diff = bundle_contents.revert(store, project, chosen)
    except NodalError as exc:
        st.error(f"Not reverted: {exc}")
    else:
        st.success(f"Project reverted to {chosen}.")
        show_diff(diff, "reverted")
