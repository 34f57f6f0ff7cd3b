"""Bundles page: the bundles and API packages of the projects the person reads, and where
each one is deployed."""

from __future__ import annotations

from collections import defaultdict

import pandas as pd
import streamlit as st

from apps.common.auth import current_user
from apps.common.context import get_settings, get_store
from engine.deployer import apipackages, bundles, visibility
from engine.deployer import deployments as deployer

store = get_store(get_settings())
me = current_user()

# (kind, target, version) → infrastructures that want it
wanted: dict[tuple[str, str, str], list[str]] = defaultdict(list)
for d in deployer.visible_to(store, me, deployer.list_deployments(store)):
    wanted[(d.kind, d.target, d.version)].append(d.infra_id)


def _when(iso: str) -> str:
    return iso[:19].replace("T", " ")


st.title("Bundles & packages")
st.header("Project bundles")
all_bundles = visibility.bundles_for(store, me, bundles.list_bundles(store))
if not all_bundles:
    st.info(
        "No bundle of a project you may read yet. A bundle is an immutable snapshot of a "
        "project (definitions and active "
        "model versions): create one with `nodal bundle create <id> --project <name> --notes …`.",
        icon=":material/info:",
    )
by_project: dict[str, list[bundles.BundleInfo]] = defaultdict(list)
for b in all_bundles:
    by_project[b.project].append(b)
for project, items in sorted(by_project.items()):
    st.subheader(f"Project {project}")
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "bundle": b.bundle_id,
                    "created at": _when(b.created_at),
                    "created by": b.created_by,
                    "release notes": b.release_notes,
                    "deployed on": ", ".join(wanted.get(("project", b.project, b.bundle_id), [])),
                    "sha256": b.sha256[:12],
                }
                for b in items
            ]
        ),
        hide_index=True,
        width="stretch",
        key=f"bundles_{project}",
    )

    if len(items) >= 2:
        with st.expander(f"Diff between two bundles of {project}", expanded=False):
            ids = [b.bundle_id for b in items]
            c1, c2 = st.columns(2)
            old = c1.selectbox("From", ids, index=1, key=f"diff_old_{project}")
            new = c2.selectbox("To", ids, index=0, key=f"diff_new_{project}")
            try:
                changes, model_changes = bundles.diff_bundles(store, project, old, new)
            except bundles.BundleError as exc:
                st.error(str(exc))
                changes, model_changes = [], {}
            for model, (a, b) in model_changes.items():
                st.markdown(f"Model **{model}**: {a or '—'} → {b or '—'}")
            if not changes:
                st.caption("No file differs.")
            else:
                st.dataframe(
                    pd.DataFrame([{"file": c.member, "change": c.change} for c in changes]),
                    hide_index=True,
                    width="stretch",
                    key=f"diff_table_{project}",
                )
                text_changes = [
                    c.member
                    for c in changes
                    if c.change == "changed" and not c.member.endswith((".txt", ".zip"))
                ]
                if text_changes:
                    member = st.selectbox(
                        "Show changes of", text_changes, key=f"diff_member_{project}"
                    )
                    st.code(
                        bundles.member_diff(store, project, old, new, member) or "(binary)",
                        language="diff",
                    )

st.header("API packages")
packages = visibility.packages_for(store, me, apipackages.list_packages(store))
if not packages:
    st.info(
        "No API package of a project you may read yet. A package freezes an API service's endpoints (models and lookup "
        "data): create one with `nodal api package <version> --service <id> --project <name>`.",
        icon=":material/info:",
    )
else:
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "service": p.service,
                    "version": p.version,
                    "project": p.project,
                    "created at": _when(p.created_at),
                    "created by": p.created_by,
                    "release notes": p.release_notes,
                    "deployed on": ", ".join(wanted.get(("api", p.service, p.version), [])),
                    "sha256": p.sha256[:12],
                }
                for p in packages
            ]
        ),
        hide_index=True,
        width="stretch",
        key="packages_table",
    )
