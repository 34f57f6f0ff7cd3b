"""What a valid scenario definition is (``scenarios/<name>.yaml``): steps, conditions,
triggers and reporters.

The design node checks it on save, the deployer before it deploys a bundle and the
automation node at activation, all with :func:`validate`; the automation node runs the
steps (``engine.automation.scenarios``, whose step registry names exactly
:data:`STEP_KINDS`).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from engine.project import flow, model_spec, triggers, windows
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
    "publish_enrichment",
)
RUN_IF = ("no_prior_failure", "always", "prior_failure")
REPORTER_TYPES = ("log", "webhook", "email")
DEFAULT_REPORT_TIMEOUT = 10.0
GATE_METRICS = ("roc_auc", "pr_auc")  # what a retrain's champion/challenger gate compares


# Steps that read or write the run's ``{day}`` partition unless they name another one.
DAY_STEPS = ("run_checks", "score", "publish_dashboard", "evaluate")


def day_source(project: Project, spec: dict[str, Any]) -> str | None:
    """The dataset whose newest partition a run processes when its ``day`` is ``latest``.

    ``day_from`` when the scenario names one; otherwise the first partitioned dataset its
    steps name (``dataset:``, ``input:`` or ``output:``). None when there is neither.
    """
    if spec.get("day_from"):
        return str(spec["day_from"])
    for step in spec.get("steps") or []:
        if not isinstance(step, dict):
            continue
        for key in ("dataset", "input", "output"):
            d = project.datasets.get(str(step.get(key)))
            if d is not None and d.partitioned_by:
                return d.name
    return None


def latest_day(project: Project, spec: dict[str, Any]) -> str | None:
    """``day: latest`` of a run of ``spec``: the newest partition of :func:`day_source`.

    For a dataset the flow builds, the newest partition its partitioned sources all have
    (the newest day a build can produce). None when there is no such partition yet.
    """
    source = day_source(project, spec)
    if source is None or source not in project.datasets:
        return None
    parts = flow.available_partitions(project, source)
    return parts[-1] if parts else None


def _uses_day(spec: dict[str, Any]) -> bool:
    for step in spec.get("steps") or []:
        if not isinstance(step, dict):
            continue
        if "{day}" in " ".join(str(v) for v in step.values()):
            return True
        if step.get("type") in DAY_STEPS and "partition" not in step:
            return True
    return False


def _day_problems(project: Project, name: str, spec: dict[str, Any]) -> list[str]:
    day_from = spec.get("day_from")
    if day_from is not None:
        d = project.datasets.get(str(day_from))
        if d is None:
            return [f"scenario {name}: day_from {day_from!r} is not a dataset of the project"]
        if not d.partitioned_by:
            return [f"scenario {name}: day_from {day_from!r} is not a partitioned dataset"]
        return []
    latest = str(project.variables.get("day", "latest")) == "latest"
    if latest and _uses_day(spec) and day_source(project, spec) is None:
        return [
            f"scenario {name}: its steps use {{day}} but none names a partitioned dataset: "
            "give day_from: <dataset> (the newest partition of that dataset is the day a run "
            "processes unless the run names one)"
        ]
    return []


_EMAIL = re.compile(r"[^@\s,<>]+@[^@\s,<>]+\.[^@\s,<>]+")


def _valid_url(url: str) -> bool:
    """An http(s) URL with a host and nothing a header or a parser would choke on."""
    if any(ch.isspace() or ord(ch) < 32 for ch in url):
        return False
    try:
        parts = urlsplit(url)
        port_ok = parts.port is None or 0 < parts.port < 65536
    except ValueError:  # a bad port, an unbalanced IPv6 bracket
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and port_ok


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
            url = rep.get("url")
            if not isinstance(url, str) or not _valid_url(url):
                out.append(f"{label}: webhook url must be an http:// or https:// URL with a host")
        if rep["type"] in ("webhook", "email"):
            timeout = rep.get("timeout", DEFAULT_REPORT_TIMEOUT)
            if (
                isinstance(timeout, bool)
                or not isinstance(timeout, (int, float))
                or not 0 < timeout <= 3600
            ):
                out.append(f"{label}: timeout must be a number of seconds in (0, 3600]")
        if rep["type"] == "email":
            to = rep.get("to")
            addresses = to if isinstance(to, list) else [to] if to else []
            if not addresses:
                out.append(f"{label}: an e-mail reporter needs to: [addresses]")
            elif not all(isinstance(a, str) and _EMAIL.fullmatch(a) for a in addresses):
                out.append(f"{label}: to: must be e-mail addresses (one per item, no line breaks)")
        for outcome in rep.get("on") or []:
            if outcome not in triggers.OUTCOMES:
                out.append(f"{label}: on: {outcome!r} is not a run outcome")
    return out


PUBLISH_BUILDS = ("day", "next_day")  # publish_enrichment's build: which partition first
PUBLISH_ROWS = ("latest_day", "all")


def _publish_enrichment_problems(project: Project, label: str, step: dict[str, Any]) -> list[str]:
    """A publish_enrichment step: the dataset an API service of the project looks up, or a
    windows recipe's output (its windowed state, for the API nodes' online store)."""
    if _is_windows_output(project, step.get("dataset")):
        unknown = sorted(set(step) - {"name", "type", "run_if", "dataset", "partition"})
        if unknown:
            return [
                f"{label}: {', '.join(unknown)} cannot be used when publishing the windowed "
                f"state of {step['dataset']!r} (a windows recipe's output: its events over the "
                "longest window before the end of the run's day; only partition:)"
            ]
        return []
    problems = []
    unknown = sorted(set(step) - {"name", "type", "run_if", "dataset", "service", "rows", "build"})
    if unknown:
        problems.append(
            f"{label}: unknown option(s) {', '.join(unknown)} of a publish_enrichment step"
        )
    service = step.get("service")
    if service is not None:
        spec = project.api_services.get(str(service))
        looked_up = {
            enr.get("dataset")
            for ep in (spec or {}).get("endpoints") or []
            for enr in ([ep] if ep.get("type") == "lookup" else ep.get("enrichments") or [])
            if isinstance(enr, dict)
        }
        if spec is None:
            problems.append(f"{label}: service {service!r} is not an API service of the project")
        elif step.get("dataset") and step["dataset"] not in looked_up:
            problems.append(
                f"{label}: API service {service!r} looks nothing up in {step['dataset']!r}"
            )
    if step.get("rows", "latest_day") not in PUBLISH_ROWS or ("rows" in step and service):
        problems.append(
            f"{label}: rows must be one of {', '.join(PUBLISH_ROWS)}, and only without service: "
            "(a service's endpoints say which rows they look up)"
        )
    if step.get("build") is not None and step["build"] not in PUBLISH_BUILDS:
        problems.append(f"{label}: build must be one of {', '.join(PUBLISH_BUILDS)}")
    return problems


def _is_windows_output(project: Project, dataset: object) -> bool:
    """Whether ``dataset`` is written by a windows recipe (a declaration, not SQL)."""
    return any(
        r.output == dataset and windows.is_windows(r.sql_file) for r in project.recipes.values()
    )


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
        ("dataset", ("run_checks", "build", "publish_enrichment")),
        ("model", ("score", "train", "evaluate")),
        ("input", ("score", "evaluate")),
        ("output", ("score",)),
        ("dashboard", ("publish_dashboard",)),
    ):
        if kind in required and not step.get(key):
            article = "an" if str(kind)[:1] in "aeiou" else "a"
            problems.append(f"{label}: {article} {kind} step needs {key}:")
    if kind == "publish_enrichment":
        problems.extend(_publish_enrichment_problems(project, label, step))
    if kind == "evaluate":
        own = set(step) - {"name", "type", "run_if", "partition"}
        unknown = sorted(own - set(model_spec.EVALUATE_OPTIONS))
        if unknown:
            problems.append(
                f"{label}: unknown option(s) {', '.join(unknown)} of an evaluate step "
                f"(one of {', '.join(model_spec.EVALUATE_OPTIONS)})"
            )
        if isinstance(step.get("model"), str):
            overrides = {k: step[k] for k in own if k in model_spec.EVALUATE_OPTIONS}
            problems.extend(
                f"{label}: {p}" for p in model_spec.problems(project, step["model"], overrides)
            )
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
    problems.extend(_day_problems(project, name, spec))
    problems.extend(triggers.problems(name, spec, set(project.datasets), set(project.scenarios)))
    problems.extend(reporter_problems(name, spec))
    cycle = triggers.after_cycle(project.scenarios)
    if cycle and name in cycle:
        problems.append(
            f"scenario {name}: its after_scenario triggers form a cycle: {' -> '.join(cycle)}"
        )
    return problems
