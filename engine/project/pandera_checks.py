"""Column-level data checks as pandera schemas, validated inside DuckDB through Ibis.

Each check of ``checks.yaml`` whose kind pandera knows becomes a small
:class:`pandera.ibis.DataFrameSchema` (:func:`schema_for`) and is validated with
``pandera.ibis`` over an Ibis table on the day's Parquet partition (an in-memory DuckDB
view): the work stays in DuckDB, only the verdict, the count of failing rows and up to
:data:`MAX_EXAMPLES` failing values come back. Kinds:

* ``dtype``: ``column`` has the DuckDB type ``dtype``;
* ``not_null``: ``column`` has no missing value;
* ``unique``: no value of ``column`` occurs twice;
* ``in_range``: every value of ``column`` lies within ``min``..``max`` (inclusive, either
  may be left out);
* ``value_in_set``: every non-missing value of ``column``, as text, is one of ``values``;
* ``matches``: every non-missing value of ``column`` matches the regular expression
  ``pattern`` from its start (pandera's ``str_matches``);
* ``row_condition``: the SQL boolean ``expression`` holds on every row (a NULL result
  passes, like a SQL ``CHECK``); the expression is parsed by sqlglot and refused unless it
  is a pure row-level expression over the dataset's columns (:func:`row_expression`);
* ``schema_equals``: no new, missing or retyped column against ``datasets.yaml``.

A project's schema can leave as pandera's own YAML (:func:`export_yaml`, the pandas
schema pandera serialises) and come back as check entries (:func:`import_yaml`).
"""

from __future__ import annotations

import contextlib
import json
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import ibis
import pandera.ibis as pa
import sqlglot
from ibis.backends.sql.datatypes import DuckDBType
from pandera.constants import CHECK_OUTPUT_KEY
from pandera.engines.ibis_engine import Engine as IbisEngine
from pandera.errors import SchemaError, SchemaErrorReason, SchemaErrors
from sqlglot import exp

from engine.core.errors import NodalError
from engine.storage import datasets as ds

MAX_EXAMPLES = 5
KINDS = (
    "dtype",
    "not_null",
    "unique",
    "in_range",
    "value_in_set",
    "matches",
    "row_condition",
    "schema_equals",
)
NEEDS_COLUMN = {"dtype", "not_null", "unique", "in_range", "value_in_set", "matches"}
_RULE = "__nodal_rule"  # the computed column of a row_condition


class PanderaCheckError(NodalError):
    """A pandera check is declared wrongly; the message says which and why."""


@dataclass(frozen=True)
class Verdict:
    """What pandera found, in the user's words."""

    passed: bool
    value: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)


# --- row conditions: a SQL boolean over one row, nothing else ---------------------------------

_ALLOWED_NODES: tuple[type[exp.Expression], ...] = (
    exp.Column,
    exp.Identifier,
    exp.Literal,
    exp.Boolean,
    exp.Null,
    exp.Paren,
    exp.And,
    exp.Or,
    exp.Not,
    exp.Xor,
    exp.EQ,
    exp.NEQ,
    exp.GT,
    exp.GTE,
    exp.LT,
    exp.LTE,
    exp.NullSafeEQ,
    exp.NullSafeNEQ,
    exp.Is,
    exp.In,
    exp.Between,
    exp.Like,
    exp.ILike,
    exp.Add,
    exp.Sub,
    exp.Mul,
    exp.Div,
    exp.IntDiv,
    exp.Mod,
    exp.Neg,
    exp.DPipe,
    exp.Case,
    exp.If,
    exp.Cast,
    exp.TryCast,
    exp.DataType,
    exp.DataTypeParam,
    exp.Interval,
    exp.Var,
    exp.Tuple,
)
# Scalar functions a condition may call (sqlglot's names, lower case).
_ALLOWED_FUNCTIONS = frozenset(
    {
        "abs",
        "ceil",
        "floor",
        "round",
        "sign",
        "sqrt",
        "ln",
        "log",
        "exp",
        "pow",
        "power",
        "least",
        "greatest",
        "coalesce",
        "nullif",
        "lower",
        "upper",
        "length",
        "trim",
        "ltrim",
        "rtrim",
        "substring",
        "left",
        "right",
        "concat",
        "replace",
        "strpos",
        "starts_with",
        "startswith",
        "ends_with",
        "endswith",
        "contains",
        "regexplike",
        "regexp_matches",
        "regexp_full_match",
        "date_diff",
        "datediff",
        "date_trunc",
        "datetrunc",
        "timestamptrunc",
        "extract",
        "year",
        "month",
        "day",
        "dayofweek",
        "hour",
        "minute",
        "strftime",
        "timetostr",
        "isnan",
        "isinf",
        "if",
    }
)


