"""The daily map: where the published day's flagged rows of a ``type: map`` dashboard are.

Any deployed project with a map dashboard (``dashboards/<name>.yaml``, ``type: map``) is
drawn here, in its own columns and words. The deployment, the dashboard, the day and the
filters live in the URL (``?deployment=<id>&dashboard=<name>&day=YYYY-MM-DD&threshold=0.5
&<filter column>=a,b&amount=100-900``) so a link to a day and a view can be shared; without
them the page opens the deployment and dashboard with the newest published day.
"""

from __future__ import annotations

import pandas as pd
import pydeck as pdk
import streamlit as st

from apps.common.context import get_settings, get_store
from apps.common.pickers import (
    DASHBOARD_URL_KEY,
    NOTHING_DEPLOYED,
    URL_KEY,
    from_url,
    project_deployment,
)
from engine.deployer import deployments as deployer
from engine.monitoring import map_catalog, map_overlays, maps

CARTO_LIGHT = "light"
MAP_WIDTH, MAP_HEIGHT = 900, 560  # a typical width of the map on the page
VIEW_KEYS = ("map_day", "map_custom", "map_threshold", "map_amount")

settings = get_settings()
store = get_store(settings)
header = st.empty()

deployment = project_deployment(
    store,
    key="map_deployment",
    newest=map_catalog.newest_map_days(
        settings, store, deployer.list_deployments(store, kind="project")
    ),
)
if deployment is None:
    header.title("Daily map")
    st.info(NOTHING_DEPLOYED, icon=":material/info:")
    st.stop()
PROJECT, AUTOMATION_INFRA = deployment.target, deployment.infra_id
choices = map_catalog.map_choices(settings, store, PROJECT, AUTOMATION_INFRA)
titles = {c.dashboard: c.title for c in choices}
dashboard = from_url(
    "Map",
    [c.dashboard for c in choices],
    "map_dashboard",
    DASHBOARD_URL_KEY,
    format_func=lambda name: f"{titles.get(name, name)} ({name})",
)

# Another deployment or dashboard than on the previous run: its day and filters do not apply.
view = (deployment.deployment_id, dashboard)
if st.session_state.get("map_view") not in (None, view):
    for key in [k for k in st.session_state if str(k).startswith("map_filter::")] + list(VIEW_KEYS):
        st.session_state.pop(key, None)
    for key in [k for k in st.query_params if k not in (URL_KEY, DASHBOARD_URL_KEY)]:
        st.query_params.pop(key, None)
st.session_state["map_view"] = view

spec = (
    map_catalog.map_spec_on(settings, store, PROJECT, AUTOMATION_INFRA, dashboard)
    if dashboard
    else None
)

# Widget values from the previous run decide what to load; the widgets are drawn below,
# once we know which days are published and the model's threshold.
requested_day = st.session_state.get("map_day") or st.query_params.get("day")
threshold = st.session_state.get("map_threshold") if st.session_state.get("map_custom") else None
if threshold is None and st.query_params.get("threshold"):
    threshold = float(st.query_params["threshold"])
    st.session_state.setdefault("map_custom", True)
    st.session_state.setdefault("map_threshold", threshold)


def _url_list(key: str) -> list[str]:
    return [v for v in st.query_params.get(key, "").split(",") if v]


filter_columns = spec.filters if spec else []
for column in filter_columns:
    key = f"map_filter::{column}"
    if key not in st.session_state and _url_list(column):
        st.session_state[key] = _url_list(column)
if "map_amount" not in st.session_state and st.query_params.get("amount"):
    low, _, high = st.query_params["amount"].partition("-")
    st.session_state["map_amount"] = (float(low), float(high))
amount_range = st.session_state.get("map_amount")
filters = maps.MapFilters(
    values={c: tuple(st.session_state.get(f"map_filter::{c}") or ()) for c in filter_columns},
    min_amount=amount_range[0] if amount_range else None,
    max_amount=amount_range[1] if amount_range else None,
)

data = maps.load_map_day(
    settings,
    store,
    PROJECT,
    AUTOMATION_INFRA,
    requested_day,
    threshold,
    filters=filters,
    dashboard=dashboard,
)
header.title(data.spec.title if data.spec else titles.get(str(dashboard), "Daily map"))
if data.problem in (maps.NOT_ACTIVE, maps.NO_MAP, maps.UNKNOWN_DASHBOARD):
    st.info(data.message, icon=":material/info:")
    st.stop()
