"""API service definitions of a project (``api_services/<service>.yaml``): the parts that
the design node (API Designer, packaging), the deployer and the API node read alike."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.project import feature_sql, windows
from engine.project.feature_sql import FeaturePlan, FeatureSqlError
from engine.project.project import Project
from engine.storage import datasets as ds


def key_mapping(spec: Any) -> dict[str, str]:
    """``customer_id`` / ``[a, b]`` / ``{request_field: dataset_column}`` → a mapping."""
    if isinstance(spec, str):
        return {spec: spec}
    if isinstance(spec, list) and spec and all(isinstance(k, str) for k in spec):
        return {k: k for k in spec}
    if isinstance(spec, dict) and spec and all(isinstance(v, str) for v in spec.values()):
        return {str(k): v for k, v in spec.items()}
    raise ValueError("a lookup key is a column name, a list of them, or {field: column}")


def enrichment_keys(endpoint: dict[str, Any]) -> dict[str, dict[str, str]]:
    """A prediction endpoint's enrichments: dataset → {request field: dataset column}."""
    return {
        e["dataset"]: key_mapping(e.get("key") or e.get("keys"))
        for e in endpoint.get("enrichments") or []
    }


@dataclass(frozen=True)
class EndpointFeatures:
    """What a packaged prediction endpoint carries to compute its features in real time."""

    plan: FeaturePlan
    sql: str
    request: dict[str, Any]  # {"dataset": name, "schema": {column: SQL type}}
    # The windows outputs the recipe joins (computed live from the online state), by dataset.
    windowed: dict[str, windows.WindowSpec] = field(default_factory=dict)


def endpoint_features(
    project: Project, endpoint: dict[str, Any], feature_names: list[str]
) -> EndpointFeatures | None:
    """Compile the endpoint's ``feature_recipe`` for the model inputs ``feature_names``;
    None when the endpoint has none (the request then carries the model's inputs).

    Raises :class:`~engine.project.feature_sql.FeatureSqlError` with the reason.
    """
    name = endpoint.get("feature_recipe")
    if not name:
        return None
    where = f"endpoint {endpoint.get('id')}: feature_recipe {name}"
    recipe = project.recipes.get(name)
    if recipe is None:
        raise FeatureSqlError(f"{where}: the project has no recipe {name!r}")
    if not recipe.sql_file.endswith(".sql"):
        raise FeatureSqlError(f"{where}: a feature recipe must be SQL (real time runs its SQL)")
    dataset = feature_sql.request_dataset_of(recipe.sql, where)
    if dataset not in project.datasets:
        raise FeatureSqlError(f"{where}: FROM {dataset} is not a dataset of the project")
    schema = project.datasets[dataset].schema
    if not schema:
        try:
            schema = ds.schema(project.dataset(dataset))
        except ds.DatasetError:
            raise FeatureSqlError(
                f"{where}: declare the schema of dataset {dataset!r} (its columns are the "
                "request contract) or build it first"
            ) from None
    declared = windows.declared(project)  # joined by the event id, computed live
    keys = enrichment_keys(endpoint) | windows.join_keys(declared)
    plan = feature_sql.plan(recipe.sql, schema, feature_names, keys, where)
    joined = {j.dataset: declared[j.dataset] for j in plan.joins if j.dataset in declared}
    plan = windows.with_fields(plan, joined.values(), schema)
    return EndpointFeatures(plan, recipe.sql, {"dataset": dataset, "schema": dict(schema)}, joined)
