"""What a valid scenario definition is (``scenarios/<name>.yaml``): steps, conditions,
triggers and reporters.

The design node checks it on save, the deployer before it deploys a bundle and the
automation node at activation, all with :func:`validate`; the automation node runs the
steps (``engine.automation.scenarios``, whose step registry names exactly
:data:`STEP_KINDS`).
"""

from __future__ import annotations

from typing import Any

from engine.project import triggers
from engine.project.project import Project

STEP_KINDS = (
    "run_checks",
    "build",
    "score",
    "publish_dashboard",
    "train",
    "sql",
    "python",
    "evaluate",
)
RUN_IF = ("no_prior_failure", "always", "prior_failure")
REPORTER_TYPES = ("log", "webhook", "email")
DEFAULT_REPORT_TIMEOUT = 10.0
GATE_METRICS = ("roc_auc", "pr_auc")  # what a retrain's champion/challenger gate compares


def reporter_problems(name: str, spec: dict[str, Any]) -> list[str]:
    """What is wrong with the reporters of scenario ``name``."""
    out = []
    for i, rep in enumerate(spec.get("reporters") or []):
        label = f"scenario {name}: reporter {i + 1}"
        if not isinstance(rep, dict) or rep.get("type") not in REPORTER_TYPES:
            kind = rep.get("type") if isinstance(rep, dict) else rep
            out.append(
                f"{label}: unknown reporter type {kind!r} (one of {', '.join(REPORTER_TYPES)})"
            )
            continue
        if rep["type"] == "webhook":
            url = str(rep.get("url", ""))
            if not url.startswith(("http://", "https://")):
                out.append(f"{label}: webhook url must start with http:// or https://")
            try:
                if float(rep.get("timeout", DEFAULT_REPORT_TIMEOUT)) <= 0:
                    raise ValueError
            except (TypeError, ValueError):
                out.append(f"{label}: timeout must be a positive number of seconds")
        if rep["type"] == "email" and not rep.get("to"):
            out.append(f"{label}: an e-mail reporter needs to: [addresses]")
        for outcome in rep.get("on") or []:
            if outcome not in triggers.OUTCOMES:
                out.append(f"{label}: on: {outcome!r} is not a run outcome")
    return out


def _step_problems(project: Project, label: str, step: dict[str, Any]) -> list[str]:
    problems = []
    kind = step.get("type")
    if kind == "sql" and not (step.get("sql") or step.get("file")):
        problems.append(f"{label}: a sql step needs sql: or file:")
    if kind == "python" and not (step.get("script") or step.get("code")):
        problems.append(f"{label}: a python step needs script: or code:")
    gate = step.get("gate") if kind == "train" else None
    if gate is not None and (
        not isinstance(gate, dict) or gate.get("metric", "roc_auc") not in GATE_METRICS
    ):
        problems.append(f"{label}: gate metric must be one of {', '.join(GATE_METRICS)}")
    for key, required in (
        ("dataset", ("run_checks", "build")),
        ("model", ("score", "train")),
        ("input", ("score",)),
        ("output", ("score",)),
        ("dashboard", ("publish_dashboard",)),
    ):
        if kind in required and not step.get(key):
            problems.append(f"{label}: a {kind} step needs {key}:")
    return problems


def validate(project: Project, name: str) -> list[str]:
    """Problems with scenario ``name`` (empty list when it is valid)."""
    spec = project.scenarios.get(name)
    if spec is None:
        return [f"project {project.name!r} has no scenario {name!r}"]
    problems = []
    steps = spec.get("steps") or []
    if not steps:
        problems.append(f"scenario {name}: no steps")
    seen: set[str] = set()
    for i, step in enumerate(steps):
        if not isinstance(step, dict):
            problems.append(f"scenario {name}: step {i + 1} must be a mapping")
            continue
        label = f"scenario {name}: step {i + 1} ({step.get('name', '?')})"
        if not step.get("name"):
            problems.append(f"{label}: needs a name")
        elif step["name"] in seen:
            problems.append(f"{label}: another step has the same name")
        seen.add(str(step.get("name")))
        if step.get("type") not in STEP_KINDS:
            problems.append(
                f"{label}: unknown type {step.get('type')!r} (one of {', '.join(STEP_KINDS)})"
            )
        if step.get("run_if", "no_prior_failure") not in RUN_IF:
            problems.append(f"{label}: run_if must be one of {', '.join(RUN_IF)}")
        for key in ("dataset", "input", "output"):
            if key in step and step[key] not in project.datasets:
                problems.append(f"{label}: {key} {step[key]!r} is not a dataset of the project")
        if "model" in step and step["model"] not in project.models:
            problems.append(f"{label}: model {step['model']!r} is not a model of the project")
        if "dashboard" in step and step["dashboard"] not in project.dashboards:
            problems.append(
                f"{label}: dashboard {step['dashboard']!r} is not a dashboard of the project"
            )
        problems.extend(_step_problems(project, label, step))
    problems.extend(triggers.problems(name, spec, set(project.datasets), set(project.scenarios)))
    problems.extend(reporter_problems(name, spec))
    cycle = triggers.after_cycle(project.scenarios)
    if cycle and name in cycle:
        problems.append(
            f"scenario {name}: its after_scenario triggers form a cycle: {' -> '.join(cycle)}"
        )
    return problems
