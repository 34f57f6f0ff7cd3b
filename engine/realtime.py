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


_ALL_FIELDS = tuple({**REQUIRED_FIELDS, **OPTIONAL_FIELDS}.items())


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
    for name, types in _ALL_FIELDS:
        value = features.get(name)
        if value is None:
            continue
        kind = type(value)  # JSON gives exact types: no subclass to allow for
        if kind not in types:
            raise InvalidRecord(f"feature '{name}' must be a {_type_name(types)}")
        if (kind is float or kind is int) and not _finite(value):
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


def _finite(value: float) -> bool:
    try:
        return math.isfinite(value) and abs(float(value)) < 1e300
    except OverflowError:  # an integer too large for a float
        return False


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


class LookupFailed(InvalidRecord):
    """An enrichment or lookup found no row, or several, and its policy says to refuse."""


@dataclass
class KeyedTable:
    """Rows of a dataset indexed by a key, with the policies for no match and several matches.

    ``key`` maps request field → dataset column (one or more columns). ``on_missing`` is
    ``ignore`` (no row: the looked-up values are missing) or ``error``; ``on_multiple`` is
    ``first`` (keep the first row in the dataset's order) or ``error``.
    """

    name: str
    key: dict[str, str]
    rows: dict[Any, dict[str, Any]]
    duplicated: set[Any]
    on_missing: str = "ignore"
    on_multiple: str = "first"

    @classmethod
    def load(cls, name: str, path: Path, spec: dict[str, Any]) -> KeyedTable:
        key = key_mapping(spec.get("key") or spec.get("keys"))
        on_missing, on_multiple = spec.get("on_missing", "ignore"), spec.get("on_multiple", "first")
        if on_missing not in ("ignore", "error") or on_multiple not in ("first", "error"):
            raise ValueError(f"{name}: on_missing must be ignore|error and on_multiple first|error")
        rows: dict[Any, dict[str, Any]] = {}
        duplicated: set[Any] = set()
        columns = list(key.values())
        for row in pq.read_table(path).to_pylist():
            k = row[columns[0]] if len(columns) == 1 else tuple(row[c] for c in columns)
            if k in rows:
                duplicated.add(k)
            else:
                rows[k] = row
        return cls(name, key, rows, duplicated, on_missing, on_multiple)

    def find(self, record: dict[str, Any]) -> dict[str, Any] | None:
        fields = list(self.key)
        k = record.get(fields[0]) if len(fields) == 1 else tuple(record.get(f) for f in fields)
        try:
            row = self.rows.get(k)
        except TypeError:  # a list or an object where a key value belongs: no match
            row = None
        if row is None and self.on_missing == "error":
            raise LookupFailed(f"no row of {self.name} matches {', '.join(fields)}")
        if row is not None and self.on_multiple == "error" and k in self.duplicated:
            raise LookupFailed(f"several rows of {self.name} match {', '.join(fields)}")
        return row


def key_mapping(spec: Any) -> dict[str, str]:
    """``card_id`` / ``[a, b]`` / ``{request_field: dataset_column}`` → a mapping."""
    if isinstance(spec, str):
        return {spec: spec}
    if isinstance(spec, list) and spec and all(isinstance(k, str) for k in spec):
        return {k: k for k in spec}
    if isinstance(spec, dict) and spec and all(isinstance(v, str) for v in spec.values()):
        return {str(k): v for k, v in spec.items()}
    raise ValueError("a lookup key is a column name, a list of them, or {field: column}")


@dataclass
class PredictionEndpoint:
    """One prediction endpoint of a loaded package."""

    endpoint_id: str
    model: SavedModel
    enrichments: list[KeyedTable]
    kind = "prediction"

    @classmethod
    def load(cls, root: Path, spec: dict[str, Any]) -> PredictionEndpoint:
        ep_dir = root / "endpoints" / spec["id"]
        tables = [
            KeyedTable.load(
                enr["dataset"], ep_dir / "enrichments" / f"{enr['dataset']}.parquet", enr
            )
            for enr in spec.get("enrichments") or []
        ]
        return cls(spec["id"], SavedModel.load(ep_dir / "model"), tables)

    def __post_init__(self) -> None:
        meta = self.model.meta
        self._numeric = list(meta["numeric"])
        self._categorical = [
            (name, {v: float(i) for i, v in enumerate(meta["vocab"][name])})
            for name in meta["categorical"]
        ]

    def _values(self, features: Any) -> list[float]:
        """The model's input row, encoded as ``SavedModel.encode_record`` encodes it."""
        ts = validate_record(features)
        profile: dict[str, Any] = {}
        for table in self.enrichments:
            profile.update(table.find(features) or {})
        record = compute_features(features, ts, profile or None)
        nan = math.nan
        row = [nan if (v := record.get(n)) is None else float(v) for n in self._numeric]
        row += [codes.get(record.get(n), nan) for n, codes in self._categorical]
        return row

    def _row(self, features: Any) -> np.ndarray:
        return np.array([self._values(features)], dtype="float64")

    def _result(self, proba: float) -> dict[str, Any]:
        return {
            "prediction": "1" if proba >= self.model.threshold else "0",
            "probas": {"0": 1.0 - proba, "1": proba},
            "ignored": False,
            "threshold": self.model.threshold,
        }

    def explain(self, row: np.ndarray, n: int) -> dict[str, float]:
        """The ``n`` largest per-feature contributions (exact TreeSHAP, log-odds units).

        Categorical features are explained under their own name (the model sees their code).
        """
        contrib = self.model.booster.predict(row, pred_contrib=True, num_threads=1)[0]
        names = self.model.feature_names
        order = sorted(range(len(names)), key=lambda i: -abs(contrib[i]))[: max(n, 0)]
        return {names[i]: float(contrib[i]) for i in order}

    def predict(self, features: Any, n_explanations: int = 0) -> dict[str, Any]:
        t0 = time.perf_counter()
        row = self._row(features)
        t1 = time.perf_counter()
        proba = float(self.model.predict_proba(row, num_threads=1)[0])
        result = self._result(proba)
        if n_explanations:
            result["explanations"] = self.explain(row, n_explanations)
            result["explanationsMethod"] = "TREESHAP"
        t2 = time.perf_counter()
        result["_timing"] = {"preprocessing": _us(t1 - t0), "prediction": _us(t2 - t1)}
        return result

    def predict_multi(self, items: list[Any], n_explanations: int = 0) -> list[dict[str, Any]]:
        """Score many records in one model call; invalid ones come back ``ignored``."""
        rows, slots, results = [], [], []
        for i, item in enumerate(items):
            try:
                if not isinstance(item, dict):
                    raise InvalidRecord("each item must be an object with 'features'")
                rows.append(self._values(item.get("features")))
                slots.append(i)
                results.append(None)
            except InvalidRecord as exc:
                results.append({"ignored": True, "ignoreReason": str(exc)})
        if rows:
            matrix = np.array(rows, dtype="float64")
            probas = self.model.predict_proba(matrix, num_threads=1)
            for j, (i, p) in enumerate(zip(slots, probas, strict=True)):
                results[i] = self._result(float(p))
                if n_explanations:
                    results[i]["explanations"] = self.explain(matrix[j : j + 1], n_explanations)
                    results[i]["explanationsMethod"] = "TREESHAP"
        return results

    def predict_records(self, records: list[Any]) -> list[float]:
        """Fraud probabilities of raw records, all valid or an error naming the first bad one."""
        rows = []
        for i, rec in enumerate(records):
            try:
                rows.append(self._values(rec))
            except InvalidRecord as exc:
                raise InvalidRecord(f"record {i}: {exc}") from None
        if not rows:
            return []
        matrix = np.array(rows, dtype="float64")
        return [float(p) for p in self.model.predict_proba(matrix, num_threads=1)]


