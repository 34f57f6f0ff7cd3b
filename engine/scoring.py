"""Batch scoring: features partition → fraud probability → scored partition."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from engine.models import SavedModel
from engine.project import Project
from engine.storage import datasets as ds


@dataclass(frozen=True)
class ScoreResult:
    partition: str
    rows: int
    flagged: int
    model_version: str


def score_partition(
    project: Project, model: str, source: str, output: str, partition: str
) -> ScoreResult:
    """Score one partition of ``source`` with the project's active ``model`` version."""
    saved = SavedModel.load(project.active_model_dir(model))
    src_ref = project.dataset(source)
    with ds.session() as con:
        table = con.sql(f"SELECT * FROM {ds.scan_sql(src_ref, [partition])}").to_arrow_table()
    frame = table.to_pandas()
    proba = saved.predict_proba(saved.encode(frame))
    flagged = proba >= saved.threshold
    out = table
    out = out.append_column("fraud_proba", pa.array(proba, pa.float64()))
    out = out.append_column("is_flagged", pa.array(flagged, pa.bool_()))
    out = out.append_column("model_version", pa.array([saved.version] * len(proba), pa.string()))
    ds.write(project.dataset(output), out)
    return ScoreResult(partition, len(proba), int(flagged.sum()), saved.version)
