"""The API Designer: API services of a design project, their test queries, a dev server.

An API service is a YAML file of the project (``api_services/<service>.yaml``) with its
endpoints: ``prediction`` (a saved model, optional enrichment lookups with a key mapping and
a policy for no match / several matches) and ``lookup`` (the row of a dataset matching a
key). Each endpoint keeps its test queries in the same file, written by hand or generated
from dataset rows. :func:`run_test_queries` runs them through the very code the API node
runs, in process (:func:`dev_service`, no package needed) or over HTTP against a dev server
or a deployment. Packaging (``engine.deployer.apipackages.create_package``) freezes the service and
publishes it to the deployer in one step.

Every write goes through :mod:`engine.project.definitions` (project lock, atomic replace, staged
validation); an editor that passes the :class:`Loaded` version it showed is refused, and
shown the difference, if someone saved the service in between.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from engine.apinode.realtime import InvalidRecord, load_service
from engine.core.errors import NodalError
from engine.deployer import apipackages
from engine.project import definitions, feature_sql
from engine.project.api_services import endpoint_features, key_mapping
from engine.project.feature_sql import FeatureSqlError
from engine.project.project import Project, ProjectError
from engine.storage import datasets as ds

POLICIES = {"on_missing": ("ignore", "error"), "on_multiple": ("first", "error")}


class DesignerError(NodalError):
    """An API service definition or test query was refused; nothing was saved."""


@dataclass(frozen=True)
class TestResult:
    endpoint: str
    name: str
    ok: bool
    status: int
    message: str
    generation: str | None = None
    proba: float | None = None


def service_path(project: Project, service_id: str) -> Path:
    return project.root / service_rel(service_id)


def load_definition(project: Project, service_id: str) -> dict[str, Any]:
    path = service_path(project, service_id)
    if not path.exists():
        raise DesignerError(f"project {project.name!r} has no API service {service_id!r}")
    return yaml.safe_load(path.read_text())


@dataclass(frozen=True)
class Loaded:
    """A service file as an editor read it: its text (``None`` if absent) and version.

    Passing it back to a save makes the save refuse (with the difference) if someone saved
    the service since; without it (the CLI) the edit applies to the current file.
    """

    text: str | None
    version: str


def service_rel(service_id: str) -> str:
    return f"api_services/{service_id}.yaml"


def read_service(project: Project, service_id: str) -> Loaded:
    """The service file's text and version now (``definitions.ABSENT`` if it does not exist)."""
    return Loaded(*definitions.read(project.root, service_rel(service_id)))


def _edit(
    project: Project,
    service_id: str,
    mutate: Callable[[dict[str, Any] | None], dict[str, Any]],
    loaded: Loaded | None,
) -> str:
    """Apply ``mutate`` to the service's definition under the project lock; the new version.

    With ``loaded``, ``mutate`` applies to what the editor saw, and the save is refused with
    :class:`engine.project.definitions.DefinitionConflict` (their file against ours) if the file
    changed since. ``mutate`` may raise :class:`DesignerError`: nothing is written then.
    """
    rel = service_rel(service_id)

    def change(current: dict[str, str | None]) -> dict[str, str | None]:
        text = loaded.text if loaded is not None else current[rel]
        definition = yaml.safe_load(text) if text else None
        new = mutate(definition)
        return {rel: yaml.safe_dump(new, sort_keys=False)}

    base = {rel: loaded.version} if loaded is not None else None
    versions = definitions.update_project(project, change, base=base, paths=[rel])
    return versions[rel]


def _check_name(value: str, what: str) -> str:
    if not value or not value.replace("_", "").replace("-", "").isalnum():
        raise DesignerError(f"{what} must be letters, digits, '_' or '-', not {value!r}")
    return value


def _check_policy(spec: dict[str, Any]) -> None:
    for key, allowed in POLICIES.items():
        if spec.get(key, allowed[0]) not in allowed:
            raise DesignerError(f"{key} must be one of {', '.join(allowed)}")


def _columns(project: Project, dataset: str) -> list[str]:
    try:
        return list(ds.schema(project.dataset(dataset)))
    except (ProjectError, ds.DatasetError) as exc:
        raise DesignerError(f"dataset {dataset!r}: {exc}") from None


