"""The daily fraud map: one published day of the ``fraud_map`` extract, ready to draw.

The map shows what the automation node *published*: a day appears only after its scenario
checked the data, scored it and wrote the dashboard extract. Everything is aggregated in
DuckDB; only the flagged transactions (the points on the map) come back as rows.

Problems a business user can meet (nothing published yet, a shared link to a day that is
not published, an extract that went missing) come back as data in
:attr:`FraudMapDay.problem` with a message, never as an exception.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd
import sqlalchemy as sa

from engine.automation import dashboards
from engine.automation.node import AutomationNode
from engine.core.settings import Settings
from engine.core.us_cities import US_CITIES
from engine.models import saved as models
from engine.project.project import Project, ProjectError
from engine.storage import datasets as ds
from engine.storage.control import ControlStore, check_results, evaluation_metrics

DASHBOARD = "fraud_map"
MAX_POINTS = 20_000
POINT_COLUMNS = ["lat", "lon", "proba", "amount", "category", "merchant", "ts", "transaction_id"]

HOT_SPOT_COLUMNS = ["lat", "lon", "place", "family", "status", "message"]

# Problem kinds (FraudMapDay.problem); None means the day loaded.
NOTHING_PUBLISHED = "nothing_published"
DAY_NOT_PUBLISHED = "day_not_published"
NOT_READABLE = "not_readable"


@dataclass(frozen=True)
class DayKpis:
    """Totals of one day, and their change since the previous published day (if any)."""

    transactions: int
    flagged: int
    flagged_amount: float
    previous_day: str | None = None
    transactions_change: int | None = None
    flagged_change: int | None = None
    flagged_amount_change: float | None = None

    @property
    def flag_rate(self) -> float:
        return self.flagged / self.transactions if self.transactions else 0.0


def _empty_points() -> pd.DataFrame:
    return pd.DataFrame(columns=POINT_COLUMNS)


@dataclass(frozen=True)
class FraudMapDay:
    """One day of the fraud map, or why there is none (``problem`` and ``message``)."""

    day: str | None
    published_days: list[str]
    published_at: str | None = None
    checks_passed_at: str | None = None
    run_id: int | None = None
    bundle_id: str | None = None
    threshold: float | None = None  # None: the model's own flags (is_flagged)
    model_threshold: float | None = None  # the active model's decision threshold on the node
    kpis: DayKpis | None = None
    points: pd.DataFrame = field(default_factory=_empty_points)
    categories: list[str] = field(default_factory=list)  # present on the day (filter choices)
    channels: list[str] = field(default_factory=list)
    max_amount: float = 0.0
    hot_spots: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=HOT_SPOT_COLUMNS))
    failed_check_day: str | None = None  # a newer day whose data checks failed
    failed_check_message: str = ""
    problem: str | None = None
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def points_truncated(self) -> bool:
        """True when more transactions were flagged than the points shipped to the map."""
        return self.kpis is not None and self.kpis.flagged > len(self.points)


@dataclass(frozen=True)
class MapFilters:
    """Which transactions count: categories and channels (empty: all), an amount range."""

    categories: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()
    min_amount: float | None = None
    max_amount: float | None = None

    def sql(self) -> str:
        parts = ["TRUE"]
        if self.categories:
            parts.append("merchant_category IN (SELECT unnest($categories))")
        if self.channels:
            parts.append("channel IN (SELECT unnest($channels))")
        if self.min_amount is not None:
            parts.append("amount >= $min_amount")
        if self.max_amount is not None:
            parts.append("amount <= $max_amount")
        return " AND ".join(parts)

    def params(self) -> dict[str, object]:
        out: dict[str, object] = {}
        if self.categories:
            out["categories"] = list(self.categories)
        if self.channels:
            out["channels"] = list(self.channels)
        if self.min_amount is not None:
            out["min_amount"] = float(self.min_amount)
        if self.max_amount is not None:
            out["max_amount"] = float(self.max_amount)
        return out


NO_FILTERS = MapFilters()


def _flag_sql(threshold: float | None) -> str:
    return "is_flagged" if threshold is None else "fraud_proba >= $threshold"


def _params(threshold: float | None, filters: MapFilters = NO_FILTERS) -> dict[str, object]:
    base: dict[str, object] = {} if threshold is None else {"threshold": float(threshold)}
    return {**base, **filters.params()}


def _day_totals(
    ref: ds.DatasetRef, days: list[str], threshold: float | None, filters: MapFilters = NO_FILTERS
) -> dict[str, dict]:
    """Per day: filtered totals, and (unfiltered) the filter choices — in one scan."""
    sql = f"""
        SELECT CAST(day AS VARCHAR) AS day,
               count(*) FILTER (WHERE pass) AS transactions,
               count(*) FILTER (WHERE pass AND flag) AS flagged,
               coalesce(sum(amount) FILTER (WHERE pass AND flag), 0) AS flagged_amount,
               list(DISTINCT merchant_category ORDER BY merchant_category) AS categories,
               list(DISTINCT channel ORDER BY channel) AS channels,
               max(amount) AS max_amount
        FROM (SELECT day, amount, merchant_category, channel, {_flag_sql(threshold)} AS flag,
                     {filters.sql()} AS pass
              FROM fraud_map)
        GROUP BY 1
    """
    frame = ds.query_df(sql, {"fraud_map": (ref, days)}, _params(threshold, filters))
    return {row["day"]: row for row in frame.to_dict("records")}


def _flagged_points(
    ref: ds.DatasetRef,
    day: str,
    threshold: float | None,
    limit: int,
    filters: MapFilters = NO_FILTERS,
) -> pd.DataFrame:
    sql = f"""
        SELECT merchant_latitude AS lat, merchant_longitude AS lon, fraud_proba AS proba, amount,
               merchant_category AS category, merchant_id AS merchant,
               strftime(ts, '%Y-%m-%d %H:%M:%S') AS ts, transaction_id
        FROM fraud_map
        WHERE {_flag_sql(threshold)} AND {filters.sql()}
        ORDER BY fraud_proba DESC, transaction_id
        LIMIT {int(limit)}
    """
    return ds.query_df(sql, {"fraud_map": (ref, [day])}, _params(threshold, filters))


def _filter_options(row: dict | None) -> dict[str, object]:
    if row is None:
        return {"categories": [], "channels": [], "max_amount": 0.0}
    return {
        "categories": [str(c) for c in row["categories"]],
        "channels": [str(c) for c in row["channels"]],
        "max_amount": float(row["max_amount"] or 0.0),
    }


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


def top_reasons(
    settings: Settings,
    store: ControlStore,
    transaction_ids: list[str],
    day: str,
    project: str = "fraud",
    infra_id: str = "automation-prod",
    source: str = "scored",
    k: int = 3,
) -> dict[str, list[tuple[str, float]]]:
    """Per transaction, the ``k`` features that pushed its fraud score up the most.

    LightGBM's per-feature contributions (SHAP values, in log-odds) of the active model,
    computed on the fly for these rows only, from the scored features of ``day``.
    """
    if not transaction_ids:
        return {}
    node_project = AutomationNode(settings, store, infra_id).project(project)
    ref = node_project.dataset(source)
    names = [
        step["model"]
        for spec in node_project.scenarios.values()
        for step in spec.get("steps") or []
        if step.get("type") == "score" and step.get("output") == source and "model" in step
    ] or sorted(node_project.models)
    saved = models.SavedModel.load(node_project.active_model_dir(names[0]))
    columns = ", ".join(f'"{c}"' for c in ["transaction_id", *saved.feature_names])
    rows = ds.query_df(
        f"SELECT {columns} FROM scored WHERE transaction_id IN (SELECT unnest($ids))",
        {"scored": (ref, [day])},
        {"ids": list(transaction_ids)},
    )
    if rows.empty:
        return {}
    contrib = saved.booster.predict(saved.encode(rows), pred_contrib=True)[:, :-1]
    features = saved.feature_names
    out: dict[str, list[tuple[str, float]]] = {}
    for tx, values in zip(rows["transaction_id"], contrib, strict=True):
        order = values.argsort()[::-1][:k]
        out[str(tx)] = [(features[i], float(values[i])) for i in order if values[i] > 0]
    return out


def _model_threshold(project: Project, source: str) -> float | None:
    """Decision threshold of the active version of the model that scores ``source``."""
    names = [
        step["model"]
        for spec in project.scenarios.values()
        for step in spec.get("steps") or []
        if step.get("type") == "score" and step.get("output") == source and "model" in step
    ] or sorted(project.models)
    for name in names:
        for meta in models.list_versions(project, name):
            if meta["active"]:
                return float(meta["threshold"])
    return None


def load_map_day(
    settings: Settings,
    store: ControlStore,
    project: str = "fraud",
    infra_id: str = "automation-prod",
    day: str | None = None,
    threshold: float | None = None,
    max_points: int = MAX_POINTS,
    filters: MapFilters = NO_FILTERS,
) -> FraudMapDay:
    """Load one published day of the fraud map as the automation node ``infra_id`` has it.

    Args:
        day: a published day (``YYYY-MM-DD``); None means the newest published day.
        threshold: flag transactions whose fraud probability is at least this; None means
            use the model's own flags (``is_flagged``).
        max_points: at most this many flagged transactions (the most likely first) are
            returned as points; the KPIs always count all of them.
        filters: categories, channels and an amount range; KPIs and points count only the
            transactions that pass them.

    A day whose data checks failed after the newest published day is named in
    ``failed_check_day`` (with ``failed_check_message``): the map keeps showing the last
    good day.
    """
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be between 0 and 1, not {threshold}")
    published = dashboards.published(store, project, DASHBOARD, infra_id)
    days = [str(d) for d in published["day"]]
    failed_day, failed_message = failed_checks_after(
        store, project, infra_id, days[0] if days else None
    )
    if not days:
        return FraudMapDay(
            day=None,
            published_days=[],
            threshold=threshold,
            failed_check_day=failed_day,
            failed_check_message=failed_message,
            problem=NOTHING_PUBLISHED,
            message=(
                f"No day of project {project!r} has been published to the fraud map on {infra_id} "
                "yet. A day appears once the daily scoring scenario has checked, scored and "
                "published it."
            ),
        )
    day = day or days[0]
    if day not in days:
        return FraudMapDay(
            day=day,
            published_days=days,
            threshold=threshold,
            problem=DAY_NOT_PUBLISHED,
            message=(
                f"{day} is not a published day of the fraud map on {infra_id} "
                f"(published: {days[-1]} to {days[0]}, {len(days)} days)."
            ),
        )
    row = published.iloc[days.index(day)]
    previous = days[days.index(day) + 1] if days.index(day) + 1 < len(days) else None
    info = dict(
        day=day,
        published_days=days,
        published_at=row["published_at"],
        checks_passed_at=row["checks_passed_at"],
        run_id=None if pd.isna(row["run_id"]) else int(row["run_id"]),
        bundle_id=row["bundle_id"],
        threshold=threshold,
        failed_check_day=failed_day,
        failed_check_message=failed_message,
    )
    try:
        node_project = AutomationNode(settings, store, infra_id).project(project)
        spec = node_project.dashboards[DASHBOARD]
        ref = node_project.dataset(spec["output"])
        present = set(ref.partitions())
        if day not in present:
            raise ds.DatasetError(
                f"the extract {ref.name!r} has no partition for {day} (looked in {ref.path})"
            )
        compare = [day] + ([previous] if previous in present else [])
        totals = _day_totals(ref, compare, threshold, filters)
        points = _flagged_points(ref, day, threshold, max_points, filters)
        options = _filter_options(totals.get(day))
        model_threshold = _model_threshold(node_project, spec["source"])
    except (ProjectError, ds.DatasetError, KeyError) as exc:
        return FraudMapDay(
            **info,
            problem=NOT_READABLE,
            message=f"{day} is published but its map data cannot be read: {exc}",
        )
    today = totals.get(day) or {"transactions": 0, "flagged": 0, "flagged_amount": 0.0}
    before = totals.get(previous) if previous else None
    kpis = DayKpis(
        transactions=int(today["transactions"]),
        flagged=int(today["flagged"]),
        flagged_amount=float(today["flagged_amount"]),
        previous_day=previous if before else None,
        transactions_change=int(today["transactions"] - before["transactions"]) if before else None,
        flagged_change=int(today["flagged"] - before["flagged"]) if before else None,
        flagged_amount_change=float(today["flagged_amount"] - before["flagged_amount"])
        if before
        else None,
    )
    return FraudMapDay(
        **info,
        model_threshold=model_threshold,
        kpis=kpis,
        points=points,
        hot_spots=hot_spots(store, project, infra_id, day),
        **options,
    )


def hot_spots(store: ControlStore, project: str, infra_id: str, day: str) -> pd.DataFrame:
    """The model evaluation's geographic alarms for ``day``, to mark on the map.

    A jump in a place's share of transactions (``location``) and, once labels land, more
    fraud than the model expected there (``missed_fraud``): a new fraud ring the model cannot
    see lights up here before the model's own flags show it.
    """
    t = evaluation_metrics
    q = sa.select(t.c.family, t.c.feature, t.c.metric, t.c.value, t.c.status, t.c.message).where(
        t.c.node == infra_id,
        t.c.project == project,
        t.c.role == "champion",
        t.c.day == day,
        t.c.family.in_(["location", "missed_fraud"]),
        t.c.status.in_(["WARNING", "ERROR"]),
        t.c.metric.in_(["latitude", "longitude"]),
    )
    with store.read() as conn:
        rows = pd.DataFrame([dict(r) for r in conn.execute(q).mappings()])
    if rows.empty:
        return pd.DataFrame(columns=HOT_SPOT_COLUMNS)
    wide = rows.pivot_table(
        index=["family", "feature", "status", "message"], columns="metric", values="value"
    ).reset_index()
    return wide.rename(columns={"latitude": "lat", "longitude": "lon", "feature": "place"})[
        HOT_SPOT_COLUMNS
    ]


def _web_mercator_px(lat: float, lon: float, zoom: float) -> tuple[float, float]:
    scale = 512 * 2**zoom / (2 * math.pi)
    x = scale * (math.radians(lon) + math.pi)
    y = scale * (math.pi - math.log(math.tan(math.pi / 4 + math.radians(lat) / 2)))
    return x, y


def city_labels(
    zoom: float | None = None, char_px: float = 7.5, line_px: float = 14.0
) -> pd.DataFrame:
    """US city names and centres, biggest first: orientation for the offline basemap.

    With ``zoom`` (a web-map zoom level), labels are placed for that zoom: above the city,
    else below it (``below`` is True), else left out when both places would overlap the
    label of a bigger city. ``char_px`` and ``line_px`` are a label's character width and
    line height in pixels.
    """
    frame = pd.DataFrame(
        [(c.name, c.state, c.latitude, c.longitude, c.population) for c in US_CITIES],
        columns=["name", "state", "lat", "lon", "population"],
    ).sort_values("population", ascending=False, ignore_index=True)
    frame["below"] = False
    if zoom is None:
        return frame
    kept: list[int] = []
    boxes: list[tuple[float, float, float, float]] = []
    for i, city in frame.iterrows():
        x, y = _web_mercator_px(city["lat"], city["lon"], zoom)
        half = len(city["name"]) * char_px / 2
        above = (x - half, y - line_px - 2, x + half, y - 2)
        below = (x - half, y + 2, x + half, y + line_px + 2)
        for box, is_below in ((above, False), (below, True)):
            if not any(
                box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in boxes
            ):
                kept.append(i)
                boxes.append(box)
                frame.loc[i, "below"] = is_below
                break
    return frame.loc[kept].reset_index(drop=True)
