"""The design node: projects as folders of text under ``<home>/design/projects``."""

from __future__ import annotations

import shutil
from pathlib import Path

import sqlalchemy as sa

from engine.access import audit, rights
from engine.core import home as layout
from engine.core.settings import Settings
from engine.project.project import (
    MANAGED_DATA_DIR,
    Acting,
    Project,
    ProjectError,
    check_name,
    load_project,
    new_project_files,
)
from engine.storage.control import ControlStore, now_iso, projects


def node_variables(settings: Settings) -> dict[str, str]:
    """Variables every project sees on the design node."""
    return {"data_dir": str(settings.data_dir.resolve())}


def open_project(settings: Settings, name: str) -> Project:
    root = layout.design_project(settings.home, name)
    if not root.exists():
        raise ProjectError(f"no project {name!r} on the design node (looked in {root})")
    return load_project(root, root / MANAGED_DATA_DIR, node_variables(settings))


def open_as(settings: Settings, store: ControlStore, actor: str, name: str) -> Project:
    """Project ``name`` as ``actor`` sees it: refused without the ``read`` right, and every
    change through it (builds, recipes, previews, training, activating a model) checks that
    they hold ``write`` (PermissionDenied otherwise)."""
    rights.require(store, actor, "read", project=name)
    project = open_project(settings, name)

    def require(right: str) -> None:
        rights.require(store, actor, right, project=name)

    def record(action: str, object_id: str, before: object, after: object) -> None:
        audit.record_now(
            store, actor, action, "project", f"{name}/{object_id}", before=before, after=after
        )

    project.acting = Acting(actor, require, record)
    return project


def visible_projects(store: ControlStore, actor: str) -> list[dict[str, str]]:
    """The projects ``actor`` may read."""
    readable = rights.scopes_with(store, actor, "project", "read")
    return [p for p in list_projects(store) if readable is None or p["name"] in readable]


def list_projects(store: ControlStore) -> list[dict[str, str]]:
    with store.read() as conn:
        rows = conn.execute(sa.select(projects).order_by(projects.c.name)).mappings().all()
    return [dict(r) for r in rows]


def import_project(
    settings: Settings, store: ControlStore, source: Path, replace: bool = False, *, actor: str
) -> Project:
    """Copy a project folder (e.g. ``examples/fraud``) into the design node and register it
    (``actor`` needs ``write`` on a project of that name: a grant on ``project:*`` lets
    someone create projects)."""
    source = Path(source)
    probe = load_project(source, source / MANAGED_DATA_DIR, node_variables(settings))
    rights.require(store, actor, "write", project=probe.name)
    target = layout.design_project(settings.home, probe.name)
    if target.exists() and not replace:
        raise ProjectError(f"project {probe.name!r} already exists on the design node")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{probe.name}.importing"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging, ignore=shutil.ignore_patterns(MANAGED_DATA_DIR, "__pycache__"))
    if target.exists():
        # Keep managed data and saved models; replace only the definitions.
        for keep in (MANAGED_DATA_DIR, "saved_models"):
            if (target / keep).exists():
                shutil.move(str(target / keep), str(staging / keep))
        shutil.rmtree(target)
    staging.rename(target)
    with store.write() as conn:
        conn.execute(sa.delete(projects).where(projects.c.name == probe.name))
        conn.execute(
            sa.insert(projects).values(name=probe.name, path=str(target), created_at=now_iso())
        )
    return open_project(settings, probe.name)


def _register(store: ControlStore, name: str, root: Path) -> None:
    with store.write() as conn:
        conn.execute(sa.delete(projects).where(projects.c.name == name))
        conn.execute(sa.insert(projects).values(name=name, path=str(root), created_at=now_iso()))


def create_project(
    settings: Settings, store: ControlStore, name: str, description: str = "", *, actor: str
) -> Project:
    """Create an empty project (``project.yaml``, ``datasets.yaml``, ``flow.yaml``) and
    register it (``actor`` needs ``write`` on a project of that name)."""
    check_name(name, "project name")
    rights.require(store, actor, "write", project=name)
    target = layout.design_project(settings.home, name)
    if target.exists():
        raise ProjectError(f"project {name!r} already exists on the design node")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{name}.creating"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    for rel, text in new_project_files(name, description).items():
        (staging / rel).write_text(text)
    try:
        staging.rename(target)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        raise ProjectError(f"project {name!r} already exists on the design node") from None
    _register(store, name, target)
    return open_project(settings, name)


# --- scenarios and dashboards edited on the design node ----------------------------------------

DESIGN_NODE = "design"  # the node name design-node runs and checks are recorded under


class DefinitionInvalid(ProjectError):
    """A definition would be saved with problems; ``problems`` lists them."""

    def __init__(self, what: str, problems: list[str]) -> None:
        super().__init__(
            f"{what} not saved: " + "; ".join(" ".join(str(x).split()) for x in problems)
        )
        self.problems = problems


def yaml_problem(exc: Exception) -> str:
    """A YAML parse error in one line: where, and what is wrong."""
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"not valid YAML{where}: {what}"


def read_folder_definition(project: Project, folder: str, name: str) -> tuple[str, str]:
    """The text and version of ``<folder>/<name>.yaml`` (``scenarios`` or ``dashboards``)."""
    from engine.project import definitions

    kind = folder[:-1]
    defined = project.scenarios if folder == "scenarios" else project.dashboards
    text, version = definitions.read(project.root, f"{folder}/{name}.yaml")
    if text is None:
        have = f"its {folder}: {', '.join(sorted(defined))}" if defined else f"it has no {kind}"
        raise ProjectError(f"project {project.name!r} has no {kind} {name!r} ({have})")
    return text, version