@dataclass
class LookupEndpoint:
    """A dataset-lookup endpoint: the row of a dataset that matches the request's key."""

    endpoint_id: str
    table: KeyedTable
    columns: list[str] | None
    kind = "lookup"

    @classmethod
    def load(cls, root: Path, spec: dict[str, Any]) -> LookupEndpoint:
        path = root / "endpoints" / spec["id"] / "lookup.parquet"
        return cls(spec["id"], KeyedTable.load(spec["dataset"], path, spec), spec.get("columns"))

    def lookup(self, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise InvalidRecord("'data' must be a JSON object")
        missing = [f for f in self.table.key if data.get(f) is None]
        if missing:
            raise InvalidRecord(f"missing lookup key(s): {', '.join(missing)}")
        row = self.table.find(data)
        if row is None:
            return {"data": dict(data), "found": False}
        values = row if self.columns is None else {c: row.get(c) for c in self.columns}
        return {"data": {**data, **_jsonable(values)}, "found": True}

    def lookup_multi(self, items: list[Any]) -> list[dict[str, Any]]:
        out = []
        for item in items:
            try:
                if not isinstance(item, dict):
                    raise InvalidRecord("each item must be an object with 'data'")
                out.append(self.lookup(item.get("data")))
            except InvalidRecord as exc:
                out.append({"ignored": True, "ignoreReason": str(exc)})
        return out


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, (date, datetime)) else v for k, v in row.items()}


def invocation_records(body: dict[str, Any]) -> list[Any]:
    """Records of an MLflow ``/invocations`` body: dataframe_split, dataframe_records, inputs."""
    if "dataframe_split" in body:
        split = body["dataframe_split"]
        if not isinstance(split, dict) or not isinstance(split.get("columns"), list):
            raise InvalidRecord("'dataframe_split' needs 'columns' and 'data'")
        columns, data = split["columns"], split.get("data")
        if not isinstance(data, list) or not all(
            isinstance(r, list) and len(r) == len(columns) for r in data
        ):
            raise InvalidRecord("'dataframe_split.data' must be rows as long as 'columns'")
        return [dict(zip(columns, r, strict=True)) for r in data]
    for key in ("dataframe_records", "instances", "inputs"):
        if key in body:
            value = body[key]
            if isinstance(value, dict) and all(isinstance(v, list) for v in value.values()):
                lengths = {len(v) for v in value.values()}
                if len(lengths) > 1:
                    raise InvalidRecord(f"'{key}' columns have different lengths")
                n = lengths.pop() if lengths else 0
                return [{c: v[i] for c, v in value.items()} for i in range(n)]
            if isinstance(value, list):
                return value
            raise InvalidRecord(f"'{key}' must be a list of records or a dict of columns")
    raise InvalidRecord("expected one of dataframe_split, dataframe_records, inputs, instances")


def _us(seconds: float) -> int:
    return int(seconds * 1_000_000)


Endpoint = PredictionEndpoint | LookupEndpoint


def load_service(root: Path) -> tuple[dict[str, Any], dict[str, Endpoint]]:
    """Service definition and loaded endpoints of an extracted package folder."""
    service = yaml.safe_load((root / "service.yaml").read_text())
    endpoints: dict[str, Endpoint] = {}
    for ep in service.get("endpoints") or []:
        kind = ep.get("type", "prediction")
        cls = {"prediction": PredictionEndpoint, "lookup": LookupEndpoint}.get(kind)
        if cls is None:
            raise ValueError(f"endpoint {ep.get('id')!r} has unknown type {kind!r}")
        endpoints[ep["id"]] = cls.load(root, ep)
    return service, endpoints
