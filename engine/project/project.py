"""A project: a folder of plain text (YAML + SQL) read into typed definitions.

The same folder layout is used on every node: the design node edits it, a bundle carries
it, the automation node runs it. Only *where managed data lives* and the node variables
(``data_dir``…) differ, and those are passed in.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from engine.core.errors import NodalError
from engine.project import input_modes
from engine.storage.datasets import DatasetRef

PROJECT_FILE = "project.yaml"
SAVED_MODELS_DIR = "saved_models"
MANAGED_DATA_DIR = "data"
LAB_DIR = "lab"  # the Lab's experiments: working files of the design node, never bundled
ACTIVE_FILE = "ACTIVE"
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")


class ProjectError(NodalError):
    """A project definition is invalid; the message names the file and the problem."""


@dataclass(frozen=True)
class DatasetDef:
    name: str
    kind: str  # source | managed
    path: str | None = None  # template for sources, e.g. "{data_dir}/transactions"
    partitioned_by: str | None = None
    schema: dict[str, str] | None = None
    description: str = ""


@dataclass(frozen=True)
class RecipeDef:
    name: str
    sql_file: str
    sql: str
    inputs: dict[str, input_modes.InputMode]  # "all", "same" or DaysBefore(n)
    output: str


@dataclass(frozen=True)
class Acting:
    """The person acting on a design project: ``require(right)`` refuses a right they lack
    (PermissionDenied), ``record(action, object_id, before, after)`` adds their change to the
    audit trail."""

    name: str
    require: Callable[[str], None]
    record: Callable[[str, str, Any, Any], None]


@dataclass
class Project:
    name: str
    root: Path
    data_root: Path
    variables: dict[str, str]
    description: str = ""
    datasets: dict[str, DatasetDef] = field(default_factory=dict)
    recipes: dict[str, RecipeDef] = field(default_factory=dict)
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    checks: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    scenarios: dict[str, dict[str, Any]] = field(default_factory=dict)
    dashboards: dict[str, dict[str, Any]] = field(default_factory=dict)
    api_services: dict[str, dict[str, Any]] = field(default_factory=dict)
    metrics: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # Who acts on this copy: set by engine.design.projects.open_as. None on the nodes' own
    # copies, which act for the deployer that put the bundle there.
    acting: Acting | None = field(default=None, repr=False, compare=False)

    def require(self, right: str) -> None:
        """Refuse unless the acting person holds ``right`` (read, write, admin) here."""
        if self.acting is not None:
            self.acting.require(right)

    def record(self, action: str, object_id: str, before: Any = None, after: Any = None) -> None:
        """Add the acting person's change to the audit trail."""
        if self.acting is not None:
            self.acting.record(action, object_id, before, after)

    def dataset(self, name: str) -> DatasetRef:
        """Where dataset ``name`` lives on this node."""
        d = self.datasets.get(name)
        if d is None:
            raise ProjectError(f"project {self.name!r} has no dataset {name!r}")
        if d.kind == "source":
            path = Path(substitute(d.path or "", self.variables, f"dataset {name}"))
        else:
            path = self.data_root / name
        key_type = (d.schema or {}).get(d.partitioned_by or "") if d.partitioned_by else None
        return DatasetRef(name, path, d.partitioned_by, key_type)

    def recipe_for(self, dataset: str) -> RecipeDef | None:
        return next((r for r in self.recipes.values() if r.output == dataset), None)

    def saved_models_dir(self, model: str) -> Path:
        return self.root / SAVED_MODELS_DIR / model

    def active_model_version(self, model: str) -> str | None:
        marker = self.saved_models_dir(model) / ACTIVE_FILE
        return marker.read_text().strip() if marker.exists() else None

    def active_model_dir(self, model: str) -> Path:
        version = self.active_model_version(model)
        if version is None:
            raise ProjectError(
                f"model {model!r} of project {self.name!r} has no active version yet (train it first)"
            )
        return self.saved_models_dir(model) / version


