"""Scenario triggers: what starts a scenario on an automation node, and their validation.

Three types, written in a scenario's ``triggers:`` list:

* ``time``: ``cron: "0 6 * * *"`` (five fields, UTC) or ``every: "daily at 06:00"`` (plain
  words, see :func:`schedule_to_cron`);
* ``dataset_changed``: ``dataset: orders``: a new partition of the dataset appeared
  (the run gets ``day`` = that partition); an unpartitioned dataset counts as changed when
  its file changes;
* ``after_scenario``: ``scenario: nightly_build`` (and optionally ``on: [SUCCESS,
  WARNING]``, the default): another scenario of the same project ended with one of those
  outcomes.

A cycle of ``after_scenario`` triggers (a → b → a) is refused: it would never stop.
"""

from __future__ import annotations

import re
from graphlib import CycleError, TopologicalSorter
from typing import Any

TYPES = ("time", "dataset_changed", "after_scenario")
OUTCOMES = ("SUCCESS", "WARNING", "FAILED", "ABORTED")
DEFAULT_AFTER_ON = ("SUCCESS", "WARNING")
_DAYS = {
    "monday": "mon",
    "tuesday": "tue",
    "wednesday": "wed",
    "thursday": "thu",
    "friday": "fri",
    "saturday": "sat",
    "sunday": "sun",
}
_AT = r"(?:\s+at\s+(\d{1,2}):(\d{2}))?"


class TriggerError(ValueError):
    """A trigger cannot be understood; the message says what is wrong."""


def _hm(h: str | None, m: str | None) -> tuple[int, int]:
    hour, minute = int(h or 0), int(m or 0)
    if hour > 23 or minute > 59:
        raise TriggerError(f"{hour:02d}:{minute:02d} is not a time of day")
    return hour, minute


def schedule_to_cron(text: str) -> str:
    """Plain words → a five-field cron expression (UTC).

    Understood: ``every minute``, ``every 15 minutes``, ``hourly``, ``every 2 hours``,
    ``daily at 06:00`` (or ``every day at 06:00``), ``weekdays at 07:30``,
    ``every monday at 07:30`` (or ``mondays at 07:30``), ``monthly on day 1 at 06:00``.
    """
    t = " ".join(str(text).lower().split())
    if t in ("every minute", "minutely"):
        return "* * * * *"
    if m := re.fullmatch(r"every (\d+) minutes?", t):
        n = int(m.group(1))
        if not 1 <= n <= 59:
            raise TriggerError(f"every {n} minutes: use 1 to 59 minutes")
        return f"*/{n} * * * *"
    if t in ("hourly", "every hour"):
        return "0 * * * *"
    if m := re.fullmatch(r"every (\d+) hours?", t):
        n = int(m.group(1))
        if not 1 <= n <= 23:
            raise TriggerError(f"every {n} hours: use 1 to 23 hours")
        return f"0 */{n} * * *"
    if m := re.fullmatch(r"(?:daily|every day)" + _AT, t):
        hour, minute = _hm(m.group(1), m.group(2))
        return f"{minute} {hour} * * *"
    if m := re.fullmatch(r"(?:on )?weekdays" + _AT, t):
        hour, minute = _hm(m.group(1), m.group(2))
        return f"{minute} {hour} * * mon-fri"
    if m := re.fullmatch(r"(?:every |on )?(" + "|".join(_DAYS) + r")s?" + _AT, t):
        hour, minute = _hm(m.group(2), m.group(3))
        return f"{minute} {hour} * * {_DAYS[m.group(1)]}"
    if m := re.fullmatch(r"monthly(?: on day (\d{1,2}))?" + _AT, t):
        day = int(m.group(1) or 1)
        if not 1 <= day <= 28:
            raise TriggerError(f"monthly on day {day}: use 1 to 28 (every month has them)")
        hour, minute = _hm(m.group(2), m.group(3))
        return f"{minute} {hour} {day} * *"
    raise TriggerError(
        f"cannot read the schedule {text!r}: write e.g. 'daily at 06:00', 'weekdays at 07:30', "
        "'every monday at 08:00', 'every 15 minutes', 'hourly', or use cron: '0 6 * * *'"
    )