def save_folder_definition(
    project: Project, folder: str, name: str, text: str, base_version: str | None
) -> str:
    """Save ``<folder>/<name>.yaml`` (``scenarios`` or ``dashboards``); return its new version.

    The YAML must name itself ``name``; a scenario must pass the scenario validation
    (steps, conditions, triggers, reporters). Refused on a concurrent edit.
    """
    import yaml

    from engine.project import dashboard_spec, definitions, scenario_spec

    if folder not in ("scenarios", "dashboards"):
        raise ProjectError(f"{folder!r} is not a folder of definitions edited here")
    check_name(name, f"{folder[:-1]} name")
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise DefinitionInvalid(f"{folder[:-1]} {name}", [yaml_problem(exc)]) from None
    if not isinstance(doc, dict) or doc.get("name", name) != name:
        raise DefinitionInvalid(
            f"{folder[:-1]} {name}", [f"the YAML must be a mapping with name: {name}"]
        )

    def validate(staged: Project) -> None:
        if folder == "scenarios":
            problems = scenario_spec.validate(staged, name)
        else:
            problems = dashboard_spec.problems(staged, name)
        if problems:
            raise DefinitionInvalid(f"{folder[:-1]} {name}", problems)

    rel = f"{folder}/{name}.yaml"
    versions = definitions.save_project(
        project,
        {rel: text if text.endswith("\n") else text + "\n"},
        base={rel: base_version} if base_version is not None else None,
        validate=validate,
    )
    return versions[rel]


# --- output datasets declared on the design node ------------------------------------------


def create_managed_dataset(
    project: Project,
    name: str,
    schema: dict[str, str] | None = None,
    partitioned_by: str | None = None,
    description: str = "",
) -> dict[str, object]:
    """Declare an empty managed dataset (one a scenario step or a recipe will write).

    ``schema`` maps each column to a DuckDB type; ``partitioned_by`` names the column whose
    values are its partitions (one of the schema's, if a schema is given). Every problem is
    listed in one :class:`DefinitionInvalid`; nothing is written then. Returns the entry
    added to ``datasets.yaml``.
    """
    import duckdb

    from engine.core import yamltext
    from engine.project import definitions
    from engine.storage import datasets as ds

    what = f"dataset {name}"
    problems: list[str] = []
    try:
        check_name(name, "dataset name")
    except ProjectError as exc:
        problems.append(str(exc))
    if name in project.datasets:
        problems.append(f"project {project.name!r} already has a dataset {name!r}")
    elif (project.data_root / name).exists():
        problems.append(f"{project.data_root / name} already exists: choose another name")
    types: dict[str, str] = {}
    for column, typ in (schema or {}).items():
        typ = str(typ).strip().upper()
        try:
            check_name(column, "column name")
        except ProjectError as exc:
            problems.append(str(exc))
            continue
        if not typ.replace(" ", "").replace("(", "").replace(")", "").replace(",", "").isalnum():
            problems.append(f"column {column}: {typ!r} is not a type")
            continue
        try:
            with ds.session() as con:
                con.execute(f"SELECT CAST(NULL AS {typ})")
        except duckdb.Error:
            problems.append(f"column {column}: {typ!r} is not a DuckDB type (e.g. VARCHAR, DOUBLE)")
            continue
        types[column] = typ
    if partitioned_by is not None:
        try:
            check_name(partitioned_by, "partition column")
        except ProjectError as exc:
            problems.append(str(exc))
        if schema and partitioned_by not in schema:
            problems.append(f"partition column {partitioned_by!r} is not in the schema")
    if problems:
        raise DefinitionInvalid(what, problems)
    spec: dict[str, object] = {"kind": "managed"}
    if partitioned_by:
        spec["partitioned_by"] = partitioned_by
    spec["description"] = description.strip() or "Declared on the design node."
    if types:
        spec["schema"] = types

    def add(current: dict[str, str | None]) -> dict[str, str | None]:
        if name in yamltext.load(current["datasets.yaml"]):
            raise DefinitionInvalid(
                what, [f"project {project.name!r} already has a dataset {name!r}"]
            )
        return {"datasets.yaml": yamltext.set_entry(current["datasets.yaml"], name, spec)}

    definitions.update_project(project, add, paths=["datasets.yaml"])
    return spec


def run_scenario_here(
    store: ControlStore, project: Project, scenario: str, actor: str, params: dict | None = None
) -> int:
    """Run a scenario on the design node, in a background thread; return its run id.

    The run is recorded like an automation node's (``scenario_runs`` / ``step_runs``,
    node ``design``), so the page watches it with :func:`engine.automation.scenarios.get_run`.
    """
    import threading

    from engine.automation import runs, scenarios
    from engine.project import scenario_spec

    runs.require_run_right(store, actor, DESIGN_NODE, project.name)
    problems = scenario_spec.validate(project, scenario)
    if problems:
        raise DefinitionInvalid(f"scenario {scenario}", problems)
    run_id = runs.request_run(
        store, DESIGN_NODE, project.name, scenario, f"studio ({actor})", params
    )
    if not runs.claim_run(store, run_id, None):
        runs.finish_run(store, run_id, runs.ABORTED, "the same scenario is already running here")
        raise ProjectError(f"scenario {scenario} is already running on the design node")

    def work() -> None:
        try:
            scenarios.execute(project, store, DESIGN_NODE, run_id, None, actor=actor)
        except Exception as exc:  # noqa: BLE001 - a bug: keep the run record truthful
            runs.finish_run(store, run_id, runs.FAILED, f"internal error: {exc!r}")

    threading.Thread(target=work, name=f"scenario-{run_id}", daemon=True).start()
    return run_id
