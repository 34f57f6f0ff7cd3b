"""Seeded example data: credit-card transactions with delayed fraud labels and known truth.

Why it exists: every nodal feature (checks, drift, maps, retraining) needs data with real
structure to find. The generator writes cards, merchants, daily transactions, labels that
arrive days later (as chargebacks do) and the true fraud probability of every transaction.

How the truth works: a transaction's fraud logit is computed only from what a model could
observe (its own fields, the card's attributes, the card's strictly earlier transactions)
and ``is_fraud ~ Bernoulli(sigmoid(logit))``. So ``true_fraud_proba`` is the Bayes-optimal
score and its AUC is the ceiling for any model. Compromised-card bursts are only a
mechanism that produces risky-looking transactions; they are not a hidden label.

Determinism: cards, merchants and each day draw from their own ``np.random.default_rng``
streams keyed by ``(seed, kind, day, stream)``. A day's rows never depend on ``n_days``
and history features only look backwards, so a 12-day run starts with the exact 10 days of
a 10-day run. Everything is vectorised with numpy / pyarrow (no per-row Python loops).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import ArrayLike

from engine.errors import NodalError
from engine.storage.datasets import DatasetRef, write
from engine.us_cities import CITY_BY_NAME, US_CITIES

# --------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------


class GeneratorConfigError(NodalError, ValueError):
    """A generator setting is out of range; the message names it."""


@dataclass(frozen=True)
class GeneratorConfig:
    """What to generate. Drift knobs are off when None; day indexes are 0-based."""

    seed: int = 42
    n_cards: int = 3000
    n_merchants: int = 600
    n_days: int = 40
    start_day: datetime.date = date(2026, 10, 1)
    txns_per_day: int = 4000  # mean; varies a little by weekday
    ring_city: str | None = None  # a name in US_CITIES
    ring_start_day: int | None = None
    unseen_merchants_from_day: int | None = None
    unseen_merchant_share: float = 0.3
    extra_column_from_day: int | None = None  # transactions get a `device_id` column


@dataclass(frozen=True)
class GenerationSummary:
    """What was written, for logs and for ``generator.json``."""

    out_dir: Path
    days: list[str]
    n_transactions: int
    n_fraud: int
    fraud_rate: float
    seconds: float


# Dataset names (folder names under out_dir) and their layout.
CARDS = "cards"
MERCHANTS = "merchants"
TRANSACTIONS = "transactions"
LABELS = "labels"
TRUTH = "truth"
META_FILE = "generator.json"

TRANSACTION_COLUMNS = (
    "transaction_id",
    "ts",
    "card_id",
    "merchant_id",
    "merchant_category",
    "amount",
    "channel",
    "card_present",
    "merchant_latitude",
    "merchant_longitude",
)
EXTRA_COLUMN = "device_id"
CHANNELS = ("in_store", "online", "contactless")


def dataset_refs(out_dir: Path) -> dict[str, DatasetRef]:
    """The generator's datasets under ``out_dir``, so readers need not repeat the layout."""
    out_dir = Path(out_dir)
    return {
        CARDS: DatasetRef(CARDS, out_dir / CARDS),
        MERCHANTS: DatasetRef(MERCHANTS, out_dir / MERCHANTS),
        TRANSACTIONS: DatasetRef(TRANSACTIONS, out_dir / TRANSACTIONS, "day"),
        LABELS: DatasetRef(LABELS, out_dir / LABELS, "day"),
        TRUTH: DatasetRef(TRUTH, out_dir / TRUTH, "day"),
    }


# --------------------------------------------------------------------------------------
# Model of the world (constants tuned for ~1 % fraud and a true-proba AUC of ~0.93)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Category:
    name: str
    merchant_share: float  # share of merchants in this category
    median_amount: float  # USD, for a card of average spending level
    sigma: float  # lognormal spread of amounts
    online_prob: float  # chance a normal transaction here is online
    risk: float  # additive fraud logit
    risky: bool  # favoured by compromised-card bursts
    nouns: tuple[str, ...]  # for merchant names


