"""Real-time scoring of one transaction: validation, enrichment, features, prediction.

``compute_features`` mirrors ``examples/fraud/recipes/features.sql`` row by row, so the API
answers exactly what the batch flow computes (tests/e2e/test_lifecycle.py scores the same
rows both ways). No pandas on this path: a request is a dict, a row is a numpy array.
"""

from __future__ import annotations

import csv
import io
import math
import time
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any

import msgspec
import numpy as np
import pyarrow.parquet as pq
import yaml

from engine.core.errors import NodalError
from engine.models.saved import SavedModel
from engine.project.api_services import key_mapping

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


class Transaction(msgspec.Struct):
    """The raw transaction as the API contract types it: a fast first check of many records.

    Whatever this accepts, :func:`validate_record` accepts too (the bounds also refuse NaN and
    infinities); a record it refuses goes through :func:`validate_record` for the message.
    """

    ts: str
    card_id: str
    merchant_category: str
    amount: Annotated[float, msgspec.Meta(gt=0, lt=1e300)]
    channel: str
    card_present: bool
    merchant_latitude: Annotated[float, msgspec.Meta(ge=-90, le=90)]
    merchant_longitude: Annotated[float, msgspec.Meta(ge=-180, le=180)]
    transaction_id: str | None = None
    merchant_id: str | None = None


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
    return parse_ts(features["ts"])


def parse_ts(value: str) -> datetime:
    """An ISO-8601 timestamp as naive UTC, like the batch data's."""
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidRecord(
            "feature 'ts' must be an ISO-8601 timestamp, e.g. 2026-11-09T13:45:00"
        ) from None
    if ts.tzinfo is not None:
        ts = (ts - ts.utcoffset()).replace(tzinfo=None)  # batch timestamps are naive UTC
    return ts


def validate_records(records: list[Any]) -> list[datetime | InvalidRecord]:
    """Each record's timestamp, or why it is refused: :func:`validate_record`'s verdicts.

    One typed conversion checks the whole list when every record is good (the common case,
    ~1 µs a record); a list with a bad record is checked record by record.
    """
    try:
        msgspec.convert(records, _TRANSACTIONS)
    except msgspec.ValidationError:
        return [_verdict(validate_record, r) for r in records]
    return [_verdict(parse_ts, r["ts"]) for r in records]


def _verdict(check: Any, value: Any) -> datetime | InvalidRecord:
    try:
        return check(value)
    except InvalidRecord as exc:
        return exc


_TRANSACTIONS = list[Transaction]


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


# Profile columns features.sql passes through unchanged.
PROFILE_FEATURES = ("card_txn_prev_day", "card_txn_prev_7d", "card_txn_history", "credit_score")
_EMPTY: dict[str, Any] = {}


def _distance(record: dict[str, Any], ts: datetime, p: dict[str, Any]) -> float | None:
    home_lat, home_lon = p.get("home_latitude"), p.get("home_longitude")
    if home_lat is None or home_lon is None:
        return None
    return haversine_km(
        home_lat, home_lon, float(record["merchant_latitude"]), float(record["merchant_longitude"])
    )


def _amount_ratio(record: dict[str, Any], ts: datetime, p: dict[str, Any]) -> float | None:
    avg = p.get("card_avg_amount")
    if avg is None:
        return None
    if avg == 0:  # DuckDB's IEEE division: a positive amount over ±0 is ±infinity
        return math.copysign(math.inf, avg)
    return float(record["amount"]) / avg


def _account_age(record: dict[str, Any], ts: datetime, p: dict[str, Any]) -> int | None:
    opened: date | None = p.get("account_open_date")
    return None if opened is None else (ts.date() - opened).days


def _profile_field(name: str) -> Any:
    return lambda record, ts, p: p.get(name)


# The features features.sql derives from (transaction, its timestamp, the card's profile).
DERIVED: dict[str, Any] = {
    "hour_of_day": lambda record, ts, p: ts.hour,
    "distance_km": _distance,
    "amount_ratio": _amount_ratio,
    **{name: _profile_field(name) for name in PROFILE_FEATURES},
    "account_age_days": _account_age,
}