if data.problem == maps.DAY_NOT_PUBLISHED:
    st.warning(
        f"{data.message} Showing the latest published day instead.", icon=":material/event_busy:"
    )
    st.session_state.pop("map_day", None)
    data = maps.load_map_day(
        settings,
        store,
        PROJECT,
        AUTOMATION_INFRA,
        None,
        threshold,
        filters=filters,
        dashboard=dashboard,
    )

if data.failed_check_day:
    shown = f" Showing the last good day, {data.published_days[0]}." if data.published_days else ""
    st.error(
        f"The newest data is not on the map: {data.failed_check_message}.{shown}",
        icon=":material/gpp_bad:",
    )

if data.problem == maps.NOTHING_PUBLISHED:
    st.query_params.pop("day", None)
    st.info(data.message, icon=":material/info:")
    st.stop()

spec = data.spec
rows_word, flagged_word = spec.label("rows"), spec.label("flagged")
score_word, currency = spec.label("score"), spec.label("currency")
days = data.published_days
c_day, c_mode, c_threshold = st.columns([1, 1, 2], vertical_alignment="bottom")
day = c_day.selectbox("Published day", days, index=days.index(data.day), key="map_day")
st.query_params["day"] = day
custom = c_mode.toggle(
    "Own threshold",
    key="map_custom",
    help=f"Off: show what the model flagged (its own threshold). On: flag from a {score_word} "
    "you choose.",
)
model_thr = data.model_threshold if data.model_threshold is not None else 0.5
# Always drawn (greyed out while off) so its value exists when the toggle is switched on.
st.session_state.setdefault("map_threshold", round(min(max(model_thr, 0.01), 0.99), 2))
c_threshold.slider(
    f"Flag {rows_word.lower()} with a {score_word} of at least",
    min_value=0.01,
    max_value=0.99,
    step=0.01,
    key="map_threshold",
    disabled=not custom,
    help=f"The model's own threshold is {model_thr:.3f}.",
)

if custom:
    st.query_params["threshold"] = f"{st.session_state['map_threshold']:.2f}"
else:
    st.query_params.pop("threshold", None)

if not data.ok:
    st.error(data.message)
    st.stop()

has_amount = spec.amount is not None
filter_cols = st.columns([2] * len(spec.filters) + ([2] if has_amount else []) + [1])
for i, column in enumerate(spec.filters):
    key, options = f"map_filter::{column}", data.filter_options.get(column, [])
    if st.session_state.get(key):
        st.session_state[key] = [v for v in st.session_state[key] if v in options]
    filter_cols[i].multiselect(
        column.replace("_", " ").capitalize(), options, key=key, placeholder="All"
    )
    if st.session_state.get(key):
        st.query_params[column] = ",".join(st.session_state[key])
    else:
        st.query_params.pop(column, None)
if has_amount:
    top_amount = float(max(1.0, round(data.max_amount + 0.5)))
    if amount_range is not None:  # keep a shared or earlier range within this day's amounts
        low0, high0 = amount_range
        st.session_state["map_amount"] = (max(0.0, min(low0, top_amount)), min(high0, top_amount))
    st.session_state.setdefault("map_amount", (0.0, top_amount))
    filter_cols[len(spec.filters)].slider(
        f"Amount ({currency})" if currency else "Amount",
        min_value=0.0,
        max_value=top_amount,
        key="map_amount",
    )
    low, high = st.session_state["map_amount"]
    if low > 0 or high < top_amount:
        st.query_params["amount"] = f"{low:g}-{high:g}"
    else:
        st.query_params.pop("amount", None)
colour_by = filter_cols[-1].radio(
    "Colour by",
    ["score", "amount"] if has_amount else ["score"],
    format_func={"score": score_word, "amount": "amount"}.get,
    key="map_colour",
    horizontal=True,
)