_CATEGORIES: tuple[_Category, ...] = (
    _Category("grocery", 0.14, 45, 0.6, 0.03, -0.7, False, ("Market", "Grocers", "Foods")),
    _Category("gas_transport", 0.11, 40, 0.5, 0.02, -0.5, False, ("Fuel", "Gas", "Transit")),
    _Category("restaurant", 0.12, 32, 0.6, 0.08, -0.4, False, ("Bistro", "Diner", "Grill")),
    _Category("shopping_pos", 0.10, 55, 0.8, 0.0, -0.1, False, ("Outlet", "Store", "Goods")),
    _Category("shopping_net", 0.09, 65, 0.9, 1.0, 0.6, True, ("Online", "Direct", "Web")),
    _Category("entertainment", 0.07, 40, 0.7, 0.3, -0.2, False, ("Cinema", "Arcade", "Live")),
    _Category("travel", 0.05, 220, 0.9, 0.6, 0.2, False, ("Travel", "Air", "Hotels")),
    _Category("health_fitness", 0.07, 45, 0.7, 0.1, -0.5, False, ("Fitness", "Pharmacy")),
    _Category("electronics", 0.05, 140, 0.9, 0.4, 0.5, True, ("Electronics", "Tech")),
    _Category("jewelry", 0.03, 130, 1.0, 0.2, 0.7, True, ("Jewelers", "Gold", "Gems")),
    _Category("misc_net", 0.06, 25, 0.9, 1.0, 0.6, True, ("Digital", "Apps", "Net")),
    _Category("home", 0.07, 70, 0.8, 0.15, -0.3, False, ("Home", "Hardware", "Decor")),
    _Category("personal_care", 0.04, 28, 0.6, 0.05, -0.4, False, ("Salon", "Spa", "Care")),
)
_NAME_PREFIXES = (
    "Blue", "Golden", "Main Street", "Lakeside", "Summit", "Pioneer", "Liberty", "Evergreen",
    "Harbor", "Maple", "Redwood", "Sunset", "Union", "Central", "Prairie", "Cedar", "Northside",
    "Riverside", "Eagle", "Star",
)  # fmt: skip

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
_UNSEEN_POOL_MIN = 2000  # unseen merchant ids are drawn from a pool this big (at least)
_DAY_S = 86_400
_LABEL_DELAY_LEGIT = 7
_LABEL_DELAY_FRAUD_MIN = 2
_LABEL_DELAY_FRAUD_P = 0.2  # geometric, mean 5 → fraud labels arrive after ~7 days

# Fraud logit coefficients (see _fraud_logit).
_B0 = -8.2
_B_ONLINE = 0.6
_B_CONTACTLESS = -0.3
_B_NIGHT = 1.3
_B_LOG_AMOUNT = 0.35
_B_LOG_RATIO = 0.8
_B_DISTANCE = 0.65
_B_N24 = 0.55
_B_QUICK_REPEAT = 0.7
_B_CREDIT = -0.005
_B_NEW_ACCOUNT = 1.0
_B_RING = 3.0

# Random streams: (seed, kind, day, stream). kind 0 = static tables, 1 = days.
_S_CARDS, _S_MERCHANTS, _S_UNSEEN_POOL, _S_NAMES = 0, 1, 2, 3
_S_NORMAL, _S_BURST, _S_RING, _S_UNSEEN, _S_LABEL, _S_DEVICE = 0, 1, 2, 3, 4, 5


def _rng(seed: int, kind: int, day: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, kind, day, stream])


# --------------------------------------------------------------------------------------
# Static tables: cities, cards, merchants
# --------------------------------------------------------------------------------------

