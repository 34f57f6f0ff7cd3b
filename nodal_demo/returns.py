"""The second example's data: an online shop's orders and which of them come back.

Another domain, another vocabulary than the card-fraud example (no card, no transaction):
``orders`` (one partition per day the orders were placed), ``customers`` (reference data),
and ``returns``, the outcome of each order, partitioned by the day it became known (a
return arrives 2-13 days after the order; an order not returned within 14 days is known
as kept then), as a shop's systems would deliver it. Seeded and vectorised: the same seed gives
the same bytes. The return probability depends only on what a model can observe (the
order, the customer and the customer's earlier orders), with a customer propensity the
model has to learn from history.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa

from engine.core.us_cities import US_CITIES
from engine.storage.datasets import DatasetRef, write

CATEGORIES = ("fashion", "shoes", "electronics", "home", "beauty", "toys")
_CATEGORY_LOGIT = np.array([-0.6, -0.9, -2.3, -2.6, -2.9, -3.0])
_CATEGORY_PRICE = np.array([45.0, 80.0, 220.0, 60.0, 25.0, 30.0])
SEGMENTS = ("new", "regular", "vip")
KEPT_AFTER_DAYS = 14  # the return window: kept orders are known then


@dataclass(frozen=True)
class ReturnsConfig:
    seed: int = 11
    n_customers: int = 1_500
    n_days: int = 35
    orders_per_day: int = 1_200
    start_day: date = date(2026, 10, 1)


@dataclass(frozen=True)
class ReturnsSummary:
    out_dir: Path
    n_orders: int
    n_returned: int
    return_rate: float
    seconds: float


def _dates(start: date, days: np.ndarray) -> pa.Array:
    return pa.array(np.datetime64(start, "D") + days, pa.date32())


def _ids(prefix: str, numbers: np.ndarray, width: int) -> pa.Array:
    return pa.array([f"{prefix}{n:0{width}d}" for n in numbers.tolist()], pa.string())


def generate(cfg: ReturnsConfig, out_dir: Path) -> ReturnsSummary:
    """Write ``orders``, ``customers`` and ``returns`` under ``out_dir`` (replacing them)."""
    started = time.perf_counter()
    rng = np.random.default_rng(cfg.seed)
    out_dir = Path(out_dir)
    n_c = cfg.n_customers
    signup = rng.integers(-3 * 365, -5, n_c)
    segment = rng.choice(len(SEGMENTS), n_c, p=[0.3, 0.55, 0.15])
    propensity = rng.normal(0.0, 0.8, n_c) + np.where(segment == 2, -0.4, 0.0)
    activity = rng.pareto(1.5, n_c) + 0.2
    write(
        DatasetRef("customers", out_dir / "customers"),
        pa.table(
            {
                "customer": _ids("K", np.arange(n_c), 5),
                "signup_date": _dates(cfg.start_day, signup),
                "segment": pa.array([SEGMENTS[s] for s in segment], pa.string()),
            }
        ),
    )
    n = cfg.n_days * cfg.orders_per_day
    day = np.repeat(np.arange(cfg.n_days), cfg.orders_per_day)
    cust = rng.choice(n_c, n, p=activity / activity.sum())
    category = rng.choice(len(CATEGORIES), n, p=[0.3, 0.15, 0.12, 0.18, 0.15, 0.1])
    price = np.round(_CATEGORY_PRICE[category] * rng.lognormal(0.0, 0.5, n), 2)
    quantity = rng.choice([1, 1, 1, 2, 2, 3, 4], n)
    discount = rng.choice([0.0, 0.0, 10.0, 20.0, 30.0], n)
    express = rng.random(n) < 0.2
    second = rng.integers(0, 86_400, n)
    city = rng.choice(len(US_CITIES), n)
    lat = np.array([c.latitude for c in US_CITIES])[city] + rng.normal(0, 0.05, n)
    lon = np.array([c.longitude for c in US_CITIES])[city] + rng.normal(0, 0.05, n)
    hour = second // 3600
    logit = (
        _CATEGORY_LOGIT[category]
        + 0.35 * (quantity - 1)
        + 0.02 * discount
        + 0.5 * np.log1p(price / 100.0)
        + 0.6 * propensity[cust]
        + np.where((hour >= 0) & (hour < 5), 0.5, 0.0)
        - np.where(express, 0.3, 0.0)
    )
    returned = rng.random(n) < 1.0 / (1.0 + np.exp(-logit))
    known = day + np.where(returned, rng.integers(2, KEPT_AFTER_DAYS, n), KEPT_AFTER_DAYS)
    order_ids = _ids("O", day * 100_000 + np.arange(n) % cfg.orders_per_day, 8)
    start_us = int(np.datetime64(cfg.start_day, "s").astype(np.int64)) * 1_000_000
    write(
        DatasetRef("orders", out_dir / "orders", "day"),
        pa.table(
            {
                "order_id": order_ids,
                "placed_at": pa.array(
                    start_us + (day * 86_400 + second) * 1_000_000, pa.timestamp("us")
                ),
                "customer": _ids("K", cust, 5),
                "category": pa.array([CATEGORIES[c] for c in category], pa.string()),
                "price": pa.array(price, pa.float64()),
                "quantity": pa.array(quantity, pa.int32()),
                "discount_pct": pa.array(discount, pa.float64()),
                "express": pa.array(express, pa.bool_()),
                "delivery_lat": pa.array(lat, pa.float64()),
                "delivery_lon": pa.array(lon, pa.float64()),
                "day": _dates(cfg.start_day, day),
            }
        ),
        replace_all=True,
    )
    keep = np.flatnonzero(known <= cfg.n_days - 1)
    write(
        DatasetRef("returns", out_dir / "returns", "day"),
        pa.table(
            {
                "order_id": order_ids.take(pa.array(keep)),
                "was_returned": pa.array(returned[keep].astype(np.int32), pa.int32()),
                "day": _dates(cfg.start_day, known[keep]),
            }
        ),
        replace_all=True,
    )
    n_returned = int(returned.sum())
    return ReturnsSummary(
        out_dir,
        n,
        n_returned,
        n_returned / n if n else math.nan,
        round(time.perf_counter() - started, 3),
    )


def last_day(cfg: ReturnsConfig) -> date:
    return cfg.start_day + timedelta(days=cfg.n_days - 1)
