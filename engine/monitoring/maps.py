"""The daily map: one published day of a ``type: map`` dashboard's extract, ready to draw.

Any project declares its maps in ``dashboards/<name>.yaml`` (``type: map``, and ``roles``
naming its latitude, longitude, score… columns: :mod:`engine.project.dashboard_spec`); this
module reads nothing by a fixed name. The map shows what the automation node *published*: a
day appears only after its scenario checked the data, scored it and wrote the dashboard
extract. Everything is aggregated in DuckDB; only the flagged rows (the points on the map)
come back as rows.

Problems a user can meet (the project is not active on the node yet, it declares no map,
nothing published yet, a shared link to a day that is not published, an extract that went
missing) come back as data in :attr:`MapDay.problem` with a message that names what to
run for that project, never as an exception.

Which maps a deployment has is :mod:`engine.monitoring.map_catalog`; the hot spots, top
reasons, city labels and view around the points are :mod:`engine.monitoring.map_overlays`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd
import sqlalchemy as sa

from engine.core.settings import Settings
from engine.monitoring import deployed, map_catalog, map_overlays
from engine.project.dashboard_spec import MapSpec
from engine.project.project import ProjectError
from engine.storage import datasets as ds
from engine.storage.control import ControlStore, check_results, published_days

MAX_POINTS = 20_000
# Every point has these columns (None where the dashboard declares no such role), then its
# dashboard's ``details`` columns under their own names.
POINT_COLUMNS = ["lat", "lon", "score", "amount", "category", "time", "id"]

# Problem kinds (MapDay.problem); None means the day loaded.
NOT_ACTIVE = "not_active"
NO_MAP = "no_map"
UNKNOWN_DASHBOARD = "unknown_dashboard"
NOTHING_PUBLISHED = "nothing_published"
DAY_NOT_PUBLISHED = "day_not_published"
NOT_READABLE = "not_readable"


def _q(name: str) -> str:
    """``name`` as a quoted SQL identifier."""
    return '"' + str(name).replace('"', '""') + '"'


@dataclass(frozen=True)
class DayKpis:
    """Totals of one day, and their change since the previous published day (if any).

    ``flagged_amount`` is None when the map declares no ``amount`` role.
    """

    rows: int
    flagged: int
    flagged_amount: float | None
    previous_day: str | None = None
    rows_change: int | None = None
    flagged_change: int | None = None
    flagged_amount_change: float | None = None

    @property
    def flag_rate(self) -> float:
        return self.flagged / self.rows if self.rows else 0.0


def _empty_points() -> pd.DataFrame:
    return pd.DataFrame(columns=POINT_COLUMNS)


@dataclass(frozen=True)
class MapDay:
    """One day of a map dashboard, or why there is none (``problem`` and ``message``)."""

    project: str
    infra_id: str
    day: str | None
    published_days: list[str]
    dashboard: str | None = None
    spec: MapSpec | None = None
    publishers: list[str] = field(default_factory=list)  # scenarios that publish it
    published_at: str | None = None
    checks_passed_at: str | None = None
    run_id: int | None = None
    bundle_id: str | None = None
    threshold: float | None = None  # None: the model's own flags
    model_threshold: float | None = None  # the active model's decision threshold on the node
    kpis: DayKpis | None = None
    points: pd.DataFrame = field(default_factory=_empty_points)
    filter_options: dict[str, list[str]] = field(default_factory=dict)  # values on the day
    max_amount: float = 0.0
    bounds: tuple[float, float, float, float] | None = None  # lat, lat, lon, lon of the day
    hot_spots: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=map_overlays.HOT_SPOT_COLUMNS)
    )
    failed_check_day: str | None = None  # a newer day whose data checks failed
    failed_check_message: str = ""
    problem: str | None = None
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def points_truncated(self) -> bool:
        """True when more rows were flagged than the points shipped to the map."""
        return self.kpis is not None and self.kpis.flagged > len(self.points)

    @property
    def detail_columns(self) -> list[str]:
        return [c for c in self.points.columns if c not in POINT_COLUMNS]

    def run_hint(self) -> str:
        """How to publish a day of this map now (its project's own scenarios)."""
        return deployed.run_hint(self.publishers, self.project, self.infra_id)


@dataclass(frozen=True)
class MapFilters:
    """Which rows count: values per filter column (absent or empty: all), an amount range."""

    values: dict[str, tuple[str, ...]] = field(default_factory=dict)
    min_amount: float | None = None
    max_amount: float | None = None

    def sql(self, spec: MapSpec) -> str:
        parts = ["TRUE"]
        for i, column in enumerate(spec.filters):
            if self.values.get(column):
                parts.append(f"CAST({_q(column)} AS VARCHAR) IN (SELECT unnest($f{i}))")
        if spec.amount and self.min_amount is not None:
            parts.append(f"{_q(spec.amount)} >= $min_amount")
        if spec.amount and self.max_amount is not None:
            parts.append(f"{_q(spec.amount)} <= $max_amount")
        return " AND ".join(parts)

    def params(self, spec: MapSpec) -> dict[str, object]:
        out: dict[str, object] = {}
        for i, column in enumerate(spec.filters):
            if self.values.get(column):
                out[f"f{i}"] = [str(v) for v in self.values[column]]
        if spec.amount and self.min_amount is not None:
            out["min_amount"] = float(self.min_amount)
        if spec.amount and self.max_amount is not None:
            out["max_amount"] = float(self.max_amount)
        return out


NO_FILTERS = MapFilters()


def _flag_sql(spec: MapSpec, threshold: float | None) -> str:
    return _q(str(spec.flag)) if threshold is None else f"{_q(spec.score)} >= $threshold"


def _params(
    spec: MapSpec, threshold: float | None, filters: MapFilters = NO_FILTERS
) -> dict[str, object]:
    base: dict[str, object] = {} if threshold is None else {"threshold": float(threshold)}
    return {**base, **filters.params(spec)}


def _day_totals(
    spec: MapSpec,
    ref: ds.DatasetRef,
    days: list[str],
    threshold: float | None,
    filters: MapFilters = NO_FILTERS,
) -> dict[str, dict]:
    """Per day: filtered totals, and (unfiltered) the filter choices and extent — one scan."""
    key = _q(str(ref.partitioned_by or "day"))
    amount = f"TRY_CAST({_q(spec.amount)} AS DOUBLE)" if spec.amount else "NULL::DOUBLE"
    lat = f"TRY_CAST({_q(spec.latitude)} AS DOUBLE)"
    lon = f"TRY_CAST({_q(spec.longitude)} AS DOUBLE)"
    inner = [
        f"CAST({key} AS VARCHAR) AS day",
        f"{amount} AS amount",
        f"{lat} AS lat",
        f"{lon} AS lon",
    ]
    inner += [f"CAST({_q(c)} AS VARCHAR) AS f{i}" for i, c in enumerate(spec.filters)]
    options = [
        f"list(DISTINCT f{i} ORDER BY f{i}) FILTER (WHERE f{i} IS NOT NULL) AS f{i}"
        for i in range(len(spec.filters))
    ]
    sql = f"""
        SELECT day,
               count(*) FILTER (WHERE pass) AS n_rows,
               count(*) FILTER (WHERE pass AND flag) AS flagged,
               coalesce(sum(amount) FILTER (WHERE pass AND flag), 0) AS flagged_amount,
               max(amount) AS max_amount,
               approx_quantile(lat, 0.02) AS lat_lo, approx_quantile(lat, 0.98) AS lat_hi,
               approx_quantile(lon, 0.02) AS lon_lo, approx_quantile(lon, 0.98) AS lon_hi
               {"".join(", " + o for o in options)}
        FROM (SELECT {", ".join(inner)}, {_flag_sql(spec, threshold)} AS flag,
                     {filters.sql(spec)} AS pass
              FROM extract)
        GROUP BY 1
    """
    frame = ds.query_df(sql, {"extract": (ref, days)}, _params(spec, threshold, filters))
    return {row["day"]: row for row in frame.to_dict("records")}


def _points(
    spec: MapSpec,
    ref: ds.DatasetRef,
    day: str,
    threshold: float | None,
    limit: int,
    filters: MapFilters = NO_FILTERS,
) -> pd.DataFrame:
    def role(column: str | None, sql: str) -> str:
        return sql.format(c=_q(column)) if column else "NULL"

    time = (
        "coalesce(strftime(TRY_CAST({c} AS TIMESTAMP), '%Y-%m-%d %H:%M:%S'), CAST({c} AS VARCHAR))"
    )
    select = [
        f"TRY_CAST({_q(spec.latitude)} AS DOUBLE) AS lat",
        f"TRY_CAST({_q(spec.longitude)} AS DOUBLE) AS lon",
        f"{_q(spec.score)} AS score",
        role(spec.amount, "TRY_CAST({c} AS DOUBLE)") + " AS amount",
        role(spec.category, "CAST({c} AS VARCHAR)") + " AS category",
        role(spec.time, time) + " AS time",
        role(spec.id, "CAST({c} AS VARCHAR)") + " AS id",
    ]
    select += [
        f"CAST({_q(c)} AS VARCHAR) AS {_q(c)}" for c in spec.details if c not in POINT_COLUMNS
    ]
    order = f"{_q(spec.score)} DESC" + (f", {_q(spec.id)}" if spec.id else "")
    sql = f"""
        SELECT {", ".join(select)}
        FROM extract
        WHERE {_flag_sql(spec, threshold)} AND {filters.sql(spec)}
        ORDER BY {order}
        LIMIT {int(limit)}
    """
    return ds.query_df(sql, {"extract": (ref, [day])}, _params(spec, threshold, filters))


def failed_checks_after(
    store: ControlStore, project: str, infra_id: str, last_published: str | None
) -> tuple[str | None, str]:
    """The newest day after ``last_published`` whose data checks failed, and why."""
    t = check_results
    q = (
        sa.select(t.c.partition, t.c.check_name, t.c.message, t.c.at)
        .where(
            t.c.node == infra_id,
            t.c.project == project,
            t.c.outcome == "ERROR",
            ~t.c.dataset.like("model:%"),
        )
        .order_by(t.c.partition.desc(), t.c.id.desc())
    )
    if last_published:
        q = q.where(t.c.partition > last_published)
    with store.read() as conn:
        rows = conn.execute(q.limit(20)).mappings().all()
    if not rows:
        return None, ""
    day = rows[0]["partition"]
    reasons = [f"{r['check_name']}: {r['message']}" for r in rows if r["partition"] == day]
    at = str(rows[0]["at"])[:19].replace("T", " ")
    return day, f"data checks failed on {day} (at {at} UTC): " + "; ".join(reasons)


def load_map_day(
    settings: Settings,
    store: ControlStore,
    project: str,
    infra_id: str,
    day: str | None = None,
    threshold: float | None = None,
    max_points: int = MAX_POINTS,
    filters: MapFilters = NO_FILTERS,
    dashboard: str | None = None,
) -> MapDay:
    """Load one published day of a map dashboard of ``project`` as ``infra_id`` has it.

    Args:
        day: a published day (``YYYY-MM-DD``); None means the newest published day.
        threshold: flag rows whose score is at least this; None means the dashboard's own
            ``threshold``, else the model's flags (the ``flag`` role), else the active
            model's decision threshold.
        max_points: at most this many flagged rows (the most likely first) are returned as
            points; the KPIs always count all of them.
        filters: values of the dashboard's filter columns and an amount range; KPIs and
            points count only the rows that pass them.
        dashboard: a ``type: map`` dashboard of the project; None means the one with the
            newest published day.

    A day whose data checks failed after the newest published day is named in
    ``failed_check_day`` (with ``failed_check_message``): the map keeps showing the last
    good day.
    """
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be between 0 and 1, not {threshold}")
    base = dict(project=project, infra_id=infra_id, threshold=threshold)
    try:
        node = deployed.node_project(settings, store, infra_id, project)
    except ProjectError as exc:
        return MapDay(
            **base, day=None, published_days=[], problem=NOT_ACTIVE,
            message=f"Project {project!r} is not active on {infra_id} yet ({exc}). Deploy a "
            "bundle of it there; its map appears once the node has activated it and a "
            "scenario has published a day.",
        )  # fmt: skip
    choices = map_catalog.map_choices(settings, store, project, infra_id)
    if not choices:
        return MapDay(
            **base, day=None, published_days=[], problem=NO_MAP,
            message=f"Project {project!r} declares no map dashboard. A map is a dashboard "
            "with type: map whose roles name the latitude and longitude columns (and the "
            "score, id, amount… columns) of its extract; see docs/architecture.md.",
        )  # fmt: skip
    names = [c.dashboard for c in choices]
    dashboard = dashboard or names[0]
    if dashboard not in names:
        return MapDay(
            **base, day=None, published_days=[], problem=UNKNOWN_DASHBOARD,
            message=f"{dashboard!r} is not a map dashboard of project {project!r} "
            f"(its maps: {', '.join(names)}).",
        )  # fmt: skip
    base["dashboard"] = dashboard
    publishers = deployed.scenarios_with_step(node, "publish_dashboard", dashboard=dashboard)
    base["publishers"] = publishers
    published = _published(store, project, dashboard, infra_id)
    days = [str(d) for d in published["day"]]
    failed_day, failed_message = failed_checks_after(
        store, project, infra_id, days[0] if days else None
    )
    base.update(failed_check_day=failed_day, failed_check_message=failed_message)
    if not days:
        how = (
            f"its scenario {' or '.join(publishers)} has checked, scored and published it "
            f"({deployed.run_hint(publishers, project, infra_id)} runs it now)"
            if publishers
            else f"a scenario with a publish_dashboard step for {dashboard} has run (project "
            f"{project!r} has none yet)"
        )
        return MapDay(
            **base, day=None, published_days=[], problem=NOTHING_PUBLISHED,
            message=f"No day of {dashboard} has been published on {infra_id} yet. A day "
            f"appears once {how}.",
        )  # fmt: skip
    day = day or days[0]
    if day not in days:
        return MapDay(
            **base, day=day, published_days=days, problem=DAY_NOT_PUBLISHED,
            message=f"{day} is not a published day of {dashboard} on {infra_id} "
            f"(published: {days[-1]} to {days[0]}, {len(days)} days).",
        )  # fmt: skip
    row = published.iloc[days.index(day)]
    previous = days[days.index(day) + 1] if days.index(day) + 1 < len(days) else None
    info = dict(
        **base,
        day=day,
        published_days=days,
        published_at=row["published_at"],
        checks_passed_at=row["checks_passed_at"],
        run_id=None if pd.isna(row["run_id"]) else int(row["run_id"]),
        bundle_id=row["bundle_id"],
    )
    try:
        spec = map_catalog.map_spec(node, dashboard)
        info["spec"] = spec
        ref = node.dataset(spec.output)
        present = set(ref.partitions())
        if day not in present:
            raise ds.DatasetError(
                f"the extract {ref.name!r} has no partition for {day} (looked in {ref.path})"
            )
        model_threshold = map_catalog.model_threshold(node, spec.source)
        flag_at = threshold if threshold is not None else spec.threshold
        if flag_at is None and not spec.flag:
            flag_at = model_threshold if model_threshold is not None else 0.5
        info["threshold"] = threshold if threshold is not None else spec.threshold
        compare = [day] + ([previous] if previous in present else [])
        totals = _day_totals(spec, ref, compare, flag_at, filters)
        points = _points(spec, ref, day, flag_at, max_points, filters)
    except (ProjectError, ds.DatasetError, KeyError) as exc:
        return MapDay(
            **info,
            problem=NOT_READABLE,
            message=f"{day} is published but its map data cannot be read: {exc}",
        )
    today = totals.get(day) or {"n_rows": 0, "flagged": 0, "flagged_amount": 0.0}
    before = totals.get(previous) if previous else None
    has_amount = spec.amount is not None
    kpis = DayKpis(
        rows=int(today["n_rows"]),
        flagged=int(today["flagged"]),
        flagged_amount=float(today["flagged_amount"]) if has_amount else None,
        previous_day=previous if before else None,
        rows_change=int(today["n_rows"] - before["n_rows"]) if before else None,
        flagged_change=int(today["flagged"] - before["flagged"]) if before else None,
        flagged_amount_change=float(today["flagged_amount"] - before["flagged_amount"])
        if before and has_amount
        else None,
    )
    bounds = None
    if today.get("lat_lo") is not None and not pd.isna(today.get("lat_lo")):
        bounds = tuple(float(today[k]) for k in ("lat_lo", "lat_hi", "lon_lo", "lon_hi"))
    return MapDay(
        **info,
        model_threshold=model_threshold,
        kpis=kpis,
        points=points,
        filter_options={c: _values(today.get(f"f{i}")) for i, c in enumerate(spec.filters)},
        max_amount=float(today.get("max_amount") or 0.0) if has_amount else 0.0,
        bounds=bounds,  # type: ignore[arg-type]
        hot_spots=map_overlays.hot_spots(store, project, infra_id, day),
    )


def _values(listed: object) -> list[str]:
    """A DuckDB list (or nothing) as strings."""
    if listed is None or (isinstance(listed, float) and math.isnan(listed)):
        return []
    return [str(v) for v in listed]  # type: ignore[attr-defined]


def _published(store: ControlStore, project: str, dashboard: str, infra_id: str) -> pd.DataFrame:
    t = published_days
    q = (
        sa.select(t)
        .where(t.c.project == project, t.c.dashboard == dashboard, t.c.infra_id == infra_id)
        .order_by(t.c.day.desc())
    )
    with store.read() as conn:
        rows = conn.execute(q).mappings().all()
    return pd.DataFrame([dict(r) for r in rows], columns=[c.name for c in t.columns])