def _function_name(node: exp.Expression) -> str:
    if isinstance(node, exp.Anonymous):
        return str(node.name).lower()
    return node.sql_name().lower() if hasattr(node, "sql_name") else type(node).__name__.lower()


def row_expression(text: object, columns: list[str] | None = None) -> tuple[str, list[str]]:
    """``text`` as DuckDB SQL regenerated from its parse tree, and the columns it reads.

    Refused (:class:`PanderaCheckError`, saying why): not one expression, a subquery, an
    aggregate or window, ``*``, a qualified column, a function outside the allowed scalar
    ones, a column the dataset does not have (when ``columns`` is given).
    """
    if not isinstance(text, str) or not text.strip():
        raise PanderaCheckError(
            "row_condition: write a SQL condition, e.g. low <= high AND qty > 0"
        )
    try:
        parsed = sqlglot.parse(text, read="duckdb")
    except sqlglot.errors.SqlglotError as exc:
        raise PanderaCheckError(
            f"row_condition: cannot read {text!r}: {str(exc).splitlines()[0]}"
        ) from None
    if len(parsed) != 1 or parsed[0] is None:
        raise PanderaCheckError(f"row_condition: {text!r} must be one expression")
    tree = parsed[0]
    if isinstance(tree, exp.Query | exp.Command) or not isinstance(tree, exp.Condition):
        raise PanderaCheckError(
            f"row_condition: {text!r} is not a condition over a row (e.g. low <= high AND qty > 0)"
        )
    used: list[str] = []
    for node in tree.walk():
        if isinstance(node, exp.Star):
            raise PanderaCheckError("row_condition: '*' is not allowed")
        if isinstance(node, exp.AggFunc | exp.Window):
            raise PanderaCheckError(
                f"row_condition: {node.sql('duckdb')!r} is an aggregate or window; "
                "a condition reads one row"
            )
        if isinstance(node, exp.Query | exp.Subquery | exp.Placeholder | exp.Parameter):
            raise PanderaCheckError("row_condition: subqueries and parameters are not allowed")
        if isinstance(node, exp.Column):
            if node.table:
                raise PanderaCheckError(f"row_condition: write {node.name!r} without a table name")
            used.append(node.name)
            continue
        if isinstance(node, _ALLOWED_NODES):
            continue
        if isinstance(node, exp.Func):
            name = _function_name(node)
            if name not in _ALLOWED_FUNCTIONS:
                raise PanderaCheckError(
                    f"row_condition: function {name!r} is not allowed (allowed: "
                    f"{', '.join(sorted(_ALLOWED_FUNCTIONS))})"
                )
            continue
        raise PanderaCheckError(
            f"row_condition: {node.sql('duckdb')!r} ({type(node).__name__}) is not "
            "allowed in a condition"
        )
    if not used:
        raise PanderaCheckError(f"row_condition: {text!r} reads no column")
    used = list(dict.fromkeys(used))
    if columns is not None:
        unknown = [c for c in used if c not in columns]
        if unknown:
            raise PanderaCheckError(
                f"row_condition: no column {', '.join(map(repr, unknown))} "
                f"(the dataset has {', '.join(columns)})"
            )
    return tree.sql(dialect="duckdb"), used


def _quote(name: str) -> str:
    return '"' + str(name).replace('"', '""') + '"'


# --- building schemas ------------------------------------------------------------------------