def substitute(template: str, variables: dict[str, str], where: str) -> str:
    """Replace ``{name}`` by the variable's value; unknown names are an error."""

    def repl(m: re.Match[str]) -> str:
        key = m.group(1)
        if key not in variables:
            raise ProjectError(f"{where}: unknown variable {{{key}}}")
        return str(variables[key])

    return re.sub(r"\{([A-Za-z_][A-Za-z0-9_]*)\}", repl, template)


def _load_yaml(path: Path, required: bool = False) -> Any:
    if not path.exists():
        if required:
            raise ProjectError(f"{path.name} is missing in {path.parent}")
        return {}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ProjectError(f"{path.name}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ProjectError(f"{path.name}: expected a mapping at the top level")
    return data


def _check_name(name: object, where: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ProjectError(f"{where}: {name!r} is not a valid name (letters, digits, _)")
    return name


def _load_datasets(root: Path) -> dict[str, DatasetDef]:
    out: dict[str, DatasetDef] = {}
    for name, spec in _load_yaml(root / "datasets.yaml").items():
        _check_name(name, "datasets.yaml")
        if not isinstance(spec, dict) or spec.get("kind") not in ("source", "managed"):
            raise ProjectError(f"datasets.yaml: {name}: kind must be 'source' or 'managed'")
        if spec["kind"] == "source" and not spec.get("path"):
            raise ProjectError(f"datasets.yaml: {name}: a source dataset needs a path")
        out[name] = DatasetDef(
            name=name,
            kind=spec["kind"],
            path=spec.get("path"),
            partitioned_by=spec.get("partitioned_by"),
            schema={str(k): str(v).upper() for k, v in (spec.get("schema") or {}).items()} or None,
            description=str(spec.get("description", "")).strip(),
        )
    return out


def _load_recipes(root: Path, datasets: dict[str, DatasetDef]) -> dict[str, RecipeDef]:
    out: dict[str, RecipeDef] = {}
    outputs: set[str] = set()
    for name, spec in (_load_yaml(root / "flow.yaml").get("recipes") or {}).items():
        where = f"flow.yaml: recipe {name}"
        _check_name(name, "flow.yaml")
        # A recipe's body is a file: `sql: recipes/x.sql`, `python: recipes/x.py` or
        # `windows: recipes/x.yaml` (windowed per-key features, engine.project.windows).
        key = "python" if "python" in spec else "windows" if "windows" in spec else "sql"
        sql_file = str(spec.get(key, ""))
        sql_path = root / sql_file
        if sum(k in spec for k in ("sql", "python", "windows")) > 1:
            raise ProjectError(f"{where}: give one of sql:, python: or windows:, not several")
        if key == "windows" and not sql_file.endswith((".yaml", ".yml")):
            raise ProjectError(f"{where}: windows: must name a .yaml file")
        if key != "windows" and sql_file and sql_file.endswith(".py") != (key == "python"):
            raise ProjectError(
                f"{where}: {key}: must name a .{'py' if key == 'python' else 'sql'} file"
            )
        if not sql_file or not sql_path.is_file():
            raise ProjectError(
                f"{where}: {dict(sql='SQL', python='Python', windows='windows')[key]} file "
                f"{sql_file!r} not found"
            )
        output = str(spec.get("output", ""))
        if output not in datasets or datasets[output].kind != "managed":
            raise ProjectError(f"{where}: output {output!r} must be a managed dataset")
        inputs = _recipe_inputs(where, spec.get("inputs"), datasets, output)
        if output in outputs:
            raise ProjectError(f"{where}: dataset {output!r} is already built by another recipe")
        outputs.add(output)
        out[name] = RecipeDef(name, sql_file, sql_path.read_text(), inputs, output)
    return out


def by_day(d: DatasetDef) -> bool:
    """Whether ``d`` is partitioned by day (its key is ``day`` or declared DATE)."""
    key = d.partitioned_by
    return bool(key) and (key == "day" or str((d.schema or {}).get(key, "")).upper() == "DATE")


def _recipe_inputs(
    where: str, raw: object, datasets: dict[str, DatasetDef], output: str
) -> dict[str, input_modes.InputMode]:
    """A recipe's ``inputs:`` (dataset → mode), each checked against its dataset and output."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ProjectError(f"{where}: inputs must map each input dataset to its mode")
    inputs: dict[str, input_modes.InputMode] = {}
    for key, value in raw.items():
        name = str(key)
        if name not in datasets:
            raise ProjectError(f"{where}: input {name!r} is not a dataset of the project")
        try:
            mode = input_modes.parse(value)
        except input_modes.InputModeError as exc:
            raise ProjectError(f"{where}: input {name!r}: {exc}") from None
        d = datasets[name]
        problem = input_modes.applies_problem(
            mode, by_day(d), bool(d.partitioned_by), by_day(datasets[output])
        )
        if problem:
            raise ProjectError(f"{where}: input {name!r}: {problem}")
        inputs[name] = mode
    return inputs


def _load_folder(root: Path, folder: str, key: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for path in sorted((root / folder).glob("*.yaml")):
        spec = _load_yaml(path)
        name = _check_name(spec.get(key, path.stem), f"{folder}/{path.name}")
        out[name] = spec
    return out


def load_project(root: Path, data_root: Path, variables: dict[str, str] | None = None) -> Project:
    """Read the project at ``root``; managed datasets live under ``data_root``.

    ``variables`` (from the node and the deployment) override the project's own.
    """
    root = Path(root)
    meta = _load_yaml(root / PROJECT_FILE, required=True)
    name = _check_name(meta.get("name"), PROJECT_FILE)
    merged = {str(k): str(v) for k, v in (meta.get("variables") or {}).items()}
    merged.update({str(k): str(v) for k, v in (variables or {}).items()})
    datasets = _load_datasets(root)
    checks = _load_yaml(root / "checks.yaml")
    metrics = _load_yaml(root / "metrics.yaml")
    for file, declared in (("checks.yaml", checks), ("metrics.yaml", metrics)):
        for ds, specs in declared.items():
            if ds not in datasets:
                raise ProjectError(f"{file}: {ds!r} is not a dataset of the project")
            if not isinstance(specs, list | None) or not all(
                isinstance(x, dict) and x.get("name") for x in specs or []
            ):
                raise ProjectError(f"{file}: {ds}: expected a list of entries, each with a name")
    return Project(
        name=name,
        root=root,
        data_root=Path(data_root),
        variables=merged,
        description=str(meta.get("description", "")).strip(),
        datasets=datasets,
        recipes=_load_recipes(root, datasets),
        models=_load_folder(root, "models", "name"),
        checks={k: list(v or []) for k, v in checks.items()},
        scenarios=_load_folder(root, "scenarios", "name"),
        dashboards=_load_folder(root, "dashboards", "name"),
        api_services=_load_folder(root, "api_services", "service_id"),
        metrics={k: list(v or []) for k, v in metrics.items()},
    )


def definition_files(root: Path) -> list[Path]:
    """The project's text definitions (what a bundle snapshots), relative to ``root``."""
    skip = {SAVED_MODELS_DIR, MANAGED_DATA_DIR, LAB_DIR}
    files = []
    for path in sorted(Path(root).rglob("*")):
        rel = path.relative_to(root)
        if path.is_file() and rel.parts[0] not in skip and not rel.name.startswith("."):
            files.append(rel)
    return files


def check_name(name: object, what: str) -> str:
    """``name`` if it is a valid definition name (letters, digits, _), else a ProjectError."""
    return _check_name(name, what)


def new_project_files(name: str, description: str = "") -> dict[str, str]:
    """The text files of an empty project called ``name``."""
    _check_name(name, "project name")
    meta = {"name": name, "description": description.strip(), "variables": {}}
    return {
        PROJECT_FILE: yaml.safe_dump(meta, sort_keys=False),
        "datasets.yaml": "# Datasets: kind source (landing zone) or managed (built or imported).\n",
        "flow.yaml": "# Recipes: SQL run by DuckDB, one output dataset each.\nrecipes: {}\n",
    }
