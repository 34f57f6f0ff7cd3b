"""Real-time scoring of one transaction: validation, enrichment, features, prediction.

``compute_features`` mirrors ``examples/fraud/recipes/features.sql`` row by row, so the API
answers exactly what the batch flow computes (tests/e2e/test_lifecycle.py scores the same
rows both ways). No pandas on this path: a request is a dict, a row is a numpy array.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import yaml

from engine.errors import NodalError
from engine.models import SavedModel

EARTH_RADIUS_KM = 6371.0088

# Raw transaction fields a request must carry, with their JSON type.
REQUIRED_FIELDS: dict[str, tuple[type, ...]] = {
    "ts": (str,),
    "card_id": (str,),
    "merchant_category": (str,),
    "amount": (int, float),
    "channel": (str,),
    "card_present": (bool,),
    "merchant_latitude": (int, float),
    "merchant_longitude": (int, float),
}
OPTIONAL_FIELDS: dict[str, tuple[type, ...]] = {"transaction_id": (str,), "merchant_id": (str,)}


class InvalidRecord(NodalError, ValueError):
    """A request's features are unusable; the message names the field, never echoes the input."""


def _type_name(types: tuple[type, ...]) -> str:
    return "number" if float in types else "boolean" if bool in types else "string"


def validate_record(features: Any) -> datetime:
    """Check a raw transaction; return its parsed timestamp (naive UTC)."""
    if not isinstance(features, dict):
        raise InvalidRecord("'features' must be a JSON object")
    missing = [f for f in REQUIRED_FIELDS if features.get(f) is None]
    if missing:
        raise InvalidRecord(f"missing feature(s): {', '.join(missing)}")
    for name, types in {**REQUIRED_FIELDS, **OPTIONAL_FIELDS}.items():
        value = features.get(name)
        if value is None:
            continue
        is_bool = isinstance(value, bool)
        if not isinstance(value, types) or (is_bool and bool not in types):
            raise InvalidRecord(f"feature '{name}' must be a {_type_name(types)}")
        if float in types and not math.isfinite(value):
            raise InvalidRecord(f"feature '{name}' must be a finite number")
    if (
        not -90 <= features["merchant_latitude"] <= 90
        or not -180 <= features["merchant_longitude"] <= 180
    ):
        raise InvalidRecord("merchant_latitude/merchant_longitude out of range")
    if features["amount"] <= 0:
        raise InvalidRecord("feature 'amount' must be positive")
    try:
        ts = datetime.fromisoformat(features["ts"])
    except ValueError:
        raise InvalidRecord(
            "feature 'ts' must be an ISO-8601 timestamp, e.g. 2026-11-09T13:45:00"
        ) from None
    if ts.tzinfo is not None:
        ts = (ts - ts.utcoffset()).replace(tzinfo=None)  # batch timestamps are naive UTC
    return ts


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Same formula, same operation order as features.sql."""
    return (
        2
        * EARTH_RADIUS_KM
        * math.asin(
            math.sqrt(
                math.pow(math.sin(math.radians(lat2 - lat1) / 2), 2)
                + math.cos(math.radians(lat1))
                * math.cos(math.radians(lat2))
                * math.pow(math.sin(math.radians(lon2 - lon1) / 2), 2)
            )
        )
    )


def compute_features(
    record: dict[str, Any], ts: datetime, profile: dict[str, Any] | None
) -> dict[str, Any]:
    """The model features of one transaction, as features.sql computes them."""
    p = profile or {}
    home_lat, home_lon = p.get("home_latitude"), p.get("home_longitude")
    avg = p.get("card_avg_amount")
    opened: date | None = p.get("account_open_date")
    return {
        **record,
        "hour_of_day": ts.hour,
        "distance_km": None
        if home_lat is None or home_lon is None
        else haversine_km(
            home_lat,
            home_lon,
            float(record["merchant_latitude"]),
            float(record["merchant_longitude"]),
        ),
        "amount_ratio": None if avg is None else float(record["amount"]) / avg,
        "card_txn_prev_day": p.get("card_txn_prev_day"),
        "card_txn_prev_7d": p.get("card_txn_prev_7d"),
        "card_txn_history": p.get("card_txn_history"),
        "credit_score": p.get("credit_score"),
        "account_age_days": None if opened is None else (ts.date() - opened).days,
    }


@dataclass
class PredictionEndpoint:
    """One prediction endpoint of a loaded package."""

    endpoint_id: str
    model: SavedModel
    lookups: dict[str, dict[str, dict[str, Any]]]  # dataset → key → row
    lookup_keys: dict[str, str]  # dataset → key column

    @classmethod
    def load(cls, root: Path, spec: dict[str, Any]) -> PredictionEndpoint:
        ep_dir = root / "endpoints" / spec["id"]
        lookups, keys = {}, {}
        for enr in spec.get("enrichments") or []:
            table = pq.read_table(ep_dir / "enrichments" / f"{enr['dataset']}.parquet")
            key = enr["key"]
            lookups[enr["dataset"]] = {row[key]: row for row in table.to_pylist()}
            keys[enr["dataset"]] = key
        return cls(spec["id"], SavedModel.load(ep_dir / "model"), lookups, keys)

    def _row(self, features: Any) -> np.ndarray:
        ts = validate_record(features)
        profile: dict[str, Any] = {}
        for dataset, table in self.lookups.items():
            profile.update(table.get(features.get(self.lookup_keys[dataset])) or {})
        return self.model.encode_record(compute_features(features, ts, profile or None))

    def _result(self, proba: float) -> dict[str, Any]:
        return {
            "prediction": "1" if proba >= self.model.threshold else "0",
            "probas": {"0": 1.0 - proba, "1": proba},
            "ignored": False,
            "threshold": self.model.threshold,
        }

    def predict(self, features: Any) -> dict[str, Any]:
        t0 = time.perf_counter()
        row = self._row(features)
        t1 = time.perf_counter()
        proba = float(self.model.predict_proba(row, num_threads=1)[0])
        t2 = time.perf_counter()
        return {
            **self._result(proba),
            "_timing": {"preprocessing": _us(t1 - t0), "prediction": _us(t2 - t1)},
        }

    def predict_multi(self, items: list[Any]) -> list[dict[str, Any]]:
        """Score many records in one model call; invalid ones come back ``ignored``."""
        rows, slots, results = [], [], []
        for i, item in enumerate(items):
            try:
                if not isinstance(item, dict):
                    raise InvalidRecord("each item must be an object with 'features'")
                rows.append(self._row(item.get("features")))
                slots.append(i)
                results.append(None)
            except InvalidRecord as exc:
                results.append({"ignored": True, "ignoreReason": str(exc)})
        if rows:
            probas = self.model.predict_proba(np.vstack(rows), num_threads=1)
            for i, p in zip(slots, probas, strict=True):
                results[i] = self._result(float(p))
        return results


def _us(seconds: float) -> int:
    return int(seconds * 1_000_000)


def load_service(root: Path) -> tuple[dict[str, Any], dict[str, PredictionEndpoint]]:
    """Service definition and loaded endpoints of an extracted package folder."""
    service = yaml.safe_load((root / "service.yaml").read_text())
    endpoints = {
        ep["id"]: PredictionEndpoint.load(root, ep) for ep in service.get("endpoints") or []
    }
    return service, endpoints
