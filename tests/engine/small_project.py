"""A small, fast design-node project for the design engine's tests (no example data)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from engine.core.settings import Settings, load_settings
from engine.design import dataset_import
from engine.design import projects as design
from engine.project.project import Project
from engine.storage import datasets as ds
from engine.storage.control import ControlStore, open_store

SHOPS_CSV = (
    "shop_id,opened,city,monthly_sales,channel\n"
    "1,2024-01-05,Austin,1200.5,online\n"
    "2,2024-01-05,Boston,900,store\n"
    "3,2024-01-06,Austin,310.25,store\n"
    "4,2024-01-07,Denver,,online\n"
)


@dataclass
class Small:
    settings: Settings
    store: ControlStore
    root: Path

    def project(self) -> Project:
        return design.open_project(self.settings, "shop")


def make_small(tmp: Path, with_shops: bool = True) -> Small:
    settings = load_settings(environ={}, home=tmp / "var", data_dir=tmp / "data", basemap="none")
    store = open_store(settings.control_store_url)
    design.create_project(settings, store, "shop", "test project")
    small = Small(settings, store, tmp)
    if with_shops:
        csv = tmp / "shops.csv"
        csv.write_text(SHOPS_CSV)
        dataset_import.import_file(small.project(), "shops", csv, partition_column="opened")
    return small


def synthetic_labels(
    n: int = 4000, days: int = 10, seed: int = 3
) -> tuple[pd.DataFrame, np.ndarray]:
    """Rows with a numeric and a categorical feature, a day and a 0/1 label; and the truth."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    cat = rng.choice(["a", "b", "c"], size=n)
    logit = 2.0 * x + np.select([cat == "a", cat == "b"], [1.0, -1.0], 0.0) - 2.5
    proba = 1 / (1 + np.exp(-logit))
    frame = pd.DataFrame(
        {
            "transaction_id": [f"T{i:06d}" for i in range(n)],
            "x": x,
            "cat": cat,
            "day": pd.to_datetime("2026-01-01") + pd.to_timedelta(np.arange(n) % days, unit="D"),
            "is_fraud": (rng.random(n) < proba).astype(int),
        }
    )
    frame["day"] = frame["day"].dt.date
    return frame, proba


def add_labelled(small: Small, name: str = "labelled", with_truth: bool = True) -> pd.DataFrame:
    """A managed dataset ``name`` of synthetic labelled rows (+ the truth in the landing zone)."""
    frame, proba = synthetic_labels()
    project = small.project()
    ds.write(ds.DatasetRef(name, project.data_root / name), frame)
    text = (project.root / "datasets.yaml").read_text() + f"{name}:\n  kind: managed\n"
    (project.root / "datasets.yaml").write_text(text)
    if with_truth:
        truth = pd.DataFrame(
            {
                "transaction_id": frame["transaction_id"],
                "true_fraud_proba": proba,
                "day": frame["day"].astype(str),
            }
        )
        ds.write(ds.DatasetRef("truth", small.settings.data_dir / "truth", "day"), truth)
    return frame
