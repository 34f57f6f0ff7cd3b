"""Real-time scoring of one record: typing, enrichment, features, prediction.

The features come from the project's own feature recipe, compiled to run on one record
(:mod:`engine.project.feature_sql`); a package carries the recipe's SQL, the request
dataset's schema and a sample of batch answers, and :meth:`PredictionEndpoint.load`
refuses a package whose real-time answer would differ from batch
(:mod:`engine.models.feature_parity`). No pandas on this path: a request is a dict, a row
is a numpy array.
"""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import yaml

from engine.core.errors import NodalError
from engine.deployer.apipackages import FEATURES_SQL, REQUEST_SCHEMA, WINDOWS_DIR
from engine.models import feature_parity
from engine.models.saved import SavedModel
from engine.project import feature_sql, windows
from engine.project.api_services import key_mapping
from engine.project.feature_sql import FeaturePlan, RecordError


class InvalidRecord(NodalError, ValueError):
    """A request's features are unusable; the message names the field, never echoes the input."""


_EMPTY: dict[str, Any] = {}


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
    plan: FeaturePlan
    enrichments: list[KeyedTable | windows.Windowed]  # Windowed: live windowed features
    kind = "prediction"
    _getters: list[Any] = field(default_factory=list, repr=False)

    @classmethod
    def load(cls, root: Path, spec: dict[str, Any]) -> PredictionEndpoint:
        """Load an endpoint of an extracted package; raises ``ParityError`` when its
        real-time features would differ from batch on the package's sample."""
        ep_dir = root / "endpoints" / spec["id"]
        model = SavedModel.load(ep_dir / "model")
        plan = endpoint_plan(ep_dir, spec, model)
        tables: dict[str, KeyedTable | windows.Windowed] = {
            enr["dataset"]: KeyedTable.load(
                enr["dataset"], ep_dir / "enrichments" / f"{enr['dataset']}.parquet", enr
            )
            for enr in spec.get("enrichments") or []
        }
        # Windowed features are computed live from the online state (use_state; until
        # then a store of this process's own, as for the design node's dev server).
        specs = window_specs(ep_dir)
        tables.update({d: windows.Windowed(s, windows.MemoryState()) for d, s in specs.items()})
        if (ep_dir / "parity.parquet").exists():
            members = {f.name: f.read_bytes() for f in ep_dir.glob("parity*.parquet")}
            sample = feature_parity.ParitySample.from_parquet(plan, members, specs)
            feature_parity.verify(plan, model, sample, f"endpoint {spec['id']}", specs)
        return cls(spec["id"], model, plan, [tables[j.dataset] for j in plan.joins])

    def use_state(self, state: windows.StateStore) -> None:
        """Compute windowed features from (and record events in) the shared ``state``."""
        for table in self.enrichments:
            if isinstance(table, windows.Windowed):
                table.state = state

    def __post_init__(self) -> None:
        meta = self.model.meta
        nan = float("nan")

        def raw(name: str) -> Any:
            return lambda feats: feats.get(name)

        def coded(name: str, codes: dict[Any, float]) -> Any:
            return lambda feats: codes.get(feats.get(name), nan)

        # One function per model input, in the model's order: the value or a category code.
        self._getters = [raw(name) for name in meta["numeric"]] + [
            coded(name, {v: float(i) for i, v in enumerate(meta["vocab"][name])})
            for name in meta["categorical"]
        ]

    @property
    def request_fields(self) -> dict[str, str]:
        """The request contract: field → type family (number, string, timestamp…)."""
        return self.plan.request_fields

    def features_of(self, record: Any) -> dict[str, Any]:
        """The model features of one raw record, as the project's feature recipe computes
        them (InvalidRecord / LookupFailed when it is refused)."""
        try:
            typed = feature_sql.typed_record(self.plan.request_fields, record)
        except RecordError as exc:
            raise InvalidRecord(str(exc)) from None
        rows = tuple(table.find(typed) or _EMPTY for table in self.enrichments)
        try:
            return self.plan.compute(typed, rows)
        except (ValueError, TypeError, ArithmeticError) as exc:
            raise InvalidRecord(f"the features cannot be computed: {exc}") from None

    def _try(self, record: Any) -> dict[str, Any] | InvalidRecord:
        try:
            return self.features_of(record)
        except InvalidRecord as exc:
            return exc

    def _features_many(self, records: list[Any]) -> list[dict[str, Any] | InvalidRecord]:
        """What :meth:`features_of` gives each record (its features or why it is refused),
        the windowed joins' state recorded for all records at once
        (:meth:`windows.Windowed.find_many`). The same as one by one: a record refused by a
        lookup before a windowed join records no event there, as it would alone."""
        n = len(records)
        typed: list[dict[str, Any] | None] = [None] * n
        out: list[dict[str, Any] | InvalidRecord] = [_EMPTY] * n
        for i, rec in enumerate(records):
            try:
                typed[i] = feature_sql.typed_record(self.plan.request_fields, rec)
            except RecordError as exc:
                out[i] = InvalidRecord(str(exc))
        found: list[list[dict[str, Any]]] = [[] for _ in range(n)]
        for table in self.enrichments:
            live = [i for i in range(n) if typed[i] is not None and out[i] is _EMPTY]
            if isinstance(table, windows.Windowed):
                answers = table.find_many([typed[i] for i in live])
                for i, row in zip(live, answers, strict=True):
                    found[i].append(row)
                continue
            for i in live:
                try:
                    found[i].append(table.find(typed[i]) or _EMPTY)
                except InvalidRecord as exc:
                    out[i] = exc
        for i in range(n):
            if typed[i] is None or out[i] is not _EMPTY:
                continue
            try:
                out[i] = self.plan.compute(typed[i], tuple(found[i]))
            except (ValueError, TypeError, ArithmeticError) as exc:
                out[i] = InvalidRecord(f"the features cannot be computed: {exc}")
        return out

    def encode(self, records: list[Any]) -> tuple[np.ndarray, list[InvalidRecord | None]]:
        """The model's input matrix for the valid ``records`` (in order) and, for each record,
        why it is refused (None: it has a row).

        One call for all records: typing against the contract, enrichment lookups, the
        compiled feature recipe, the category codes ``SavedModel.encode`` gives, one numpy
        conversion. A single ``predict`` is this with one record, so every endpoint encodes
        alike.
        """
        getters = self._getters
        rows: list[list[Any]] = []
        refused: list[InvalidRecord | None] = []
        many = len(records) > 1 and any(isinstance(t, windows.Windowed) for t in self.enrichments)
        for answer in self._features_many(records) if many else map(self._try, records):
            if isinstance(answer, InvalidRecord):
                refused.append(answer)
                continue
            refused.append(None)
            rows.append([get(answer) for get in getters])
        # None → NaN and bool → 0/1: numpy's float conversion does both.
        matrix = np.array(rows, dtype="float64") if rows else np.empty((0, len(getters)))
        return matrix, refused

    def from_csv(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """CSV cells (text) typed as the contract says: numbers, booleans (true/false/1/0)."""
        return [
            {k: _csv_value(self.plan.request_fields.get(k), v) for k, v in r.items()}
            for r in records
        ]

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


def csv_records(text: str, limit: int | None = None) -> list[dict[str, Any]]:
    """Records of an MLflow ``text/csv`` body: a header row, then one row per record.

    CSV has no types: cells stay text (an empty cell is missing) until the endpoint types
    them by its contract (:meth:`PredictionEndpoint.from_csv`). Reading stops at the
    ``limit``-th record plus one (:class:`TooManyRecords`), before building the rest.
    """
    rows = csv.reader(io.StringIO(text))
    try:
        header = [h.strip() for h in next(rows, [])]
        if not header:
            raise InvalidRecord("a text/csv body needs a header row")
        out = []
        for i, row in enumerate(rows, start=1):
            if not row:
                continue
            if len(row) != len(header):
                raise InvalidRecord(f"CSV row {i} has {len(row)} cells for {len(header)} columns")
            if limit is not None and len(out) == limit:
                raise TooManyRecords(limit)
            out.append({h: (v.strip() or None) for h, v in zip(header, row, strict=True)})
    except csv.Error as exc:  # a NUL byte, a cell over csv.field_size_limit()
        raise InvalidRecord(f"the CSV body cannot be read ({exc})") from None
    return out


def _csv_value(family: str | None, text: Any) -> Any:
    if text is None or family not in (
        feature_sql.NUMBER,
        feature_sql.INTEGER,
        feature_sql.BOOLEAN,
        feature_sql.NUMERIC,
    ):
        return text
    if family == feature_sql.BOOLEAN:
        low = text.lower()
        return True if low in _CSV_TRUE else False if low in _CSV_FALSE else text
    try:
        return int(text) if family == feature_sql.INTEGER else float(text)
    except ValueError:
        return text  # typing names the field


class TooManyRecords(NodalError):
    """A request holds more records than a request may (checked before building them)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"at most {limit} records per request")


CSV_TEXT = object()  # the key under which a text/csv body reaches invocation_records


def invocation_records(body: dict[Any, Any], limit: int | None = None) -> list[Any]:
    """Records of an MLflow ``/invocations`` body: dataframe_split, dataframe_records,
    inputs, instances, or CSV text; :class:`TooManyRecords` past ``limit``, counted before
    any record is built."""

    def count(n: int) -> None:
        if limit is not None and n > limit:
            raise TooManyRecords(limit)

    if CSV_TEXT in body:
        return csv_records(body[CSV_TEXT], limit)
    if "dataframe_split" in body:
        split = body["dataframe_split"]
        if not isinstance(split, dict) or not isinstance(split.get("columns"), list):
            raise InvalidRecord("'dataframe_split' needs 'columns' and 'data'")
        columns, data = split["columns"], split.get("data")
        if not all(isinstance(c, str) for c in columns):
            raise InvalidRecord("'dataframe_split.columns' must be column names (strings)")
        if not isinstance(data, list):
            raise InvalidRecord("'dataframe_split.data' must be rows as long as 'columns'")
        count(len(data))
        if not all(isinstance(r, list) and len(r) == len(columns) for r in data):
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
                count(n)
                return [{c: v[i] for c, v in value.items()} for i in range(n)]
            if isinstance(value, list):
                count(len(value))
                return value
            raise InvalidRecord(f"'{key}' must be a list of records or a dict of columns")
    raise InvalidRecord("expected one of dataframe_split, dataframe_records, inputs, instances")


def _us(seconds: float) -> int:
    return int(seconds * 1_000_000)


Endpoint = PredictionEndpoint | LookupEndpoint


def endpoint_plan(ep_dir: Path, spec: dict[str, Any], model: SavedModel) -> FeaturePlan:
    """The compiled features of a packaged endpoint: its feature recipe when it has one
    (``features.sql`` + ``request.json``), else the model's inputs sent as they are."""
    numeric, categorical = list(model.meta["numeric"]), list(model.meta["categorical"])
    if not (ep_dir / FEATURES_SQL).exists():
        return feature_sql.model_inputs_plan(numeric, categorical)
    request = json.loads((ep_dir / REQUEST_SCHEMA).read_text())
    specs = window_specs(ep_dir)
    plan = feature_sql.plan(
        (ep_dir / FEATURES_SQL).read_text(),
        request["schema"],
        numeric + categorical,
        {
            e["dataset"]: key_mapping(e.get("key") or e.get("keys"))
            for e in spec.get("enrichments") or []
        }
        | windows.join_keys(specs),
        where=f"endpoint {spec['id']}",
    )
    joined = {j.dataset for j in plan.joins}
    return windows.with_fields(
        plan, [s for d, s in specs.items() if d in joined], request["schema"]
    )


def window_specs(ep_dir: Path) -> dict[str, windows.WindowSpec]:
    """The windows declarations a packaged endpoint carries, by output dataset."""
    return {
        p.stem: windows.WindowSpec.from_json(p.read_text())
        for p in sorted((ep_dir / WINDOWS_DIR).glob("*.json"))
    }


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
