"""The static world: merchant categories, cities, cards and merchants (with their output
tables), the per-city merchant picker and the seeded random streams everything draws from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.core.us_cities import US_CITIES
from nodal_demo.datagen.config import GeneratorConfig

# --------------------------------------------------------------------------------------
# Model of the world (with truth.py's, tuned for ~1 % fraud at any density, true-proba AUC ~0.95)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Category:
    name: str
    merchant_share: float  # share of merchants in this category
    median_amount: float  # USD, for a card of average spending level
    sigma: float  # lognormal spread of amounts
    online_prob: float  # chance a normal transaction here is online
    risk: float  # additive fraud logit
    risky: bool  # favoured by compromised-card bursts
    nouns: tuple[str, ...]  # for merchant names


CATEGORIES: tuple[Category, ...] = (
    Category("grocery", 0.14, 45, 0.6, 0.03, -0.7, False, ("Market", "Grocers", "Foods")),
    Category("gas_transport", 0.11, 40, 0.5, 0.02, -0.5, False, ("Fuel", "Gas", "Transit")),
    Category("restaurant", 0.12, 32, 0.6, 0.08, -0.4, False, ("Bistro", "Diner", "Grill")),
    Category("shopping_pos", 0.10, 55, 0.8, 0.0, -0.1, False, ("Outlet", "Store", "Goods")),
    Category("shopping_net", 0.09, 65, 0.9, 1.0, 0.6, True, ("Online", "Direct", "Web")),
    Category("entertainment", 0.07, 40, 0.7, 0.3, -0.2, False, ("Cinema", "Arcade", "Live")),
    Category("travel", 0.05, 220, 0.9, 0.6, 0.2, False, ("Travel", "Air", "Hotels")),
    Category("health_fitness", 0.07, 45, 0.7, 0.1, -0.5, False, ("Fitness", "Pharmacy")),
    Category("electronics", 0.05, 140, 0.9, 0.4, 0.5, True, ("Electronics", "Tech")),
    Category("jewelry", 0.03, 130, 1.0, 0.2, 0.7, True, ("Jewelers", "Gold", "Gems")),
    Category("misc_net", 0.06, 25, 0.9, 1.0, 0.6, True, ("Digital", "Apps", "Net")),
    Category("home", 0.07, 70, 0.8, 0.15, -0.3, False, ("Home", "Hardware", "Decor")),
    Category("personal_care", 0.04, 28, 0.6, 0.05, -0.4, False, ("Salon", "Spa", "Care")),
)
_NAME_PREFIXES = (
    "Blue", "Golden", "Main Street", "Lakeside", "Summit", "Pioneer", "Liberty", "Evergreen",
    "Harbor", "Maple", "Redwood", "Sunset", "Union", "Central", "Prairie", "Cedar", "Northside",
    "Riverside", "Eagle", "Star",
)  # fmt: skip

_UNSEEN_POOL_MIN = 2000  # unseen merchant ids are drawn from a pool this big (at least)

# Random streams: (seed, kind, day, stream). kind 0 = static tables (these streams),
# 1 = days (their streams are in nodal_demo.datagen.days).
_S_CARDS, _S_MERCHANTS, _S_UNSEEN_POOL, _S_NAMES = 0, 1, 2, 3


def stream_rng(seed: int, kind: int, day: int, stream: int) -> np.random.Generator:
    """The random stream keyed by ``(seed, kind, day, stream)``."""
    return np.random.default_rng([seed, kind, day, stream])


# --------------------------------------------------------------------------------------
# Static tables: cities, cards, merchants
# --------------------------------------------------------------------------------------

_CITY_NAME = np.array([c.name for c in US_CITIES])
_CITY_STATE = np.array([c.state for c in US_CITIES])
_CITY_LAT = np.array([c.latitude for c in US_CITIES])
_CITY_LON = np.array([c.longitude for c in US_CITIES])
CITY_P = np.array([c.population for c in US_CITIES], dtype=float)
CITY_P /= CITY_P.sum()
CITY_INDEX = {c.name: i for i, c in enumerate(US_CITIES)}


def pick_weighted(p: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Inverse-CDF sampling: index i with probability p[i] for each uniform in ``u``."""
    cum = np.cumsum(p)
    return np.minimum(np.searchsorted(cum, u * cum[-1], side="right"), len(p) - 1)


def _jitter(rng: np.random.Generator, city: np.ndarray, km: float) -> tuple[np.ndarray, ...]:
    """Points scattered ~``km`` around city centres (so homes and shops are not stacked)."""
    lat = _CITY_LAT[city] + rng.normal(0.0, km / 111.0, len(city))
    lon = _CITY_LON[city] + rng.normal(0.0, km / 111.0, len(city)) / np.cos(np.radians(lat))
    return lat, lon


def prefixed_ids(prefix: str, numbers: np.ndarray, width: int) -> pa.Array:
    """``prefix`` + zero-padded numbers, built in Arrow (fast for millions of rows)."""
    digits = pc.utf8_lpad(pc.cast(pa.array(numbers, pa.int64()), pa.string()), width, "0")
    return pc.binary_join_element_wise(prefix, digits, "")


@dataclass(frozen=True)
class Cards:
    city: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    credit: np.ndarray
    open_offset: np.ndarray  # account open date minus start_day, in days (< 0)
    level: np.ndarray  # latent spending level (multiplies amounts)
    activity: np.ndarray  # latent transaction rate weight


