"""Scenario variables in a ``sql`` step are bound parameters, never SQL text.

A variable's value comes from a run's parameters, the project's variables or a node
(``data_dir``): whoever can start a run chooses it. So every ``{name}`` of the step's SQL
becomes a DuckDB named parameter, wherever it stands:

- ``'{day}'`` → ``$day`` (a string), ``DATE '{day}'`` / ``TIMESTAMP '{day}'`` → a cast of it;
- a placeholder inside a longer string literal, ``'{data_dir}/x/*.parquet'`` → the
  concatenation ``($data_dir || '/x/*.parquet')`` (an expression wherever a value may
  stand, table functions' arguments included);
- an unquoted ``{n}`` (``LIMIT {n}``, ``amount > {threshold}``) → a parameter holding the
  value as a number when it reads as one, else as a string;
- in ``--`` and ``/* */`` comments placeholders stay as they are (text nobody runs: a value
  with a line break must not end the comment);
- in a ``"quoted identifier"`` a placeholder is refused: a name cannot be a parameter.

A hostile value (``x'); COPY … --``) is therefore one value of a comparison or a column,
or a type error: never a statement.
"""

from __future__ import annotations

import re

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_TYPED = re.compile(r"\b(DATE|TIMESTAMP)\s*$", re.IGNORECASE)
_SPECIAL = re.compile(r"--|/\*|[\"'{]")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


class SqlVariableError(ValueError):
    """A variable the SQL names is unknown, or stands where a value cannot."""


def _number(value: str) -> int | float | str:
    if not _NUMBER.fullmatch(value.strip()):
        return value
    try:
        return int(value)
    except ValueError:
        return float(value)


def _end(text: str, start: int, quote: str) -> int:
    """Index just past the literal opened at ``start`` (a doubled quote is an escaped one)."""
    i = start + 1
    while True:
        j = text.find(quote, i)
        if j < 0:
            return len(text)  # unterminated: DuckDB will say so
        if text.startswith(quote * 2, j):
            i = j + 2
            continue
        return j + 1


def bind_variables(
    sql: str, variables: dict[str, str], where: str
) -> tuple[str, dict[str, object]]:
    """``sql`` with every placeholder outside comments made a named parameter, and the
    parameters' values (see the module docstring)."""
    params: dict[str, object] = {}

    def value_of(name: str) -> str:
        if name not in variables:
            raise SqlVariableError(f"{where}: unknown variable {{{name}}}")
        return str(variables[name])

    def string_param(name: str) -> str:
        params[name] = value_of(name)
        return f"${name}"

    out: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        if sql.startswith("--", i):
            j = sql.find("\n", i)
            j = n if j < 0 else j
        elif sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            j = n if j < 0 else j + 2
        elif ch == '"':
            j = _end(sql, i, '"')
            if _PLACEHOLDER.search(sql, i, j):
                raise SqlVariableError(
                    f"{where}: a variable inside the identifier {sql[i:j]} cannot be bound; "
                    "variables are values (use them where a value stands)"
                )
        elif ch == "'":
            j = _end(sql, i, "'")
            literal = sql[i + 1 : j - 1]
            if not _PLACEHOLDER.search(literal):
                out.append(sql[i:j])
                i = j
                continue
            pieces: list[str] = []
            pos = 0
            for m in _PLACEHOLDER.finditer(literal):
                if m.start() > pos:
                    pieces.append("'" + literal[pos : m.start()] + "'")
                pieces.append(string_param(m.group(1)))
                pos = m.end()
            if pos < len(literal):
                pieces.append("'" + literal[pos:] + "'")
            expr = pieces[0] if len(pieces) == 1 else "(" + " || ".join(pieces) + ")"
            before = "".join(out)
            typed = _TYPED.search(before)
            if typed:  # DATE '{day}': a typed literal becomes a cast of the parameter
                out = [before[: typed.start()]]
                expr = f"CAST({expr} AS {typed.group(1).upper()})"
            out.append(expr)
            i = j
            continue
        elif ch == "{" and (m := _PLACEHOLDER.match(sql, i)):
            name = m.group(1)
            params[f"{name}__value"] = _number(value_of(name))
            out.append(f"${name}__value")
            i = m.end()
            continue
        else:
            m = _SPECIAL.search(sql, i + 1)
            j = m.start() if m else n
        out.append(sql[i:j])
        i = j
    return "".join(out), params
