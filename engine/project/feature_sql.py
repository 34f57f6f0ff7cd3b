"""One feature definition for batch and real time: a project's SQL feature recipe, compiled
to run on one record.

A prediction endpoint names the recipe that computes its model's features
(``feature_recipe:``). Its SQL must be one ``SELECT`` over one dataset, the **request**
(the raw record a client sends), with ``LEFT JOIN``s of enrichment datasets on equalities
of their columns with request columns, and row-level expressions only (no aggregate,
window, subquery, ``WHERE`` or ``GROUP BY``: those belong in the recipes that build the
enrichments). :func:`plan` parses it with sqlglot and compiles the expression of each
feature the model needs into a Python function with DuckDB's semantics
(:mod:`engine.project.sql_functions`). Anything the compiler does not know is refused with
the reason, never approximated; what it compiles is checked against DuckDB on the
project's own rows before a package is accepted and when a node loads it
(:mod:`engine.models.feature_parity`).

The request contract follows: a record must carry, non-null and of its declared type, every
request field the model's features read; other fields are ignored. An enrichment is looked
up by the join's key equalities in the package's snapshot of its rows; the join's other
conditions (e.g. ``p.day = CAST(t.ts AS DATE)``) choose the matching row in batch, and the
parity check uses them to pick that same row.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import sqlglot
from sqlglot import exp

from engine.project import sql_functions
from engine.project.project import ProjectError


class FeatureSqlError(ProjectError):
    """The feature recipe cannot run in real time; the message says why and where."""


# SQL type family of a request field → what a JSON value must be.
NUMBER, INTEGER, STRING, BOOLEAN, TIMESTAMP, DATE = (
    "number",
    "integer",
    "string",
    "boolean",
    "timestamp",
    "date",
)
NUMERIC = "numeric"  # a model input sent as is: a number or a boolean
_TYPE_FAMILIES = {
    NUMBER: ("DOUBLE", "FLOAT", "REAL", "DECIMAL", "NUMERIC", "FLOAT4", "FLOAT8"),
    INTEGER: ("INTEGER", "BIGINT", "SMALLINT", "TINYINT", "HUGEINT", "INT", "INT4", "INT8"),
    STRING: ("VARCHAR", "TEXT", "STRING", "CHAR", "BPCHAR"),
    BOOLEAN: ("BOOLEAN", "BOOL"),
    TIMESTAMP: ("TIMESTAMP", "DATETIME", "TIMESTAMP_NS", "TIMESTAMP_MS", "TIMESTAMP_S"),
    DATE: ("DATE",),
}


def type_family(sql_type: str) -> str | None:
    """``DOUBLE`` → ``number``, ``VARCHAR`` → ``string``…; None for a type not served."""
    base = sql_type.upper().split("(")[0].strip()
    base = base.removeprefix("U") if base.startswith("UBIG") or base.startswith("UINT") else base
    return next((fam for fam, names in _TYPE_FAMILIES.items() if base in names), None)


Feature = Callable[[dict[str, Any], tuple[dict[str, Any], ...]], Any]


@dataclass(frozen=True)
class Join:
    """A ``LEFT JOIN`` of an enrichment dataset."""

    dataset: str
    alias: str
    keys: dict[str, str]  # request field → enrichment column (the lookup key)
    condition: Callable[[dict[str, Any], dict[str, Any]], Any] | None  # the other ON terms


@dataclass(frozen=True)
class FeaturePlan:
    """What an endpoint computes in real time, compiled from its feature recipe."""

    request_dataset: str
    request_fields: dict[str, str]  # field → type family, in the order the recipe reads them
    joins: tuple[Join, ...]
    features: dict[str, Feature]

    def compute(self, record: dict[str, Any], rows: tuple[dict[str, Any], ...]) -> dict[str, Any]:
        """The features of one (typed) record, given its enrichment rows ({} for no match)."""
        return {name: f(record, rows) for name, f in self.features.items()}


# --- parsing ------------------------------------------------------------------------------


def _parse(sql: str, where: str) -> exp.Select:
    try:
        statements = [s for s in sqlglot.parse(sql, read="duckdb") if s is not None]
    except sqlglot.errors.ParseError as exc:
        raise FeatureSqlError(f"{where}: the SQL cannot be parsed ({exc})") from None
    if len(statements) != 1 or not isinstance(statements[0], exp.Select):
        raise FeatureSqlError(f"{where}: the feature recipe must be one SELECT statement")
    select = statements[0]
    for key, what in (
        ("where", "a WHERE clause"),
        ("group", "GROUP BY"),
        ("having", "HAVING"),
        ("qualify", "QUALIFY"),
        ("distinct", "DISTINCT"),
        ("with_", "a WITH clause"),
        ("with", "a WITH clause"),
        ("order", "ORDER BY"),
        ("limit", "LIMIT"),
    ):
        if select.args.get(key):
            raise FeatureSqlError(
                f"{where}: real time scores one record at a time, so the feature recipe "
                f"cannot use {what}; compute it in a recipe that builds an enrichment"
            )
    return select


def _table(node: Any, where: str) -> tuple[str, str]:
    if not isinstance(node, exp.Table) or node.args.get("db"):
        raise FeatureSqlError(f"{where}: FROM and JOIN must name datasets of the project")
    return node.name, node.alias_or_name


def _conjuncts(node: exp.Expression) -> list[exp.Expression]:
    node = node.unnest()
    if isinstance(node, exp.And):
        return [*_conjuncts(node.this), *_conjuncts(node.expression)]
    return [node]


# --- compiling expressions ----------------------------------------------------------------

_BINARY = {
    exp.Add: "add",
    exp.Sub: "sub",
    exp.Mul: "mul",
    exp.Div: "div",
    exp.IntDiv: "intdiv",
    exp.Mod: "mod",
    exp.Pow: "power",
    exp.Atan2: "atan2",
    exp.EQ: "eq",
    exp.NEQ: "neq",
    exp.LT: "lt",
    exp.LTE: "lte",
    exp.GT: "gt",
    exp.GTE: "gte",
    exp.And: "and_",
    exp.Or: "or_",
    exp.DPipe: "concat",
    exp.Nullif: "nullif",
}
_UNARY = {
    exp.Neg: "neg",
    exp.Not: "not_",
    exp.Sin: "sin",
    exp.Cos: "cos",
    exp.Tan: "tan",
    exp.Asin: "asin",
    exp.Acos: "acos",
    exp.Atan: "atan",
    exp.Sqrt: "sqrt",
    exp.Exp: "exp",
    exp.Ln: "ln",
    exp.Abs: "absolute",
    exp.Floor: "floor",
    exp.Ceil: "ceil",
    exp.Sign: "sign",
    exp.Lower: "lower",
    exp.Upper: "upper",
    exp.Length: "length",
    exp.Hour: "hour",
    exp.Minute: "minute",
    exp.Second: "second",
    exp.Day: "day",
    exp.Month: "month",
    exp.Year: "year",
    exp.DayOfWeek: "dayofweek",
    exp.DayOfYear: "dayofyear",
    **{
        getattr(exp, n): f
        for n, f in (("Radians", "radians"), ("Degrees", "degrees"))
        if hasattr(exp, n)
    },
}
_NAMED_UNARY = {"RADIANS": "radians", "DEGREES": "degrees"}
_VARIADIC = {exp.Least: "least", exp.Greatest: "greatest", exp.Coalesce: "coalesce"}
_CASTS = {
    NUMBER: "to_double",
    INTEGER: "to_int",
    STRING: "to_varchar",
    BOOLEAN: "to_boolean",
    DATE: "to_date",
    TIMESTAMP: "to_timestamp",
}
_EXTRACT = {
    "HOUR": "hour",
    "MINUTE": "minute",
    "SECOND": "second",
    "DAY": "day",
    "MONTH": "month",
    "YEAR": "year",
    "DOW": "dayofweek",
    "DAYOFWEEK": "dayofweek",
    "DOY": "dayofyear",
    "DAYOFYEAR": "dayofyear",
}


class _Compiler:
    """SQL expression → Python source over ``r`` (the request) and ``e`` (enrichment rows)."""

    def __init__(self, request_alias: str, join_aliases: list[str], request_fields: set[str]):
        self.request_alias = request_alias
        self.join_aliases = join_aliases
        self.request_fields = request_fields
        self.read: list[str] = []  # request fields this expression reads, in order
        self.row_alias: str | None = None  # a join whose columns read ``row`` (ON terms)

    def column(self, node: exp.Column, where: str) -> str:
        table, name = node.table, node.name
        if not table:
            if name in self.request_fields or not self.join_aliases:
                table = self.request_alias
            elif len(self.join_aliases) == 1:
                table = self.join_aliases[0]
            else:
                raise FeatureSqlError(f"{where}: qualify column {name!r} with its table alias")
        if table == self.request_alias:
            if name not in self.request_fields:
                raise FeatureSqlError(
                    f"{where}: the request dataset has no column {name!r} in its schema"
                )
            if name not in self.read:
                self.read.append(name)
            return f"r.get({name!r})"
        if table == self.row_alias:
            return f"row.get({name!r})"
        if self.row_alias is not None and table in self.join_aliases:
            raise FeatureSqlError(
                f"{where}: a JOIN condition may compare the joined dataset's columns with "
                f"request columns only, not with {table}.{name}"
            )
        if table in self.join_aliases:
            return f"e[{self.join_aliases.index(table)}].get({name!r})"
        raise FeatureSqlError(f"{where}: unknown table alias {table!r}")

    def __call__(self, node: exp.Expression, where: str) -> str:  # noqa: C901 - one case per SQL form
        c = self
        if isinstance(node, exp.Paren):
            return c(node.this, where)
        if isinstance(node, exp.Column):
            return c.column(node, where)
        if isinstance(node, exp.Literal):
            if node.is_string:
                return repr(node.this)
            value = float(node.this) if any(ch in node.this for ch in ".eE") else int(node.this)
            return repr(value)
        if isinstance(node, exp.Null):
            return "None"
        if isinstance(node, exp.Boolean):
            return repr(bool(node.this))
        for kind, fn in _BINARY.items():
            if type(node) is kind:
                return f"F.{fn}({c(node.this, where)}, {c(node.expression, where)})"
        for kind, fn in _UNARY.items():
            if type(node) is kind:
                return f"F.{fn}({c(node.this, where)})"
        for kind, fn in _VARIADIC.items():
            if type(node) is kind:
                args = [node.this, *(node.expressions or [])]
                return f"F.{fn}({', '.join(c(a, where) for a in args)})"
        if isinstance(node, exp.Anonymous) and node.name.upper() in _NAMED_UNARY:
            if len(node.expressions) != 1:
                raise FeatureSqlError(f"{where}: {node.name}() takes one argument")
            return f"F.{_NAMED_UNARY[node.name.upper()]}({c(node.expressions[0], where)})"
        if isinstance(node, exp.Log):
            if node.expression is None:  # log(x) is the base-10 logarithm in DuckDB
                return f"F.log10({c(node.this, where)})"
            return f"F.log({c(node.this, where)}, {c(node.expression, where)})"
        if isinstance(node, exp.Round):
            decimals = node.args.get("decimals")
            digits = c(decimals, where) if decimals is not None else "0"
            return f"F.round_half_away({c(node.this, where)}, {digits})"
        if isinstance(node, exp.Cast) and not isinstance(node, exp.TryCast):
            family = type_family(node.to.sql(dialect="duckdb"))
            if family is None:
                raise FeatureSqlError(f"{where}: CAST to {node.to.sql()} is not supported here")
            return f"F.{_CASTS[family]}({c(node.this, where)})"
        if isinstance(node, exp.Is) and isinstance(node.expression, exp.Null):
            return f"F.is_null({c(node.this, where)})"
        if isinstance(node, exp.In) and node.expressions and not node.args.get("query"):
            options = ", ".join(c(o, where) for o in node.expressions)
            return f"F.in_({c(node.this, where)}, {options})"
        if isinstance(node, exp.Between):
            return (
                f"F.between({c(node.this, where)}, {c(node.args['low'], where)}, "
                f"{c(node.args['high'], where)})"
            )
        if isinstance(node, exp.If):
            default = node.args.get("false")
            return (
                f"({c(node.args['true'], where)} if F.truthy({c(node.this, where)}) "
                f"else {c(default, where) if default is not None else 'None'})"
            )
        if isinstance(node, exp.Case):
            return c.case(node, where)
        if isinstance(node, exp.Extract):
            part = node.this.name.upper()
            if part not in _EXTRACT:
                raise FeatureSqlError(f"{where}: extract({part}) is not supported here")
            return f"F.{_EXTRACT[part]}({c(node.expression, where)})"
        if isinstance(node, exp.DateDiff):
            unit = (node.args.get("unit").name if node.args.get("unit") else "day").lower()
            if unit not in sql_functions.DATE_DIFF_UNITS:
                raise FeatureSqlError(f"{where}: date_diff unit {unit!r} is not supported here")
            return f"F.date_diff({unit!r}, {c(node.expression, where)}, {c(node.this, where)})"
        if isinstance(node, exp.Anonymous):
            name = f"{node.name}()"
        elif isinstance(node, exp.Func):
            name = node.sql_name()
        else:
            name = type(node).__name__.upper()
        raise FeatureSqlError(
            f"{where}: {name} is not supported in real time "
            f"(in `{node.sql(dialect='duckdb')[:80]}`); compute it in an enrichment recipe"
        )

    def case(self, node: exp.Case, where: str) -> str:
        subject = node.this
        out = self(node.args["default"], where) if node.args.get("default") else "None"
        for branch in reversed(node.args.get("ifs") or []):
            cond = branch.this if subject is None else exp.EQ(this=subject, expression=branch.this)
            out = (
                f"({self(branch.args['true'], where)} if F.truthy({self(cond, where)}) else {out})"
            )
        return out


def _function(source: str, where: str) -> Feature:
    code = compile(f"lambda r, e: {source}", f"<feature {where}>", "eval")
    return eval(code, {"F": sql_functions, "__builtins__": {}})  # noqa: S307 - generated from the SQL AST only


def _condition(source: str, where: str) -> Callable[[dict[str, Any], dict[str, Any]], Any]:
    code = compile(f"lambda r, row: {source}", f"<join {where}>", "eval")
    return eval(code, {"F": sql_functions, "__builtins__": {}})  # noqa: S307 - generated from the SQL AST only


def request_dataset_of(sql: str, where: str = "feature recipe") -> str:
    """The dataset a feature recipe reads FROM: what a request record is a row of."""
    from_ = _parse(sql, where).args.get("from_")
    if from_ is None:
        raise FeatureSqlError(f"{where}: the feature recipe needs a FROM dataset")
    return _table(from_.this, where)[0]


def plan(
    sql: str,
    request_schema: dict[str, str],
    needed: list[str],
    enrichment_keys: dict[str, dict[str, str]] | None = None,
    where: str = "feature recipe",
) -> FeaturePlan:
    """Compile the features ``needed`` (the model's inputs) of a feature recipe.

    ``request_schema`` is the declared schema (column → SQL type) of the recipe's FROM
    dataset; ``enrichment_keys`` the endpoint's enrichments (dataset → {request field:
    column}), which must be the joins' key equalities. Raises :class:`FeatureSqlError`.
    """
    select = _parse(sql, where)
    from_ = select.args.get("from_")
    if from_ is None:
        raise FeatureSqlError(f"{where}: the feature recipe needs a FROM dataset")
    request_dataset, request_alias = _table(from_.this, where)
    joins_sql = select.args.get("joins") or []
    aliases = []
    for j in joins_sql:
        if (j.args.get("side") or "").upper() != "LEFT" or j.args.get("using"):
            raise FeatureSqlError(
                f"{where}: enrichments join with LEFT JOIN … ON (a record without a match "
                "is still scored)"
            )
        aliases.append(_table(j.this, where))
    compile_ = _Compiler(request_alias, [a for _, a in aliases], set(request_schema))
    joins: list[Join] = []
    for (dataset, alias), j in zip(aliases, joins_sql, strict=True):
        keys: dict[str, str] = {}
        others: list[str] = []
        for term in _conjuncts(j.args["on"]):
            pair = _key_pair(term, request_alias, alias)
            if pair is not None:
                keys[pair[0]] = pair[1]
                compile_.column(exp.column(pair[0], request_alias), where)  # the key is read
            else:
                others.append(_join_term(compile_, term, alias, where))
        if not keys:
            raise FeatureSqlError(
                f"{where}: JOIN {dataset} needs at least one equality of its column with a "
                "request column (its lookup key)"
            )
        declared = (enrichment_keys or {}).get(dataset)
        if enrichment_keys is not None and declared != keys:
            raise FeatureSqlError(
                f"{where}: the recipe joins {dataset} on "
                f"{', '.join(f'{k}={v}' for k, v in keys.items())} but the endpoint "
                + (
                    f"looks it up by {', '.join(f'{k}={v}' for k, v in declared.items())}"
                    if declared
                    else "declares no enrichment of it"
                )
            )
        condition = (
            _condition(" and ".join(f"F.truthy({t})" for t in others), dataset) if others else None
        )
        joins.append(Join(dataset, alias, keys, condition))
    outputs = {e.alias_or_name: e for e in select.expressions}
    if any(isinstance(e, exp.Star) or isinstance(e.this, exp.Star) for e in select.expressions):
        raise FeatureSqlError(f"{where}: list the feature recipe's columns instead of *")
    features: dict[str, Feature] = {}
    for name in needed:
        node = outputs.get(name)
        if node is None:
            raise FeatureSqlError(f"{where}: the recipe outputs no column {name!r} the model uses")
        body = node.this if isinstance(node, exp.Alias) else node
        features[name] = _function(compile_(body, f"{where}, {name}"), name)
    fields = {}
    for f in compile_.read:
        family = type_family(request_schema[f])
        if family is None:
            raise FeatureSqlError(
                f"{where}: request field {f!r} has type {request_schema[f]}, which the API "
                "cannot receive (number, integer, string, boolean, timestamp or date)"
            )
        fields[f] = family
    return FeaturePlan(request_dataset, fields, tuple(joins), features)


def _key_pair(term: exp.Expression, request_alias: str, alias: str) -> tuple[str, str] | None:
    if not isinstance(term, exp.EQ):
        return None
    sides = [term.this, term.expression]
    if not all(isinstance(s, exp.Column) for s in sides):
        return None
    by_table = {s.table: s.name for s in sides}
    if set(by_table) == {request_alias, alias}:
        return by_table[request_alias], by_table[alias]
    return None


def _join_term(compile_: _Compiler, term: exp.Expression, alias: str, where: str) -> str:
    """A non-key ON term as Python over ``r`` and ``row`` (the candidate enrichment row)."""
    compile_.row_alias = alias
    try:
        return compile_(term, f"{where}, JOIN {alias}")
    finally:
        compile_.row_alias = None


def model_inputs_plan(numeric: list[str], categorical: list[str]) -> FeaturePlan:
    """An endpoint without a feature recipe: the request carries the model's inputs."""
    fields = {**dict.fromkeys(numeric, NUMERIC), **dict.fromkeys(categorical, STRING)}
    return FeaturePlan("", fields, (), {n: _function(f"r.get({n!r})", n) for n in fields})