def save_prediction_endpoint(
    project: Project,
    service_id: str,
    endpoint_id: str,
    model: str,
    enrichments: list[dict[str, Any]] | None = None,
    description: str = "",
    loaded: Loaded | None = None,
    feature_recipe: str | None = None,
) -> str:
    """Create or replace a prediction endpoint (creating the service if needed).

    Each enrichment is ``{"dataset", "key": field | {field: column}, "rows": all|latest_day,
    "on_missing": ignore|error, "on_multiple": first|error}``. ``feature_recipe`` names the
    SQL recipe that computes the model's features from a request record (real time runs
    it, compiled); it is refused here, with the reason, when real time cannot run it.
    Returns the file's new version; ``loaded`` guards against a concurrent save (see
    :func:`_edit`).
    """
    _check_name(service_id, "service id")
    _check_name(endpoint_id, "endpoint id")
    if model not in project.models:
        raise DesignerError(f"project {project.name!r} has no saved model {model!r}")
    for enr in enrichments or []:
        try:
            mapping = key_mapping(enr.get("key"))
        except ValueError as exc:
            raise DesignerError(f"enrichment {enr.get('dataset')!r}: {exc}") from None
        columns = _columns(project, enr["dataset"])
        missing = [c for c in mapping.values() if c not in columns]
        if missing:
            raise DesignerError(f"dataset {enr['dataset']!r} has no column {', '.join(missing)}")
        _check_policy(enr)
    endpoint: dict[str, Any] = {"id": endpoint_id, "type": "prediction", "model": model}
    if feature_recipe:
        endpoint["feature_recipe"] = feature_recipe
    if enrichments:
        endpoint["enrichments"] = enrichments
    request_contract(project, endpoint)  # refuses a feature recipe real time cannot run
    return _upsert_endpoint(project, service_id, endpoint, description, loaded)


def _model_inputs(project: Project, model: str) -> tuple[list[str], list[str]]:
    features = (project.models.get(model) or {}).get("features") or {}
    return list(features.get("numeric") or []), list(features.get("categorical") or [])


def request_contract(project: Project, endpoint: dict[str, Any]) -> dict[str, str]:
    """The fields a prediction endpoint's request must carry (field → type family)."""
    numeric, categorical = _model_inputs(project, endpoint["model"])
    try:
        found = endpoint_features(project, endpoint, numeric + categorical)
    except FeatureSqlError as exc:
        raise DesignerError(str(exc)) from None
    if found is None:
        return feature_sql.model_inputs_plan(numeric, categorical).request_fields
    return found.plan.request_fields


def save_lookup_endpoint(
    project: Project,
    service_id: str,
    endpoint_id: str,
    dataset: str,
    key: str | list[str] | dict[str, str],
    columns: list[str] | None = None,
    on_missing: str = "ignore",
    on_multiple: str = "first",
    rows: str = "all",
    description: str = "",
    loaded: Loaded | None = None,
) -> str:
    """Create or replace a dataset-lookup endpoint (``rows``: all or latest_day).

    Returns the file's new version; ``loaded`` guards against a concurrent save.
    """
    _check_name(service_id, "service id")
    _check_name(endpoint_id, "endpoint id")
    try:
        mapping = key_mapping(key)
    except ValueError as exc:
        raise DesignerError(str(exc)) from None
    available = _columns(project, dataset)
    unknown = [c for c in [*mapping.values(), *(columns or [])] if c not in available]
    if unknown:
        raise DesignerError(f"dataset {dataset!r} has no column {', '.join(unknown)}")
    spec = {
        "id": endpoint_id,
        "type": "lookup",
        "dataset": dataset,
        "key": key,
        "on_missing": on_missing,
        "on_multiple": on_multiple,
        "rows": rows,
    }
    if rows not in ("all", "latest_day"):
        raise DesignerError("rows must be 'all' or 'latest_day'")
    _check_policy(spec)
    if columns:
        spec["columns"] = columns
    return _upsert_endpoint(project, service_id, spec, description, loaded)


def _upsert_endpoint(
    project: Project,
    service_id: str,
    endpoint: dict[str, Any],
    description: str,
    loaded: Loaded | None,
) -> str:
    def mutate(definition: dict[str, Any] | None) -> dict[str, Any]:
        definition = definition or {
            "service_id": service_id,
            "description": description,
            "endpoints": [],
        }
        if description:
            definition["description"] = description
        endpoints = definition.setdefault("endpoints", [])
        new = dict(endpoint)
        for i, ep in enumerate(endpoints):
            if ep["id"] == new["id"]:
                new["test_queries"] = ep.get("test_queries") or []
                endpoints[i] = new
                break
        else:
            new["test_queries"] = []
            endpoints.append(new)
        return definition

    return _edit(project, service_id, mutate, loaded)


def _endpoint(definition: dict[str, Any], endpoint_id: str) -> dict[str, Any]:
    for ep in definition.get("endpoints") or []:
        if ep["id"] == endpoint_id:
            return ep
    raise DesignerError(f"service {definition['service_id']!r} has no endpoint {endpoint_id!r}")