checks = (
    f"data checks passed at {data.checks_passed_at[:19].replace('T', ' ')} UTC"
    if data.checks_passed_at
    else "no data checks recorded for this day"
)
st.caption(
    f"{checks} · published at {(data.published_at or '')[:19].replace('T', ' ')} UTC "
    f"by run {data.run_id} of bundle {data.bundle_id} on {AUTOMATION_INFRA}"
)


def _money(value: float) -> str:
    return f"{currency}{value:,.0f}"


k = data.kpis
assert k is not None
since = f"vs {k.previous_day}" if k.previous_day else None
tiles = st.columns(4 if has_amount else 3)
tiles[0].metric(rows_word, f"{k.rows:,}", k.rows_change, delta_description=since)
tiles[1].metric(
    flagged_word,
    f"{k.flagged:,}",
    k.flagged_change,
    delta_color="inverse",
    delta_description=since,
)
if has_amount:
    tiles[2].metric(
        "Flagged amount",
        _money(k.flagged_amount or 0.0),
        None if k.flagged_amount_change is None else f"{k.flagged_amount_change:+,.0f}",
        delta_color="inverse",
        delta_description=since,
    )
tiles[-1].metric("Flag rate", f"{k.flag_rate:.2%}")

pts = data.points
detail = pd.Series([""] * len(pts), index=pts.index, dtype=object)
parts = []
if has_amount:
    parts.append(pts["amount"].map(lambda a: f"{currency}{a:,.2f}" if pd.notna(a) else ""))
if spec.category:
    parts.append(pts["category"].fillna("").astype(str))
parts += [column + " " + pts[column].fillna("").astype(str) for column in data.detail_columns]
for part in parts:
    detail = detail.where(detail == "", detail + " · ") + part
amount_scale = float(pts["amount"].quantile(0.95)) if has_amount and len(pts) else 1.0
points = pts.assign(
    id=pts["id"].fillna("").astype(str),
    time=pts["time"].fillna("").astype(str),
    score_label=pts["score"].map(lambda p: f"{score_word} {p:.1%}"),
    detail=detail,
    # 0 (yellow) .. 1 (red): the score, or the amount against the day's 95th percentile
    heat=pts["score"]
    if colour_by == "score"
    else (pts["amount"] / max(amount_scale, 1.0)).clip(upper=1.0),
)
lat, lon, zoom = map_overlays.view_state(data.bounds, MAP_WIDTH, MAP_HEIGHT)
view_state = pdk.ViewState(latitude=lat, longitude=lon, zoom=zoom, min_zoom=1, max_zoom=14)
layers = []
if "city_labels" in spec.layers:
    # Labels that would overlap at this zoom are left out (bigger cities win).
    cities = map_overlays.city_labels(zoom=zoom)
    cities["offset"] = [[0, 10] if below else [0, -9] for below in cities["below"]]
    layers += [
        pdk.Layer(
            "ScatterplotLayer",
            id="city-dots",
            data=cities[["lat", "lon"]],
            get_position="[lon, lat]",
            get_fill_color=[120, 120, 120, 160],
            get_radius=1,
            radius_min_pixels=2,
            radius_max_pixels=2,
        ),
        pdk.Layer(
            "TextLayer",
            id="city-labels",
            data=cities[["name", "lat", "lon", "offset"]],
            get_position="[lon, lat]",
            get_text="name",
            get_size=12,
            get_color=[70, 70, 70, 220],
            get_alignment_baseline="'center'",
            get_pixel_offset="offset",
        ),
    ]
if "points" in spec.layers:
    layers.append(
        pdk.Layer(
            "ScatterplotLayer",
            id="flagged-points",
            # Least likely first, so where points overlap the most likely one is drawn on top.
            data=points.iloc[::-1],
            get_position="[lon, lat]",
            # yellow (low score) → red (high)
            get_fill_color="[230, 220 * (1 - heat), 30, 190]",
            get_line_color=[90, 0, 0, 200],
            line_width_min_pixels=1,
            stroked=True,
            get_radius=6000,
            radius_min_pixels=4,
            radius_max_pixels=18,
            pickable=True,
            auto_highlight=True,
        )
    )
