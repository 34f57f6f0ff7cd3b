"""DuckDB's scalar semantics in plain Python, for feature expressions compiled to run on one
record (:mod:`engine.project.feature_sql`).

Every function takes and returns Python values: ``None`` is SQL NULL and propagates, numbers
follow DuckDB (``/`` is a float division with IEEE results: ``1/0`` is ``inf``, ``0/0`` NaN;
``asin(2)`` is NaN), timestamps are naive ``datetime`` in UTC, dates ``date``. What a compiled
feature computes is checked against DuckDB on the project's own rows before a package is
accepted, so a difference here is caught, never served.
"""

from __future__ import annotations

import decimal
import math
from datetime import date, datetime
from typing import Any

NAN = math.nan


def _num(x: Any) -> Any:
    return float(x) if isinstance(x, bool) else x


def add(a: Any, b: Any) -> Any:
    return None if a is None or b is None else a + b


def sub(a: Any, b: Any) -> Any:
    return None if a is None or b is None else a - b


def mul(a: Any, b: Any) -> Any:
    return None if a is None or b is None else a * b


def div(a: Any, b: Any) -> Any:
    if a is None or b is None:
        return None
    a, b = float(a), float(b)
    if b == 0.0:
        if a == 0.0 or math.isnan(a):
            return NAN
        return math.copysign(math.inf, a) * math.copysign(1.0, b)
    return a / b


def intdiv(a: Any, b: Any) -> Any:
    if a is None or b is None or b == 0:
        return None
    return a // b


def mod(a: Any, b: Any) -> Any:
    if a is None or b is None or b == 0:
        return None
    if isinstance(a, int) and isinstance(b, int):
        return int(math.fmod(a, b))
    return math.fmod(a, b)


def neg(a: Any) -> Any:
    return None if a is None else -a


def power(a: Any, b: Any) -> Any:
    if a is None or b is None:
        return None
    try:
        return math.pow(float(a), float(b))
    except OverflowError:
        return math.inf
    except ValueError:
        return NAN


def _unary(fn: Any) -> Any:
    def apply(a: Any) -> Any:
        if a is None:
            return None
        try:
            return fn(float(a))
        except ValueError:  # outside the function's domain: DuckDB answers NaN
            return NAN
        except OverflowError:
            return math.inf

    return apply


sin, cos, tan = _unary(math.sin), _unary(math.cos), _unary(math.tan)
asin, acos, atan = _unary(math.asin), _unary(math.acos), _unary(math.atan)
sqrt, exp, ln = _unary(math.sqrt), _unary(math.exp), _unary(math.log)
log10, log2 = _unary(math.log10), _unary(math.log2)
radians, degrees = _unary(math.radians), _unary(math.degrees)


def atan2(a: Any, b: Any) -> Any:
    return None if a is None or b is None else math.atan2(float(a), float(b))


def log(base: Any, x: Any) -> Any:
    if base is None or x is None:
        return None
    try:
        return math.log(float(x), float(base))
    except (ValueError, ZeroDivisionError):
        return NAN


def absolute(a: Any) -> Any:
    return None if a is None else abs(a)


def floor(a: Any) -> Any:
    return None if a is None else (a if isinstance(a, int) else float(math.floor(a)))


def ceil(a: Any) -> Any:
    return None if a is None else (a if isinstance(a, int) else float(math.ceil(a)))


def sign(a: Any) -> Any:
    return None if a is None else (a > 0) - (a < 0)


_EXACT = decimal.Context(prec=400, rounding=decimal.ROUND_HALF_UP)


def round_half_away(a: Any, decimals: Any = 0) -> Any:
    """DuckDB's ``round`` of a DOUBLE: the double's exact binary value rounded half away
    from zero (``round(0.075, 2)`` is 0.07, since 0.075 is 0.07499999…; ``round(0.125,
    2)`` is 0.13). Scaling by 10**decimals first would round 0.075 * 100 = 7.5 up."""
    if a is None or decimals is None:
        return None
    if isinstance(a, int) or not math.isfinite(a) or abs(a) >= 2.0**53:
        return a  # integral already, or inf/nan
    exact = decimal.Decimal(a).quantize(decimal.Decimal(1).scaleb(-int(decimals)), context=_EXACT)
    return math.copysign(float(exact), a) if exact == 0 else float(exact)


