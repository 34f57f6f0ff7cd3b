"""The daily fraud map: where the published day's flagged transactions happened.

The day lives in the URL (``?day=YYYY-MM-DD``) so a link to a day can be shared.
"""

from __future__ import annotations

import pandas as pd
import pydeck as pdk
import streamlit as st

from apps.common.context import get_settings, get_store
from engine import fraudmap
from engine.demo import AUTOMATION_INFRA, PROJECT

US_VIEW = pdk.ViewState(latitude=38.5, longitude=-96.5, zoom=3.4, min_zoom=2, max_zoom=14)
CARTO_LIGHT = "light"

settings = get_settings()
store = get_store(settings)

# Widget values from the previous run decide what to load; the widgets are drawn below,
# once we know which days are published and the model's threshold.
requested_day = st.session_state.get("map_day") or st.query_params.get("day")
threshold = st.session_state.get("map_threshold") if st.session_state.get("map_custom") else None

st.title("Daily fraud map")
data = fraudmap.load_map_day(settings, store, PROJECT, AUTOMATION_INFRA, requested_day, threshold)
if data.problem == fraudmap.DAY_NOT_PUBLISHED:
    st.warning(
        f"{data.message} Showing the latest published day instead.", icon=":material/event_busy:"
    )
    st.session_state.pop("map_day", None)
    data = fraudmap.load_map_day(settings, store, PROJECT, AUTOMATION_INFRA, None, threshold)

if data.problem == fraudmap.NOTHING_PUBLISHED:
    st.query_params.pop("day", None)
    st.info(
        f"{data.message}\n\nThe scenario runs every morning on the automation node. To publish "
        f"the newest day now: `nodal scenario run daily_scoring --infra {AUTOMATION_INFRA}` "
        "(on a new home, prepare the demo first with `nodal demo --prepare-only`).",
        icon=":material/info:",
    )
    st.stop()

days = data.published_days
c_day, c_mode, c_threshold = st.columns([1, 1, 2], vertical_alignment="bottom")
day = c_day.selectbox("Published day", days, index=days.index(data.day), key="map_day")
st.query_params["day"] = day
custom = c_mode.toggle(
    "Own probability threshold",
    key="map_custom",
    help="Off: show what the model flagged (its own threshold). On: flag from a fraud probability you choose.",
)
model_thr = data.model_threshold if data.model_threshold is not None else 0.5
# Always drawn (greyed out while off) so its value exists when the toggle is switched on.
c_threshold.slider(
    "Flag transactions with a fraud probability of at least",
    min_value=0.01,
    max_value=0.99,
    value=round(min(max(model_thr, 0.01), 0.99), 2),
    step=0.01,
    key="map_threshold",
    disabled=not custom,
    help=f"The model's own threshold is {model_thr:.3f}.",
)

if not data.ok:
    st.error(data.message)
    st.stop()

checks = (
    f"data checks passed at {data.checks_passed_at[:19].replace('T', ' ')} UTC"
    if data.checks_passed_at
    else "no data checks recorded for this day"
)
st.caption(
    f"{checks} · published at {(data.published_at or '')[:19].replace('T', ' ')} UTC "
    f"by run {data.run_id} of bundle {data.bundle_id} on {AUTOMATION_INFRA}"
)

k = data.kpis
assert k is not None
since = f"vs {k.previous_day}" if k.previous_day else None
m1, m2, m3, m4 = st.columns(4)
m1.metric("Transactions", f"{k.transactions:,}", k.transactions_change, delta_description=since)
m2.metric(
    "Flagged as fraud",
    f"{k.flagged:,}",
    k.flagged_change,
    delta_color="inverse",
    delta_description=since,
)
m3.metric(
    "Flagged amount",
    f"${k.flagged_amount:,.0f}",
    None if k.flagged_amount_change is None else f"{k.flagged_amount_change:+,.0f}",
    delta_color="inverse",
    delta_description=since,
)
m4.metric("Flag rate", f"{k.flag_rate:.2%}")

points = data.points.assign(
    proba_label=data.points["proba"].map(lambda p: f"{p:.1%}"),
    amount_label=data.points["amount"].map(lambda a: f"${a:,.2f}"),
)
# Labels that would overlap on the whole-country view are left out (bigger cities win).
cities = fraudmap.city_labels(zoom=US_VIEW.zoom)
cities["offset"] = [[0, 10] if below else [0, -9] for below in cities["below"]]
layers = [
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
    pdk.Layer(
        "ScatterplotLayer",
        id="flagged-transactions",
        # Least likely first, so where points overlap the most likely one is drawn on top.
        data=points.iloc[::-1],
        get_position="[lon, lat]",
        # yellow (low fraud probability) → red (high)
        get_fill_color="[230, 220 * (1 - proba), 30, 190]",
        get_line_color=[90, 0, 0, 200],
        line_width_min_pixels=1,
        stroked=True,
        get_radius=6000,
        radius_min_pixels=4,
        radius_max_pixels=18,
        pickable=True,
        auto_highlight=True,
    ),
]
tooltip = {
    "html": (
        "<b>{transaction_id}</b><br/>{ts}<br/>{amount_label} at {merchant} ({category})"
        "<br/>fraud probability <b>{proba_label}</b>"
    ),
    "style": {"fontSize": "12px"},
}
if settings.basemap == "none":
    deck = pdk.Deck(
        layers=layers,
        initial_view_state=US_VIEW,
        map_provider=None,
        map_style=None,
        tooltip=tooltip,
    )
else:
    deck = pdk.Deck(
        layers=layers,
        initial_view_state=US_VIEW,
        map_provider="carto",
        map_style=CARTO_LIGHT,
        tooltip=tooltip,
    )
st.pydeck_chart(deck, height=560, key="fraud_map", width="stretch")
shown = f"{len(points):,} flagged transactions"
if data.points_truncated:
    shown = f"the {len(points):,} most likely of {k.flagged:,} flagged transactions"
st.caption(
    f"{shown} on {day}, coloured by fraud probability from yellow (lower) to red (higher). "
    "Hover a point for details."
    + (" Offline map: city names give orientation." if settings.basemap == "none" else "")
)

st.subheader("Top flagged transactions")
top = data.points.head(25).rename(
    columns={
        "ts": "time",
        "transaction_id": "transaction",
        "proba": "fraud probability",
        "category": "category",
        "merchant": "merchant",
    }
)
if top.empty:
    st.info("No transaction is flagged on this day at this threshold.")
else:
    st.dataframe(
        pd.DataFrame(
            top[
                [
                    "transaction",
                    "time",
                    "amount",
                    "category",
                    "merchant",
                    "fraud probability",
                    "lat",
                    "lon",
                ]
            ]
        ),
        hide_index=True,
        width="stretch",
        column_config={
            "amount": st.column_config.NumberColumn(format="$%.2f"),
            "fraud probability": st.column_config.ProgressColumn(
                format="percent", min_value=0.0, max_value=1.0
            ),
            "lat": st.column_config.NumberColumn(format="%.3f"),
            "lon": st.column_config.NumberColumn(format="%.3f"),
        },
        key="top_flagged",
    )
