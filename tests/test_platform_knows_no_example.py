"""The platform knows no example's names: no module under engine/ names a column, dataset,
model, feature, service, endpoint, scenario, dashboard, project or infrastructure of any
project in examples/ (issue 12). The names are read from the examples themselves, so a new
example or a renamed column is covered without editing this test.

A compound name (``merchant_latitude``, ``automation-prod``) may not appear anywhere, prose
included; a plain word (``transactions``, ``fraud``) may not appear as a string in code,
where it would be a hidden default, while prose may still say "transactions"."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import sqlglot
import yaml

from nodal_demo import demo

ROOT = Path(__file__).resolve().parents[1]
# Words the platform uses for its own concepts, which an example also happens to use as a
# name: the daily partition variable (``{day}``), the Dataiku protocol's and the model
# YAML's ``features`` key, the roles a map or a model declaration names (``amount``,
# ``category``, ``labels``), and the ``ts`` field of the API node's JSON log lines.
GENERIC = {"day", "features", "amount", "category", "labels", "ts"}


def _yaml(path: Path):
    return yaml.safe_load(path.read_text()) or {}


def example_names() -> set[str]:
    names = {demo.PROJECT, demo.AUTOMATION_INFRA, demo.API_INFRA, demo.SERVICE, demo.ENDPOINT}
    for project in sorted((ROOT / "examples").iterdir()):
        if not (project / "project.yaml").exists():
            continue
        names.add(_yaml(project / "project.yaml").get("name", project.name))
        for name, spec in _yaml(project / "datasets.yaml").items():
            names.add(name)
            names.update((spec or {}).get("schema") or {})
        for sql in (project / "recipes").glob("*.sql"):
            select = sqlglot.parse_one(sql.read_text(), read="duckdb")
            names.update(e.alias_or_name for e in select.expressions)
        for model in (project / "models").glob("*.yaml"):
            spec = _yaml(model)
            names.update([spec.get("name", model.stem), spec.get("target"), spec.get("train_on")])
            for group in (spec.get("features") or {}).values():
                names.update(group)
        for folder in ("scenarios", "dashboards"):
            names.update(p.stem for p in (project / folder).glob("*.yaml"))
        for service in (project / "api_services").glob("*.yaml"):
            spec = _yaml(service)
            names.add(spec.get("service_id", service.stem))
            names.update(ep["id"] for ep in spec.get("endpoints") or [])
    return {n for n in names if isinstance(n, str) and re.fullmatch(r"[\w-]+", n)} - GENERIC


def test_the_examples_are_read():
    names = example_names()
    assert {"transactions", "merchant_latitude", "hour_of_day", "fraud_model"} <= names


def _engine_modules() -> list[Path]:
    # The gazetteer names US cities, not an example's data.
    return [p for p in sorted((ROOT / "engine").rglob("*.py")) if p.name != "us_cities.py"]


def test_no_engine_module_names_an_example():
    names = example_names()
    compound = sorted(n for n in names if "_" in n or "-" in n)
    pattern = re.compile(r"(?<![\w-])(" + "|".join(map(re.escape, compound)) + r")(?![\w-])")
    found = []
    for path in _engine_modules():
        text = path.read_text()
        for i, line in enumerate(text.splitlines(), 1):
            found += [f"{path.relative_to(ROOT)}:{i}: {m.group(1)}" for m in pattern.finditer(line)]
        found += [
            f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}"
            for node in ast.walk(ast.parse(text))
            if isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and node.value in names
        ]
    assert found == []
