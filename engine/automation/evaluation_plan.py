"""What one evaluation works with: its plan, its metric rows and result, its constants.

The shared ground of :mod:`engine.automation.evaluation` (which runs the evaluate step) and
:mod:`engine.automation.performance` (the metrics once labels land): :func:`plan` resolves an
evaluate step's options against the project and the model's declaration
(:mod:`engine.project.model_spec`); every measure is a :class:`Metric` row of an
:class:`EvaluationResult`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from engine.automation import drift
from engine.core.errors import NodalError
from engine.models.scoring import OUTPUT_COLUMNS
from engine.project import model_spec
from engine.project.project import Project, ProjectError

CHAMPION, CHALLENGER = "champion", "challenger"
INFO = "INFO"
NOT_APPLICABLE = "not_applicable"  # the metric of a family the model's declaration rules out
SCORE = OUTPUT_COLUMNS[0]  # the probability column the scorer writes
FAMILIES = (
    "input_drift",
    "unseen_values",
    "location",
    "prediction_drift",
    "domain_classifier",
    "performance",
    "performance_decay",
    "missed_fraud",
)
# Defaults of the step's thresholds (each can be set in the step).
DEFAULTS: dict[str, Any] = dict(model_spec.EVALUATE_THRESHOLDS)


class EvaluationError(NodalError):
    """The evaluation cannot run (no reference, no scored day…); the message says why."""


@dataclass(frozen=True)
class Metric:
    role: str
    model_version: str
    day: str
    family: str
    feature: str
    metric: str
    value: float | None
    status: str
    message: str = ""


@dataclass
class EvaluationResult:
    day: str
    model: str
    champion_version: str
    challenger_version: str | None
    metrics: list[Metric] = field(default_factory=list)

    def _first_per_key(self, status: str) -> list[Metric]:
        """One metric per (role, family, feature, day) whose status is ``status``."""
        seen, out = set(), []
        for m in self.metrics:
            key = (m.role, m.family, m.feature, m.day)
            if m.status == status and key not in seen:
                seen.add(key)
                out.append(m)
        return out

    @property
    def alarms(self) -> list[Metric]:
        """The metrics in ERROR (alarms), one per (role, family, feature, day)."""
        return self._first_per_key(drift.ERROR)

    @property
    def warnings(self) -> list[Metric]:
        return self._first_per_key(drift.WARNING)

    def status(self) -> str:
        return drift.ERROR if self.alarms else drift.WARNING if self.warnings else drift.OK

    @property
    def not_applicable(self) -> dict[str, str]:
        """Family → why it was not computed (what the model's declaration lacks)."""
        return {
            m.family: m.message
            for m in self.metrics
            if m.metric == NOT_APPLICABLE and m.status == INFO and m.day == self.day
        }


# --- the plan --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What one evaluation reads: datasets, the day column, the declared columns, options."""

    model: str
    input: str  # the scored dataset
    features: str  # the dataset the model scores (the reference's rows)
    day_column: str  # the scored dataset's partition column
    monitoring: model_spec.Monitoring
    options: dict[str, Any]


def scored_from(project: Project, scored: str) -> str | None:
    """The input of the project's score step that writes ``scored``, if there is one."""
    for spec in project.scenarios.values():
        for step in spec.get("steps") or []:
            if (
                isinstance(step, dict)
                and step.get("type") == "score"
                and step.get("output") == scored
                and step.get("input") in project.datasets
            ):
                return str(step["input"])
    return None


def plan(project: Project, options: dict[str, Any]) -> Plan:
    """Resolve an evaluate step's options against the project and the model's declaration."""
    if not options.get("model"):
        raise EvaluationError("the evaluate step needs a model")
    name = (
        options["model"]
        if isinstance(options["model"], str)
        else str(options["model"].get("model", ""))
    )
    if name not in project.models:
        raise ProjectError(f"project {project.name!r} has no model {name!r}")
    scored = options.get("input")
    if not scored:
        raise EvaluationError("the evaluate step needs input: (the dataset its scores are in)")
    if scored not in project.datasets:
        raise ProjectError(f"project {project.name!r} has no dataset {scored!r}")
    day_column = project.datasets[scored].partitioned_by
    if not day_column:
        raise EvaluationError(f"dataset {scored!r} is not partitioned: one partition per day")
    features = options.get("features_dataset") or scored_from(project, scored)
    if not features:
        raise EvaluationError(
            f"no score step of the project writes {scored!r}: give the evaluate step "
            "features_dataset: (the dataset the model scores, for the reference rows)"
        )
    declared = {k: options[k] for k in model_spec.EVALUATE_OPTIONS if k in options}
    return Plan(
        model=name,
        input=str(scored),
        features=str(features),
        day_column=day_column,
        monitoring=model_spec.monitoring(project, name, declared),
        options={**DEFAULTS, **options},
    )


def missing_columns(columns: list[str], *frames: pd.DataFrame) -> list[str]:
    """The ``columns`` that one of ``frames`` lacks."""
    return [c for c in columns if any(c not in f.columns for f in frames)]
