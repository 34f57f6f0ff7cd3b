"""What a model's definition (``models/<name>.yaml``) declares about its rows, beyond training.

Besides ``train_on``, ``target``, ``time_column`` and the features, a binary classifier's YAML
names the columns the platform needs to watch it, in the project's own vocabulary (nothing
here knows an example's names; the claims project of the tests reads)::

    id_column: claim_ref               # one row, one id: joins delayed labels to scores
    monitoring:                        # read by the evaluate scenario step
      labels: outcomes                 # dataset of delayed labels: id_column + target,
                                       #   partitioned by the day they arrived
      location: [site_lat, site_lon]   # optional: geographic hot spots
      amount: payout                   # optional: money caught and missed
      unseen_ids: [adjuster]           # optional: share of ids the reference never had
      expected_trends: [claims_so_far] # drift shown, not alarmed
    best_possible:                     # optional, for the Lab: known true probabilities
      dataset: simulated_truth         #   (simulated data only), joined on id_column
      probability: true_probability
    label_maturity:                    # optional: when a day's labels are complete
      delay_days: 10                   #   10 days after it (as of the newest label day)
      min_labelled_share: 0.95         #   and/or 95 % of its rows labelled ...
      rows: claims                     #   ... of this dataset's rows that day

Training and validation, hence the decision threshold and every baseline monitoring compares
with, use only days whose labels are mature by ``label_maturity`` (:func:`label_maturity`);
the Lab and retraining apply the same rule.

Everything under ``monitoring`` is optional: without ``labels`` (or without ``id_column``)
performance is not measured, without ``location`` no hot spot is looked for; the evaluation
records those families as not applicable. An ``evaluate`` step may override any of these
keys (and the thresholds of :data:`EVALUATE_THRESHOLDS`) for itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.project.project import Project, ProjectError

BEST_POSSIBLE = "best_possible"  # the model YAML key of the Lab's known true probabilities
LABEL_MATURITY = "label_maturity"  # the model YAML key of when a day's labels are complete
MATURITY_KEYS = ("delay_days", "min_labelled_share", "rows")
MONITORING_KEYS = ("labels", "location", "amount", "unseen_ids", "expected_trends")
# Numeric settings of the evaluate step and their defaults (the evaluation's thresholds).
EVALUATE_THRESHOLDS: dict[str, Any] = {
    "performance_window_days": 21,
    "min_label_coverage": 0.95,
    "decay_window_days": 7,
    "min_frauds": 30,
    "max_roc_auc_drop": 0.05,
    "max_recall_drop": 0.15,
    "fail_on_alarm": False,
}
# Keys an evaluate step may carry (besides name, type, run_if, partition).
EVALUATE_OPTIONS = (
    "model",
    "input",
    "challenger",
    "reference_days",
    "features_dataset",
    "id_column",
    "label_column",
    *MONITORING_KEYS,
    *EVALUATE_THRESHOLDS,
)


class MaturityError(ProjectError):
    """A model's ``label_maturity`` declaration is unusable; the message says why."""


@dataclass(frozen=True)
class Truth:
    """Known true probabilities of the rows (the Lab's "best possible AUC")."""

    dataset: str
    probability: str
    id_column: str


@dataclass(frozen=True)
class LabelMaturity:
    """When a day's labels are complete enough to train, validate and set baselines on.

    ``delay_days``: a day is mature once this many days have passed, counted to the newest
    day labels are known for (the newest partition of the declared labels dataset, else the
    newest day of the training rows). ``min_labelled_share``: at least this share of the
    day's rows in dataset ``rows`` (every row, labelled or not) is labelled. Both, when both
    are given.
    """

    delay_days: int | None = None
    min_labelled_share: float | None = None
    rows: str | None = None

    def describe(self) -> str:
        parts = []
        if self.delay_days is not None:
            parts.append(f"{self.delay_days} days old")
        if self.min_labelled_share is not None:
            parts.append(f"{self.min_labelled_share:.0%} of its {self.rows} rows labelled")
        return "a day is mature when " + " and ".join(parts)


@dataclass(frozen=True)
class Monitoring:
    """What the evaluation of one model reads, in the project's column names."""

    model: str
    id_column: str | None = None
    label_column: str | None = None  # the model's target unless overridden
    labels: str | None = None
    location: tuple[str, str] | None = None
    amount: str | None = None
    unseen_ids: list[str] = field(default_factory=list)
    expected_trends: list[str] = field(default_factory=list)

    @property
    def measures_performance(self) -> bool:
        return bool(self.labels and self.id_column and self.label_column)

    def not_applicable(self) -> dict[str, str]:
        """Family → why the evaluation does not compute it for this model."""
        out: dict[str, str] = {}
        if not self.location:
            out["location"] = (
                f"no location declared for model {self.model} "
                "(monitoring: location: [latitude column, longitude column])"
            )
        if not self.measures_performance:
            missing = [
                what
                for what, value in (
                    ("monitoring: labels: <dataset>", self.labels),
                    ("id_column", self.id_column),
                    ("target", self.label_column),
                )
                if not value
            ]
            why = f"model {self.model} declares no {' and no '.join(missing)}"
            out["performance"] = f"performance is not measured: {why}"
            out["performance_decay"] = out["performance"]
        if not (self.location and self.measures_performance):
            out["missed_fraud"] = (
                "missed positives by place need both a location and labels: "
                + "; ".join(v for k, v in out.items() if k != "missed_fraud")
            )
        return out