def _make_cards(cfg: GeneratorConfig) -> Cards:
    """Cards live in cities weighted by population, with latent spending and activity."""
    rng = stream_rng(cfg.seed, 0, 0, _S_CARDS)
    n = cfg.n_cards
    city = pick_weighted(CITY_P, rng.random(n))
    lat, lon = _jitter(rng, city, 4.0)
    credit = np.clip(np.round(rng.normal(690, 75, n)), 300, 850).astype(np.int32)
    new = rng.random(n) < 0.08
    age = np.where(new, rng.integers(1, 120, n), rng.integers(120, 365 * 20, n))
    return Cards(
        city=city,
        lat=lat,
        lon=lon,
        credit=credit,
        open_offset=-age.astype(np.int64),
        level=rng.lognormal(0.0, 0.45, n),
        activity=rng.lognormal(0.0, 0.5, n),
    )


@dataclass(frozen=True)
class Merchants:
    """Known merchants first (rows < n_known), then the pool of unseen merchant ids."""

    n_known: int
    ids: pa.Array
    cat: np.ndarray
    city: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    weight: np.ndarray  # popularity


def _merchant_block(rng: np.random.Generator, n: int, cover_cities: bool) -> dict[str, Any]:
    shares = np.array([c.merchant_share for c in CATEGORIES])
    city = pick_weighted(np.sqrt(CITY_P), rng.random(n))
    if cover_cities:  # every city gets at least one merchant when there are enough
        k = min(n, len(US_CITIES))
        city[:k] = rng.permutation(len(US_CITIES))[:k]
    lat, lon = _jitter(rng, city, 3.0)
    return {
        "cat": pick_weighted(shares, rng.random(n)),
        "city": city,
        "lat": lat,
        "lon": lon,
        "weight": rng.lognormal(0.0, 0.8, n),
    }


def _make_merchants(cfg: GeneratorConfig) -> Merchants:
    """Merchants in real cities (all cities covered), plus a pool for the unseen knob."""
    known = _merchant_block(stream_rng(cfg.seed, 0, 0, _S_MERCHANTS), cfg.n_merchants, True)
    n_pool = max(_UNSEEN_POOL_MIN, 4 * cfg.n_merchants)
    pool = _merchant_block(stream_rng(cfg.seed, 0, 0, _S_UNSEEN_POOL), n_pool, False)
    cols = {k: np.concatenate([known[k], pool[k]]) for k in known}
    n_all = cfg.n_merchants + n_pool
    return Merchants(
        n_known=cfg.n_merchants, ids=prefixed_ids("M", np.arange(1, n_all + 1), 6), **cols
    )


def cards_table(cfg: GeneratorConfig, cards: Cards) -> pa.Table:
    """The ``cards`` dataset."""
    opened = np.datetime64(cfg.start_day, "D") + cards.open_offset
    return pa.table(
        {
            "card_id": prefixed_ids("C", np.arange(1, cfg.n_cards + 1), 7),
            "home_city": pa.array(_CITY_NAME[cards.city]),
            "home_state": pa.array(_CITY_STATE[cards.city]),
            "home_latitude": pa.array(cards.lat),
            "home_longitude": pa.array(cards.lon),
            "credit_score": pa.array(cards.credit, pa.int32()),
            "account_open_date": pa.array(opened, pa.date32()),
        }
    )


def merchants_table(cfg: GeneratorConfig, m: Merchants) -> pa.Table:
    """The ``merchants`` dataset (known merchants only), with made-up names."""
    n = m.n_known
    rng = stream_rng(cfg.seed, 0, 0, _S_NAMES)
    cat = m.cat[:n]
    prefix = np.array(_NAME_PREFIXES)[rng.integers(0, len(_NAME_PREFIXES), n)]
    noun_pick = rng.integers(0, 1 << 30, n)
    nouns = np.array([c.nouns[i % len(c.nouns)] for c in CATEGORIES for i in range(3)])
    noun = nouns[cat * 3 + noun_pick % 3]
    names = pc.binary_join_element_wise(pa.array(prefix), pa.array(noun), " ")
    return pa.table(
        {
            "merchant_id": m.ids.slice(0, n),
            "merchant_name": names,
            "merchant_category": pa.array(np.array([c.name for c in CATEGORIES])[cat]),
            "city": pa.array(_CITY_NAME[m.city[:n]]),
            "state": pa.array(_CITY_STATE[m.city[:n]]),
            "merchant_latitude": pa.array(m.lat[:n]),
            "merchant_longitude": pa.array(m.lon[:n]),
        }
    )


class CityPicker:
    """Vectorised weighted choice of a merchant within a given city, for many rows at once."""

    def __init__(self, members: np.ndarray, m: Merchants) -> None:
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
class World:
    cfg: GeneratorConfig
    cards: Cards
    merchants: Merchants
    known: CityPicker
    pool: CityPicker
    risky: np.ndarray  # known merchants in risky categories
    card_cum: np.ndarray  # cumulative activity, for choosing cards
    card_daily_rate: np.ndarray  # each card's expected everyday transactions per day


def make_world(cfg: GeneratorConfig) -> World:
    """Cards, merchants and the pickers the days draw from, all from the static streams."""
    cards = _make_cards(cfg)
    m = _make_merchants(cfg)
    known_ids = np.arange(m.n_known)
    risky_cat = np.array([c.risky for c in CATEGORIES])
    risky = known_ids[risky_cat[m.cat[: m.n_known]]]
    return World(
        cfg=cfg,
        cards=cards,
        merchants=m,
        known=CityPicker(known_ids, m),
        pool=CityPicker(np.arange(m.n_known, len(m.cat)), m),
        risky=risky if len(risky) else known_ids,
        card_cum=np.cumsum(cards.activity),
        card_daily_rate=cfg.txns_per_day * cards.activity / cards.activity.sum(),
    )