def duckdb_dtype(text: object) -> Any:
    """The Ibis data type of a DuckDB type name (``VARCHAR``, ``DECIMAL(18,3)``…)."""
    if not isinstance(text, str) or not text.strip():
        raise PanderaCheckError("give a DuckDB type, e.g. VARCHAR, DOUBLE, TIMESTAMP")
    try:
        parsed = DuckDBType.from_string(text.strip())
        if parsed.is_unknown():
            raise ValueError(text)
        IbisEngine.dtype(parsed)  # a type pandera can check
    except Exception:  # noqa: BLE001 - sqlglot/ibis/pandera raise several kinds for a bad name
        raise PanderaCheckError(f"{text!r} is not a DuckDB type pandera can check") from None
    return parsed


def _schema_dtype(text: str) -> Any | None:
    """The type of a declared column for ``schema_equals``, or None when pandera cannot
    represent it (a nested type…): that column's type is then compared as DuckDB names it,
    as before."""
    try:
        return duckdb_dtype(text)
    except PanderaCheckError:
        return None


def _number(spec: dict[str, Any], key: str) -> float | int | None:
    value = spec.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PanderaCheckError(f"check {spec.get('name')}: {key} must be a number")
    return value


def row_predicate(spec: dict[str, Any]) -> Any | None:
    """The check's row-level rule: a function of an Ibis table giving one boolean per row
    (NULL: the row passes), or None for checks that are not row by row."""
    kind, column = spec.get("type"), spec.get("column")
    if kind == "in_range":
        lo, hi = _number(spec, "min"), _number(spec, "max")
        if lo is None and hi is None:
            raise PanderaCheckError(f"check {spec.get('name')}: give min, max or both")
        rule = _range(lo, hi)
        return lambda t: rule(t[column])
    if kind == "value_in_set":
        # As text, so that a YAML list of strings works on any column type (as before).
        allowed = [str(v) for v in spec.get("values") or []]
        return lambda t: t[column].cast("string").isin(allowed)
    if kind == "matches":
        pattern = spec.get("pattern")
        if not isinstance(pattern, str) or not pattern:
            raise PanderaCheckError(
                f"check {spec.get('name')}: give a pattern (a regular expression)"
            )
        try:
            re.compile(pattern)
        except re.error as exc:
            raise PanderaCheckError(
                f"check {spec.get('name')}: pattern {pattern!r}: {exc}"
            ) from None
        anchored = pattern if pattern.startswith("^") else f"^{pattern}"  # as str_matches
        return lambda t: t[column].re_search(anchored)
    if kind == "row_condition":
        return lambda t: t[_RULE]
    return None


def _row_check(name: str, rule: Any, label: str) -> pa.Check:
    """A pandera check that every row passes ``rule``, decided inside DuckDB in one pass.

    pandera.ibis's built-in checks (``Check.ge``, ``Check.str_matches``…) return a table
    that pandera joins back to the data (``POSITIONAL JOIN``, the column read twice), and on
    failure pandera brings the whole boolean mask into pandas; a check that answers one
    boolean reads the column once and brings nothing back (bench/bench_checks.py). The
    failing rows and a few values are then counted from the same rule (:func:`_validate`).
    A missing value passes (``ignore_na``, as pandera's built-ins).
    """
    return pa.Check(lambda data: rule(data.table).fill_null(True).all(), name=name, error=label)


def _range(lo: float | None, hi: float | None) -> Any:
    if lo is not None and hi is not None:
        return lambda c: c.between(lo, hi)
    if lo is not None:
        return lambda c: c >= lo
    return lambda c: c <= hi


def _range_label(lo: float | None, hi: float | None) -> str:
    if lo is not None and hi is not None:
        return f"in_range({lo}, {hi})"
    if lo is not None:
        return f"greater_than_or_equal_to({lo})"
    return f"less_than_or_equal_to({hi})"


