"""What to generate and where it goes: the generator's settings, their validation, the
summary of a run and the layout of the datasets it writes (names, columns, refs)."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from engine.core.errors import NodalError
from engine.core.us_cities import CITY_BY_NAME
from engine.storage.datasets import DatasetRef


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


def validate_config(cfg: GeneratorConfig) -> None:
    """Raise ``GeneratorConfigError`` naming the first setting that is out of range."""
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
