"""Lab page: train models on a dataset and target, watch the progress, read the results
(curves, confusion at a threshold with the cost of errors, importance, calibration, the gap
to the best possible AUC), compare runs and deploy one as the project's saved model."""

from __future__ import annotations

import contextlib

import altair as alt
import pandas as pd
import streamlit as st

from apps.common.auth import current_user
from apps.design_studio.state import current_project
from engine.core.errors import NodalError
from engine.design import lab, lab_jobs
from engine.storage import datasets as ds

JOB_KEY = "lab_job"

project = current_project()
st.title(f"Lab of {project.name}")

# --- trainings a stopped Studio left unfinished ---------------------------------------------

busy = lab_jobs.get_job(st.session_state.get(JOB_KEY, "")) is not None
for record in lab_jobs.interrupted_jobs(project):
    spec = record["spec"]
    with st.container(border=True):
        st.warning(record["message"], icon=":material/restart_alt:")
        st.caption(
            f"Settings: {spec['algorithm']} on **{spec['dataset']}**, target "
            f"`{spec['target']}`, {spec['split']} split, {len(spec['features'])} features, "
            f"imbalance {spec['imbalance']}, parameters {spec['params'] or 'default'}."
        )
        again, dismiss = st.columns(2)
        if again.button(
            "Train again with the same settings",
            key=f"lab_again::{record['job_id']}",
            icon=":material/replay:",
            disabled=busy,
        ):
            try:
                job = lab_jobs.train_again(project, record["job_id"], current_user())
            except NodalError as exc:
                st.error(f"Training not started: {exc}")
            else:
                st.session_state[JOB_KEY] = job.job_id
                st.rerun()
        if dismiss.button("Dismiss", key=f"lab_dismiss::{record['job_id']}"):
            # Someone else may have dismissed it or trained it again: the rerun shows that.
            with contextlib.suppress(NodalError):
                lab_jobs.dismiss_job(project, record["job_id"])
            st.rerun()

# --- what to train ---------------------------------------------------------------------------

names = [n for n in project.datasets if project.dataset(n).exists()]
if not names:
    st.info("No dataset has data yet: import a file or build the flow first.")
    st.stop()
trained_on = [str(m.get("train_on")) for m in project.models.values()]
cols = st.columns(3)
dataset = cols[0].selectbox(
    "Dataset",
    names,
    # What the project's models train on first, else the first dataset with data.
    index=next((names.index(n) for n in trained_on if n in names), 0),
    key="lab_dataset",
)
schema = ds.schema(project.dataset(dataset))
try:
    default = lab.default_spec(project, dataset)
except NodalError as exc:
    st.error(str(exc))
    st.stop()
columns = list(schema)
target = cols[1].selectbox(
    "Target (two classes)",
    columns,
    index=columns.index(default.target) if default.target in columns else len(columns) - 1,
    key=f"lab_target::{dataset}",
)
model = (
    cols[2].text_input("Saved model name", value=default.model, key=f"lab_model::{dataset}").strip()
)
features = st.multiselect(
    "Features",
    [c for c in columns if c != target],
    default=[
        f
        for f in (default.features or lab.candidate_features(schema, target))
        if f != target and f in columns
    ],
    key=f"lab_features::{dataset}::{target}",
)
cols = st.columns(4)
algorithm = cols[0].radio(
    "Algorithm",
    lab.ALGORITHMS,
    format_func={
        "lightgbm": "LightGBM",
        "logistic_regression": "Logistic regression (baseline)",
    }.get,
    key="lab_algorithm",
)
dates = [
    c for c, t in schema.items() if t.upper() in ("DATE", "TIMESTAMP", "VARCHAR") and c != target
]
split = cols[1].radio(
    "Split",
    lab.SPLITS,
    index=0 if default.split == "time" and dates else 1,
    format_func={"time": "Time-based (last periods)", "random": "Random"}.get,
    key="lab_split",
)
time_column = None
if split == "time":
    time_column = cols[1].selectbox(
        "Time column",
        dates or ["(none)"],
        index=dates.index(default.time_column) if default.time_column in dates else 0,
        key=f"lab_time::{dataset}",
    )
share = cols[2].slider("Validation share", 0.05, 0.5, 0.2, 0.05, key="lab_share")
mature_only = True
if split == "time":
    mature_only = cols[2].checkbox(
        "Mature labels only",
        value=True,
        key="lab_mature_only",
        help="Leave out the days whose labels are not complete yet, by the model's "
        "label_maturity rule (models/<name>.yaml): their late negatives would bias the "
        "validation, the threshold and the baselines.",
    )