def _check_query(project: Project, ep: dict[str, Any], payload: Any) -> None:
    if ep.get("type", "prediction") == "prediction":
        try:
            feature_sql.typed_record(request_contract(project, ep), payload)
        except feature_sql.RecordError as exc:
            raise DesignerError(f"test query refused: {exc}") from None
    else:
        if not isinstance(payload, dict):
            raise DesignerError("test query refused: 'data' must be an object")
        missing = [
            k for k in key_mapping(ep.get("key") or ep.get("keys")) if payload.get(k) is None
        ]
        if missing:
            raise DesignerError(f"test query refused: missing lookup key(s): {', '.join(missing)}")


def _existing(definition: dict[str, Any] | None, service_id: str) -> dict[str, Any]:
    if definition is None:
        raise DesignerError(f"there is no API service {service_id!r}")
    return definition


def add_test_queries(
    project: Project,
    service_id: str,
    endpoint_id: str,
    queries: list[dict[str, Any]],
    loaded: Loaded | None = None,
) -> int:
    """Append test queries (``{"name", "features"|"data", "expect"?}``); all valid or none.

    ``loaded`` guards against a concurrent save (see :func:`_edit`).
    """

    def mutate(definition: dict[str, Any] | None) -> dict[str, Any]:
        definition = _existing(definition, service_id)
        ep = _endpoint(definition, endpoint_id)
        field = "features" if ep.get("type", "prediction") == "prediction" else "data"
        existing = {q["name"] for q in ep.get("test_queries") or []}
        for q in queries:
            if not q.get("name"):
                raise DesignerError("each test query needs a name")
            if q["name"] in existing:
                raise DesignerError(
                    f"endpoint {endpoint_id!r} already has a test query {q['name']!r}"
                )
            existing.add(q["name"])
            _check_query(project, ep, q.get(field))
        ep.setdefault("test_queries", []).extend(queries)
        return definition

    _edit(project, service_id, mutate, loaded)
    return len(queries)


def remove_test_query(
    project: Project,
    service_id: str,
    endpoint_id: str,
    name: str,
    loaded: Loaded | None = None,
) -> str:
    """Remove one test query; the file's new version."""

    def mutate(definition: dict[str, Any] | None) -> dict[str, Any]:
        definition = _existing(definition, service_id)
        ep = _endpoint(definition, endpoint_id)
        kept = [q for q in ep.get("test_queries") or [] if q["name"] != name]
        if len(kept) == len(ep.get("test_queries") or []):
            raise DesignerError(f"endpoint {endpoint_id!r} has no test query {name!r}")
        ep["test_queries"] = kept
        return definition

    return _edit(project, service_id, mutate, loaded)