def schema_for(spec: dict[str, Any], declared: dict[str, str] | None = None) -> pa.DataFrameSchema:
    """The pandera schema of one check of ``checks.yaml`` (``declared``: the dataset's schema
    in ``datasets.yaml``, for ``schema_equals``)."""
    kind, name = spec.get("type"), str(spec.get("name"))
    column = spec.get("column")
    if kind == "dtype":
        return pa.DataFrameSchema(
            {column: pa.Column(duckdb_dtype(spec.get("dtype")), nullable=True)}, name=name
        )
    if kind == "not_null":
        return pa.DataFrameSchema({column: pa.Column(nullable=False)}, name=name)
    if kind == "unique":
        # pandera.ibis 0.35 ignores Column(unique=True), and its table-level ``unique`` is a
        # window over every row (2x slower): a check that non-missing values are distinct.
        check = pa.Check(
            lambda data: data.table[data.key].count() == data.table[data.key].nunique(),
            name=name,
            error="unique",
        )
        return pa.DataFrameSchema({column: pa.Column(checks=[check], nullable=True)}, name=name)
    rule = row_predicate(spec)
    if rule is not None and kind == "row_condition":
        check = _row_check(name, rule, str(spec.get("expression")))
        return pa.DataFrameSchema(checks=[check], name=name)
    if rule is not None:
        label = {
            "in_range": _range_label(spec.get("min"), spec.get("max")),
            "value_in_set": f"isin({[str(v) for v in spec.get('values') or []]})",
            "matches": f"str_matches({spec.get('pattern')!r})",
        }[str(kind)]
        check = _row_check(name, rule, label)
        return pa.DataFrameSchema({column: pa.Column(checks=[check], nullable=True)}, name=name)
    if kind == "schema_equals":
        if not declared:
            raise PanderaCheckError(f"check {name}: the dataset declares no schema")
        return pa.DataFrameSchema(
            {c: pa.Column(_schema_dtype(t), nullable=True) for c, t in declared.items()},
            strict=True,
            name=name,
        )
    raise PanderaCheckError(f"check {name}: pandera checks are {', '.join(KINDS)}, not {kind!r}")


# --- running them ----------------------------------------------------------------------------


class Validator:
    """Validates checks over one partition (or a whole unpartitioned dataset) through one
    in-memory DuckDB connection. The partition column is left out: checks are on the rows'
    own columns."""

    def __init__(self, con: Any, partition_column: str | None) -> None:
        self.con = con
        self.backend = ibis.duckdb.from_connection(con)
        t = self.backend.table("d")
        if partition_column and partition_column in t.columns:
            t = t.drop(partition_column)
        self.table = t
        self.columns = list(t.columns)
        self._duck: dict[str, str] | None = None

    @property
    def duck_types(self) -> dict[str, str]:
        if self._duck is None:
            rows = self.con.execute("DESCRIBE SELECT * FROM d").fetchall()
            self._duck = {r[0]: r[1] for r in rows if r[0] in self.columns}
        return self._duck

    def validate(self, spec: dict[str, Any], declared: dict[str, str] | None = None) -> Verdict:
        return _validate(self, spec, declared)


@contextlib.contextmanager
def validator(ref: ds.DatasetRef, partition: str | None) -> Iterator[Validator]:
    parts = [partition] if partition else None
    with ds.session({"d": (ref, parts)}) as con:
        yield Validator(con, ref.partitioned_by)


def _shown(value: Any) -> str:
    if isinstance(value, dict):
        value = {k: v for k, v in value.items() if k != _RULE}
        value = next(iter(value.values())) if len(value) == 1 else value
    if isinstance(value, dict):
        return ", ".join(f"{k}={_shown(v)}" for k, v in value.items())
    text = "null" if value is None else str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _examples(error: SchemaError) -> list[str]:
    cases = error.failure_cases
    if cases is None or isinstance(cases, str | int | float):
        return []
    if hasattr(cases, "execute"):  # an Ibis table (uniqueness)
        cases = cases.limit(50).execute()
    if "failure_case" in getattr(cases, "columns", []):
        values = list(cases["failure_case"])
    else:
        values = cases.to_dict("records")
    shown = list(dict.fromkeys(_shown(v) for v in values))
    return shown[:MAX_EXAMPLES]


def _failing_rows(error: SchemaError) -> int | None:
    """Rows failing ``error``, counted inside DuckDB from pandera's own check output."""
    out = error.check_output
    if error.reason_code == SchemaErrorReason.DUPLICATES:
        return int(error.failure_cases.count().execute())
    if out is None or not hasattr(out, "execute"):
        return None
    if isinstance(out, ibis.expr.types.Table):
        out = out[CHECK_OUTPUT_KEY]
    if error.reason_code == SchemaErrorReason.SERIES_CONTAINS_NULLS:
        return int(out.sum().execute() or 0)  # the output says "is missing"
    if not hasattr(out, "sum"):
        return None
    return int((~out.fill_null(True)).sum().execute() or 0)


