"""What the map page shows over and beside a day's points.

The model evaluation's geographic alarms (:func:`hot_spots`), the features that pushed a
point's score up (:func:`top_reasons`), the gazetteer's city names placed for a zoom
(:func:`city_labels`: orientation on the offline basemap) and the view that frames a day's
rows (:func:`view_state`). The day's points themselves come from :mod:`engine.monitoring.maps`.
"""

from __future__ import annotations

import math

import pandas as pd
import sqlalchemy as sa

from engine.core.settings import Settings
from engine.core.us_cities import US_CITIES
from engine.models import saved as models
from engine.monitoring import deployed
from engine.monitoring.map_catalog import map_spec, scoring_models
from engine.storage import datasets as ds
from engine.storage.control import ControlStore, evaluation_metrics

HOT_SPOT_COLUMNS = ["lat", "lon", "place", "family", "status", "message"]


def _q(name: str) -> str:
    """``name`` as a quoted SQL identifier."""
    return '"' + str(name).replace('"', '""') + '"'


def hot_spots(store: ControlStore, project: str, infra_id: str, day: str) -> pd.DataFrame:
    """The model evaluation's geographic alarms for ``day``, to mark on the map.

    A jump in a place's share of rows (``location``) and, once labels land, more positives
    than the model expected there (``missed_fraud``): a new fraud ring the model cannot see
    lights up here before the model's own flags show it. Empty when the evaluated model
    declares no location.
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


def top_reasons(
    settings: Settings,
    store: ControlStore,
    project: str,
    infra_id: str,
    dashboard: str,
    ids: list[str],
    day: str,
    k: int = 3,
) -> dict[str, list[tuple[str, float]]]:
    """Per point (by its ``id`` role), the ``k`` features that pushed its score up the most.

    LightGBM's per-feature contributions (SHAP values, in log-odds) of the active model that
    scores the map's source, computed on the fly for these rows only, from the scored
    features of ``day``. Empty when the map declares no ``id`` role.
    """
    if not ids:
        return {}
    node = deployed.node_project(settings, store, infra_id, project)
    spec = map_spec(node, dashboard)
    if not spec.id:
        return {}
    ref = node.dataset(spec.source)
    saved = models.SavedModel.load(node.active_model_dir(scoring_models(node, spec.source)[0]))
    columns = ", ".join(_q(c) for c in [spec.id, *saved.feature_names])
    rows = ds.query_df(
        f"SELECT {columns} FROM day_rows WHERE CAST({_q(spec.id)} AS VARCHAR) IN (SELECT unnest($ids))",
        {"day_rows": (ref, [day])},
        {"ids": [str(i) for i in ids]},
    )
    if rows.empty:
        return {}
    contrib = saved.booster.predict(saved.encode(rows), pred_contrib=True)[:, :-1]
    features = saved.feature_names
    out: dict[str, list[tuple[str, float]]] = {}
    for row_id, values in zip(rows[spec.id], contrib, strict=True):
        order = values.argsort()[::-1][:k]
        out[str(row_id)] = [(features[i], float(values[i])) for i in order if values[i] > 0]
    return out


def view_state(
    bounds: tuple[float, float, float, float] | None,
    width_px: float = 900,
    height_px: float = 560,
) -> tuple[float, float, float]:
    """Latitude, longitude and web-map zoom that frame ``bounds`` (most of a day's rows).

    Without bounds (no row has coordinates), the whole world.
    """
    if bounds is None:
        return 20.0, 0.0, 1.0
    lat_lo, lat_hi, lon_lo, lon_hi = bounds
    lat_c, lon_c = (lat_lo + lat_hi) / 2, (lon_lo + lon_hi) / 2
    lat_span = max(lat_hi - lat_lo, 0.5) * 1.2
    lon_span = max(lon_hi - lon_lo, 0.5) * 1.2
    stretch = 1 / max(math.cos(math.radians(lat_c)), 0.2)  # Mercator: degrees of latitude grow
    zoom_x = math.log2(width_px * 360 / (512 * lon_span))
    zoom_y = math.log2(height_px * 360 / (512 * lat_span * stretch))
    zoom = min(max(min(zoom_x, zoom_y), 1.0), 12.0)
    return lat_c, lon_c, round(zoom, 1)


def web_mercator_px(lat: float, lon: float, zoom: float) -> tuple[float, float]:
    scale = 512 * 2**zoom / (2 * math.pi)
    x = scale * (math.radians(lon) + math.pi)
    y = scale * (math.pi - math.log(math.tan(math.pi / 4 + math.radians(lat) / 2)))
    return x, y


def city_labels(
    zoom: float | None = None, char_px: float = 7.5, line_px: float = 14.0
) -> pd.DataFrame:
    """The gazetteer's US city names and centres, biggest first: orientation for the
    offline basemap (outside the US, no label is in view).

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
        x, y = web_mercator_px(city["lat"], city["lon"], zoom)
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
