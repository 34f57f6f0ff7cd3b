"""The truth: each transaction's history features (strictly earlier rows of its card), its
fraud logit from observable fields only, the true fraud probability and the drawn label."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from nodal_demo.datagen.days import DAY_S, day_rows, finish_rows
from nodal_demo.datagen.world import CATEGORIES, CITY_INDEX, World

# Fraud logit coefficients (see _fraud_logit).
_B0 = -7.2
_B_ONLINE = 0.6
_B_CONTACTLESS = -0.3
_B_NIGHT = 1.3
_B_LOG_AMOUNT = 0.35
_B_LOG_RATIO = 0.8
_B_DISTANCE = 0.65
# Velocity and quick repeats are measured against the card's own pace (its expected
# transactions a day), so the fraud rate does not depend on how many transactions a card
# makes on average (the density, transactions per card and day): see _fraud_logit.
_B_VELOCITY = 0.635  # per standard deviation of the card's 24 h count above its daily rate
_VELOCITY_CAP = 4.0  # standard deviations
_B_QUICK_REPEAT = 0.7
_QUICK_SHARE = 1 / 18  # "quick": within this share of the card's mean gap (1 h at 4/3 a day)
_B_CREDIT = -0.005
_B_NEW_ACCOUNT = 1.0
_B_RING = 3.0


def history_features(card: np.ndarray, t: np.ndarray, cents: np.ndarray) -> dict[str, np.ndarray]:
    """Per-row features of the card's STRICTLY earlier rows (earlier time or earlier row).

    Sort by card then time, then cumulative integer sums per card and a ``searchsorted``
    over ``card * BIG + t`` for the 24 h window. Integer arithmetic keeps results exact,
    so adding later days never changes earlier rows' features.
    """
    n = len(card)
    order = np.lexsort((t, card))  # stable: ties keep row order
    c, tt, a = card[order], t[order], cents[order]
    idx = np.arange(n)
    first = np.ones(n, bool)
    first[1:] = c[1:] != c[:-1]
    group_start = np.maximum.accumulate(np.where(first, idx, 0))
    n_prior = idx - group_start
    cum0 = np.concatenate([[0], np.cumsum(a)])
    prior_mean = (cum0[idx] - cum0[group_start]) / np.maximum(n_prior, 1)
    ratio = np.where(n_prior > 0, a / np.maximum(prior_mean, 1), 1.0)
    key = c * (1 << 36) + tt
    n24 = idx - np.searchsorted(key, key - DAY_S, side="left")
    gap = np.where(first, 1 << 30, tt - np.roll(tt, 1))
    out = {"n_prior": n_prior, "amount_ratio": ratio, "n_24h": n24, "gap_s": gap}
    result = {}
    for name, values in out.items():
        back = np.empty_like(values)
        back[order] = values
        result[name] = back
    return result


def haversine_km(lat1: ArrayLike, lon1: ArrayLike, lat2: ArrayLike, lon2: ArrayLike) -> np.ndarray:
    """Great-circle distance in km (vectorised)."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dp, dl = p2 - p1, np.radians(np.asarray(lon2) - np.asarray(lon1))
    h = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return 2 * 6371.0 * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))


def _fraud_logit(w: World, rows: dict[str, np.ndarray], hist: dict[str, np.ndarray]) -> np.ndarray:
    """The fraud logit, from observable fields only (see the package docstring).

    Velocity and quick repeats are relative to the card's expected daily rate (from its
    latent activity; a model estimates it from the card's recent counts): a card making
    three times the transactions a day is not three times as suspicious on an ordinary day.
    """
    cfg, cards, m = w.cfg, w.cards, w.merchants
    card, merchant = rows["card"], rows["merchant"]
    hour = rows["sec"] // 3600
    amount = rows["cents"] / 100.0
    dist = haversine_km(cards.lat[card], cards.lon[card], m.lat[merchant], m.lon[merchant])
    age_days = rows["day"] - cards.open_offset[card]
    rate = w.card_daily_rate[card]
    logit = (
        _B0
        + np.array([c.risk for c in CATEGORIES])[rows["cat"]]
        + _B_ONLINE * (rows["channel"] == 1)
        + _B_CONTACTLESS * (rows["channel"] == 2)
        + _B_NIGHT * (hour < 6)
        + _B_LOG_AMOUNT * np.log(amount / 50.0)
        + _B_LOG_RATIO * np.clip(np.log(hist["amount_ratio"]), -1.0, 3.0)
        + _B_DISTANCE * np.log1p(dist / 50.0)
        + _B_VELOCITY * np.minimum((hist["n_24h"] - rate) / np.sqrt(rate), _VELOCITY_CAP)
        + _B_QUICK_REPEAT * (hist["gap_s"] < _QUICK_SHARE * DAY_S / rate)
        + _B_CREDIT * (cards.credit[card] - 690)
        + _B_NEW_ACCOUNT * np.exp(-age_days / 60.0)
    )
    if cfg.ring_city is not None and cfg.ring_start_day is not None:
        ring = (m.city[merchant] == CITY_INDEX[cfg.ring_city]) & (rows["day"] >= cfg.ring_start_day)
        logit = logit + _B_RING * ring
    return logit


def simulate(w: World) -> dict[str, np.ndarray]:
    """All days' rows with history features, true probability and drawn labels."""
    days = [day_rows(w, d) for d in range(w.cfg.n_days)]
    rows = {k: np.concatenate([d[k] for d in days]) for k in days[0]}
    finish_rows(w, rows)
    t = rows["day"] * DAY_S + rows["sec"]
    hist = history_features(rows["card"], t, rows["cents"])
    proba = 1.0 / (1.0 + np.exp(-_fraud_logit(w, rows, hist)))
    rows["proba"] = proba
    rows["is_fraud"] = (rows["u_label"] < proba).astype(np.int8)
    return rows
