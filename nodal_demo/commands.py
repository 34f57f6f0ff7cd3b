"""The examples' commands: ``nodal data generate``, ``nodal data generate-returns`` and
``nodal demo``.

Registered through the ``nodal.commands`` entry point (pyproject.toml): the platform's
command line loads them without knowing the example.
"""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path
from typing import Any

from engine.cli.common import add
from engine.core.settings import Settings


def _config(cls: Any, a: argparse.Namespace) -> Any:
    """A generator's config dataclass with the options given on the command line."""
    return cls(
        **{f.name: getattr(a, f.name) for f in fields(cls) if getattr(a, f.name, None) is not None}
    )


def cmd_data_generate(s: Settings, a: argparse.Namespace) -> int:
    from nodal_demo import datagen

    out = Path(a.out) if a.out else s.data_dir
    if a.if_missing and (out / datagen.META_FILE).exists():
        print(f"example data already in {out} (kept)")
        return 0
    summary = datagen.generate(_config(datagen.GeneratorConfig, a), out)
    print(
        f"{summary.n_transactions} transactions over {len(summary.days)} days "
        f"({summary.fraud_rate:.2%} fraud) written to {out} in {summary.seconds:.1f}s"
    )
    return 0


def cmd_data_returns(s: Settings, a: argparse.Namespace) -> int:
    from nodal_demo import returns

    out = Path(a.out) if a.out else s.data_dir
    summary = returns.generate(_config(returns.ReturnsConfig, a), out)
    print(
        f"{summary.n_orders} orders ({summary.return_rate:.1%} returned) written to {out} "
        f"in {summary.seconds:.1f}s (orders, customers, returns; for examples/returns)"
    )
    return 0


def cmd_demo(s: Settings, a: argparse.Namespace) -> int:
    from nodal_demo import demo

    return demo.main(s, prepare_only=a.prepare_only)


def register(top: Any) -> None:
    p = add(
        top, "demo", cmd_demo, "Prepare the fraud example end to end and start all five processes."
    )
    p.add_argument("--prepare-only", action="store_true", help="prepare everything, start nothing")
    data = top.add_parser("data", help="example data").add_subparsers(dest="cmd", required=True)
    p = add(
        data,
        "generate",
        cmd_data_generate,
        "Generate the synthetic card-fraud data into the landing zone.",
    )
    p.add_argument("--out", help="output folder (default: NODAL_DATA_DIR)")
    p.add_argument(
        "--if-missing", action="store_true", help="do nothing if data already exists there"
    )
    p.add_argument("--seed", type=int)
    p.add_argument("--n-cards", dest="n_cards", type=int)
    p.add_argument("--n-merchants", dest="n_merchants", type=int)
    p.add_argument("--n-days", dest="n_days", type=int)
    p.add_argument("--txns-per-day", dest="txns_per_day", type=int)
    p.add_argument(
        "--ring-city", dest="ring_city", help="drift: a fraud ring appears in this city …"
    )
    p.add_argument(
        "--ring-start-day", dest="ring_start_day", type=int, help="… from this day index"
    )
    p.add_argument(
        "--unseen-merchants-from-day",
        dest="unseen_merchants_from_day",
        type=int,
        help="drift: merchant ids absent from the merchants table from this day index",
    )
    p.add_argument(
        "--extra-column-from-day",
        dest="extra_column_from_day",
        type=int,
        help="drift: transactions gain a device_id column from this day index",
    )
    p = add(
        data,
        "generate-returns",
        cmd_data_returns,
        "Generate the second example's data (an online shop's orders and returns).",
    )
    p.add_argument("--out", help="output folder (default: NODAL_DATA_DIR)")
    p.add_argument("--seed", type=int)
    p.add_argument("--n-customers", dest="n_customers", type=int)
    p.add_argument("--n-days", dest="n_days", type=int)
    p.add_argument("--orders-per-day", dest="orders_per_day", type=int)
