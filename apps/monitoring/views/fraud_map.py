"""The daily fraud map: where the published day's flagged transactions happened.

The day and the filters live in the URL (``?day=YYYY-MM-DD&threshold=0.5&categories=a,b
&channels=online&amount=100-900``) so a link to a day and a view can be shared.
"""

from __future__ import annotations

import pandas as pd
import pydeck as pdk
import streamlit as st

from apps.common.context import get_settings, get_store
from apps.common.pickers import NOTHING_DEPLOYED, project_deployment
from engine.monitoring import fraudmap

US_VIEW = pdk.ViewState(latitude=38.5, longitude=-96.5, zoom=3.4, min_zoom=2, max_zoom=14)
CARTO_LIGHT = "light"

settings = get_settings()
store = get_store(settings)

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


for key in ("map_categories", "map_channels"):
    if key not in st.session_state and _url_list(key.removeprefix("map_")):
        st.session_state[key] = _url_list(key.removeprefix("map_"))
if "map_amount" not in st.session_state and st.query_params.get("amount"):
    low, _, high = st.query_params["amount"].partition("-")
    st.session_state["map_amount"] = (float(low), float(high))
amount_range = st.session_state.get("map_amount")
filters = fraudmap.MapFilters(
    categories=tuple(st.session_state.get("map_categories") or ()),
    channels=tuple(st.session_state.get("map_channels") or ()),
    min_amount=amount_range[0] if amount_range else None,
    max_amount=amount_range[1] if amount_range else None,
)

st.title("Daily fraud map")
deployment = project_deployment(store, key="map_deployment")
if deployment is None:
    st.info(NOTHING_DEPLOYED, icon=":material/info:")
    st.stop()
PROJECT, AUTOMATION_INFRA = deployment.target, deployment.infra_id
data = fraudmap.load_map_day(
    settings, store, PROJECT, AUTOMATION_INFRA, requested_day, threshold, filters=filters
)
if data.problem == fraudmap.DAY_NOT_PUBLISHED:
    st.warning(
        f"{data.message} Showing the latest published day instead.", icon=":material/event_busy:"
    )
    st.session_state.pop("map_day", None)
    data = fraudmap.load_map_day(
        settings, store, PROJECT, AUTOMATION_INFRA, None, threshold, filters=filters
    )

if data.failed_check_day:
    shown = f" Showing the last good day, {data.published_days[0]}." if data.published_days else ""
    st.error(
        f"The newest data is not on the map: {data.failed_check_message}.{shown}",
        icon=":material/gpp_bad:",
    )

if data.problem == fraudmap.NOTHING_PUBLISHED:
    st.query_params.pop("day", None)
    st.info(
        f"{data.message}\n\nA day appears here once the scenario that publishes the map has "
        f"run on {AUTOMATION_INFRA} and the day passed its checks. To run it now: "
        f"`nodal scenario run <scenario> --infra {AUTOMATION_INFRA}`.",
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
st.session_state.setdefault("map_threshold", round(min(max(model_thr, 0.01), 0.99), 2))
c_threshold.slider(
    "Flag transactions with a fraud probability of at least",
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

for key, options in (("map_categories", data.categories), ("map_channels", data.channels)):
    if st.session_state.get(key):
        st.session_state[key] = [v for v in st.session_state[key] if v in options]
f_cat, f_chan, f_amount, f_colour = st.columns([2, 2, 2, 1], vertical_alignment="bottom")
f_cat.multiselect("Categories", data.categories, key="map_categories", placeholder="All categories")
f_chan.multiselect("Channels", data.channels, key="map_channels", placeholder="All channels")
top_amount = float(max(1.0, round(data.max_amount + 0.5)))
if amount_range is not None:  # keep a shared or earlier range within this day's amounts
    low0, high0 = amount_range
    st.session_state["map_amount"] = (max(0.0, min(low0, top_amount)), min(high0, top_amount))
st.session_state.setdefault("map_amount", (0.0, top_amount))
f_amount.slider("Amount ($)", min_value=0.0, max_value=top_amount, key="map_amount")
colour_by = f_colour.radio(
    "Colour by", ["probability", "amount"], key="map_colour", horizontal=True
)
for key, name in (("map_categories", "categories"), ("map_channels", "channels")):
    if st.session_state.get(key):
        st.query_params[name] = ",".join(st.session_state[key])
    else:
        st.query_params.pop(name, None)
low, high = st.session_state["map_amount"]
if low > 0 or high < top_amount:
    st.query_params["amount"] = f"{low:g}-{high:g}"
else:
    st.query_params.pop("amount", None)

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

amount_scale = float(data.points["amount"].quantile(0.95)) if len(data.points) else 1.0
points = data.points.assign(
    proba_label=data.points["proba"].map(lambda p: f"fraud probability {p:.1%}"),
    detail=data.points["amount"].map(lambda a: f"${a:,.2f}")
    + " at "
    + data.points["merchant"]
    + " ("
    + data.points["category"]
    + ")",
    amount_label=data.points["amount"].map(lambda a: f"${a:,.2f}"),
    # 0 (yellow) .. 1 (red): the fraud probability, or the amount against the day's 95th pct
    heat=data.points["proba"]
    if colour_by == "probability"
    else (data.points["amount"] / max(amount_scale, 1.0)).clip(upper=1.0),
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
        get_fill_color="[230, 220 * (1 - heat), 30, 190]",
        get_line_color=[90, 0, 0, 200],
        line_width_min_pixels=1,
        stroked=True,
        get_radius=6000,
        radius_min_pixels=4,
        radius_max_pixels=18,
        pickable=True,
        auto_highlight=True,
    ),
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
    ),
]
spots = data.hot_spots
if len(spots):
    layers.append(
        pdk.Layer(
            "ScatterplotLayer",
            id="hot-spots",
            data=spots.assign(
                transaction_id="Monitoring hot spot: " + spots["place"],
                ts=spots["family"].str.replace("_", " "),
                detail=spots["message"],
                proba_label="",
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
    "html": ("<b>{transaction_id}</b><br/>{ts}<br/>{detail}<br/><b>{proba_label}</b>"),
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
for spot in spots.to_dict("records"):
    st.warning(
        f"Model monitoring hot spot ({spot['family'].replace('_', ' ')}): {spot['message']}",
        icon=":material/crisis_alert:",
    )
st.toggle("Density (hexagons)", value=True, key="map_hexagons")
st.pydeck_chart(deck, height=560, key="fraud_map", width="stretch")
shown = f"{len(points):,} flagged transactions"
if data.points_truncated:
    shown = f"the {len(points):,} most likely of {k.flagged:,} flagged transactions"
st.caption(
    f"{shown} on {day}, coloured by {'fraud probability' if colour_by == 'probability' else 'amount'} "
    "from yellow (lower) to red (higher); hexagons show where flags are dense. "
    "Hover a point for details."
    + (" Offline map: city names give orientation." if settings.basemap == "none" else "")
)

st.subheader("Top flagged transactions")
reasons = fraudmap.top_reasons(
    settings, store, data.points.head(25)["transaction_id"].tolist(), day, PROJECT, AUTOMATION_INFRA
)
top = data.points.head(25).assign(
    reasons=lambda f: f["transaction_id"].map(
        lambda tx: ", ".join(f"{name} (+{value:.2f})" for name, value in reasons.get(tx, []))
    )
)
top = top.rename(
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
                    "reasons",
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
            "reasons": st.column_config.TextColumn(
                "top reasons",
                help="Features that raised this transaction's fraud score the most "
                "(LightGBM contributions, log-odds)",
            ),
        },
        key="top_flagged",
    )
