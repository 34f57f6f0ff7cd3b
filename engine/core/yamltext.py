"""Edit one entry of a YAML mapping in place, keeping the rest of the file (and its comments).

Project files are written by hand and diffed in git: rewriting a whole file to add one
dataset would drop its comments and reorder it. These helpers replace or append only the
block of the entry that changes, then check the result parses to exactly the intended
mapping; when the text is too unusual to edit in place, they fall back to a full dump.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

_MISSING = object()


def load(text: str | None) -> dict[str, Any]:
    data = yaml.safe_load(text or "") or {}
    return data if isinstance(data, dict) else {}


def dump_entry(key: str, value: Any, indent: int = 0) -> str:
    block = yaml.safe_dump({key: value}, sort_keys=False, default_flow_style=False, width=100)
    pad = " " * indent
    return "".join(pad + line if line.strip() else line for line in block.splitlines(True))


def _is_other_key(line: str, indent: int) -> bool:
    """A line that starts a sibling entry or leaves the block (dedent)."""
    if not line.strip():
        return False
    lead = len(line) - len(line.lstrip(" "))
    if lead > indent:
        return False
    if lead == indent and line.lstrip().startswith("- "):
        return False  # an item of a list written at the key's own indentation
    return not (lead == indent and line.lstrip().startswith("#")) or lead < indent


def _span(lines: list[str], key: str, indent: int, start: int, end: int) -> tuple[int, int] | None:
    pat = re.compile(rf"^{' ' * indent}{re.escape(key)}\s*:")
    for i in range(start, end):
        if pat.match(lines[i]):
            j = i + 1
            while j < end and not _is_other_key(lines[j], indent):
                j += 1
            # Trailing blank or comment lines belong to what follows.
            while j > i + 1 and (not lines[j - 1].strip() or lines[j - 1].lstrip().startswith("#")):
                j -= 1
            return i, j
    return None


def _expected(text: str | None, key: str, value: Any, parent: str | None) -> dict[str, Any]:
    data = load(text)
    target = data
    if parent is not None:
        target = data.setdefault(parent, {}) or {}
        data[parent] = target
    if value is _MISSING:
        target.pop(key, None)
    else:
        target[key] = value
    return data


def set_entry(text: str | None, key: str, value: Any, parent: str | None = None) -> str:
    """``text`` with ``key`` (under top-level ``parent`` if given) set to ``value``."""
    return _edit(text, key, value, parent)


def remove_entry(text: str | None, key: str, parent: str | None = None) -> str:
    return _edit(text, key, _MISSING, parent)


def _edit(text: str | None, key: str, value: Any, parent: str | None) -> str:
    expected = _expected(text, key, value, parent)
    try:
        edited = _edit_in_place(text or "", key, value, parent)
        if load(edited) == expected:
            return edited
    except (ValueError, yaml.YAMLError):
        pass
    return yaml.safe_dump(expected, sort_keys=False, default_flow_style=False, width=100)


def _edit_in_place(text: str, key: str, value: Any, parent: str | None) -> str:
    lines = text.splitlines(True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    start, end, indent = 0, len(lines), 0
    if parent is not None:
        span = _span(lines, parent, 0, 0, len(lines))
        if span is None:
            if value is _MISSING:
                return text
            return "".join(lines) + f"{parent}:\n" + dump_entry(key, value, 2)
        if lines[span[0]].split(":", 1)[1].strip() not in ("", "{}"):
            raise ValueError("inline parent mapping")
        if lines[span[0]].split(":", 1)[1].strip() == "{}":
            lines[span[0]] = f"{parent}:\n"
        start, end, indent = span[0] + 1, span[1], 2
        for line in lines[start:end]:
            if line.strip() and not line.lstrip().startswith("#"):
                indent = len(line) - len(line.lstrip(" "))
                break
    span = _span(lines, key, indent, start, end)
    block = [] if value is _MISSING else dump_entry(key, value, indent).splitlines(True)
    if span is None:
        if value is _MISSING:
            return "".join(lines)
        return "".join(lines[:end] + block + lines[end:])
    return "".join(lines[: span[0]] + block + lines[span[1] :])
