"""Rules of docs/architecture.md that are not about imports, checked on the source.

The import rules (layers, no streamlit in engine, who may import litestar and APScheduler,
no cycles) are import-linter contracts in pyproject.toml, run by ``make test``.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _modules(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_only_the_storage_modules_open_databases():
    opened = {
        _rel(p)
        for p in [*_modules("engine"), *_modules("apps")]
        if "duckdb.connect(" in p.read_text() or "create_engine(" in p.read_text()
    }
    assert opened <= {"engine/storage/datasets.py", "engine/storage/control.py"}


def test_apps_never_import_each_other():
    apps = {"design_studio", "deployer_console", "monitoring"}
    offenders = []
    for app in apps:
        for path in _modules(f"apps/{app}"):
            for name in _imports(path):
                parts = name.split(".")
                if parts[0] == "apps" and len(parts) > 1 and parts[1] in apps - {app}:
                    offenders.append(f"{_rel(path)} imports {name}")
    assert offenders == []
