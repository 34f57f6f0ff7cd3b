"""The landing zone's daily datasets built from the simulated rows: transactions (without
``device_id`` before the extra-column knob), labels partitioned by the day they arrive,
the truth, and the ``generator.json`` meta file."""

from __future__ import annotations

import dataclasses
import json
import os
from datetime import date
from typing import Any

import numpy as np
import pyarrow as pa

from engine.storage.datasets import DatasetRef, write
from nodal_demo.datagen.config import (
    CHANNELS,
    EXTRA_COLUMN,
    META_FILE,
    GenerationSummary,
    GeneratorConfig,
)
from nodal_demo.datagen.days import DAY_S, LABEL_DELAY_LEGIT
from nodal_demo.datagen.world import CATEGORIES, World, prefixed_ids


def _dates(start: date, day: np.ndarray) -> pa.Array:
    return pa.array(np.datetime64(start, "D") + day, pa.date32())


def transaction_ids(rows: dict[str, np.ndarray]) -> pa.Array:
    """``T`` + 4-digit day index + 7-digit rank within the day: stable whatever n_days."""
    return prefixed_ids("T", rows["day"] * 10_000_000 + rows["rank"], 11)


def transactions_table(w: World, rows: dict[str, np.ndarray], tx_ids: pa.Array) -> pa.Table:
    """The ``transactions`` dataset, with ``device_id`` on every row."""
    m = w.merchants
    start_s = int(np.datetime64(w.cfg.start_day, "s").astype(np.int64))
    ts_us = (start_s + rows["day"] * DAY_S + rows["sec"]) * 1_000_000
    merchant = pa.array(rows["merchant"])
    return pa.table(
        {
            "transaction_id": tx_ids,
            "ts": pa.array(ts_us, pa.timestamp("us")),
            "card_id": prefixed_ids("C", rows["card"] + 1, 7),
            "merchant_id": m.ids.take(merchant),
            "merchant_category": pa.array(np.array([c.name for c in CATEGORIES])[rows["cat"]]),
            "amount": pa.array(rows["cents"] / 100.0),
            "channel": pa.array(np.array(CHANNELS)[rows["channel"]]),
            "card_present": pa.array(rows["channel"] != 1),
            "merchant_latitude": pa.array(m.lat[rows["merchant"]]),
            "merchant_longitude": pa.array(m.lon[rows["merchant"]]),
            EXTRA_COLUMN: prefixed_ids("D", rows["device"], 8),
            "day": _dates(w.cfg.start_day, rows["day"]),
        }
    )


def labels_table(w: World, rows: dict[str, np.ndarray], tx_ids: pa.Array) -> pa.Table:
    """Labels partitioned by arrival day; only those arrived by the last generated day."""
    fraud = rows["is_fraud"] == 1
    arrival = rows["day"] + np.where(fraud, rows["label_delay"], LABEL_DELAY_LEGIT)
    keep = np.flatnonzero(arrival <= w.cfg.n_days - 1)
    return pa.table(
        {
            "transaction_id": tx_ids.take(pa.array(keep)),
            "tx_day": _dates(w.cfg.start_day, rows["day"][keep]),
            "is_fraud": pa.array(rows["is_fraud"][keep].astype(np.int32)),
            "day": _dates(w.cfg.start_day, arrival[keep]),
        }
    )


def truth_table(w: World, rows: dict[str, np.ndarray], tx_ids: pa.Array) -> pa.Table:
    """The ``truth`` dataset: every transaction's true fraud probability and drawn label."""
    return pa.table(
        {
            "transaction_id": tx_ids,
            "true_fraud_proba": pa.array(rows["proba"]),
            "is_fraud": pa.array(rows["is_fraud"].astype(np.int32)),
            "day": _dates(w.cfg.start_day, rows["day"]),
        }
    )


def write_transactions(
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


def write_meta(cfg: GeneratorConfig, summary: GenerationSummary) -> None:
    """Config and summary as JSON, replaced atomically like the datasets."""

    def plain(obj: Any) -> Any:
        return obj.isoformat() if isinstance(obj, date) else str(obj)

    doc = {"config": dataclasses.asdict(cfg), "summary": dataclasses.asdict(summary)}
    target = summary.out_dir / META_FILE
    tmp = target.with_suffix(f".json.tmp{os.getpid()}")
    tmp.write_text(json.dumps(doc, indent=2, default=plain) + "\n")
    os.replace(tmp, target)
