"""What a dashboard definition (``dashboards/<name>.yaml``) declares, and the map type.

Every dashboard names a ``source`` dataset, the ``output`` extract a ``publish_dashboard``
step writes for a day, and optionally the ``columns`` shipped to it. A dashboard of
``type: map`` is drawn by Monitoring's map page; its ``roles`` say which shipped column is
what, in the project's own vocabulary (here the claims project of the tests)::

    type: map
    title: Suspicious claims by site  # the page's title
    roles:
      latitude: site_lat              # required
      longitude: site_lon             # required
      score: risk                     # the probability (default: the batch scorer's column)
      flag: flagged                   # the model's own flag (default: the scorer's, if shipped)
      id: claim_ref                   # names a point; top reasons need it
      time: booked_at
      amount: payout                  # KPI "flagged amount", amount filter, colour
      category: branch                # shown on a point
    filters: [branch, region]         # a multiple choice per column
    details: [adjuster]               # more columns on a point and in the table
    threshold: 0.5                    # optional: flag by score from this, not the model's flags
    layers: [points, hexagons, city_labels]   # optional: what is drawn (default: all)
    labels:                           # optional wording: rows, flagged, score, currency
      rows: Claims
      flagged: Suspicious
      score: risk
      currency: "€"

Validation (:func:`problems`) runs when the design node saves a dashboard and when the
automation node activates a bundle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.project.project import Project

MAP = "map"
TYPES = (MAP,)
ROLES = ("latitude", "longitude", "score", "flag", "id", "time", "amount", "category")
REQUIRED_ROLES = ("latitude", "longitude")
LABELS = {"rows": "Rows", "flagged": "Flagged", "score": "score", "currency": ""}
# Names the map page keeps for itself in its URL (a filter column may not take them).
RESERVED = ("deployment", "dashboard", "day", "threshold", "amount")
LAYERS = ("points", "hexagons", "city_labels")


@dataclass(frozen=True)
class MapSpec:
    """A ``type: map`` dashboard, resolved: every role a column name or None."""

    name: str
    title: str
    source: str
    output: str
    latitude: str
    longitude: str
    score: str  # "" when neither declared nor given by the caller
    flag: str | None = None
    id: str | None = None
    time: str | None = None
    amount: str | None = None
    category: str | None = None
    filters: list[str] = field(default_factory=list)
    details: list[str] = field(default_factory=list)
    threshold: float | None = None
    labels: dict[str, str] = field(default_factory=lambda: dict(LABELS))
    layers: list[str] = field(default_factory=lambda: list(LAYERS))

    def label(self, key: str) -> str:
        return self.labels.get(key) or LABELS[key]


def is_map(doc: dict[str, Any]) -> bool:
    return isinstance(doc, dict) and doc.get("type") == MAP


def _strings(value: Any) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]


def map_spec(name: str, doc: dict[str, Any], scorer: tuple[str, str] = ("", "")) -> MapSpec:
    """The map dashboard ``name`` from its YAML (call :func:`problems` first to validate).

    ``scorer``: the score and flag columns the batch scorer writes, the defaults of the
    ``score`` and ``flag`` roles (the flag's only when the extract ships it).
    """
    roles = doc.get("roles") if isinstance(doc.get("roles"), dict) else {}
    shipped = _strings(doc.get("columns"))
    flag = roles.get("flag")
    if flag is None and scorer[1] and (not shipped or scorer[1] in shipped):
        flag = scorer[1]
    threshold = doc.get("threshold")
    labels = doc.get("labels") if isinstance(doc.get("labels"), dict) else {}
    layers = [x for x in _strings(doc.get("layers")) if x in LAYERS] or list(LAYERS)
    return MapSpec(
        name=name,
        title=str(doc.get("title") or name),
        source=str(doc.get("source", "")),
        output=str(doc.get("output", "")),
        latitude=str(roles.get("latitude", "")),
        longitude=str(roles.get("longitude", "")),
        score=str(roles.get("score") or scorer[0]),
        flag=str(flag) if flag else None,
        id=roles.get("id"),
        time=roles.get("time"),
        amount=roles.get("amount"),
        category=roles.get("category"),
        filters=_strings(doc.get("filters")),
        details=_strings(doc.get("details")),
        threshold=float(threshold) if threshold else None,
        labels={**LABELS, **{str(k): str(v) for k, v in labels.items() if k in LABELS}},
        layers=layers,
    )


def map_dashboards(project: Project) -> list[str]:
    """The project's dashboards of ``type: map``, by name."""
    return sorted(n for n, doc in project.dashboards.items() if is_map(doc))


def problems(project: Project, name: str, doc: dict[str, Any] | None = None) -> list[str]:
    """What is wrong with dashboard ``name`` (``doc``: its YAML, default the project's)."""
    doc = project.dashboards.get(name) if doc is None else doc
    if not isinstance(doc, dict):
        return [f"project {project.name!r} has no dashboard {name!r}"]
    label = f"dashboard {name}"
    out = [
        f"{label}: {key} {doc[key]!r} is not a dataset of the project"
        for key in ("source", "output")
        if key in doc and doc[key] not in project.datasets
    ]
    kind = doc.get("type")
    if kind is not None and kind not in TYPES:
        out.append(f"{label}: unknown type {kind!r} (one of {', '.join(TYPES)}, or none)")
    if kind != MAP:
        return out
    for key in ("source", "output"):
        if not doc.get(key):
            out.append(f"{label}: a map needs {key}:")
    roles = doc.get("roles")
    if not isinstance(roles, dict):
        return [*out, f"{label}: a map needs roles: (at least latitude: and longitude:)"]
    unknown = sorted(set(roles) - set(ROLES))
    if unknown:
        out.append(f"{label}: unknown role(s) {', '.join(unknown)} (one of {', '.join(ROLES)})")
    out += [
        f"{label}: a map needs roles: {r}: <column>" for r in REQUIRED_ROLES if not roles.get(r)
    ]
    spec = map_spec(name, doc)
    shipped = _strings(doc.get("columns"))
    named = {r: roles[r] for r in ROLES if roles.get(r)}
    named.update({f"filter {c}": c for c in spec.filters})
    named.update({f"detail {c}": c for c in spec.details})
    if shipped:
        out += [
            f"{label}: {what} {col!r} is not one of its columns: (what is published)"
            for what, col in named.items()
            if col not in shipped
        ]
    out += [
        f"{label}: filter {c!r} has a name the map page keeps for its URL ({', '.join(RESERVED)})"
        for c in spec.filters
        if c in RESERVED
    ]
    threshold = doc.get("threshold")
    if threshold is not None:
        try:
            ok = 0.0 <= float(threshold) <= 1.0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            out.append(f"{label}: threshold must be a number between 0 and 1")
    return out
