"""Flow page, the project's home: status summary, the DAG, its datasets, builds with progress."""

from __future__ import annotations

import time

import pandas as pd
import streamlit as st

from apps.common.context import get_settings, get_store
from apps.design_studio.state import current_project
from engine.deployer import bundles
from engine.project import checks, flow, python_recipes
from engine.project.project import Project, ProjectError
from engine.storage.datasets import DatasetError

NL = "\\n"  # a line break inside a DOT label


def _q(node_id: str) -> str:
    return '"' + node_id.replace('"', '\\"') + '"'


def flow_dot(project: Project) -> str:
    """Graphviz DOT of the flow: datasets (sources shaded, missing ones dashed) and recipes."""
    lines = [
        "digraph flow {",
        '  rankdir=LR; bgcolor="transparent"; ranksep=0.3; nodesep=0.2;',
        '  node [fontname="Helvetica", fontsize=12, margin="0.08,0.04"];',
        '  edge [color="#64748b", fontname="Helvetica", fontsize=10, arrowsize=0.7];',
    ]
    for name, d in project.datasets.items():
        ref = project.dataset(name)
        exists = ref.exists()
        detail = (
            f"{len(ref.partitions())} days" if ref.partitioned_by else ("built" if exists else "")
        )
        if not exists:
            detail = "not built yet" if d.kind == "managed" else "no data"
        fill = "#dbeafe" if d.kind == "source" else "#f1f5f9"
        style = "filled" if exists else "filled,dashed"
        lines.append(
            f"  {_q('ds:' + name)} [label={_q(name + NL + detail)}, shape=cylinder, "
            f'style="{style}", fillcolor="{fill}", tooltip={_q(d.description or name)}];'
        )
    for recipe in project.recipes.values():
        rid = "recipe:" + recipe.name
        # Python recipes are drawn apart from SQL ones (another colour, "py" in the label).
        python = python_recipes.is_python(recipe.sql_file)
        kind, fill = ("Python", "#ede9fe") if python else ("SQL", "#fef3c7")
        label = recipe.name + (NL + "(py)" if python else "")
        lines.append(
            f'  {_q(rid)} [label={_q(label)}, shape=box, style="rounded,filled", '
            f'fillcolor="{fill}", tooltip={_q(kind + " recipe " + recipe.sql_file)}];'
        )
        for name, mode in recipe.inputs.items():
            # "same": the recipe reads only the partitions being built (dashed); a window of
            # days before them: dotted, labelled with its length.
            style = ", style=dashed" if mode == "same" else ""
            if not isinstance(mode, str):
                style = f", style=dotted, label={_q(str(mode.days) + ' days before')}"
            lines.append(f"  {_q('ds:' + name)} -> {_q(rid)} [arrowhead=none{style}];")
        lines.append(f"  {_q(rid)} -> {_q('ds:' + recipe.output)};")
    for model, spec in project.models.items():
        version = project.active_model_version(model) or "not trained"
        lines.append(
            f"  {_q('model:' + model)} [label={_q(model + NL + version)}, shape=hexagon, "
            f'style="filled", fillcolor="#dcfce7"];'
        )
        if spec.get("train_on") in project.datasets:
            lines.append(
                f'  {_q("ds:" + spec["train_on"])} -> {_q("model:" + model)} [label="train"];'
            )
    # Scenario steps that write datasets (scoring, publishing) run on automation nodes: dotted.
    for scenario in project.scenarios.values():
        for step in scenario.get("steps") or []:
            if step.get("type") == "score" and step.get("model") in project.models:
                src, dst = step.get("input"), step.get("output")
                if src in project.datasets and dst in project.datasets:
                    lines.append(
                        f'  {_q("ds:" + src)} -> {_q("ds:" + dst)} [style=dotted, label="score"];'
                    )
                    lines.append(
                        f"  {_q('model:' + step['model'])} -> {_q('ds:' + dst)} [style=dotted];"
                    )
            if step.get("type") == "publish_dashboard":
                spec = project.dashboards.get(step.get("dashboard"), {})
                src, dst = spec.get("source"), spec.get("output")
                if src in project.datasets and dst in project.datasets:
                    lines.append(
                        f'  {_q("ds:" + src)} -> {_q("ds:" + dst)} [style=dotted, label="publish"];'
                    )
    lines.append("}")
    return "\n".join(lines)


def _writers(project: Project) -> dict[str, str]:
    """Dataset → what writes it: its recipe, or the scenario step that does."""
    out = {r.output: r.sql_file for r in project.recipes.values()}
    for name, d in project.datasets.items():
        if d.kind == "managed" and d.description.startswith("Imported from"):
            out.setdefault(name, "imported")
    for scenario, spec in project.scenarios.items():
        for step in spec.get("steps") or []:
            if step.get("type") == "score" and step.get("output"):
                out.setdefault(step["output"], f"scenario {scenario}: {step.get('name')}")
            if step.get("type") == "publish_dashboard":
                target = project.dashboards.get(step.get("dashboard"), {}).get("output")
                if target:
                    out.setdefault(target, f"scenario {scenario}: {step.get('name')}")
    return out