_CITY_NAME = np.array([c.name for c in US_CITIES])
_CITY_STATE = np.array([c.state for c in US_CITIES])
_CITY_LAT = np.array([c.latitude for c in US_CITIES])
_CITY_LON = np.array([c.longitude for c in US_CITIES])
_CITY_P = np.array([c.population for c in US_CITIES], dtype=float)
_CITY_P /= _CITY_P.sum()
_CITY_INDEX = {c.name: i for i, c in enumerate(US_CITIES)}


def _pick_weighted(p: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Inverse-CDF sampling: index i with probability p[i] for each uniform in ``u``."""
    cum = np.cumsum(p)
    return np.minimum(np.searchsorted(cum, u * cum[-1], side="right"), len(p) - 1)


def _jitter(rng: np.random.Generator, city: np.ndarray, km: float) -> tuple[np.ndarray, ...]:
    """Points scattered ~``km`` around city centres (so homes and shops are not stacked)."""
    lat = _CITY_LAT[city] + rng.normal(0.0, km / 111.0, len(city))
    lon = _CITY_LON[city] + rng.normal(0.0, km / 111.0, len(city)) / np.cos(np.radians(lat))
    return lat, lon


def _ids(prefix: str, numbers: np.ndarray, width: int) -> pa.Array:
    """``prefix`` + zero-padded numbers, built in Arrow (fast for millions of rows)."""
    digits = pc.utf8_lpad(pc.cast(pa.array(numbers, pa.int64()), pa.string()), width, "0")
    return pc.binary_join_element_wise(prefix, digits, "")


@dataclass(frozen=True)
class _Cards:
    city: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    credit: np.ndarray
    open_offset: np.ndarray  # account open date minus start_day, in days (< 0)
    level: np.ndarray  # latent spending level (multiplies amounts)
    activity: np.ndarray  # latent transaction rate weight


def _make_cards(cfg: GeneratorConfig) -> _Cards:
    """Cards live in cities weighted by population, with latent spending and activity."""
    rng = _rng(cfg.seed, 0, 0, _S_CARDS)
    n = cfg.n_cards
    city = _pick_weighted(_CITY_P, rng.random(n))
    lat, lon = _jitter(rng, city, 4.0)
    credit = np.clip(np.round(rng.normal(690, 75, n)), 300, 850).astype(np.int32)
    new = rng.random(n) < 0.08
    age = np.where(new, rng.integers(1, 120, n), rng.integers(120, 365 * 20, n))
    return _Cards(
        city=city,
        lat=lat,
        lon=lon,
        credit=credit,
        open_offset=-age.astype(np.int64),
        level=rng.lognormal(0.0, 0.45, n),
        activity=rng.lognormal(0.0, 0.5, n),
    )


@dataclass(frozen=True)
class _Merchants:
    """Known merchants first (rows < n_known), then the pool of unseen merchant ids."""

    n_known: int
    ids: pa.Array
    cat: np.ndarray
    city: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    weight: np.ndarray  # popularity


def _merchant_block(rng: np.random.Generator, n: int, cover_cities: bool) -> dict[str, Any]:
    shares = np.array([c.merchant_share for c in _CATEGORIES])
    city = _pick_weighted(np.sqrt(_CITY_P), rng.random(n))
    if cover_cities:  # every city gets at least one merchant when there are enough
        k = min(n, len(US_CITIES))
        city[:k] = rng.permutation(len(US_CITIES))[:k]
    lat, lon = _jitter(rng, city, 3.0)
    return {
        "cat": _pick_weighted(shares, rng.random(n)),
        "city": city,
        "lat": lat,
        "lon": lon,
        "weight": rng.lognormal(0.0, 0.8, n),
    }


def _make_merchants(cfg: GeneratorConfig) -> _Merchants:
    """Merchants in real cities (all cities covered), plus a pool for the unseen knob."""
    known = _merchant_block(_rng(cfg.seed, 0, 0, _S_MERCHANTS), cfg.n_merchants, True)
    n_pool = max(_UNSEEN_POOL_MIN, 4 * cfg.n_merchants)
    pool = _merchant_block(_rng(cfg.seed, 0, 0, _S_UNSEEN_POOL), n_pool, False)
    cols = {k: np.concatenate([known[k], pool[k]]) for k in known}
    n_all = cfg.n_merchants + n_pool
    return _Merchants(n_known=cfg.n_merchants, ids=_ids("M", np.arange(1, n_all + 1), 6), **cols)


def _cards_table(cfg: GeneratorConfig, cards: _Cards) -> pa.Table:
    opened = np.datetime64(cfg.start_day, "D") + cards.open_offset
    return pa.table(
        {
            "card_id": _ids("C", np.arange(1, cfg.n_cards + 1), 7),
            "home_city": pa.array(_CITY_NAME[cards.city]),
            "home_state": pa.array(_CITY_STATE[cards.city]),
            "home_latitude": pa.array(cards.lat),
            "home_longitude": pa.array(cards.lon),
            "credit_score": pa.array(cards.credit, pa.int32()),
            "account_open_date": pa.array(opened, pa.date32()),
        }
    )


def _merchants_table(cfg: GeneratorConfig, m: _Merchants) -> pa.Table:
    n = m.n_known
    rng = _rng(cfg.seed, 0, 0, _S_NAMES)
    cat = m.cat[:n]
    prefix = np.array(_NAME_PREFIXES)[rng.integers(0, len(_NAME_PREFIXES), n)]
    noun_pick = rng.integers(0, 1 << 30, n)
    nouns = np.array([c.nouns[i % len(c.nouns)] for c in _CATEGORIES for i in range(3)])
    noun = nouns[cat * 3 + noun_pick % 3]
    names = pc.binary_join_element_wise(pa.array(prefix), pa.array(noun), " ")
    return pa.table(
        {
            "merchant_id": m.ids.slice(0, n),
            "merchant_name": names,
            "merchant_category": pa.array(np.array([c.name for c in _CATEGORIES])[cat]),
            "city": pa.array(_CITY_NAME[m.city[:n]]),
            "state": pa.array(_CITY_STATE[m.city[:n]]),
            "merchant_latitude": pa.array(m.lat[:n]),
            "merchant_longitude": pa.array(m.lon[:n]),
        }
    )


class _CityPicker:
    """Vectorised weighted choice of a merchant within a given city, for many rows at once."""

    def __init__(self, members: np.ndarray, m: _Merchants) -> None:
        city = m.city[members]
        order = np.lexsort((members, city))
        self.members = members[order]
        city = city[order]
        w = m.weight[self.members]
        n_cities = len(US_CITIES)
        self.count = np.bincount(city, minlength=n_cities)
        self.start = np.concatenate([[0], np.cumsum(self.count)[:-1]])
        cum = np.cumsum(w)
        before_city = (cum - w)[np.minimum(self.start, len(w) - 1)]
        total = np.bincount(city, weights=w, minlength=n_cities)
        self.keys = city + (cum - before_city[city]) / total[city]

    def pick(self, city: np.ndarray, u: np.ndarray) -> np.ndarray:
        """One member per row, in ``city`` (any member if that city has none)."""
        pos = np.searchsorted(self.keys, city + u, side="left")
        last = self.start[city] + self.count[city] - 1
        pos = np.clip(pos, self.start[city], np.maximum(last, 0))
        anywhere = (u * len(self.members)).astype(np.int64)
        return self.members[np.where(self.count[city] > 0, pos, anywhere)]


@dataclass(frozen=True)
class _World:
    cfg: GeneratorConfig
    cards: _Cards
    merchants: _Merchants
    known: _CityPicker
    pool: _CityPicker
    risky: np.ndarray  # known merchants in risky categories
    card_cum: np.ndarray  # cumulative activity, for choosing cards


def _make_world(cfg: GeneratorConfig) -> _World:
    cards = _make_cards(cfg)
    m = _make_merchants(cfg)
    known_ids = np.arange(m.n_known)
    risky_cat = np.array([c.risky for c in _CATEGORIES])
    risky = known_ids[risky_cat[m.cat[: m.n_known]]]
    return _World(
        cfg=cfg,
        cards=cards,
        merchants=m,
        known=_CityPicker(known_ids, m),
        pool=_CityPicker(np.arange(m.n_known, len(m.cat)), m),
        risky=risky if len(risky) else known_ids,
        card_cum=np.cumsum(cards.activity),
    )


# --------------------------------------------------------------------------------------
# One day of transactions
# --------------------------------------------------------------------------------------

_ROW_FIELDS = ("card", "merchant", "sec", "z", "u_online", "u_contactless", "kind", "device")
_KIND_NORMAL, _KIND_BURST, _KIND_RING = 0, 1, 2
_KIND_AMOUNT_SHIFT = np.array([0.0, np.log(3.0), np.log(2.0)])  # log multiplier per kind


def _seconds(rng: np.random.Generator, profile: np.ndarray, n: int) -> np.ndarray:
    hour = _pick_weighted(profile, rng.random(n))
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


def _normal_rows(w: _World, day: int, n_expected: float) -> dict[str, np.ndarray]:
    """Everyday spending: mostly in the home city, daytime-heavy hours."""
    rng = _rng(w.cfg.seed, 1, day, _S_NORMAL)
    n = int(rng.poisson(n_expected))
    card = np.minimum(
        np.searchsorted(w.card_cum, rng.random(n) * w.card_cum[-1], side="right"),
        w.cfg.n_cards - 1,
    )
    away_city = _pick_weighted(_CITY_P, rng.random(n))
    city = np.where(rng.random(n) < _HOME_SHARE, w.cards.city[card], away_city)
    merchant = w.known.pick(city, rng.random(n))
    sec = _seconds(rng, _HOURS_NORMAL, n)
    return _rows(rng, _KIND_NORMAL, card, merchant, sec, card + 1)


def _burst_rows(w: _World, day: int, n_expected: float) -> dict[str, np.ndarray]:
    """Compromised cards: several quick, mostly online/risky, far-away, often-night buys."""
    rng = _rng(w.cfg.seed, 1, day, _S_BURST)
    n_bursts = int(rng.poisson(_BURSTS_PER_TXN * n_expected))
    sizes = 2 + rng.poisson(3.0, n_bursts)
    burst = np.repeat(np.arange(n_bursts), sizes)
    n = len(burst)
    card = rng.integers(0, w.cfg.n_cards, n_bursts)[burst]
    start = _seconds(rng, _HOURS_BURST, n_bursts)[burst]
    sec = np.minimum(start + rng.integers(0, _BURST_SPAN_S, n), _DAY_S - 1)
    risky = w.risky[rng.integers(0, len(w.risky), n)]
    anyone = rng.integers(0, w.merchants.n_known, n)
    merchant = np.where(rng.random(n) < 0.75, risky, anyone)
    device = 10_000_000 + rng.integers(0, 1_000_000, n_bursts)[burst]
    return _rows(rng, _KIND_BURST, card, merchant, sec, device)


def _ring_rows(w: _World, day: int, n_expected: float) -> dict[str, np.ndarray]:
    """A fraud ring's extra volume at merchants of ``ring_city``."""
    rng = _rng(w.cfg.seed, 1, day, _S_RING)
    n = int(rng.poisson(_RING_EXTRA_SHARE * n_expected))
    card = rng.integers(0, w.cfg.n_cards, n)
    city = np.full(n, _CITY_INDEX[w.cfg.ring_city], np.int64)
    merchant = w.known.pick(city, rng.random(n))
    sec = _seconds(rng, _HOURS_NORMAL, n)
    return _rows(rng, _KIND_RING, card, merchant, sec, card + 1)


def _swap_unseen(w: _World, day: int, rows: dict[str, np.ndarray]) -> None:
    """Send a share of the day's rows to unseen merchant ids in the same city."""
    rng = _rng(w.cfg.seed, 1, day, _S_UNSEEN)
    n = len(rows["card"])
    swap = rng.random(n) < w.cfg.unseen_merchant_share
    unseen = w.pool.pick(w.merchants.city[rows["merchant"]], rng.random(n))
    rows["merchant"] = np.where(swap, unseen, rows["merchant"])


def _knob_on(from_day: int | None, day: int) -> bool:
    return from_day is not None and day >= from_day


def _day_rows(w: _World, day: int) -> dict[str, np.ndarray]:
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
    rng = _rng(cfg.seed, 1, day, _S_LABEL)
    rows["u_label"] = rng.random(n)
    rows["label_delay"] = _LABEL_DELAY_FRAUD_MIN + rng.geometric(_LABEL_DELAY_FRAUD_P, n)
    rows["day"] = np.full(n, day, np.int64)
    rows["rank"] = np.arange(n, dtype=np.int64)
    return rows


def _finish_rows(w: _World, rows: dict[str, np.ndarray]) -> None:
    """Category, channel and amount, derived from the final merchant (after any swap)."""
    cat = w.merchants.cat[rows["merchant"]]
    online_p = np.array([c.online_prob for c in _CATEGORIES])[cat]
    online_p = np.where(rows["kind"] == _KIND_BURST, 0.5 + 0.5 * online_p, online_p)
    online = rows["u_online"] < online_p
    contactless = ~online & (rows["u_contactless"] < 0.4)
    rows["cat"] = cat
    rows["channel"] = np.where(online, 1, np.where(contactless, 2, 0)).astype(np.int8)
    median = np.array([c.median_amount for c in _CATEGORIES])[cat]
    sigma = np.array([c.sigma for c in _CATEGORIES])[cat]
    log_amt = (
        np.log(median)
        + np.log(w.cards.level[rows["card"]])
        + sigma * rows["z"]
        + _KIND_AMOUNT_SHIFT[rows["kind"]]
    )
    rows["cents"] = np.maximum(np.round(np.exp(log_amt) * 100), 50).astype(np.int64)


# --------------------------------------------------------------------------------------
# History features, truth, labels
# --------------------------------------------------------------------------------------


def _history_features(card: np.ndarray, t: np.ndarray, cents: np.ndarray) -> dict[str, np.ndarray]:
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
    n24 = idx - np.searchsorted(key, key - _DAY_S, side="left")
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


def _fraud_logit(w: _World, rows: dict[str, np.ndarray], hist: dict[str, np.ndarray]) -> np.ndarray:
    """The fraud logit, from observable fields only (see the module docstring)."""
    cfg, cards, m = w.cfg, w.cards, w.merchants
    card, merchant = rows["card"], rows["merchant"]
    hour = rows["sec"] // 3600
    amount = rows["cents"] / 100.0
    dist = haversine_km(cards.lat[card], cards.lon[card], m.lat[merchant], m.lon[merchant])
    age_days = rows["day"] - cards.open_offset[card]
    logit = (
        _B0
        + np.array([c.risk for c in _CATEGORIES])[rows["cat"]]
        + _B_ONLINE * (rows["channel"] == 1)
        + _B_CONTACTLESS * (rows["channel"] == 2)
        + _B_NIGHT * (hour < 6)
        + _B_LOG_AMOUNT * np.log(amount / 50.0)
        + _B_LOG_RATIO * np.clip(np.log(hist["amount_ratio"]), -1.0, 3.0)
        + _B_DISTANCE * np.log1p(dist / 50.0)
        + _B_N24 * np.minimum(hist["n_24h"], 10)
        + _B_QUICK_REPEAT * (hist["gap_s"] < 3600)
        + _B_CREDIT * (cards.credit[card] - 690)
        + _B_NEW_ACCOUNT * np.exp(-age_days / 60.0)
    )
    if cfg.ring_city is not None and cfg.ring_start_day is not None:
        ring = (m.city[merchant] == _CITY_INDEX[cfg.ring_city]) & (
            rows["day"] >= cfg.ring_start_day
        )
        logit = logit + _B_RING * ring
    return logit


def _simulate(w: _World) -> dict[str, np.ndarray]:
    """All days' rows with history features, true probability and drawn labels."""
    days = [_day_rows(w, d) for d in range(w.cfg.n_days)]
    rows = {k: np.concatenate([d[k] for d in days]) for k in days[0]}
    _finish_rows(w, rows)
    t = rows["day"] * _DAY_S + rows["sec"]
    hist = _history_features(rows["card"], t, rows["cents"])
    proba = 1.0 / (1.0 + np.exp(-_fraud_logit(w, rows, hist)))
    rows["proba"] = proba
    rows["is_fraud"] = (rows["u_label"] < proba).astype(np.int8)
    return rows


# --------------------------------------------------------------------------------------
# Output tables
# --------------------------------------------------------------------------------------


def _dates(start: date, day: np.ndarray) -> pa.Array:
    return pa.array(np.datetime64(start, "D") + day, pa.date32())


def _transaction_ids(rows: dict[str, np.ndarray]) -> pa.Array:
    """``T`` + 4-digit day index + 7-digit rank within the day: stable whatever n_days."""
    return _ids("T", rows["day"] * 10_000_000 + rows["rank"], 11)


def _transactions_table(w: _World, rows: dict[str, np.ndarray], tx_ids: pa.Array) -> pa.Table:
    m = w.merchants
    start_s = int(np.datetime64(w.cfg.start_day, "s").astype(np.int64))
    ts_us = (start_s + rows["day"] * _DAY_S + rows["sec"]) * 1_000_000
    merchant = pa.array(rows["merchant"])
    return pa.table(
        {
            "transaction_id": tx_ids,
            "ts": pa.array(ts_us, pa.timestamp("us")),
            "card_id": _ids("C", rows["card"] + 1, 7),
            "merchant_id": m.ids.take(merchant),
            "merchant_category": pa.array(np.array([c.name for c in _CATEGORIES])[rows["cat"]]),
            "amount": pa.array(rows["cents"] / 100.0),
            "channel": pa.array(np.array(CHANNELS)[rows["channel"]]),
            "card_present": pa.array(rows["channel"] != 1),
            "merchant_latitude": pa.array(m.lat[rows["merchant"]]),
            "merchant_longitude": pa.array(m.lon[rows["merchant"]]),
            EXTRA_COLUMN: _ids("D", rows["device"], 8),
            "day": _dates(w.cfg.start_day, rows["day"]),
        }
    )


def _labels_table(w: _World, rows: dict[str, np.ndarray], tx_ids: pa.Array) -> pa.Table:
    """Labels partitioned by arrival day; only those arrived by the last generated day."""
    fraud = rows["is_fraud"] == 1
    arrival = rows["day"] + np.where(fraud, rows["label_delay"], _LABEL_DELAY_LEGIT)
    keep = np.flatnonzero(arrival <= w.cfg.n_days - 1)
    return pa.table(
        {
            "transaction_id": tx_ids.take(pa.array(keep)),
            "tx_day": _dates(w.cfg.start_day, rows["day"][keep]),
            "is_fraud": pa.array(rows["is_fraud"][keep].astype(np.int32)),
            "day": _dates(w.cfg.start_day, arrival[keep]),
        }
    )


def _truth_table(w: _World, rows: dict[str, np.ndarray], tx_ids: pa.Array) -> pa.Table:
    return pa.table(
        {
            "transaction_id": tx_ids,
            "true_fraud_proba": pa.array(rows["proba"]),
            "is_fraud": pa.array(rows["is_fraud"].astype(np.int32)),
            "day": _dates(w.cfg.start_day, rows["day"]),
        }
    )


def _write_transactions(
    ref: DatasetRef, cfg: GeneratorConfig, table: pa.Table, day: np.ndarray
) -> None:
    """Days before ``extra_column_from_day`` are written without ``device_id``.

    ``day`` is each row's day index; rows are in day order.
    """
    extra_from = cfg.extra_column_from_day
    cut = cfg.n_days if extra_from is None else extra_from
    n_before = int(np.searchsorted(day, cut))
    before = table.slice(0, n_before).drop_columns([EXTRA_COLUMN])
    after = table.slice(n_before)
    first = True
    for part in (before, after):
        if part.num_rows:
            write(ref, part, replace_all=first)
            first = False


def _write_meta(cfg: GeneratorConfig, summary: GenerationSummary) -> None:
    """Config and summary as JSON, replaced atomically like the datasets."""

    def plain(obj: Any) -> Any:
        return obj.isoformat() if isinstance(obj, date) else str(obj)

    doc = {"config": dataclasses.asdict(cfg), "summary": dataclasses.asdict(summary)}
    target = summary.out_dir / META_FILE
    tmp = target.with_suffix(f".json.tmp{os.getpid()}")
    tmp.write_text(json.dumps(doc, indent=2, default=plain) + "\n")
    os.replace(tmp, target)


def _validate(cfg: GeneratorConfig) -> None:
    if cfg.n_days < 1 or cfg.n_cards < 1 or cfg.n_merchants < 1 or cfg.txns_per_day < 1:
        raise GeneratorConfigError("n_days, n_cards, n_merchants and txns_per_day must be positive")
    if cfg.n_days > 9999 or cfg.txns_per_day > 2_000_000:
        raise GeneratorConfigError("at most 9999 days and 2,000,000 transactions per day")
    if (cfg.ring_city is None) != (cfg.ring_start_day is None):
        raise GeneratorConfigError(
            "ring_city and ring_start_day go together (both set or both None)"
        )
    if cfg.ring_city is not None and cfg.ring_city not in CITY_BY_NAME:
        raise GeneratorConfigError(f"ring_city {cfg.ring_city!r} is not a name in US_CITIES")
    if not 0.0 <= cfg.unseen_merchant_share <= 1.0:
        raise GeneratorConfigError("unseen_merchant_share must be within [0, 1]")


def generate(config: GeneratorConfig, out_dir: Path) -> GenerationSummary:
    """Generate every dataset under ``out_dir`` (replacing earlier output) and summarise."""
    started = time.perf_counter()
    _validate(config)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    refs = dataset_refs(out_dir)
    w = _make_world(config)
    write(refs[CARDS], _cards_table(config, w.cards))
    write(refs[MERCHANTS], _merchants_table(config, w.merchants))
    rows = _simulate(w)
    tx_ids = _transaction_ids(rows)
    _write_transactions(
        refs[TRANSACTIONS], config, _transactions_table(w, rows, tx_ids), rows["day"]
    )
    write(refs[LABELS], _labels_table(w, rows, tx_ids), replace_all=True)
    write(refs[TRUTH], _truth_table(w, rows, tx_ids), replace_all=True)
    n = len(rows["card"])
    n_fraud = int(rows["is_fraud"].sum())
    summary = GenerationSummary(
        out_dir=out_dir,
        days=[str(config.start_day + datetime.timedelta(days=d)) for d in range(config.n_days)],
        n_transactions=n,
        n_fraud=n_fraud,
        fraud_rate=n_fraud / n if n else 0.0,
        seconds=round(time.perf_counter() - started, 3),
    )
    _write_meta(config, summary)
    return summary