# --- typing a request ---------------------------------------------------------------------


class RecordError(ValueError):
    """A record does not meet the contract; the message names the field, never its value."""


def typed_value(name: str, family: str, value: Any) -> Any:
    """A JSON value as the batch data holds it (floats for numbers, datetimes…)."""
    kind = type(value)
    if family == NUMBER:
        if kind is bool or kind not in (int, float):
            raise RecordError(f"feature '{name}' must be a number")
        try:
            number = float(value)
        except OverflowError:
            raise RecordError(f"feature '{name}' must be a finite number") from None
        if not math.isfinite(number) or abs(number) >= 1e300:
            raise RecordError(f"feature '{name}' must be a finite number")
        return number
    if family == NUMERIC:
        if kind is bool:
            return value
        return typed_value(name, NUMBER, value)
    if family == INTEGER:
        if kind is not int or abs(value) >= 2**63:
            raise RecordError(f"feature '{name}' must be an integer")
        return value
    if family == STRING:
        if kind is not str:
            raise RecordError(f"feature '{name}' must be a string")
        return value
    if family == BOOLEAN:
        if kind is not bool:
            raise RecordError(f"feature '{name}' must be a boolean")
        return value
    if kind is not str:
        raise RecordError(f"feature '{name}' must be an ISO-8601 {family} string")
    return parse_timestamp(name, value) if family == TIMESTAMP else _parse_date(name, value)


def parse_timestamp(name: str, value: str) -> datetime:
    """An ISO-8601 timestamp as naive UTC, like the batch data's."""
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        raise RecordError(
            f"feature '{name}' must be an ISO-8601 timestamp, e.g. 2026-11-09T13:45:00"
        ) from None
    if ts.tzinfo is not None:
        try:
            ts = (ts - ts.utcoffset()).replace(tzinfo=None)  # batch timestamps are naive UTC
        except OverflowError:
            raise RecordError(f"feature '{name}' is outside the supported dates") from None
    return ts


def _parse_date(name: str, value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise RecordError(f"feature '{name}' must be an ISO-8601 date, e.g. 2026-11-09") from None


def typed_record(fields: dict[str, str], record: Any) -> dict[str, Any]:
    """The contract's fields of a raw JSON record, typed; :class:`RecordError` if unusable."""
    if not isinstance(record, dict):
        raise RecordError("'features' must be a JSON object")
    missing = [f for f in fields if record.get(f) is None]
    if missing:
        raise RecordError(f"missing feature(s): {', '.join(missing)}")
    return {f: typed_value(f, family, record[f]) for f, family in fields.items()}