imbalance = cols[3].radio(
    "Class imbalance",
    lab.IMBALANCE,
    format_func={"none": "As is", "balanced": "Re-weight the rare class"}.get,
    key="lab_imbalance",
)
with st.expander("Hyper-parameters"):
    pcols = st.columns(4)
    if algorithm == "lightgbm":
        params = {
            "learning_rate": pcols[0].number_input(
                "learning_rate", 0.001, 1.0, 0.05, 0.01, key="lab_lr"
            ),
            "num_leaves": pcols[1].number_input("num_leaves", 2, 1024, 31, key="lab_leaves"),
            "num_boost_round": pcols[2].number_input(
                "num_boost_round", 1, 5000, 300, key="lab_rounds"
            ),
            "min_data_in_leaf": pcols[3].number_input(
                "min_data_in_leaf", 1, 10000, 50, key="lab_min_leaf"
            ),
        }
    else:
        params = {
            "C": pcols[0].number_input(
                "C (inverse regularisation)", 0.0001, 1000.0, 1.0, key="lab_c"
            ),
            "max_iter": pcols[1].number_input("max_iter", 10, 5000, 200, key="lab_iter"),
        }

job = lab_jobs.get_job(st.session_state.get(JOB_KEY, ""))
if job is not None and job.status != "RUNNING":  # ended since the last run of the page
    st.session_state["lab_last_job"] = (
        job.status,
        job.error,
        job.result["run_id"] if job.result else None,
    )
    st.session_state.pop(JOB_KEY, None)
    job = None
running = job is not None
if st.button(
    "Train", key="train", icon=":material/model_training:", type="primary", disabled=running
):
    spec = lab.LabSpec(
        dataset=dataset,
        target=target,
        features=features,
        model=model,
        algorithm=algorithm,
        split=split,
        time_column=time_column,
        validation_share=float(share),
        imbalance=imbalance,
        params={k: float(v) for k, v in params.items()},
        operating_fpr=default.operating_fpr,
        mature_only=mature_only,
    )
    try:
        job = lab_jobs.start(project, spec, current_user())
    except NodalError as exc:
        st.error(f"Training not started: {exc}")
    else:
        st.session_state[JOB_KEY] = job.job_id
        running = True


@st.fragment(run_every=1.0)
def training_progress() -> None:
    """Redrawn every second while a training runs; the rest of the page stays put."""
    job = lab_jobs.get_job(st.session_state.get(JOB_KEY, ""))
    if job is None:
        return
    if job.status == "RUNNING":
        st.progress(job.progress, text=f"Training {job.spec.model}: {job.message}")
        return
    # Ended: the whole page redraws, with the new run in the results.
    st.rerun(scope="app")


if running:
    training_progress()
last = st.session_state.get("lab_last_job")
if last and not running:
    if last[0] == "FAILED":
        st.error(f"Training failed: {last[1]}")
    else:
        st.success(f"Trained {model} lab run {last[2]}.")

# --- results ---------------------------------------------------------------------------------

runs = lab.list_runs(project, model) if model else []
if not runs:
    st.info(f"No lab run of **{model}** yet: train one above.")
    st.stop()
st.header("Results")
by_id = {r["run_id"]: r for r in runs}
run_ids = list(by_id)
run_id = st.selectbox(
    "Lab run",
    run_ids,
    format_func=lambda r: (
        f"{r}: {by_id[r]['spec']['algorithm']}, {by_id[r]['spec']['split']} split, "
        f"ROC AUC {by_id[r]['metrics']['roc_auc']:.3f} ({by_id[r]['trained_at'][:16]})"
    ),
    # Keyed by the newest run, so a new training selects its own run.
    key=f"lab_run_choice::{model}::{run_ids[0]}",
)
run = by_id[run_id]
m = run["metrics"]
tiles = st.columns(4)
tiles[0].metric("ROC AUC", f"{m['roc_auc']:.3f}")
tiles[1].metric("PR AUC", f"{m['pr_auc']:.3f}")
tiles[2].metric(f"Recall at {m['operating_fpr']:.0%} FPR", f"{m['recall_at_fpr']:.1%}")
best = run.get("best_possible")
if best:
    tiles[3].metric(
        "Best possible AUC",
        f"{best['auc']:.3f}",
        f"gap {best['gap']:.3f}",
        delta_color="off",
        help="AUC of the declared true probabilities (best_possible: in the model's YAML) on the "
        "same validation rows: no model can do better on this data.",
    )
else:
    tiles[3].metric(
        "Best possible AUC",
        "unknown",
        help="Known only for simulated data whose true probabilities a model declares "
        "(best_possible: {dataset, probability} in models/<name>.yaml).",
    )
first, last_v = run["validation"]
st.caption(
    f"Validated on {first} – {last_v}: {m['validation_rows']:,} rows, {m['validation_frauds']:,} "
    f"positives; trained on {run['train_rows']:,} rows by {run['trained_by']}."
)
for warning in run.get("warnings", []):
    st.warning(warning, icon=":material/schedule:")
if run.get("maturity"):
    with st.expander(
        f"Label maturity by day ({run.get('maturity_rule') or 'no label_maturity rule declared'})"
    ):
        days = pd.DataFrame(run["maturity"])
        days["mature"] = days["mature"].map({True: "mature", False: "immature"}).fillna("no rule")
        st.dataframe(
            days[["day", "labelled", "positives", "rows", "labelled_share", "mature", "why"]],
            hide_index=True,
            key="lab_maturity_table",
        )

