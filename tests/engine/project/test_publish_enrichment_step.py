"""The ``publish_enrichment`` scenario step's validation: one message per problem, on both
examples' own services and datasets."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.project import scenario_spec
from engine.project.project import load_project

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


@pytest.fixture(params=["fraud", "returns"])
def example(request, tmp_path):
    project = load_project(EXAMPLES / request.param, tmp_path / "data", {"data_dir": "/nowhere"})
    service = next(iter(project.api_services))
    endpoint = project.api_services[service]["endpoints"][0]
    dataset = endpoint["enrichments"][0]["dataset"]
    return project, service, dataset


def _problems(project, step: dict) -> str:
    project.scenarios["t"] = {
        "name": "t",
        "day_from": next(n for n, d in project.datasets.items() if d.partitioned_by),
        "steps": [{"name": "p", "type": "publish_enrichment", **step}],
    }
    try:
        return " | ".join(scenario_spec.validate(project, "t"))
    finally:
        del project.scenarios["t"]


def test_the_examples_publish_their_enrichment_with_a_valid_step(example):
    project, service, dataset = example
    assert _problems(project, {"service": service, "dataset": dataset, "build": "next_day"}) == ""
    assert _problems(project, {"dataset": dataset, "rows": "all"}) == ""
    named = {s.get("type") for spec in project.scenarios.values() for s in spec.get("steps") or []}
    assert "publish_enrichment" in named  # each example wires it into a scenario


@pytest.mark.parametrize(
    "step, message",
    [
        ({}, "a publish_enrichment step needs dataset:"),
        ({"service": "nope"}, "service 'nope' is not an API service of the project"),
        ({"build": "yesterday"}, "build must be one of day, next_day"),
        ({"rows": "some"}, "rows must be one of latest_day, all"),
        ({"colour": "red"}, "unknown option(s) colour of a publish_enrichment step"),
    ],
)
def test_a_wrong_step_is_refused_with_the_reason(example, step, message):
    project, service, dataset = example
    full = {"dataset": dataset, **step} if step else {}
    assert message in _problems(project, full)


def test_a_service_that_does_not_look_the_dataset_up_is_refused(example):
    project, service, _ = example
    other = next(n for n, d in project.datasets.items() if d.kind == "source")
    problems = _problems(project, {"service": service, "dataset": other})
    assert f"API service {service!r} looks nothing up in {other!r}" in problems


def test_a_windows_output_publishes_its_window_state_with_only_partition():
    project = load_project(EXAMPLES / "fraud", Path("/nowhere"), {"data_dir": "/nowhere"})
    steps = project.scenarios["daily_scoring"]["steps"]
    assert {"name": "publish_card_windows", "type": "publish_enrichment"}.items() <= next(
        s for s in steps if s.get("dataset") == "card_windows"
    ).items()
    assert _problems(project, {"dataset": "card_windows"}) == ""
    assert _problems(project, {"dataset": "card_windows", "partition": "{day}"}) == ""
    problems = _problems(project, {"dataset": "card_windows", "rows": "all", "build": "day"})
    assert problems == (
        "scenario t: step 1 (p): build, rows cannot be used when publishing the windowed state of "
        "'card_windows' (a windows recipe's output: its events over the longest window before "
        "the end of the run's day; only partition:)"
    )