def _strings(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def monitoring(project: Project, model: str, overrides: dict[str, Any] | None = None) -> Monitoring:
    """The model's declaration, with an evaluate step's ``overrides`` on top."""
    spec = project.models.get(model) or {}
    block = spec.get("monitoring") or {}
    merged = {**(block if isinstance(block, dict) else {}), **(overrides or {})}
    location = _strings(merged.get("location"))
    return Monitoring(
        model=model,
        id_column=merged.get("id_column") or spec.get("id_column"),
        label_column=merged.get("label_column") or spec.get("target"),
        labels=merged.get("labels") or None,
        location=(location[0], location[1]) if len(location) == 2 else None,
        amount=merged.get("amount") or None,
        unseen_ids=_strings(merged.get("unseen_ids")),
        expected_trends=_strings(merged.get("expected_trends")),
    )


def truth(project: Project, model: str) -> Truth | None:
    """The model's ``best_possible`` declaration (None when it has none)."""
    spec = project.models.get(model) or {}
    t = spec.get(BEST_POSSIBLE)
    if not isinstance(t, dict) or not t.get("dataset") or not t.get("probability"):
        return None
    id_column = t.get("id_column") or spec.get("id_column")
    if not id_column:
        return None
    return Truth(str(t["dataset"]), str(t["probability"]), str(id_column))


def maturity_problems(project: Project, model: str) -> list[str]:
    """What is wrong with the model's ``label_maturity`` declaration (none: no problem)."""
    spec = project.models.get(model) or {}
    block = spec.get(LABEL_MATURITY)
    if block is None:
        return []
    where = f"model {model}: {LABEL_MATURITY}"
    if not isinstance(block, dict) or not block:
        return [f"{where} must be a mapping with delay_days: and/or min_labelled_share:"]
    out = []
    unknown = sorted(set(block) - set(MATURITY_KEYS))
    if unknown:
        out.append(
            f"{where}: unknown key(s) {', '.join(unknown)} (one of {', '.join(MATURITY_KEYS)})"
        )
    delay, share = block.get("delay_days"), block.get("min_labelled_share")
    if delay is None and share is None:
        out.append(f"{where} needs delay_days: and/or min_labelled_share:")
    if delay is not None and (isinstance(delay, bool) or not isinstance(delay, int) or delay < 0):
        out.append(f"{where}: delay_days must be a whole number of days >= 0, not {delay!r}")
    if share is not None:
        if isinstance(share, bool) or not isinstance(share, int | float) or not 0 < share <= 1:
            out.append(f"{where}: min_labelled_share must be in (0, 1], not {share!r}")
        rows = block.get("rows")
        if not rows:
            out.append(f"{where}: min_labelled_share needs rows: (the dataset of every row)")
        elif rows not in project.datasets:
            out.append(f"{where}: rows {rows!r} is not a dataset of the project")
    return out


def label_maturity(project: Project, model: str) -> LabelMaturity | None:
    """The model's ``label_maturity`` rule (None: every labelled day counts as mature).

    Raises :class:`MaturityError` naming what is wrong with a bad declaration.
    """
    spec = project.models.get(model) or {}
    block = spec.get(LABEL_MATURITY)
    if block is None:
        return None
    wrong = maturity_problems(project, model)
    if wrong:
        raise MaturityError("; ".join(wrong))
    share = block.get("min_labelled_share")
    return LabelMaturity(
        delay_days=block.get("delay_days"),
        min_labelled_share=None if share is None else float(share),
        rows=block.get("rows") if share is not None else None,
    )


def problems(project: Project, model: str, overrides: dict[str, Any] | None = None) -> list[str]:
    """What is wrong with the model's declaration as an evaluate step would read it."""
    spec = project.models.get(model)
    if spec is None:
        return []  # the scenario validation says the model is unknown
    out = []
    block = spec.get("monitoring")
    if block is not None and not isinstance(block, dict):
        out.append(f"model {model}: monitoring must be a mapping")
    elif isinstance(block, dict):
        unknown = sorted(set(block) - set(MONITORING_KEYS))
        if unknown:
            out.append(
                f"model {model}: unknown monitoring key(s) {', '.join(unknown)} "
                f"(one of {', '.join(MONITORING_KEYS)})"
            )
    m = monitoring(project, model, overrides)
    raw_location = _strings(
        ({**(block if isinstance(block, dict) else {}), **(overrides or {})}).get("location")
    )
    if raw_location and len(raw_location) != 2:
        out.append(f"model {model}: location must name two columns: [latitude, longitude]")
    if m.labels and m.labels not in project.datasets:
        out.append(f"model {model}: labels {m.labels!r} is not a dataset of the project")
    elif m.labels and not project.datasets[m.labels].partitioned_by:
        out.append(
            f"model {model}: labels {m.labels!r} must be partitioned (by the day labels arrived)"
        )
    if m.labels and not m.id_column:
        out.append(
            f"model {model}: labels need id_column: (the column joining labels to scored rows)"
        )
    out += maturity_problems(project, model)
    t = spec.get(BEST_POSSIBLE)
    if t is not None:
        if not isinstance(t, dict) or not t.get("dataset") or not t.get("probability"):
            out.append(f"model {model}: {BEST_POSSIBLE} needs dataset: and probability:")
        elif t["dataset"] not in project.datasets:
            out.append(
                f"model {model}: {BEST_POSSIBLE} dataset {t['dataset']!r} is not a dataset "
                "of the project"
            )
    return out