roc = pd.DataFrame(run["roc"])
pr = pd.DataFrame(run["pr"])
charts = st.columns(2)
charts[0].altair_chart(
    alt.Chart(roc, title="ROC curve")
    .mark_line()
    .encode(
        x=alt.X("fpr:Q", title="false positive rate"), y=alt.Y("tpr:Q", title="true positive rate")
    ),
    width="stretch",
    key="roc_chart",
)
charts[1].altair_chart(
    alt.Chart(pr, title="Precision-recall curve")
    .mark_line()
    .encode(x=alt.X("recall:Q"), y=alt.Y("precision:Q")),
    width="stretch",
    key="pr_chart",
)

st.subheader("Confusion matrix and cost of errors")
ccols = st.columns(3)
threshold = ccols[0].slider(
    "Threshold",
    0.0,
    1.0,
    float(round(m["threshold"], 3)),
    0.001,
    format="%.3f",
    key=f"lab_threshold::{run_id}",
)
cost_fp = ccols[1].number_input("Cost of a false alarm", 0.0, value=1.0, key="lab_cost_fp")
cost_fn = ccols[2].number_input("Cost of a missed positive", 0.0, value=10.0, key="lab_cost_fn")
cm = lab.confusion(project, model, run_id, threshold, cost_fp, cost_fn)
st.dataframe(
    pd.DataFrame(
        {"predicted positive": [cm["tp"], cm["fp"]], "predicted negative": [cm["fn"], cm["tn"]]},
        index=["actual positive", "actual negative"],
    ),
    key="confusion_table",
)
st.markdown(
    f"Precision **{cm['precision']:.1%}**, recall **{cm['recall']:.1%}**; "
    f"cost of errors **{cm['cost']:,.0f}** ({cm['fp']:,} false alarms × {cost_fp:g} + "
    f"{cm['fn']:,} missed × {cost_fn:g})."
)

charts = st.columns(2)
importance = pd.DataFrame(
    {"feature": list(run["importance"]), "importance": list(run["importance"].values())}
)
charts[0].altair_chart(
    alt.Chart(importance, title="Feature importance")
    .mark_bar()
    .encode(x="importance:Q", y=alt.Y("feature:N", sort="-x")),
    width="stretch",
    key="importance_chart",
)
calibration = pd.DataFrame(run["calibration"])
diagonal = pd.DataFrame(
    {
        "predicted": [0, calibration["predicted"].max()],
        "observed": [0, calibration["predicted"].max()],
    }
)
charts[1].altair_chart(
    (
        alt.Chart(calibration, title="Calibration (deciles of the score)")
        .mark_line(point=True)
        .encode(
            x=alt.X("predicted:Q", title="mean predicted"),
            y=alt.Y("observed:Q", title="observed rate"),
        )
        + alt.Chart(diagonal)
        .mark_line(strokeDash=[4, 4], color="gray")
        .encode(x="predicted:Q", y="observed:Q")
    ),
    width="stretch",
    key="calibration_chart",
)

st.subheader("Compare runs")
compare = st.multiselect("Runs", run_ids, default=run_ids[:3], key="lab_compare")
if compare:
    rows = []
    curves = []
    for rid in compare:
        r = by_id[rid]
        b = r.get("best_possible") or {}
        rows.append(
            {
                "run": rid,
                "algorithm": r["spec"]["algorithm"],
                "split": r["spec"]["split"],
                "imbalance": r["spec"]["imbalance"],
                "features": len(r["spec"]["features"]),
                "ROC AUC": r["metrics"]["roc_auc"],
                "PR AUC": r["metrics"]["pr_auc"],
                "log loss": r["metrics"]["log_loss"],
                "gap to best AUC": b.get("gap"),
                "trained at": r["trained_at"][:19],
            }
        )
        curves.append(pd.DataFrame({**r["roc"], "run": rid}))
    st.dataframe(
        pd.DataFrame(rows),
        hide_index=True,
        width="stretch",
        column_config={
            k: st.column_config.NumberColumn(format="%.4f")
            for k in ("ROC AUC", "PR AUC", "log loss", "gap to best AUC")
        },
        key="compare_table",
    )
    st.altair_chart(
        alt.Chart(pd.concat(curves), title="ROC curves")
        .mark_line()
        .encode(x="fpr:Q", y="tpr:Q", color="run:N"),
        width="stretch",
        key="compare_chart",
    )

st.subheader("Deploy")
versions_note = project.active_model_version(model) or "none"
st.caption(
    f"Deploying makes run {run_id} a new saved-model version of **{model}** and the active one "
    f"(now: {versions_note}); earlier versions are kept. Only LightGBM runs can be deployed."
)
if st.button(
    f"Deploy {run_id} as {model}",
    key="deploy",
    icon=":material/rocket_launch:",
    disabled=run["spec"]["algorithm"] != "lightgbm",
):
    try:
        version = lab.deploy(project, model, run_id, current_user())
    except NodalError as exc:
        st.error(f"Not deployed: {exc}")
    else:
        st.success(f"{model} {version} is now the active version (from lab run {run_id}).")
