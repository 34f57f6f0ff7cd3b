"""Seeded example data: credit-card transactions with delayed fraud labels and known truth.

Why it exists: every nodal feature (checks, drift, maps, retraining) needs data with real
structure to find. The generator writes cards, merchants, daily transactions, labels that
arrive days later (as chargebacks do) and the true fraud probability of every transaction.

How the truth works: a transaction's fraud logit is computed only from what a model could
observe (its own fields, the card's attributes, the card's strictly earlier transactions)
and ``is_fraud ~ Bernoulli(sigmoid(logit))``. So ``true_fraud_proba`` is the Bayes-optimal
score and its AUC is the ceiling for any model. The card's activity counts against the
card's own pace (its 24 h count in standard deviations above its expected daily rate, a
repeat within 1/18 of its mean gap), so the fraud rate stays ~1 % whatever the number of
transactions per card and day (docs/architecture.md, "The example's data"). Compromised-card bursts are only a
mechanism that produces risky-looking transactions; they are not a hidden label.

Determinism: cards, merchants and each day draw from their own ``np.random.default_rng``
streams keyed by ``(seed, kind, day, stream)``. A day's rows never depend on ``n_days``
and history features only look backwards, so a 12-day run starts with the exact 10 days of
a 10-day run. Everything is vectorised with numpy / pyarrow (no per-row Python loops).

Layout: ``config`` (settings, validation, dataset layout), ``world`` (categories, cities,
cards, merchants, random streams), ``days`` (one day's transactions and label draws),
``truth`` (history features, fraud logit, true probability), ``landing`` (the output
tables and the meta file); ``generate`` below ties them together.
"""

from __future__ import annotations

import datetime
import time
from pathlib import Path

from engine.storage.datasets import write
from nodal_demo.datagen.config import (
    CARDS,
    CHANNELS,
    EXTRA_COLUMN,
    LABELS,
    MERCHANTS,
    META_FILE,
    TRANSACTION_COLUMNS,
    TRANSACTIONS,
    TRUTH,
    GenerationSummary,
    GeneratorConfig,
    GeneratorConfigError,
    dataset_refs,
    validate_config,
)
from nodal_demo.datagen.landing import (
    labels_table,
    transaction_ids,
    transactions_table,
    truth_table,
    write_meta,
    write_transactions,
)
from nodal_demo.datagen.truth import haversine_km, history_features, simulate
from nodal_demo.datagen.world import cards_table, make_world, merchants_table

__all__ = [
    "CARDS",
    "CHANNELS",
    "EXTRA_COLUMN",
    "LABELS",
    "MERCHANTS",
    "META_FILE",
    "TRANSACTIONS",
    "TRANSACTION_COLUMNS",
    "TRUTH",
    "GenerationSummary",
    "GeneratorConfig",
    "GeneratorConfigError",
    "dataset_refs",
    "generate",
    "haversine_km",
    "history_features",
]


def generate(config: GeneratorConfig, out_dir: Path) -> GenerationSummary:
    """Generate every dataset under ``out_dir`` (replacing earlier output) and summarise."""
    started = time.perf_counter()
    validate_config(config)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    refs = dataset_refs(out_dir)
    w = make_world(config)
    write(refs[CARDS], cards_table(config, w.cards))
    write(refs[MERCHANTS], merchants_table(config, w.merchants))
    rows = simulate(w)
    tx_ids = transaction_ids(rows)
    write_transactions(refs[TRANSACTIONS], config, transactions_table(w, rows, tx_ids), rows["day"])
    write(refs[LABELS], labels_table(w, rows, tx_ids), replace_all=True)
    write(refs[TRUTH], truth_table(w, rows, tx_ids), replace_all=True)
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
    write_meta(config, summary)
    return summary