def _describe(spec: dict[str, Any], errors: list[SchemaError], duck: dict[str, str]) -> str:
    kind, column = spec.get("type"), spec.get("column")
    first = errors[0]
    code = first.reason_code
    if code == SchemaErrorReason.COLUMN_NOT_IN_DATAFRAME:
        return f"no column {column!r} in the data"
    if kind == "dtype":
        return f"{column} is {duck.get(column, first.failure_cases)}, expected {spec.get('dtype')}"
    if kind == "not_null":
        return f"{column} has missing values"
    if kind == "unique":
        return f"{column} has duplicate values"
    if kind == "in_range":
        lo, hi = spec.get("min"), spec.get("max")
        bound = (
            f"{lo}..{hi}"
            if lo is not None and hi is not None
            else (f">= {lo}" if lo is not None else f"<= {hi}")
        )
        return f"{column} outside {bound}"
    if kind == "value_in_set":
        return f"{column} outside the set"
    if kind == "matches":
        return f"{column} not matching {spec.get('pattern')!r}"
    if kind == "row_condition":
        return f"{spec.get('expression')} does not hold"
    return first.args[0].splitlines()[0] if first.args else str(code)


def _schema_problems(
    declared: dict[str, str],
    errors: list[SchemaError],
    duck: dict[str, str],
    unchecked: list[str],
) -> str:
    """``schema_equals``'s message as before: new, missing, retyped columns."""
    cols = list(duck)
    new = [c for c in cols if c not in declared]
    missing = [c for c in declared if c not in cols]
    retyped = []
    for e in errors:
        if e.reason_code == SchemaErrorReason.WRONG_DATATYPE:
            c = getattr(e.schema, "name", None)
            retyped.append(f"{c} {declared.get(c)}→{duck.get(c, e.failure_cases)}")
    retyped += [f"{c} {declared[c]}→{duck[c]}" for c in unchecked]
    parts = [
        f"{label}: {', '.join(items)}"
        for label, items in (
            ("new columns", new),
            ("missing columns", missing),
            ("retyped", retyped),
        )
        if items
    ]
    return "; ".join(parts)


def validate(
    ref: ds.DatasetRef,
    partition: str | None,
    spec: dict[str, Any],
    declared: dict[str, str] | None = None,
) -> Verdict:
    """Validate one check with pandera over the partition, inside DuckDB."""
    with validator(ref, partition) as v:
        return v.validate(spec, declared)


def _validate(v: Validator, spec: dict[str, Any], declared: dict[str, str] | None) -> Verdict:
    schema = schema_for(spec, declared)
    kind, name, column = spec.get("type"), spec.get("name"), spec.get("column")
    columns = v.columns
    target = v.table
    if kind == "row_condition":
        sql, used = row_expression(spec.get("expression"), columns)
        v.con.execute(
            f"CREATE OR REPLACE TEMP VIEW nodal_rule AS SELECT {', '.join(map(_quote, used))}, "
            f"({sql}) AS {_quote(_RULE)} FROM d"
        )
        target = v.backend.table("nodal_rule")
    elif kind in NEEDS_COLUMN and column in columns:
        target = v.table.select(column)
    # schema_equals collects every problem (no data read); a data check stops at its first
    # error, so pandera does not count failure cases a second time.
    lazy = kind == "schema_equals"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            schema.validate(target, lazy=lazy)
    except SchemaErrors as exc:
        errors = list(exc.schema_errors)
    except SchemaError as exc:
        errors = [exc]
    else:
        errors = []
    if not errors and kind != "schema_equals":
        return Verdict(True, "0", _passed_message(spec, columns), {"kind": kind})
    if kind == "schema_equals":
        unchecked = [  # declared types pandera cannot represent: compared by name
            c
            for c, t in (declared or {}).items()
            if _schema_dtype(t) is None and c in v.duck_types and v.duck_types[c] != t
        ]
        if not errors and not unchecked:
            return Verdict(True, "0", _passed_message(spec, columns), {"kind": kind})
        message = _schema_problems(declared or {}, errors, v.duck_types, unchecked)
        return Verdict(
            False, str(len(columns)), message, {"kind": kind, "failed": True, "problems": message}
        )
    error = errors[0]
    rule = row_predicate(spec)
    data_error = error.reason_code != SchemaErrorReason.COLUMN_NOT_IN_DATAFRAME
    if kind == "unique" and data_error:
        failing, examples = _duplicates(v.table, column)
    elif rule is not None and data_error:
        failing, examples = _failing(target, rule, column)
    else:
        failing = _failing_rows(error)
        examples = [e for e in _examples(error) if kind != "not_null"]
    what = _describe(spec, errors, v.duck_types)
    rows = "" if failing is None else f"{failing:,} row{'' if failing == 1 else 's'}: "
    message = f"{rows}{what}" + (f", e.g. {', '.join(examples)}" if examples else "")
    details = {
        "kind": kind,
        "check": name,
        "column": column,
        "failing_rows": failing,
        "examples": examples,
        "pandera": str(error.check) if error.check is not None else None,
        "failed": True,
    }
    return Verdict(False, "" if failing is None else str(failing), message, details)


