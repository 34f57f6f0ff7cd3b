"""How a recipe reads each of its inputs (``flow.yaml``, ``inputs:``), and which partitions
that means for a build.

Three modes:

* ``all``: the whole input. When the build writes some days of a day-partitioned output and
  the input is partitioned by day too, "whole" stops at the last day being built: a build
  of day D never reads a day after D, so rebuilding an old day gives what it gave that day.
  A build without partitions (a full rebuild) reads everything.
* ``same``: only the partitions being built (an unpartitioned input is filtered on the
  output's partition column).
* ``{days_before: N}`` (N a whole number, 1 … :data:`MAX_DAYS_BEFORE`): the N days before
  each day being built, **D itself excluded**: a build of D reads the input's partitions
  D-N … D-1 that exist (none is fine: the recipe sees an empty table with the input's
  columns). For per-key profiles "as of the start of D" whose cost must not grow with
  history. A build of several days reads the union of their windows; a full rebuild reads
  everything. Either way the recipe's SQL still decides what each output day uses (its own
  windows), so the input mode bounds what is read, it does not compute anything. Only for
  a day-partitioned input of a recipe whose output is partitioned by day.

A mode is the string ``"all"`` or ``"same"``, or a :class:`DaysBefore`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from engine.core.errors import NodalError

ALL, SAME = "all", "same"
NAMED_MODES = (ALL, SAME)
DAYS_BEFORE = "days_before"
MAX_DAYS_BEFORE = 3660  # ten years: a window, not a way to spell "all"
FORMS = "all, same or {days_before: N}"


class InputModeError(NodalError):
    """An input mode that is not one; the message says what is wrong (the caller adds where)."""


@dataclass(frozen=True)
class DaysBefore:
    """Read the ``days`` days before each day being built (that day excluded)."""

    days: int

    def __str__(self) -> str:
        return f"{DAYS_BEFORE}={self.days}"


InputMode = str | DaysBefore


def _days(value: object) -> int:
    # bool is an int in Python; "30" or 30.0 in YAML is a mistake worth naming.
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputModeError(f"{DAYS_BEFORE} must be a whole number of days, not {value!r}")
    if not 1 <= value <= MAX_DAYS_BEFORE:
        raise InputModeError(
            f"{DAYS_BEFORE} must be between 1 and {MAX_DAYS_BEFORE} days, not {value}"
        )
    return value


def parse(value: object) -> InputMode:
    """A mode from its ``flow.yaml`` form: ``all``, ``same`` or ``{days_before: N}``."""
    if isinstance(value, str):
        if value in NAMED_MODES:
            return value
        raise InputModeError(f"mode must be {FORMS}, not {value!r}")
    if isinstance(value, dict):
        unknown = sorted(str(k) for k in value if k != DAYS_BEFORE)
        if unknown:
            raise InputModeError(
                f"unknown key {', '.join(map(repr, unknown))} in the input's window "
                f"(the only key is {DAYS_BEFORE})"
            )
        if DAYS_BEFORE not in value:
            raise InputModeError(f"a window needs {DAYS_BEFORE}: N")
        return DaysBefore(_days(value[DAYS_BEFORE]))
    raise InputModeError(f"mode must be {FORMS}, not {value!r}")


def parse_text(text: str) -> InputMode:
    """A mode from the command line's form: ``all``, ``same`` or ``days_before=N``."""
    name, sep, number = text.partition("=")
    if not sep:
        return parse(text)
    if name.strip() != DAYS_BEFORE:
        raise InputModeError(f"mode must be all, same or {DAYS_BEFORE}=N, not {text!r}")
    try:
        days = int(number.strip())
    except ValueError:
        raise InputModeError(
            f"{DAYS_BEFORE} must be a whole number of days, not {number.strip()!r}"
        ) from None
    return DaysBefore(_days(days))


def to_yaml(mode: InputMode) -> Any:
    """The mode as ``flow.yaml`` writes it (the inverse of :func:`parse`)."""
    if isinstance(mode, DaysBefore):
        return {DAYS_BEFORE: mode.days}
    return mode


def describe(mode: InputMode) -> str:
    """The mode in words, for messages and pages."""
    if isinstance(mode, DaysBefore):
        return f"the {mode.days} day(s) before each day built"
    return {ALL: "whole", SAME: "the partitions being built"}[mode]


def applies_problem(
    mode: InputMode, input_by_day: bool, input_partitioned: bool, output_by_day: bool
) -> str | None:
    """Why ``mode`` cannot be used for this input of this recipe (None if it can)."""
    if not isinstance(mode, DaysBefore):
        return None
    if not input_partitioned:
        return f"{DAYS_BEFORE} needs a partitioned input (this dataset is not partitioned)"
    if not input_by_day:
        return f"{DAYS_BEFORE} needs an input partitioned by day (its partitions are not dates)"
    if not output_by_day:
        return (
            f"{DAYS_BEFORE} needs the recipe's output to be partitioned by day (the window "
            "is counted back from each day being built)"
        )
    return None


def partitions_to_read(
    mode: InputMode,
    present: Sequence[str],
    building: Sequence[str] | None,
    by_day: bool,
) -> list[str] | None:
    """Which of an input's ``present`` partitions a build of ``building`` reads in ``mode``;
    None means the whole input.

    ``by_day``: both the input and the output are partitioned by day (``building`` are then
    ISO dates, checked before). ``same`` is not handled here (the caller restricts it).
    """
    if not building or not by_day or mode == SAME:
        return None
    days = [dt.date.fromisoformat(d) for d in building]
    if isinstance(mode, DaysBefore):
        wanted: set[dt.date] = set()
        for day in days:
            wanted.update(day - dt.timedelta(days=k) for k in range(1, mode.days + 1))
        return [p for p in present if dt.date.fromisoformat(p) in wanted]
    last = max(days)
    return [p for p in present if dt.date.fromisoformat(p) <= last]
