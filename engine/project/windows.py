"""Windowed per-key features, declared once: computed in batch by SQL window functions and in
real time from an online state store.

A **windows recipe** (``windows: recipes/<name>.yaml`` in ``flow.yaml``) declares, over a
dataset of events, features of each event's key over time windows of the key's *earlier*
events::

    events: logins            # the events dataset (the flow's input of this recipe)
    key: user_id              # whose history
    time: at                  # event time (a TIMESTAMP column)
    id: login_id              # one event, one id: the output's join key
    features:
      logins_1h: {agg: count, window: 1h}
      seconds_24h: {agg: sum, of: seconds, window: 24h}
      new_device_7d: {agg: first_seen, of: device, window: 7d}

Its output dataset has one row per event: the id, key, time (and the events' partition
column), and one column per feature. The project's SQL feature recipe joins it by the id
(``LEFT JOIN user_windows w ON w.login_id = l.login_id``); a prediction
endpoint whose feature recipe joins it computes the row live (:class:`Windowed`).

**Strictly before.** The window of an event at time *t* holds the key's events with
``t - window <= time < t``: events at the same time never count each other, and neither does
the event itself. Batch and real time therefore agree whatever order same-time events
arrive in, and a retried request (its own event already recorded) gets the same answer.

Aggregates (``of`` names an events column; NULL values of it are skipped):
``count`` (events, 0 when none), ``sum`` (0 when none), ``mean``, ``max``, ``min`` (NULL
when none), ``distinct_count`` (0 when none), ``since_last`` (seconds since the newest
earlier event in the window, NULL when none), ``first_seen`` (true when no earlier event
of the key in the window has the event's value of ``of``; NULL when the value is NULL).

A build of day D reads the events of D and of the days the longest window reaches back
(the events' partitions must be days of the event time); the rows written are D's.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Any, Protocol

import duckdb
import yaml

from engine.project.project import Project, ProjectError, RecipeDef
from engine.storage import datasets as ds

SUFFIXES = (".yaml", ".yml")
DAY_US = 86_400_000_000
MAX_WINDOW_US = 366 * DAY_US
_UNITS = {"s": 1_000_000, "m": 60_000_000, "h": 3_600_000_000, "d": DAY_US}
_DURATION = re.compile(r"^\s*(\d{1,6})\s*([smhd])\s*$")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
_EPOCH = datetime(1970, 1, 1)
# aggregate → whether it needs ``of``
AGGREGATES = {
    "count": False,
    "sum": True,
    "mean": True,
    "max": True,
    "min": True,
    "distinct_count": True,
    "since_last": False,
    "first_seen": True,
}
_KEYS = {"events", "key", "time", "id", "features"}


class WindowsError(ProjectError):
    """A windows declaration is invalid; the message names the file and the field."""


def is_windows(recipe_file: str) -> bool:
    """Whether a recipe's file is a windows declaration (YAML), not SQL or Python."""
    return recipe_file.endswith(SUFFIXES)


@dataclass(frozen=True)
class WindowFeature:
    name: str
    agg: str
    of: str | None
    window: str  # as declared, e.g. "24h"
    window_us: int