def _failing(target: Any, rule: Any, column: str | None) -> tuple[int, list[str]]:
    """(rows failing ``rule``, up to 5 distinct failing values), inside DuckDB."""
    bad = target.filter(~rule(target).fill_null(True))
    if column:  # one pass: the count and the first distinct values, as text
        row = (
            bad.aggregate(
                n=ibis._.count(),
                ex=bad[column].cast("string").collect(distinct=True)[: MAX_EXAMPLES * 4],
            )
            .execute()
            .iloc[0]
        )
        values = sorted(_shown(x) for x in list(row["ex"] if row["ex"] is not None else []))
        return int(row["n"]), values[:MAX_EXAMPLES]
    failing = int(bad.count().execute())
    shown = bad.drop(_RULE) if _RULE in bad.columns else bad
    rows = shown.limit(50).execute().to_dict("records")
    values = [_shown(r[column] if column else r) for r in rows]
    return failing, list(dict.fromkeys(values))[:MAX_EXAMPLES]


def _duplicates(t: Any, column: str) -> tuple[int, list[str]]:
    """(rows whose value occurs more than once, up to 5 such values), inside DuckDB."""
    groups = (
        t.filter(t[column].notnull())
        .group_by(column)
        .aggregate(n=ibis._.count())
        .filter(ibis._.n > 1)
    )
    top = groups.order_by([ibis.desc("n"), column]).limit(MAX_EXAMPLES).execute()
    rows = int(groups.n.sum().execute() or 0)
    return rows, [_shown(x) for x in top[column]]


def _passed_message(spec: dict[str, Any], columns: list[str]) -> str:
    kind, column = spec.get("type"), spec.get("column")
    return {
        "dtype": f"{column} is {spec.get('dtype')}",
        "not_null": f"no missing {column}",
        "unique": f"every {column} is unique",
        "in_range": f"every {column} within bounds",
        "value_in_set": f"every {column} is one of {len(spec.get('values') or [])} values",
        "matches": f"every {column} matches {spec.get('pattern')!r}",
        "row_condition": f"{spec.get('expression')} holds on every row",
        "schema_equals": f"{len(columns)} columns as declared",
    }.get(str(kind), "passed")


def validate_spec(spec: dict[str, Any], columns: dict[str, str], what: str) -> None:
    """Refuse a pandera check that cannot work (:class:`PanderaCheckError`)."""
    kind = spec.get("type")
    try:
        if kind == "row_condition":
            row_expression(spec.get("expression"), list(columns) or None)
            return
        if kind == "dtype":
            duckdb_dtype(spec.get("dtype"))
        if kind == "value_in_set" and not spec.get("values"):
            raise PanderaCheckError("list the allowed values")
        schema_for(spec, None if kind != "schema_equals" else {"x": "VARCHAR"})
    except PanderaCheckError as exc:
        reason = str(exc).removeprefix(f"check {spec.get('name')}: ")
        raise PanderaCheckError(f"{what}: {reason}") from None