def _json_value(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return value


def queries_from_dataset(
    project: Project, service_id: str, endpoint_id: str, dataset: str, n: int = 5
) -> list[dict[str, Any]]:
    """``n`` test queries made from rows of ``dataset`` (not saved: pass them to add_test_queries)."""
    definition = load_definition(project, service_id)
    ep = _endpoint(definition, endpoint_id)
    columns = _columns(project, dataset)
    if ep.get("type", "prediction") == "prediction":
        fields = list(request_contract(project, ep))
        field = "features"
    else:
        fields = list(key_mapping(ep.get("key") or ep.get("keys")))
        field = "data"
    missing = [f for f in fields if f not in columns]
    if missing:
        raise DesignerError(f"dataset {dataset!r} lacks the fields {', '.join(missing)}")
    select = ", ".join(f'"{c}"' for c in fields)
    frame = ds.query_df(
        f"SELECT {select} FROM {ds.scan_sql(project.dataset(dataset))} USING SAMPLE {int(n)} ROWS (reservoir, 7)"
    )
    out = []
    for i, rec in enumerate(frame.to_dict("records")):
        payload = {k: _json_value(v) for k, v in rec.items()}
        out.append({"name": f"{dataset}-{i + 1}", field: payload})
    return out


# --- running test queries ------------------------------------------------------------------


def _check_expect(result: dict[str, Any], expect: dict[str, Any] | None) -> str:
    for key, want in (expect or {}).items():
        got = result.get(key)
        if got != want:
            return f"expected {key}={want!r}, got {got!r}"
    return ""


def run_test_queries(
    tests: dict[str, list[dict[str, Any]]],
    service_id: str,
    base_url: str | None = None,
    endpoints: dict[str, Any] | None = None,
    generation: str | None = None,
    api_key: str | None = None,
) -> list[TestResult]:
    """Run test queries by endpoint, over HTTP (``base_url``) or in process (``endpoints``).

    Over HTTP, ``generation`` forces the package version that answers.
    """
    out: list[TestResult] = []
    client = httpx.Client(timeout=30, auth=(api_key, "") if api_key else None) if base_url else None
    try:
        for endpoint_id, queries in tests.items():
            for q in queries:
                out.append(
                    _run_one(q, endpoint_id, service_id, client, base_url, endpoints, generation)
                )
    finally:
        if client:
            client.close()
    return out


def _run_one(
    q: dict[str, Any],
    endpoint_id: str,
    service_id: str,
    client: httpx.Client | None,
    base_url: str | None,
    endpoints: dict[str, Any] | None,
    generation: str | None,
) -> TestResult:
    name = q.get("name", "?")
    lookup = "data" in q and "features" not in q
    if client is not None:
        body: dict[str, Any] = {"data": q["data"]} if lookup else {"features": q.get("features")}
        if generation:
            body["dispatch"] = {"forcedGeneration": generation}
        url = f"{base_url}/public/api/v1/{service_id}/{endpoint_id}/{'lookup' if lookup else 'predict'}"
        try:
            resp = client.post(url, json=body)
        except httpx.HTTPError as exc:
            return TestResult(endpoint_id, name, False, 0, f"no answer: {exc}")
        answer = (
            resp.json()
            if resp.headers.get("content-type", "").startswith("application/json")
            else {}
        )
        if resp.status_code != 200:
            return TestResult(
                endpoint_id, name, False, resp.status_code, answer.get("message", resp.text[:200])
            )
        result = answer["results"][0] if lookup else answer["result"]
        gen = answer.get("apiContext", {}).get("serviceGeneration")
    else:
        ep = (endpoints or {}).get(endpoint_id)
        if ep is None:
            return TestResult(endpoint_id, name, False, 404, f"no endpoint {endpoint_id!r}")
        try:
            result = ep.lookup(q.get("data")) if lookup else ep.predict(q.get("features"))
        except InvalidRecord as exc:
            return TestResult(endpoint_id, name, False, 400, str(exc))
        result.pop("_timing", None)
        gen = generation
    problem = _check_expect(result, q.get("expect"))
    if result.get("ignored"):
        problem = result.get("ignoreReason", "ignored")
    proba = (result.get("probas") or {}).get("1")
    return TestResult(endpoint_id, name, not problem, 200, problem or "ok", gen, proba)


def package_tests(store: Any, service_id: str, version: str) -> dict[str, list[dict[str, Any]]]:
    info = apipackages.get_package(store, service_id, version)
    return apipackages.test_queries(info.path)


def run_package_tests_locally(store: Any, service_id: str, version: str) -> list[TestResult]:
    """A package's test queries against the package itself, loaded as the API node loads it."""
    from engine.core.artifacts import ArtifactError, extract_verified

    info = apipackages.get_package(store, service_id, version)
    with tempfile.TemporaryDirectory() as tmp:
        dest = Path(tmp) / "pkg"
        try:
            extract_verified(info.path, dest, apipackages.KIND, sha256=info.sha256)
        except ArtifactError as exc:
            raise apipackages.PackageError(str(exc)) from None
        _, endpoints = load_service(dest)
        return run_test_queries(
            apipackages.test_queries(info.path), service_id, endpoints=endpoints, generation=version
        )


# --- the dev server ------------------------------------------------------------------------


def dev_service(project: Project, service_id: str, folder: Path) -> dict[str, Any]:
    """Materialise the service as a package folder (not published) and load its endpoints."""
    service = project.api_services.get(service_id)
    if service is None:
        raise DesignerError(f"project {project.name!r} has no API service {service_id!r}")
    try:
        members, _ = apipackages._members(project, service)
    except (ds.DatasetError, ProjectError, ValueError, KeyError) as exc:
        raise DesignerError(f"cannot build {service_id}: {exc}") from None
    for name, data in members.items():
        out = folder / name
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data)
    return load_service(folder)[1]


def wait_until_serving(
    base_url: str, service_id: str, generation: str, timeout: float = 60
) -> bool:
    """Poll ``/isAlive/`` until the node serves ``generation`` of the service."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            gens = httpx.get(f"{base_url}/isAlive/", timeout=5).json().get("generations", {})
            if generation in gens.get(service_id, []):
                return True
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.3)
    return False


def start_dev_server(settings: Any, project: str, service_id: str, port: int, log: Path) -> int:
    """Start the dev server as a process of its own; return its PID (stop it with that PID)."""
    import subprocess
    import sys

    env = {
        **os.environ,
        "NODAL_HOME": str(settings.home),
        "NODAL_DATA_DIR": str(settings.data_dir),
    }
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as fh:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "engine.serving",
                "dev",
                "--project",
                project,
                "--service",
                service_id,
                "--port",
                str(port),
            ],
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return proc.pid


def stop_dev_server(pid: int) -> None:
    """Stop a dev server started by :func:`start_dev_server` (its own process group)."""
    import signal

    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0]:
                return
        except ChildProcessError:
            return
        time.sleep(0.1)


def dev_server_ready(base_url: str, service_id: str) -> bool:
    try:
        return "dev" in httpx.get(f"{base_url}/isAlive/", timeout=2).json()["generations"].get(
            service_id, []
        )
    except (httpx.HTTPError, ValueError, KeyError):
        return False