def datasets_table(project: Project) -> pd.DataFrame:
    writers = _writers(project)
    rows = []
    for name, d in project.datasets.items():
        ref = project.dataset(name)
        rows.append(
            {
                "dataset": name,
                "kind": d.kind,
                "built by": writers.get(name, ""),
                "partitioned by": d.partitioned_by or "",
                "partitions": len(ref.partitions()) if d.partitioned_by else None,
                "exists": ref.exists(),
                "description": d.description,
            }
        )
    return pd.DataFrame(rows)


def status_summary(project: Project) -> None:
    """Tiles: datasets with data, recipes, active model versions, last checks, bundles."""
    store = get_store(get_settings())
    with_data = sum(project.dataset(n).exists() for n in project.datasets)
    active = [f"{m} {project.active_model_version(m) or '—'}" for m in project.models]
    recent = checks.history(store, project.name, limit=200)
    recent = recent[recent["node"] == "design"]
    last_checks = (
        recent.sort_values("at").groupby(["dataset", "check_name"]).tail(1)
        if not recent.empty
        else recent
    )
    worst = checks.worst(
        [checks.CheckResult(r.check_name, r.outcome, "", "") for r in last_checks.itertuples()]
    )
    project_bundles = bundles.list_bundles(store, project.name)
    cols = st.columns(5)
    cols[0].metric("Datasets with data", f"{with_data} / {len(project.datasets)}")
    cols[1].metric("Recipes", len(project.recipes))
    cols[2].metric("Saved models", ", ".join(active) or "none", help="Each model's active version")
    cols[3].metric(
        "Last checks (design node)",
        worst if not last_checks.empty else "not run",
        help="Worst outcome of each check's latest run here",
    )
    cols[4].metric(
        "Bundles",
        len(project_bundles),
        help="Newest: " + (project_bundles[0].bundle_id if project_bundles else "none"),
    )


project = current_project()

st.title(f"Flow of {project.name}")
if project.description:
    st.caption(project.description)
status_summary(project)

# Filled after the build section below runs, so a build shows at once in the graph and table.
graph_slot = st.container()
table_slot = st.container()

st.subheader("Build")
buildable = [n for n in project.datasets if project.recipe_for(n) is not None]
if not buildable:
    st.info("No recipe yet: add one on the Recipes page.", icon=":material/info:")
else:
    default = buildable.index("training_set") if "training_set" in buildable else 0
    cols = st.columns([2, 3])
    target = cols[0].selectbox("Dataset", buildable, index=default, key="build_target")
    mode = cols[1].radio(
        "What to build",
        ["it and everything upstream", "everything downstream of it"],
        key="build_mode",
        horizontal=True,
        help="Upstream: what the dataset needs. Downstream: what a change to it affects.",
    )
    if st.button("Build", key="build", icon=":material/play_arrow:", type="primary"):
        bar = st.progress(0.0, text="starting …")

        def progress(done: int, total: int, recipe: str) -> None:
            text = f"running {recipe} ({done + 1} of {total})" if recipe else "done"
            bar.progress(done / max(total, 1), text=text)

        started = time.perf_counter()
        run = flow.build if mode.startswith("it and") else flow.build_downstream
        try:
            result = run(project, target, progress=progress)
            st.session_state["last_build"] = (result, time.perf_counter() - started)
        except (flow.FlowError, ProjectError, DatasetError) as exc:
            st.session_state.pop("last_build", None)
            st.error(f"Build of {target} failed: {exc}")
            if getattr(exc, "user_traceback", ""):
                st.caption("Traceback (your code only):")
                st.code(exc.user_traceback, language="text")

if "last_build" in st.session_state:
    result, seconds = st.session_state["last_build"]
    st.success(f"Built {result.target}: {len(result.runs)} recipes in {seconds:.1f} s.")
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "recipe": r.recipe,
                    "output": r.output,
                    "rows": r.rows,
                    "seconds": r.seconds,
                    "note": r.note,
                }
                for r in result.runs
            ],
            columns=["recipe", "output", "rows", "seconds", "note"],
        ),
        hide_index=True,
        width="stretch",
        column_config={"seconds": st.column_config.NumberColumn(format="%.2f")},
        key="build_runs",
    )

with graph_slot:
    st.graphviz_chart(flow_dot(project))
    st.caption(
        "Blue cylinders are source datasets (landing zone), grey ones are managed by the flow; "
        "dashed means no data yet. Yellow boxes are SQL recipes, lilac ones marked (py) Python "
        "recipes (a dashed input is read only for the days being built); dotted arrows are scenario steps (scoring, publishing) "
        "that run on automation nodes. Hover a node for its description."
    )

with table_slot:
    st.subheader("Datasets")
    st.dataframe(
        datasets_table(project),
        hide_index=True,
        width="stretch",
        column_config={
            "exists": st.column_config.CheckboxColumn(),
            "partitions": st.column_config.NumberColumn(help="Days present on disk"),
        },
        key="datasets_table",
    )