# --- pandera's own YAML ------------------------------------------------------------------------

_PANDAS_DTYPES = {
    "string": "str",
    "boolean": "bool",
    "int8": "int8",
    "int16": "int16",
    "int32": "int32",
    "int64": "int64",
    "float32": "float32",
    "float64": "float64",
    "date": "datetime64[ns]",
}


def _pandas_dtype(duck: str) -> str | None:
    t = duckdb_dtype(duck)
    if t.is_timestamp():
        return "datetime64[ns, UTC]" if t.timezone else "datetime64[ns]"
    return _PANDAS_DTYPES.get(t.name.lower() if hasattr(t, "name") else str(t))


def export_yaml(dataset: str, declared: dict[str, str], specs: list[dict[str, Any]]) -> str:
    """The dataset's declared schema and its column checks as pandera's own YAML
    (``DataFrameSchema.to_yaml()``; pandera serialises its pandas schema).

    Each column's DuckDB type is kept in the column's ``description`` (``duckdb: TYPE``) so
    that an import gives the exact type back; checks pandera cannot serialise
    (``row_condition``, learned ones) are listed in the schema's description.
    """
    import pandera.pandas as pp

    columns: dict[str, dict[str, Any]] = {
        c: {"dtype": _pandas_dtype(t), "duck": t, "nullable": True, "unique": False, "checks": []}
        for c, t in declared.items()
    }
    left_out = []
    for spec in specs:
        kind, column, name = spec.get("type"), spec.get("column"), spec.get("name")
        if kind in NEEDS_COLUMN:
            col = columns.setdefault(
                column,
                {"dtype": None, "duck": None, "nullable": True, "unique": False, "checks": []},
            )
            if kind == "dtype":
                col["duck"], col["dtype"] = spec["dtype"], _pandas_dtype(spec["dtype"])
            elif kind == "not_null":
                col["nullable"] = False
            elif kind == "unique":
                col["unique"] = True
            elif kind == "in_range":
                lo, hi = spec.get("min"), spec.get("max")
                if lo is not None and hi is not None:
                    col["checks"].append(pp.Check.in_range(lo, hi, name=name))
                elif lo is not None:
                    col["checks"].append(pp.Check.ge(lo, name=name))
                else:
                    col["checks"].append(pp.Check.le(hi, name=name))
            elif kind == "value_in_set":
                col["checks"].append(pp.Check.isin(list(spec["values"]), name=name))
            elif kind == "matches":
                col["checks"].append(pp.Check.str_matches(spec["pattern"], name=name))
        elif kind != "schema_equals":
            left_out.append(f"{name} ({kind})")
    schema = pp.DataFrameSchema(
        {
            c: pp.Column(
                v["dtype"],
                checks=v["checks"],
                nullable=v["nullable"],
                unique=v["unique"],
                description=f"duckdb: {v['duck']}" if v["duck"] else None,
                title=c,
            )
            for c, v in columns.items()
        },
        name=dataset,
        description=(
            "nodal checks not in this schema: " + ", ".join(left_out) if left_out else None
        ),
        coerce=False,
    )
    return schema.to_yaml()


def _bounds(v: dict[str, Any]) -> dict[str, Any]:
    if v.get("include_min") is False or v.get("include_max") is False:
        raise PanderaCheckError("in_range with an excluded bound has no nodal equivalent")
    return {"min": v["min_value"], "max": v["max_value"]}


_CHECK_KINDS = {
    "greater_than_or_equal_to": ("in_range", lambda v: {"min": v["min_value"]}),
    "less_than_or_equal_to": ("in_range", lambda v: {"max": v["max_value"]}),
    "in_range": ("in_range", _bounds),
    "isin": ("value_in_set", lambda v: {"values": [str(x) for x in v["allowed_values"]]}),
    "str_matches": ("matches", lambda v: {"pattern": v["pattern"]}),
}
_COLUMN_KEYS = {
    "title",
    "description",
    "dtype",
    "nullable",
    "unique",
    "coerce",
    "required",
    "regex",
    "checks",
    "metadata",
    "drop_invalid_rows",
    "default",
    "parsers",
    "report_duplicates",
}