@dataclass(frozen=True)
class WindowSpec:
    """A parsed windows declaration (what a package carries as JSON)."""

    recipe: str
    output: str
    events: str
    key: str
    time: str
    id: str
    partition: str | None  # the events' partition column, copied into the output
    features: tuple[WindowFeature, ...]
    project: str = ""

    # cached_property: the dataclass is frozen but not slotted (each value cached in the
    # instance's __dict__ once; equality and hash use the fields only).
    @functools.cached_property
    def longest_us(self) -> int:
        return max(f.window_us for f in self.features)

    @functools.cached_property
    def values(self) -> tuple[str, ...]:
        """The events columns the state keeps per event (the ``of`` columns), in order."""
        return tuple(dict.fromkeys(f.of for f in self.features if f.of))

    @functools.cached_property
    def fields(self) -> tuple[str, ...]:
        """The request fields real time needs: key, time, id and the ``of`` columns."""
        return tuple(dict.fromkeys((self.key, self.time, self.id, *self.values)))

    @functools.cached_property
    def space(self) -> str:
        """The state store's name for this declaration's events: the same declaration in
        any package version shares its state; another one (other columns, a longer
        window) starts its own."""
        shape = json.dumps([self.key, self.time, self.id, self.values, self.longest_us])
        digest = hashlib.sha256(shape.encode()).hexdigest()[:12]
        return f"{self.project}.{self.recipe}.{digest}"

    def to_json(self) -> str:
        return json.dumps(
            {
                "recipe": self.recipe,
                "output": self.output,
                "events": self.events,
                "key": self.key,
                "time": self.time,
                "id": self.id,
                "partition": self.partition,
                "project": self.project,
                "features": {
                    f.name: {"agg": f.agg, "of": f.of, "window": f.window} for f in self.features
                },
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str) -> WindowSpec:
        d = json.loads(text)
        where = f"windows of {d.get('output')}"
        features = tuple(
            _feature(name, spec, where) for name, spec in (d.get("features") or {}).items()
        )
        return cls(
            d["recipe"],
            d["output"],
            d["events"],
            d["key"],
            d["time"],
            d["id"],
            d.get("partition"),
            features,
            d.get("project", ""),
        )


# --- the declaration -----------------------------------------------------------------------


def duration_us(text: object, where: str) -> int:
    """``90s``, ``30m``, ``1h``, ``7d`` → microseconds (WindowsError naming ``where``)."""
    m = _DURATION.match(str(text)) if isinstance(text, (str, int)) else None
    if m is None or int(m.group(1)) == 0:
        raise WindowsError(
            f"{where}: {text!r} is not a window like 90s, 30m, 1h or 7d (a positive number "
            "and a unit s, m, h or d)"
        )
    us = int(m.group(1)) * _UNITS[m.group(2)]
    if us > MAX_WINDOW_US:
        raise WindowsError(f"{where}: {text!r} is longer than the longest window, 366d")
    return us


def _feature(name: object, spec: object, where: str) -> WindowFeature:
    if not isinstance(name, str) or not _NAME.match(name):
        raise WindowsError(f"{where}: features: {name!r} is not a valid name (letters, digits, _)")
    at = f"{where}: features.{name}"
    if not isinstance(spec, dict):
        raise WindowsError(f"{at}: expected {{agg, of, window}}")
    unknown = sorted(set(spec) - {"agg", "of", "window"})
    if unknown:
        raise WindowsError(f"{at}: unknown field(s) {', '.join(map(str, unknown))}")
    agg = spec.get("agg")
    if agg not in AGGREGATES:
        raise WindowsError(f"{at}.agg: {agg!r} is not one of {', '.join(AGGREGATES)}")
    of = spec.get("of")
    if AGGREGATES[agg] and not isinstance(of, str):
        raise WindowsError(f"{at}.of: {agg} needs the events column it aggregates")
    if not AGGREGATES[agg] and of is not None:
        raise WindowsError(f"{at}.of: {agg} reads no column (remove of)")
    window = spec.get("window")
    return WindowFeature(name, agg, of, str(window), duration_us(window, f"{at}.window"))


def _column(value: object, field: str, where: str, schema: dict[str, str] | None) -> str:
    if not isinstance(value, str) or not value:
        raise WindowsError(f"{where}: {field}: name a column of the events dataset")
    if schema is not None and value not in schema:
        raise WindowsError(f"{where}: {field}: the events dataset has no column {value!r}")
    return value


def parse(project: Project, recipe: RecipeDef) -> WindowSpec:
    """The recipe's declaration, checked against the project (WindowsError naming the field)."""
    where = f"{recipe.sql_file} (recipe {recipe.name})"
    try:
        d = yaml.safe_load(recipe.sql) or {}
    except yaml.YAMLError as exc:
        raise WindowsError(f"{where}: not valid YAML: {exc}") from None
    if not isinstance(d, dict):
        raise WindowsError(f"{where}: expected a mapping with events, key, time, id, features")
    unknown = sorted(map(str, set(d) - _KEYS))
    if unknown:
        raise WindowsError(f"{where}: unknown field(s) {', '.join(unknown)}")
    events = d.get("events")
    if events not in project.datasets:
        raise WindowsError(f"{where}: events: {events!r} is not a dataset of the project")
    if set(recipe.inputs) != {events} or recipe.inputs[events] != "same":
        raise WindowsError(
            f"{where}: events: flow.yaml must give the recipe exactly this input "
            f"(inputs: {{{events}: same}})"
        )
    ev = project.datasets[events]
    schema = ev.schema
    key = _column(d.get("key"), "key", where, schema)
    time = _column(d.get("time"), "time", where, schema)
    id_ = _column(d.get("id"), "id", where, schema)
    if schema is not None and not schema[time].upper().startswith(("TIMESTAMP", "DATETIME")):
        raise WindowsError(f"{where}: time: {time!r} must be a TIMESTAMP column ({schema[time]})")
    raw = d.get("features")
    if not isinstance(raw, dict) or not raw:
        raise WindowsError(f"{where}: features: declare at least one {{agg, of, window}}")
    features = tuple(_feature(name, spec, where) for name, spec in raw.items())
    taken = {id_, key, time, ev.partitioned_by}
    for f in features:
        if f.of is not None:
            _column(f.of, f"features.{f.name}.of", where, schema)
            numeric = ("DOUBLE", "FLOAT", "REAL", "DECIMAL", "NUMERIC", "INT", "BIGINT", "HUGEINT")
            kind = (schema or {}).get(f.of, "DOUBLE").upper()
            if f.agg in ("sum", "mean") and not kind.startswith(numeric + ("SMALLINT", "TINYINT")):
                raise WindowsError(f"{where}: features.{f.name}.of: {f.agg} needs a number column")
        if f.name in taken:
            raise WindowsError(f"{where}: features.{f.name}: the output already has this column")
    out = project.datasets.get(recipe.output)  # None: a new output, declared on save
    if out is not None and out.partitioned_by and out.partitioned_by != ev.partitioned_by:
        raise WindowsError(
            f"{where}: output {recipe.output} must be partitioned like {events} "
            f"({ev.partitioned_by or 'not partitioned'}), not by {out.partitioned_by}"
        )
    return WindowSpec(
        recipe.name,
        recipe.output,
        events,
        key,
        time,
        id_,
        ev.partitioned_by,
        features,
        project.name,
    )


def declared(project: Project) -> dict[str, WindowSpec]:
    """Every windows recipe of the project, by output dataset."""
    return {r.output: parse(project, r) for r in project.recipes.values() if is_windows(r.sql_file)}


# --- batch ---------------------------------------------------------------------------------


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


NO_LOWER_BOUND = -(2**62)
# The aggregates computed from the previous event time of the key (since_last) or of the
# (key, value) pair (first_seen); the others are window frames over the key's events.
_FROM_PREVIOUS = ("since_last", "first_seen")


def batch_sql(
    spec: WindowSpec, events: str = "__events", low_us: int | None = None
) -> tuple[str, dict[str, int]]:
    """The SQL (over the view ``events``) computing the features of every event at or after
    ``low_us`` (None: of every event), and its parameters (bound, never text).

    The events at or after ``low_us`` (the *recent* ones: a day's build starts at that day's
    first event) are read once, with only the columns the features need. Events before it
    are *history*, read only as far back as each feature's window reaches:

    * ``first_seen`` (and a ``since_last`` longer than every frame below) needs only the
      time of the newest earlier event of the key and value (of the key): among the recent
      events, a ``max`` over the earlier times of the same group; before them, the
      history's newest time per group (a hash aggregate, no sort, however long the
      window). The value is new when that time is outside the window.
    * The other aggregates are window frames over the key's events (recent and the
      history the longest of them reaches), all in one window pass; only the recent rows
      are kept.

    An event at *t* counts the events with ``t - window <= time < t``: the frames exclude
    the event's peers (``EXCLUDE GROUP``) and the previous times are those before *t*
    (``1 PRECEDING``: times are whole microseconds), so same-time events never count each
    other.
    """
    low = NO_LOWER_BOUND if low_us is None else low_us
    params: dict[str, int] = {"low": low}
    values = {c: f"__v{i}" for i, c in enumerate(spec.values)}
    keep = [c for c in dict.fromkeys((spec.id, spec.key, spec.time, spec.partition)) if c]
    narrow = (
        f"SELECT {_q(spec.key)} AS __k, epoch_us({_q(spec.time)}) AS __t"
        + "".join(f", {_q(c)} AS {v}" for c, v in values.items())
        + f" FROM {_q(events)}"
    )
    ctes = [
        "__r AS MATERIALIZED (SELECT row_number() OVER () AS __row, * FROM (SELECT "
        + ", ".join(_q(c) for c in keep)
        + f", {_q(spec.key)} AS __k, epoch_us({_q(spec.time)}) AS __t"
        + "".join(f", {_q(c)} AS {v}" for c, v in values.items())
        + f" FROM {_q(events)}) WHERE __t >= $low)"
    ]
    columns: dict[str, str] = {}
    joins: list[str] = []

    def reach(us: int, name: str) -> str:
        params[name] = NO_LOWER_BOUND if low_us is None else max(NO_LOWER_BOUND, low - us)
        return f"${name}"

    # Window frames over the key: one pass over the recent events and their history.
    framed = [f for f in spec.features if f.agg not in _FROM_PREVIOUS]
    if framed:  # a since_last the frames' history reaches is one more frame aggregate
        reach_us = max(f.window_us for f in framed)
        framed += [f for f in spec.features if f.agg == "since_last" and f.window_us <= reach_us]
        lo = reach(max(f.window_us for f in framed), "lo_frames")
        lengths = {us: f"__f{i}" for i, us in enumerate(dict.fromkeys(f.window_us for f in framed))}
        selects = []
        for f in framed:
            x = _q(values[f.of]) if f.of else None
            w = lengths[f.window_us]
            expr = {
                "count": f"count(*) OVER {w}",
                "sum": f"coalesce(fsum(CAST({x} AS DOUBLE)) OVER {w}, 0.0)",
                "mean": f"fsum(CAST({x} AS DOUBLE)) OVER {w} / nullif(count({x}) OVER {w}, 0)",
                "max": f"max({x}) OVER {w}",
                "min": f"min({x}) OVER {w}",
                "distinct_count": f"count(DISTINCT {x}) OVER {w}",
                "since_last": f"(__t - max(__t) OVER {w}) / 1000000.0",
            }[f.agg]
            selects.append(f"{expr} AS {_q(f.name)}")
            columns[f.name] = f"__frames.{_q(f.name)}"
        defs = []
        for us, w in lengths.items():
            params[f"{w}_us"] = us
            defs.append(
                f"{w} AS (PARTITION BY __k ORDER BY __t "
                f"RANGE BETWEEN ${w}_us PRECEDING AND CURRENT ROW EXCLUDE GROUP)"
            )
        used = ", ".join(
            ["__k", "__t", *(values[c] for c in dict.fromkeys(f.of for f in framed if f.of))]
        )
        ctes.append(
            f"__frames AS (SELECT * FROM (SELECT __row, {', '.join(selects)} FROM ("
            f"SELECT __row, {used} FROM __r UNION ALL "
            f"SELECT NULL, {used} FROM ({narrow}) WHERE __t >= {lo} AND __t < $low) "
            f"WINDOW {', '.join(defs)}) WHERE __row IS NOT NULL)"
        )
        joins.append("LEFT JOIN __frames USING (__row)")

    # The previous event's time, per key (since_last) or per key and value (first_seen).
    groups: dict[str | None, list[WindowFeature]] = {}
    for f in spec.features:
        if f.agg in _FROM_PREVIOUS and f not in framed:
            groups.setdefault(f.of if f.agg == "first_seen" else None, []).append(f)
    for g, (of, features) in enumerate(groups.items()):
        by = ["__k"] + ([values[of]] if of else [])
        lo = reach(max(f.window_us for f in features), f"lo_prev{g}")
        on = " AND ".join(f"h.{c} IS NOT DISTINCT FROM r.{c}" for c in by)
        skip = f" AND {values[of]} IS NOT NULL" if of else ""
        ctes.append(
            f"__h{g} AS (SELECT {', '.join(by)}, max(__t) AS __last FROM ({narrow}) "
            f"WHERE __t >= {lo} AND __t < $low{skip} GROUP BY ALL)"
        )
        ctes.append(
            f"__p{g} AS (SELECT r.__row, coalesce(max(r.__t) OVER (PARTITION BY "
            f"{', '.join('r.' + c for c in by)} ORDER BY r.__t RANGE BETWEEN UNBOUNDED "
            f"PRECEDING AND 1 PRECEDING), h.__last) AS __prev FROM __r r LEFT JOIN __h{g} h "
            f"ON {on})"
        )
        joins.append(f"LEFT JOIN __p{g} USING (__row)")
        for f in features:
            params[f"{f.name}_us"] = f.window_us
            inside = f"__p{g}.__prev >= e.__t - ${f.name}_us"
            if f.agg == "since_last":
                columns[f.name] = f"CASE WHEN {inside} THEN (e.__t - __p{g}.__prev) / 1000000.0 END"
            else:
                columns[f.name] = (
                    f"CASE WHEN e.{values[of]} IS NULL THEN NULL "
                    f"ELSE coalesce(NOT ({inside}), true) END"
                )
    selected = [f"e.{_q(c)}" for c in keep] + [
        f"{columns[f.name]} AS {_q(f.name)}" for f in spec.features
    ]
    sql = f"WITH {', '.join(ctes)}\nSELECT {', '.join(selected)} FROM __r e {' '.join(joins)}"
    return sql, params


def needed_partitions(
    spec: WindowSpec, ref: ds.DatasetRef, restrict: Sequence[str] | None
) -> list[str] | None:
    """The events' partitions a build of ``restrict`` reads: those days and the days the
    longest window reaches back (None: all of them)."""
    if not restrict or not ref.partitioned_by or not ref.date_partitions:
        return None
    back = timedelta(days=math.ceil(spec.longest_us / DAY_US))
    low = (date.fromisoformat(min(restrict)) - back).isoformat()
    high = max(restrict)
    return [p for p in ref.partitions() if low <= p <= high]


def _compute(
    con: duckdb.DuckDBPyConnection, spec: WindowSpec, restrict: Sequence[str] | None
) -> tuple[str, dict[str, int]]:
    """The SQL of the features of the events of ``restrict`` (None: all), over the view
    ``__events`` of ``con`` (for a day, its partitions bound to the connection)."""
    low = None  # a day's build: its events' features read only back from its first
    if restrict and spec.partition:
        ds.bind_partitions(con, restrict)
        within = ds.in_partitions_sql(spec.partition)
        low = con.execute(
            f"SELECT min(epoch_us({_q(spec.time)})) FROM __events WHERE {within}"
        ).fetchone()[0]
    sql, params = batch_sql(spec, low_us=low)
    if restrict and spec.partition:
        sql = f"SELECT * FROM ({sql}) WHERE {ds.in_partitions_sql(spec.partition)}"
    return sql, params


def run(project: Project, recipe: RecipeDef, restrict: list[str] | None) -> tuple[int, list[str]]:
    """Build the recipe's output (of the ``restrict`` partitions only when given): the rows
    and the partitions written."""
    spec = parse(project, recipe)
    events = project.dataset(spec.events)
    out = project.dataset(recipe.output)
    parts = needed_partitions(spec, events, restrict)
    if parts is not None and not any(p in parts for p in restrict or []):
        return 0, []  # no events on the requested days: nothing to write
    try:
        with ds.session({"__events": (events, parts)}) as con:
            sql, params = _compute(con, spec, restrict if out.partitioned_by else None)
            con.execute(f"CREATE TEMP TABLE __windows AS {sql}", params)
            written = ds.write(
                out,
                "SELECT * FROM __windows",
                con=con,
                replace_all=restrict is None,
                partitions=restrict if out.partitioned_by else None,
            )
            rows = con.execute("SELECT count(*) FROM __windows").fetchone()[0]
    except (duckdb.Error, ds.DatasetError) as exc:
        raise WindowsError(f"recipe {recipe.name!r} ({recipe.sql_file}) failed: {exc}") from None
    return int(rows), written


def preview(project: Project, recipe: RecipeDef, limit: int) -> tuple[Any, dict[str, str]]:
    """The first ``limit`` rows (a pandas DataFrame) and the schema of what a build of the
    events' newest day would write (that day's events, reading back what the windows
    reach); WindowsError for a wrong declaration or when the events have no data."""
    spec = parse(project, recipe)
    events = project.dataset(spec.events)
    try:
        newest = events.partitions()[-1:] if events.partitioned_by else None
        parts = needed_partitions(spec, events, newest)
        with ds.session({"__events": (events, parts)}) as con:
            sql, params = _compute(con, spec, newest)
            con.execute(f"CREATE TEMP TABLE __windows AS {sql}", params)
            schema = {r[0]: r[1] for r in con.execute("DESCRIBE __windows").fetchall()}
            rows = con.execute(
                f"SELECT * FROM __windows ORDER BY {_q(spec.time)}, {_q(spec.id)} LIMIT ?",
                [int(limit)],
            ).df()
    except (duckdb.Error, ds.DatasetError) as exc:
        raise WindowsError(f"recipe {recipe.name!r} ({recipe.sql_file}): {exc}") from None
    return rows, schema


# --- real time -----------------------------------------------------------------------------


def epoch_us(value: datetime) -> int:
    """A naive UTC timestamp in microseconds since 1970, as DuckDB's ``epoch_us``."""
    d = value - _EPOCH
    return d.days * DAY_US + d.seconds * 1_000_000 + d.microseconds


@functools.cache
def _plan(spec: WindowSpec) -> tuple[int, tuple[tuple[int, tuple[tuple[str, str, int], ...]], ...]]:
    """The longest window, and per distinct window its features (name, agg, value index)."""
    index = {c: i + 1 for i, c in enumerate(spec.values)}
    by_window: dict[int, list[tuple[str, str, int]]] = {}
    for f in spec.features:
        by_window.setdefault(f.window_us, []).append((f.name, f.agg, index.get(f.of or "", 0)))
    return spec.longest_us, tuple((w, tuple(fs)) for w, fs in by_window.items())


def compute(
    spec: WindowSpec,
    t_us: int,
    current: Sequence[Any],
    history: Iterable[Sequence[Any]],
    plan: tuple[int, tuple[tuple[int, tuple[tuple[str, str, int], ...]], ...]] | None = None,
) -> dict[str, Any]:
    """The features of an event at ``t_us`` whose ``of`` values are ``current`` (in
    :attr:`WindowSpec.values` order), from the key's recorded events ``[t_us, *values]``
    (any order; those at ``t_us`` or later, or older than a window, do not count).
    ``plan``: ``_plan(spec)`` when the caller keeps it."""
    longest, windows_ = plan or _plan(spec)
    earlier = [e for e in history if t_us - longest <= e[0] < t_us]
    out: dict[str, Any] = {}
    for window_us, features in windows_:
        start = t_us - window_us
        inside = earlier if window_us == longest else [e for e in earlier if e[0] >= start]
        for name, agg, i in features:
            if agg == "count":
                out[name] = len(inside)
            elif agg == "since_last":
                out[name] = (t_us - max(e[0] for e in inside)) / 1000000.0 if inside else None
            else:
                vals = [e[i] for e in inside if e[i] is not None]
                if agg == "sum":
                    out[name] = math.fsum(vals)
                elif agg == "mean":
                    out[name] = math.fsum(vals) / len(vals) if vals else None
                elif agg == "max":
                    out[name] = max(vals) if vals else None
                elif agg == "min":
                    out[name] = min(vals) if vals else None
                elif agg == "distinct_count":
                    out[name] = len(set(vals))
                else:  # first_seen
                    mine = current[i - 1]
                    out[name] = None if mine is None else mine not in vals
    return out


class StateStore(Protocol):
    """Where real time keeps each key's recent events (:mod:`engine.apinode.online_state`).

    ``record`` adds the event once per (key, id): a retried request or a repeated id changes
    nothing. It drops the key's events older than ``keep_from_us`` and returns the key's
    events (each ``[t_us, *values]``), all in one step (one round trip where remote).

    ``record_batch`` does it for many records ``(key, id, event, keep_from_us)`` at once
    (one transaction, or one round trip): it returns, per key, the ``(id, event)`` the key
    held *before* the batch, from the batch's oldest ``keep_from_us`` of that key on, then
    adds the batch's events (each once per (key, id), the first in the batch's order) and
    drops the key's events older than that oldest ``keep_from_us``. Each key is one atomic
    step; the caller works out what each record of the batch sees (:meth:`Windowed.find_many`).
    A store without it is used one record at a time.
    """

    def record(
        self, space: str, key: str, event_id: str, event: list[Any], keep_from_us: int, ttl_us: int
    ) -> list[list[Any]]: ...


Batch = Sequence[tuple[str, str, list[Any], int]]  # (key text, event id, event, keep from µs)


def oldest_keep(batch: Batch) -> dict[str, int]:
    """Per key of a batch, its oldest ``keep_from_us``, keys in their first order."""
    keep: dict[str, int] = {}
    for key, _, _, keep_from in batch:
        old = keep.get(key)
        if old is None or keep_from < old:
            keep[key] = keep_from
    return keep


class MemoryState:
    """A state store in this process's memory: for checks and the design node's dev server,
    never shared."""

    def __init__(self) -> None:
        self.keys: dict[tuple[str, str], dict[str, list[Any]]] = {}

    def record(
        self, space: str, key: str, event_id: str, event: list[Any], keep_from_us: int, ttl_us: int
    ) -> list[list[Any]]:
        events = self.keys.setdefault((space, key), {})
        events.setdefault(event_id, event)
        for old in [i for i, e in events.items() if e[0] < keep_from_us]:
            del events[old]
        return list(events.values())

    def record_batch(
        self, space: str, batch: Batch, ttl_us: int
    ) -> dict[str, list[tuple[str, list[Any]]]]:
        keep = oldest_keep(batch)
        before: dict[str, list[tuple[str, list[Any]]]] = {}
        for key, keep_from in keep.items():
            events = self.keys.setdefault((space, key), {})
            for old in [i for i, e in events.items() if e[0] < keep_from]:
                del events[old]
            before[key] = list(events.items())
        for key, event_id, event, _ in batch:
            self.keys[(space, key)].setdefault(event_id, event)
        return before


def key_text(value: Any) -> str:
    """A key value as the state store names it (its JSON text: "C1" and 1 differ)."""
    return json.dumps(value, separators=(",", ":"))


@dataclass
class Windowed:
    """The live row of a windows output for one (typed) request record: it records the event
    in the state store and computes its features from the key's earlier events."""

    spec: WindowSpec
    state: StateStore

    def __post_init__(self) -> None:
        self._space = self.spec.space
        self._longest = self.spec.longest_us
        self._plan = _plan(self.spec)

    def find(self, record: dict[str, Any]) -> dict[str, Any]:
        spec = self.spec
        t_us = epoch_us(record[spec.time])
        current = [record.get(c) for c in spec.values]
        history = self.state.record(
            self._space,
            key_text(record[spec.key]),
            str(record[spec.id]),
            [t_us, *current],
            t_us - self._longest,
            self._longest,
        )
        row = {spec.id: record[spec.id], spec.key: record[spec.key], spec.time: record[spec.time]}
        row.update(compute(spec, t_us, current, history, self._plan))
        return row

    def find_many(self, records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """The rows of many records, as :meth:`find` one after the other in their order
        gives them, with the state recorded in one step (``record_batch``). Each record sees
        what the key held before the batch and the batch's events of records before it or
        itself (a repeated id: its first); "strictly before" keeps the rest out. The key is
        trimmed only to the batch's oldest window start, so an older record of the batch
        sees its whole window (one by one, a newer record before it would have trimmed it)."""
        batch_of = getattr(self.state, "record_batch", None)
        if batch_of is None or len(records) < 2:
            return [self.find(r) for r in records]
        spec, longest, plan = self.spec, self._longest, self._plan
        values = spec.values
        batch: list[tuple[str, str, list[Any], int]] = []
        for r in records:
            t_us = epoch_us(r[spec.time])
            batch.append(
                (
                    key_text(r[spec.key]),
                    str(r[spec.id]),
                    [t_us, *[r.get(c) for c in values]],
                    t_us - longest,
                )
            )
        before = batch_of(self._space, batch, longest)
        # Per key: the events it held, then the batch's new ids as they come.
        seen: dict[str, set[str]] = {}
        history: dict[str, list[list[Any]]] = {}
        for key, held in before.items():
            seen[key] = {i for i, _ in held}
            history[key] = [e for _, e in held]
        rows = []
        last: dict[str, tuple[Any, ...]] = {}  # per key: the previous record's input, answer
        for r, (key, event_id, event, _) in zip(records, batch, strict=True):
            ids = seen[key]
            events = history[key]
            if event_id not in ids:
                ids.add(event_id)
                events.append(event)
            current = event[1:]
            prev = last.get(key)
            if prev is not None and prev[0] == event and prev[1] == len(events):
                feats = prev[2]  # the same event again, nothing new: the same answer
            else:
                feats = compute(spec, event[0], current, events, plan)
                last[key] = (event, len(events), feats)
            row = {spec.id: r[spec.id], spec.key: r[spec.key], spec.time: r[spec.time]}
            row.update(feats)
            rows.append(row)
        return rows


def join_keys(specs: dict[str, WindowSpec]) -> dict[str, dict[str, str]]:
    """How a feature recipe must join each windows output: by the event id."""
    return {out: {s.id: s.id} for out, s in specs.items()}


def extend_fields(
    request_fields: dict[str, str],
    specs: Iterable[WindowSpec],
    schema: dict[str, str],
    families: Any,
) -> dict[str, str]:
    """The request contract plus the fields the windows read (key, time, id, ``of``);
    ``families`` maps a SQL type to its family (feature_sql.type_family)."""
    out = dict(request_fields)
    for spec in specs:
        for f in spec.fields:
            if f in out:
                continue
            if f not in schema:
                raise WindowsError(
                    f"windows {spec.recipe}: the request dataset has no column {f!r}"
                )
            family = families(schema[f])
            if family is None or (f == spec.time and family != "timestamp"):
                raise WindowsError(
                    f"windows {spec.recipe}: request field {f!r} ({schema[f]}) cannot be "
                    "received" + (" as the event time (a TIMESTAMP)" if f == spec.time else "")
                )
            out[f] = family
    return out


def with_fields(plan: Any, specs: Iterable[WindowSpec], schema: dict[str, str]) -> Any:
    """A feature plan whose request contract also carries what the windows read."""
    from engine.project import feature_sql

    specs = list(specs)
    for s in specs:
        if s.events != plan.request_dataset:
            raise WindowsError(
                f"windows {s.recipe}: its events ({s.events}) must be the feature recipe's "
                f"request dataset ({plan.request_dataset}) for real time to record them"
            )
    fields = extend_fields(plan.request_fields, specs, schema, feature_sql.type_family)
    return replace(plan, request_fields=fields)
