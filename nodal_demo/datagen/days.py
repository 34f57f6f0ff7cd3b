"""One day of transactions: everyday spending, compromised-card bursts, the fraud ring and
unseen merchants (the drift knobs), plus each row's label draws; vectorised and seeded per
day, so a day's rows never depend on ``n_days`` or on other days."""

from __future__ import annotations

import datetime

import numpy as np

from nodal_demo.datagen.world import (
    CATEGORIES,
    CITY_INDEX,
    CITY_P,
    World,
    pick_weighted,
    stream_rng,
)

DAY_S = 86_400

_WEEKDAY_FACTOR = np.array([0.96, 0.97, 0.98, 1.0, 1.07, 1.06, 0.96])  # Monday first
_HOURS_NORMAL = np.array(
    [0.5, 0.3, 0.2, 0.2, 0.2, 0.4, 1, 2, 3, 4, 5, 6, 7, 6.5, 6, 6, 6.5, 7, 7, 6.5, 5, 4, 2.5, 1.2]
)
_HOURS_BURST = np.array(
    [5, 5, 5, 5, 4, 3, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 3, 4, 5], dtype=float
)

_HOME_SHARE = 0.85  # normal transactions at a merchant of the card's home city
_BURSTS_PER_TXN = 0.0025  # compromised-card bursts per expected transaction of the day
_BURST_SPAN_S = 3 * 3600  # a burst's transactions fall within this many seconds
_RING_EXTRA_SHARE = 0.02  # extra volume at ring-city merchants once the ring is on

# Labels arrive days after the transaction (as chargebacks do).
LABEL_DELAY_LEGIT = 7
_LABEL_DELAY_FRAUD_MIN = 2
_LABEL_DELAY_FRAUD_P = 0.2  # geometric, mean 5 → fraud labels arrive after ~7 days

# Random streams of the days: (seed, 1, day, stream).
_S_NORMAL, _S_BURST, _S_RING, _S_UNSEEN, _S_LABEL, _S_DEVICE = 0, 1, 2, 3, 4, 5

_ROW_FIELDS = ("card", "merchant", "sec", "z", "u_online", "u_contactless", "kind", "device")
_KIND_NORMAL, _KIND_BURST, _KIND_RING = 0, 1, 2
_KIND_AMOUNT_SHIFT = np.array([0.0, np.log(3.0), np.log(2.0)])  # log multiplier per kind


def _seconds(rng: np.random.Generator, profile: np.ndarray, n: int) -> np.ndarray:
    hour = pick_weighted(profile, rng.random(n))
    return hour * 3600 + rng.integers(0, 3600, n)


def _rows(
    rng: np.random.Generator,
    kind: int,
    card: np.ndarray,
    merchant: np.ndarray,
    sec: np.ndarray,
    device: np.ndarray,
) -> dict[str, np.ndarray]:
    """Common per-row draws (amount noise, channel uniforms) from the kind's own stream."""
    n = len(card)
    return {
        "card": card.astype(np.int64),
        "merchant": merchant.astype(np.int64),
        "sec": sec.astype(np.int64),
        "z": rng.normal(0.0, 1.0, n),
        "u_online": rng.random(n),
        "u_contactless": rng.random(n),
        "kind": np.full(n, kind, np.int8),
        "device": device.astype(np.int64),
    }


def _normal_rows(w: World, day: int, n_expected: float) -> dict[str, np.ndarray]:
    """Everyday spending: mostly in the home city, daytime-heavy hours."""
    rng = stream_rng(w.cfg.seed, 1, day, _S_NORMAL)
    n = int(rng.poisson(n_expected))
    card = np.minimum(
        np.searchsorted(w.card_cum, rng.random(n) * w.card_cum[-1], side="right"),
        w.cfg.n_cards - 1,
    )
    away_city = pick_weighted(CITY_P, rng.random(n))
    city = np.where(rng.random(n) < _HOME_SHARE, w.cards.city[card], away_city)
    merchant = w.known.pick(city, rng.random(n))
    sec = _seconds(rng, _HOURS_NORMAL, n)
    return _rows(rng, _KIND_NORMAL, card, merchant, sec, card + 1)