def compute_features(
    record: dict[str, Any], ts: datetime, profile: dict[str, Any] | None
) -> dict[str, Any]:
    """The model features of one transaction, as features.sql computes them."""
    p = profile or _EMPTY
    return {**record, **{name: f(record, ts, p) for name, f in DERIVED.items()}}


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
        nan = math.nan

        def raw(name: str) -> Any:
            return lambda record, ts, p: record.get(name)

        def coded(name: str, codes: dict[Any, float]) -> Any:
            return lambda record, ts, p: codes.get(record.get(name), nan)

        # One function per model input, in the model's order: derived, raw or a category code.
        self._getters = [DERIVED.get(name) or raw(name) for name in meta["numeric"]] + [
            coded(name, {v: float(i) for i, v in enumerate(meta["vocab"][name])})
            for name in meta["categorical"]
        ]

    def _profile(self, record: dict[str, Any]) -> dict[str, Any]:
        """The enrichment columns found for ``record`` (empty: no match)."""
        if len(self.enrichments) == 1:
            return self.enrichments[0].find(record) or _EMPTY
        profile: dict[str, Any] = {}
        for table in self.enrichments:
            profile.update(table.find(record) or _EMPTY)
        return profile

    def encode(self, records: list[Any]) -> tuple[np.ndarray, list[InvalidRecord | None]]:
        """The model's input matrix for the valid ``records`` (in order) and, for each record,
        why it is refused (None: it has a row).

        One call for all records: validation (one typed check of the list), enrichment
        lookups, the features features.sql derives, the category codes ``SavedModel.encode``
        gives, one numpy conversion. A single ``predict`` is this with one record, so every
        endpoint encodes alike.
        """
        verdicts = validate_records(records)
        good: list[dict[str, Any]] = []
        stamps: list[datetime] = []
        profiles: list[dict[str, Any]] = []
        refused: list[InvalidRecord | None] = []
        for rec, ts in zip(records, verdicts, strict=True):
            if isinstance(ts, InvalidRecord):
                refused.append(ts)
                continue
            try:
                profiles.append(self._profile(rec) if self.enrichments else _EMPTY)
            except LookupFailed as exc:
                refused.append(exc)
                continue
            refused.append(None)
            good.append(rec)
            stamps.append(ts)
        getters = self._getters
        rows = [
            [get(rec, ts, p) for get in getters]
            for rec, ts, p in zip(good, stamps, profiles, strict=True)
        ]
        # None → NaN and bool → 0/1: numpy's float conversion does both.
        matrix = np.array(rows, dtype="float64") if rows else np.empty((0, len(getters)))
        return matrix, refused

    def _row(self, features: Any) -> np.ndarray:
        """The one-row input matrix of one record (InvalidRecord if it is refused)."""
        matrix, refused = self.encode([features])
        if refused[0] is not None:
            raise refused[0]
        return matrix

    def _result(self, proba: float) -> dict[str, Any]:
        threshold = self.model.threshold
        return {
            "prediction": "1" if proba >= threshold else "0",
            "probas": {"0": 1.0 - proba, "1": proba},
            "ignored": False,
            "threshold": threshold,
        }

    def explain(self, matrix: np.ndarray, n: int) -> list[dict[str, float]]:
        """Per row, the ``n`` largest per-feature contributions (exact TreeSHAP, log-odds
        units), in one LightGBM call for all rows.

        Categorical features are explained under their own name (the model sees their code).
        """
        contribs = self.model.booster.predict(matrix, pred_contrib=True, num_threads=1)
        names = self.model.feature_names
        out = []
        for contrib in contribs:
            order = sorted(range(len(names)), key=lambda i: -abs(contrib[i]))[: max(n, 0)]
            out.append({names[i]: float(contrib[i]) for i in order})
        return out

    def predict(self, features: Any, n_explanations: int = 0) -> dict[str, Any]:
        t0 = time.perf_counter()
        row = self._row(features)
        t1 = time.perf_counter()
        proba = float(self.model.predict_proba(row, num_threads=1)[0])
        result = self._result(proba)
        if n_explanations:
            result["explanations"] = self.explain(row, n_explanations)[0]
            result["explanationsMethod"] = "TREESHAP"
        t2 = time.perf_counter()
        result["_timing"] = {"preprocessing": _us(t1 - t0), "prediction": _us(t2 - t1)}
        return result

    def predict_multi(self, items: list[Any], n_explanations: int = 0) -> list[dict[str, Any]]:
        """Score many records in one encode and one model call; invalid ones come back
        ``ignored`` with the reason."""
        records = [i.get("features") if isinstance(i, dict) else None for i in items]
        matrix, refused = self.encode(records)
        probas = self.model.predict_proba(matrix, num_threads=1) if len(matrix) else []
        explained = self.explain(matrix, n_explanations) if n_explanations and len(matrix) else []
        results: list[dict[str, Any]] = []
        j = 0
        for item, why in zip(items, refused, strict=True):
            if why is not None:
                if not isinstance(item, dict):
                    why = InvalidRecord("each item must be an object with 'features'")
                results.append({"ignored": True, "ignoreReason": str(why)})
                continue
            result = self._result(float(probas[j]))
            if explained:
                result["explanations"] = explained[j]
                result["explanationsMethod"] = "TREESHAP"
            results.append(result)
            j += 1
        return results

    def predict_records(self, records: list[Any]) -> list[float]:
        """Fraud probabilities of raw records, all valid or an error naming the first bad one."""
        matrix, refused = self.encode(records)
        for i, why in enumerate(refused):
            if why is not None:
                raise type(why)(f"record {i}: {why}")
        if not len(matrix):
            return []
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


_CSV_TRUE, _CSV_FALSE = {"true", "1", "yes"}, {"false", "0", "no"}


def csv_records(text: str) -> list[dict[str, Any]]:
    """Records of an MLflow ``text/csv`` body: a header row, then one row per record.

    CSV has no types: a field of the transaction contract gets its type (number, boolean:
    true/false/1/0), an empty cell is missing, any other column stays text.
    """
    try:
        rows = list(csv.reader(io.StringIO(text)))
    except csv.Error as exc:  # a NUL byte, a cell over csv.field_size_limit()
        raise InvalidRecord(f"the CSV body cannot be read ({exc})") from None
    if not rows or not rows[0]:
        raise InvalidRecord("a text/csv body needs a header row")
    header = [h.strip() for h in rows[0]]
    out = []
    for i, row in enumerate(rows[1:], start=1):
        if not row:
            continue
        if len(row) != len(header):
            raise InvalidRecord(f"CSV row {i} has {len(row)} cells for {len(header)} columns")
        out.append({h: _csv_value(h, v) for h, v in zip(header, row, strict=True)})
    return out


def _csv_value(name: str, text: str) -> Any:
    text = text.strip()
    if text == "":
        return None
    types = REQUIRED_FIELDS.get(name) or OPTIONAL_FIELDS.get(name) or (str,)
    if bool in types:
        low = text.lower()
        return True if low in _CSV_TRUE else False if low in _CSV_FALSE else text
    if float in types:
        try:
            return float(text)
        except ValueError:
            return text  # validation names the field
    return text


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