def import_yaml(text: str, severity: str = "error") -> tuple[dict[str, str], list[dict[str, Any]]]:
    """(declared schema, check entries) from a pandera YAML schema (as pandera writes it).

    Each column with a type gives a ``dtype`` check (its DuckDB type from the description
    nodal writes, else the nearest DuckDB type of its pandas type); ``nullable: false`` a
    ``not_null``; ``unique: true`` a ``unique``; its checks ``in_range``, ``value_in_set``,
    ``matches``. A check nodal cannot run inside DuckDB is refused, naming it.
    """
    from pandera.io.pandas_io import from_yaml

    try:
        schema = from_yaml(text)
    except Exception as exc:  # noqa: BLE001 - pandera raises many kinds for a bad file
        raise PanderaCheckError(f"not a pandera YAML schema: {str(exc).splitlines()[0]}") from None
    raw = _yaml_columns(text)
    declared: dict[str, str] = {}
    specs: list[dict[str, Any]] = []
    for name, column in schema.columns.items():
        base = re.sub(r"[^A-Za-z0-9_]+", "_", str(name)).strip("_") or "column"
        duck = _duck_of(column)
        if duck:
            declared[name] = duck
            specs.append({"name": f"{base}_type", "type": "dtype", "column": name, "dtype": duck})
        if not column.nullable:
            specs.append({"name": f"{base}_not_null", "type": "not_null", "column": name})
        if column.unique:
            specs.append({"name": f"{base}_unique", "type": "unique", "column": name})
        for i, (stat, value) in enumerate((raw.get(name) or {}).items()):
            if stat not in _CHECK_KINDS:
                raise PanderaCheckError(
                    f"column {name}: pandera check {stat!r} has no nodal equivalent "
                    f"(known: {', '.join(_CHECK_KINDS)})"
                )
            kind, args = _CHECK_KINDS[stat]
            options = value if isinstance(value, dict) else {}
            check_name = options.get("name")
            try:
                found = args(options)
            except (KeyError, TypeError):
                raise PanderaCheckError(
                    f"column {name}: pandera check {stat!r} is missing its options"
                ) from None
            specs.append(
                {
                    "name": check_name or f"{base}_{kind}{'' if i == 0 else f'_{i}'}",
                    "type": kind,
                    "column": name,
                    **found,
                }
            )
    for spec in specs:
        spec["severity"] = severity
    return declared, specs


def _yaml_columns(text: str) -> dict[str, dict[str, Any]]:
    """Each column's checks as pandera writes them ({check name: its options}): keys of the
    column beside its own settings, or under ``checks:``."""
    import yaml

    data = yaml.safe_load(text) or {}
    out: dict[str, dict[str, Any]] = {}
    for name, col in (data.get("columns") or {}).items():
        col = col or {}
        found = {k: v for k, v in col.items() if k not in _COLUMN_KEYS}
        listed = col.get("checks") or {}
        if isinstance(listed, list):
            listed = {c.get("check") or c.get("stat"): c for c in listed if isinstance(c, dict)}
        found.update(listed if isinstance(listed, dict) else {})
        out[name] = found
    return out


def _duck_of(column: Any) -> str | None:
    described = str(column.description or "")
    if described.startswith("duckdb: "):
        return described[len("duckdb: ") :]
    if column.dtype is None:
        return None
    text = str(column.dtype)
    mapping = {
        "str": "VARCHAR",
        "string": "VARCHAR",
        "object": "VARCHAR",
        "bool": "BOOLEAN",
        "int8": "TINYINT",
        "int16": "SMALLINT",
        "int32": "INTEGER",
        "int64": "BIGINT",
        "float32": "FLOAT",
        "float64": "DOUBLE",
        "datetime64[ns]": "TIMESTAMP",
    }
    if text in mapping:
        return mapping[text]
    if text.startswith("datetime64[ns, "):
        return "TIMESTAMP WITH TIME ZONE"
    raise PanderaCheckError(f"column {column.name}: no DuckDB type for pandera dtype {text!r}")


def details_json(details: dict[str, Any] | None) -> str | None:
    return None if not details else json.dumps(details, default=str)
