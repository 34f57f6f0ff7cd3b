"""What a scenario step is: its context, its outcome, and how it fails.

Step functions (:mod:`engine.automation.step_types`, and steps other modules define, such
as ``evaluate``) take a :class:`RunContext` and the step's definition and return a
:class:`StepOutcome`, or raise :class:`StepFailed` for a reason the user can act on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.core.errors import NodalError
from engine.models import scoring
from engine.project.project import Project, substitute
from engine.storage.control import (
    ControlStore,
)
from engine.storage.objects import ObjectStore


class StepFailed(NodalError):
    """A step ended in failure for a reason a user can act on (not a bug)."""


class RunAborted(NodalError):
    """Someone asked to abort the run; raised at the next cooperative check."""


def _no_stop() -> None:
    return None


@dataclass
class RunContext:
    project: Project
    store: ControlStore
    node: str
    run_id: int
    bundle_id: str | None
    variables: dict[str, str]
    checks_passed_at: str | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    # Call inside long loops: raises RunAborted once an abort was requested.
    should_stop: Callable[[], None] = _no_stop
    actor: str = "scenario"
    chunk_rows: int = scoring.DEFAULT_CHUNK_ROWS
    # Where score steps find compiled models (the node's cache); None: the Booster scores.
    compiled_cache: Path | None = None
    # Where publish_enrichment puts its snapshots (the node's object store: its home, or S3
    # for API nodes on other hosts); None: the design node, which publishes nothing.
    objects: ObjectStore | None = None


@dataclass(frozen=True)
class StepOutcome:
    status: str
    message: str
    outputs: dict[str, Any]


def partition_of(ctx: RunContext, step: dict[str, Any]) -> str:
    return substitute(str(step.get("partition", "{day}")), ctx.variables, f"step {step['name']}")