def least(*values: Any) -> Any:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def greatest(*values: Any) -> Any:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def coalesce(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def nullif(a: Any, b: Any) -> Any:
    return None if a is not None and b is not None and a == b else a


def concat(a: Any, b: Any) -> Any:
    return None if a is None or b is None else f"{a}{b}"


def lower(a: Any) -> Any:
    return None if a is None else str(a).lower()


def upper(a: Any) -> Any:
    return None if a is None else str(a).upper()


def length(a: Any) -> Any:
    return None if a is None else len(str(a))


# --- comparisons and three-valued logic ---------------------------------------------------


def eq(a: Any, b: Any) -> Any:
    return None if a is None or b is None else _num(a) == _num(b)


def neq(a: Any, b: Any) -> Any:
    return None if a is None or b is None else _num(a) != _num(b)


def lt(a: Any, b: Any) -> Any:
    return None if a is None or b is None else a < b


def lte(a: Any, b: Any) -> Any:
    return None if a is None or b is None else a <= b


def gt(a: Any, b: Any) -> Any:
    return None if a is None or b is None else a > b


def gte(a: Any, b: Any) -> Any:
    return None if a is None or b is None else a >= b


def and_(a: Any, b: Any) -> Any:
    if a is False or b is False:
        return False
    return None if a is None or b is None else True


def or_(a: Any, b: Any) -> Any:
    if a is True or b is True:
        return True
    return None if a is None or b is None else False


def not_(a: Any) -> Any:
    return None if a is None else not a


def is_null(a: Any) -> bool:
    return a is None


def in_(a: Any, *options: Any) -> Any:
    if a is None:
        return None
    if any(o is not None and eq(a, o) for o in options):
        return True
    return None if any(o is None for o in options) else False


def between(a: Any, low: Any, high: Any) -> Any:
    return and_(gte(a, low), lte(a, high))


def truthy(a: Any) -> bool:
    """A WHEN / IF condition holds only when it is TRUE (NULL does not)."""
    return a is True or (a is not None and a is not False and bool(a))


# --- casts and time -----------------------------------------------------------------------


def to_double(a: Any) -> Any:
    if a is None:
        return None
    try:
        return float(a)
    except ValueError:
        raise ValueError(f"cannot cast {type(a).__name__} to DOUBLE") from None


def to_int(a: Any) -> Any:
    if a is None:
        return None
    if isinstance(a, float):
        if math.isnan(a) or math.isinf(a):
            raise ValueError("cannot cast a non-finite number to INTEGER")
        return int(math.copysign(math.floor(abs(a) + 0.5), a))  # DuckDB rounds
    return int(a)


def to_varchar(a: Any) -> Any:
    if a is None:
        return None
    if isinstance(a, bool):
        return "true" if a else "false"
    if isinstance(a, datetime):
        return a.isoformat(sep=" ")
    return str(a)


def to_boolean(a: Any) -> Any:
    return None if a is None else bool(a)


def to_date(a: Any) -> Any:
    if a is None:
        return None
    if isinstance(a, datetime):
        return a.date()
    if isinstance(a, date):
        return a
    return date.fromisoformat(str(a)[:10])


def to_timestamp(a: Any) -> Any:
    if a is None:
        return None
    if isinstance(a, datetime):
        return a
    if isinstance(a, date):
        return datetime(a.year, a.month, a.day)
    return datetime.fromisoformat(str(a))


def _part(name: str) -> Any:
    def get(a: Any) -> Any:
        if a is None:
            return None
        if name == "dow":
            return (a.weekday() + 1) % 7  # DuckDB: Sunday is 0
        if name == "doy":
            return a.timetuple().tm_yday
        return (
            getattr(a, name) if isinstance(a, datetime) or name in ("year", "month", "day") else 0
        )

    return get


hour, minute, second = _part("hour"), _part("minute"), _part("second")
day, month, year = _part("day"), _part("month"), _part("year")
dayofweek, dayofyear = _part("dow"), _part("doy")

_DIFF_SECONDS = {"day": 86400, "hour": 3600, "minute": 60, "second": 1}


def date_diff(unit: str, start: Any, end: Any) -> Any:
    """``date_diff(unit, start, end)``: the number of unit boundaries between the two."""
    if start is None or end is None:
        return None
    if unit in ("year", "month"):
        months = (end.year - start.year) * 12 + (end.month - start.month)
        return months if unit == "month" else end.year - start.year
    if unit == "day":
        return (to_date(end) - to_date(start)).days
    step = _DIFF_SECONDS[unit]
    s, e = to_timestamp(start), to_timestamp(end)
    epoch = datetime(1970, 1, 1)
    return int((e - epoch).total_seconds() // step - (s - epoch).total_seconds() // step)


DATE_DIFF_UNITS = ("year", "month", *_DIFF_SECONDS)