if "hexagons" in spec.layers:
    layers.append(
        pdk.Layer(
            "HexagonLayer",
            id="flagged-density",
            data=points[["lat", "lon"]],
            get_position="[lon, lat]",
            radius=40000,
            elevation_scale=0,
            extruded=False,
            coverage=0.9,
            opacity=0.35,
            color_range=[
                [255, 255, 178],
                [254, 217, 118],
                [254, 178, 76],
                [253, 141, 60],
                [240, 59, 32],
                [189, 0, 38],
            ],
            visible=st.session_state.get("map_hexagons", True),
        )
    )
spots = data.hot_spots
if len(spots):
    layers.append(
        pdk.Layer(
            "ScatterplotLayer",
            id="hot-spots",
            data=spots.assign(
                id="Monitoring hot spot: " + spots["place"],
                time=spots["family"].str.replace("_", " "),
                detail=spots["message"],
                score_label="",
            ),
            get_position="[lon, lat]",
            get_fill_color=[220, 38, 38, 40],
            get_line_color=[220, 38, 38, 230],
            stroked=True,
            filled=True,
            line_width_min_pixels=3,
            get_radius=80000,
            radius_min_pixels=18,
            pickable=True,
        )
    )
tooltip = {
    "html": "<b>{id}</b><br/>{time}<br/>{detail}<br/><b>{score_label}</b>",
    "style": {"fontSize": "12px"},
}
online = settings.basemap != "none"
deck = pdk.Deck(
    layers=layers,
    initial_view_state=view_state,
    map_provider="carto" if online else None,
    map_style=CARTO_LIGHT if online else None,
    tooltip=tooltip,
)
for spot in spots.to_dict("records"):
    st.warning(
        f"Model monitoring hot spot ({spot['family'].replace('_', ' ')}): {spot['message']}",
        icon=":material/crisis_alert:",
    )
if "hexagons" in spec.layers:
    st.toggle("Density (hexagons)", value=True, key="map_hexagons")
st.pydeck_chart(deck, height=MAP_HEIGHT, key="daily_map", width="stretch")
shown = f"{len(points):,} flagged {rows_word.lower()}"
if data.points_truncated:
    shown = f"the {len(points):,} most likely of {k.flagged:,} flagged {rows_word.lower()}"
st.caption(
    f"{shown} on {day}, coloured by {score_word if colour_by == 'score' else 'amount'} "
    "from yellow (lower) to red (higher)"
    + ("; hexagons show where flags are dense" if "hexagons" in spec.layers else "")
    + ". Hover a point for details."
    + (" Offline map: city names give orientation." if not online else "")
)

st.subheader(f"Top flagged {rows_word.lower()}")
head = data.points.head(25)
reasons = (
    map_overlays.top_reasons(
        settings,
        store,
        PROJECT,
        AUTOMATION_INFRA,
        spec.name,
        head["id"].dropna().astype(str).tolist(),
        day,
    )
    if spec.id
    else {}
)
top = head.assign(
    reasons=head["id"].map(
        lambda row_id: ", ".join(
            f"{name} (+{value:.2f})" for name, value in reasons.get(str(row_id), [])
        )
    )
)
names = {
    "id": spec.id or "id",
    "time": spec.time or "time",
    "score": score_word,
    "amount": spec.amount or "amount",
    "category": spec.category or "category",
}
shown_columns = [
    c
    for c in ["id", "time", "amount", "category", *data.detail_columns, "score", "reasons"]
    if c in top
    and (
        c in ("score", "reasons") or c in data.detail_columns or getattr(spec, c, None) is not None
    )
]
shown_columns += ["lat", "lon"]
top = top[shown_columns].rename(columns=names)
if top.empty:
    st.info(f"No {rows_word.lower()} flagged on this day at this threshold.")
else:
    st.dataframe(
        pd.DataFrame(top),
        hide_index=True,
        width="stretch",
        column_config={
            names["amount"]: st.column_config.NumberColumn(format=f"{currency}%.2f"),
            score_word: st.column_config.ProgressColumn(
                format="percent", min_value=0.0, max_value=1.0
            ),
            "lat": st.column_config.NumberColumn(format="%.3f"),
            "lon": st.column_config.NumberColumn(format="%.3f"),
            "reasons": st.column_config.TextColumn(
                "top reasons",
                help="Features that raised this row's score the most "
                "(LightGBM contributions, log-odds)",
            ),
        },
        key="top_flagged",
    )
