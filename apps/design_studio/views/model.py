"""Saved models page: versions (active marked), the active version's metrics, activation."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from apps.design_studio.state import current_project
from engine.models import saved as models
from engine.project.project import ProjectError

project = current_project()

st.title(f"Models of {project.name}")
if not project.models:
    st.info("This project defines no model (add one under `models/` in the project folder).")
    st.stop()

names = sorted(project.models)
model = st.selectbox("Model", names, key="model") if len(names) > 1 else names[0]
spec = project.models[model]
versions = models.list_versions(project, model)
if not versions:
    st.info(
        f"Model **{model}** has no trained version yet. Build `{spec.get('train_on', 'the training set')}` "
        f"on the Flow page, then train it in the Lab (or `nodal model train --project {project.name} --model {model}`).",
        icon=":material/info:",
    )
    st.stop()

active = next((v for v in versions if v["active"]), None)
if active is None:
    st.warning(f"No version of {model} is active; the project cannot score until one is.")
else:
    m = active["metrics"]
    older = [v for v in versions if int(v["version"][1:]) < int(active["version"][1:])]
    before = older[0]["metrics"] if older else None

    def delta(key: str) -> float | None:
        return round(m[key] - before[key], 4) if before and key in before else None

    st.subheader(f"Active version {active['version']}")
    fpr = m.get("operating_fpr", 0.0)
    cols = st.columns(4)
    cols[0].metric(
        "ROC AUC",
        f"{m['roc_auc']:.3f}",
        delta("roc_auc"),
        help="Area under the ROC curve on the validation days.",
    )
    cols[1].metric(
        "PR AUC",
        f"{m['pr_auc']:.3f}",
        delta("pr_auc"),
        help="Average precision on the validation days.",
    )
    cols[2].metric(
        f"Recall at {fpr:.0%} FPR",
        f"{m['recall_at_fpr']:.1%}",
        delta("recall_at_fpr"),
        help=f"Share of frauds caught when at most {fpr:.0%} of legitimate transactions are flagged.",
    )
    cols[3].metric(
        "Threshold",
        f"{m['threshold']:.3f}",
        help="Fraud probability from which a transaction is flagged (set from the operating FPR).",
    )
    first, last = active.get("validation_days", ["?", "?"])
    where = f"a {first} ({last})" if first == "random split" else f"{first} to {last}"
    st.caption(
        f"Validated on {where}: {m['validation_rows']:,} transactions, "
        f"{m['validation_frauds']:,} frauds; precision at the threshold {m['precision_at_threshold']:.1%}. "
        f"Trained on {active['train_rows']:,} rows by {active['trained_by']} at {active['trained_at'][:19]}."
        + (f" Deltas compare with {older[0]['version']}." if before else "")
    )

st.subheader("Versions")
rows = [
    {
        "version": v["version"],
        "active": v["active"],
        "trained at": v["trained_at"][:19].replace("T", " "),
        "trained by": v["trained_by"],
        "train rows": v["train_rows"],
        "validation days": " to ".join(v.get("validation_days", [])),
        "ROC AUC": v["metrics"]["roc_auc"],
        "PR AUC": v["metrics"]["pr_auc"],
        "recall at FPR": v["metrics"]["recall_at_fpr"],
        "threshold": v["metrics"]["threshold"],
    }
    for v in versions
]
st.dataframe(
    pd.DataFrame(rows),
    hide_index=True,
    width="stretch",
    column_config={
        "active": st.column_config.CheckboxColumn(help="The version the project scores with"),
        "ROC AUC": st.column_config.NumberColumn(format="%.3f"),
        "PR AUC": st.column_config.NumberColumn(format="%.3f"),
        "recall at FPR": st.column_config.NumberColumn(format="percent"),
        "threshold": st.column_config.NumberColumn(format="%.3f"),
    },
    key="versions_table",
)

st.subheader("Activate a version")
st.caption("Versions are kept: switch back to any of them; bundles carry the active one.")
cols = st.columns([2, 1])
chosen = cols[0].selectbox(
    "Version",
    [v["version"] for v in versions],
    key="activate_version",
    label_visibility="collapsed",
)
if cols[1].button("Make active", key="activate", icon=":material/check:"):
    try:
        models.set_active(project, model, chosen)
    except ProjectError as exc:
        st.error(str(exc))
    else:
        st.rerun()