def _burst_rows(w: World, day: int, n_expected: float) -> dict[str, np.ndarray]:
    """Compromised cards: several quick, mostly online/risky, far-away, often-night buys."""
    rng = stream_rng(w.cfg.seed, 1, day, _S_BURST)
    n_bursts = int(rng.poisson(_BURSTS_PER_TXN * n_expected))
    sizes = 2 + rng.poisson(3.0, n_bursts)
    burst = np.repeat(np.arange(n_bursts), sizes)
    n = len(burst)
    card = rng.integers(0, w.cfg.n_cards, n_bursts)[burst]
    start = _seconds(rng, _HOURS_BURST, n_bursts)[burst]
    sec = np.minimum(start + rng.integers(0, _BURST_SPAN_S, n), DAY_S - 1)
    risky = w.risky[rng.integers(0, len(w.risky), n)]
    anyone = rng.integers(0, w.merchants.n_known, n)
    merchant = np.where(rng.random(n) < 0.75, risky, anyone)
    device = 10_000_000 + rng.integers(0, 1_000_000, n_bursts)[burst]
    return _rows(rng, _KIND_BURST, card, merchant, sec, device)


def _ring_rows(w: World, day: int, n_expected: float) -> dict[str, np.ndarray]:
    """A fraud ring's extra volume at merchants of ``ring_city``."""
    rng = stream_rng(w.cfg.seed, 1, day, _S_RING)
    n = int(rng.poisson(_RING_EXTRA_SHARE * n_expected))
    card = rng.integers(0, w.cfg.n_cards, n)
    city = np.full(n, CITY_INDEX[w.cfg.ring_city], np.int64)
    merchant = w.known.pick(city, rng.random(n))
    sec = _seconds(rng, _HOURS_NORMAL, n)
    return _rows(rng, _KIND_RING, card, merchant, sec, card + 1)


def _swap_unseen(w: World, day: int, rows: dict[str, np.ndarray]) -> None:
    """Send a share of the day's rows to unseen merchant ids in the same city."""
    rng = stream_rng(w.cfg.seed, 1, day, _S_UNSEEN)
    n = len(rows["card"])
    swap = rng.random(n) < w.cfg.unseen_merchant_share
    unseen = w.pool.pick(w.merchants.city[rows["merchant"]], rng.random(n))
    rows["merchant"] = np.where(swap, unseen, rows["merchant"])


def _knob_on(from_day: int | None, day: int) -> bool:
    return from_day is not None and day >= from_day


def day_rows(w: World, day: int) -> dict[str, np.ndarray]:
    """All rows of one day, sorted by time; independent of n_days and of other days."""
    cfg = w.cfg
    weekday = (cfg.start_day + datetime.timedelta(days=day)).weekday()
    n_expected = cfg.txns_per_day * _WEEKDAY_FACTOR[weekday]
    parts = [_normal_rows(w, day, n_expected), _burst_rows(w, day, n_expected)]
    if cfg.ring_city is not None and _knob_on(cfg.ring_start_day, day):
        parts.append(_ring_rows(w, day, n_expected))
    rows = {k: np.concatenate([p[k] for p in parts]) for k in _ROW_FIELDS}
    if _knob_on(cfg.unseen_merchants_from_day, day):
        _swap_unseen(w, day, rows)
    order = np.argsort(rows["sec"], kind="stable")
    rows = {k: v[order] for k, v in rows.items()}
    n = len(order)
    rng = stream_rng(cfg.seed, 1, day, _S_LABEL)
    rows["u_label"] = rng.random(n)
    rows["label_delay"] = _LABEL_DELAY_FRAUD_MIN + rng.geometric(_LABEL_DELAY_FRAUD_P, n)
    rows["day"] = np.full(n, day, np.int64)
    rows["rank"] = np.arange(n, dtype=np.int64)
    return rows


def finish_rows(w: World, rows: dict[str, np.ndarray]) -> None:
    """Category, channel and amount, derived from the final merchant (after any swap)."""
    cat = w.merchants.cat[rows["merchant"]]
    online_p = np.array([c.online_prob for c in CATEGORIES])[cat]
    online_p = np.where(rows["kind"] == _KIND_BURST, 0.5 + 0.5 * online_p, online_p)
    online = rows["u_online"] < online_p
    contactless = ~online & (rows["u_contactless"] < 0.4)
    rows["cat"] = cat
    rows["channel"] = np.where(online, 1, np.where(contactless, 2, 0)).astype(np.int8)
    median = np.array([c.median_amount for c in CATEGORIES])[cat]
    sigma = np.array([c.sigma for c in CATEGORIES])[cat]
    log_amt = (
        np.log(median)
        + np.log(w.cards.level[rows["card"]])
        + sigma * rows["z"]
        + _KIND_AMOUNT_SHIFT[rows["kind"]]
    )
    rows["cents"] = np.maximum(np.round(np.exp(log_amt) * 100), 50).astype(np.int64)