def cron_of(trigger: dict[str, Any]) -> str:
    """The cron expression of a time trigger (from ``cron`` or plain-words ``every``)."""
    if trigger.get("every") is not None:
        return schedule_to_cron(str(trigger["every"]))
    if trigger.get("cron") is None:
        raise TriggerError("a time trigger needs cron: '<5 fields>' or every: '<plain words>'")
    return str(trigger["cron"])


def cron_trigger(trigger: dict[str, Any]):  # noqa: ANN201 - apscheduler type kept local
    """The APScheduler CronTrigger (UTC) of a time trigger; :class:`TriggerError` if invalid."""
    from apscheduler.triggers.cron import CronTrigger

    cron = cron_of(trigger)
    try:
        return CronTrigger.from_crontab(cron, timezone="UTC")
    except ValueError as exc:
        raise TriggerError(f"invalid cron {cron!r}: {exc}") from None


def describe(trigger: dict[str, Any]) -> str:
    """One line for people: 'time: daily at 06:00 (0 6 * * *)'."""
    kind = trigger.get("type")
    if kind == "time":
        try:
            cron = cron_of(trigger)
        except TriggerError:
            cron = "?"
        return (
            f"time: {trigger['every']} ({cron} UTC)"
            if trigger.get("every")
            else f"time: {cron} UTC"
        )
    if kind == "dataset_changed":
        return f"dataset changed: new partition of {trigger.get('dataset')}"
    if kind == "after_scenario":
        on = ", ".join(trigger.get("on") or DEFAULT_AFTER_ON)
        return f"after scenario {trigger.get('scenario')} ({on})"
    return f"unknown trigger {kind!r}"


def problems(
    name: str, spec: dict[str, Any], datasets: set[str], scenario_names: set[str]
) -> list[str]:
    """What is wrong with the triggers of scenario ``name`` (empty when all are valid)."""
    out: list[str] = []
    for i, trig in enumerate(spec.get("triggers") or []):
        label = f"scenario {name}: trigger {i + 1}"
        if not isinstance(trig, dict):
            out.append(f"{label}: expected a mapping with a type")
            continue
        kind = trig.get("type")
        if kind not in TYPES:
            out.append(f"{label}: unknown trigger type {kind!r} (one of {', '.join(TYPES)})")
        elif kind == "time":
            try:
                cron_trigger(trig)
            except TriggerError as exc:
                out.append(f"scenario {name}: {exc}")
        elif kind == "dataset_changed":
            if trig.get("dataset") not in datasets:
                out.append(
                    f"{label}: dataset {trig.get('dataset')!r} is not a dataset of the project"
                )
        elif kind == "after_scenario":
            other = trig.get("scenario")
            if other not in scenario_names:
                out.append(f"{label}: scenario {other!r} is not a scenario of the project")
            bad = [o for o in trig.get("on") or DEFAULT_AFTER_ON if o not in OUTCOMES]
            if bad:
                out.append(f"{label}: on: {bad[0]!r} is not an outcome ({', '.join(OUTCOMES)})")
    return out


def after_cycle(scenarios: dict[str, dict[str, Any]]) -> list[str] | None:
    """The scenarios of a cycle of ``after_scenario`` triggers, or None when there is none."""
    graph: dict[str, set[str]] = {n: set() for n in scenarios}
    for name, spec in scenarios.items():
        for trig in spec.get("triggers") or []:
            if isinstance(trig, dict) and trig.get("type") == "after_scenario":
                graph[name].add(str(trig.get("scenario")))
    try:
        list(TopologicalSorter(graph).static_order())
    except CycleError as exc:
        return [str(n) for n in exc.args[1]]
    return None


def followers(
    scenarios: dict[str, dict[str, Any]], finished: str, outcome: str
) -> list[tuple[str, int]]:
    """(scenario, trigger index) of the ``after_scenario`` triggers fired by this outcome."""
    out = []
    for name, spec in sorted(scenarios.items()):
        for i, trig in enumerate(spec.get("triggers") or []):
            if (
                isinstance(trig, dict)
                and trig.get("type") == "after_scenario"
                and trig.get("scenario") == finished
                and outcome in (trig.get("on") or DEFAULT_AFTER_ON)
            ):
                out.append((name, i))
    return out
