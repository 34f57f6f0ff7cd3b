"""Batch scoring with the compiled forest: same output as the Booster, atomic, abortable."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from engine.apinode.node import ApiNode
from engine.automation.node import AutomationNode
from engine.models import scoring
from engine.models.saved import ModelCompileError
from engine.storage import datasets as ds
from nodal_demo import demo
from tests.homes import copy_home


class Stop(Exception):
    pass


@pytest.fixture
def node_project(demo_env, tmp_path):
    settings, store = copy_home(demo_env.settings, tmp_path)
    project = AutomationNode(settings, store, demo.AUTOMATION_INFRA).project(demo.PROJECT)
    day = project.dataset("scored").partitions()[-1]  # features of this day are built
    return settings, store, project, day


def _scored(project, day) -> pd.DataFrame:
    frame = ds.read_df(project.dataset("scored"), [day])
    return frame.sort_values("transaction_id").reset_index(drop=True)


def test_compiled_scoring_writes_what_booster_scoring_writes(node_project, compiled_cache):
    _, _, project, day = node_project
    booster = scoring.score_partition(project, "fraud_model", "features", "scored", day)
    by_booster = _scored(project, day)
    schema = pq.read_schema(project.dataset("scored").partition_path(day) / ds.DATA_FILE)
    result = scoring.score_partition(
        project,
        "fraud_model",
        "features",
        "scored",
        day,
        chunk_rows=300,
        compiled_cache=compiled_cache,
    )
    by_compiled = _scored(project, day)
    assert result.rows == booster.rows == len(by_compiled) > 300  # several chunks
    assert result.flagged == booster.flagged
    np.testing.assert_allclose(by_compiled["proba"], by_booster["proba"], rtol=1e-12, atol=0)
    pd.testing.assert_frame_equal(
        by_compiled.drop(columns="proba"), by_booster.drop(columns="proba")
    )
    # the same column types, whatever the Parquet encoding chosen for speed
    assert pq.read_schema(project.dataset("scored").partition_path(day) / ds.DATA_FILE) == schema


def test_an_abort_between_chunks_leaves_the_previous_output(node_project, compiled_cache):
    _, _, project, day = node_project
    before = _scored(project, day)
    calls = []

    def should_stop() -> None:
        calls.append(1)
        if len(calls) == 3:
            raise Stop

    with pytest.raises(Stop):
        scoring.score_partition(
            project,
            "fraud_model",
            "features",
            "scored",
            day,
            chunk_rows=200,
            should_stop=should_stop,
            compiled_cache=compiled_cache,
        )
    pd.testing.assert_frame_equal(_scored(project, day), before)
    staging = project.dataset("scored").path.parent / ds.STAGING_DIR
    assert not list(staging.glob("scored-*"))  # the staging file was removed too


def test_scoring_uses_the_cache_it_is_given(node_project, tmp_path):
    _, _, project, day = node_project
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    with pytest.raises(ModelCompileError, match="cache"):
        scoring.score_partition(
            project, "fraud_model", "features", "scored", day, compiled_cache=not_a_folder
        )


def test_api_node_serves_the_compiled_forest_batch_uses(node_project, compiled_cache):
    settings, store, project, day = node_project
    node = ApiNode(settings, store, demo.API_INFRA)
    node.sync()
    [generation] = node.services[demo.SERVICE].generations.values()
    endpoint = generation.endpoints[demo.ENDPOINT]
    assert endpoint.model.compiled is not None
    assert endpoint.model.compiled.cache_file.parent == settings.compiled_cache
    features = ds.read_df(project.dataset("features"), [day]).head(50)
    matrix = endpoint.model.encode(features)
    np.testing.assert_allclose(
        endpoint.model.predict_proba(matrix, num_threads=1),
        endpoint.model.booster.predict(matrix),
        rtol=1e-12,
        atol=0,
    )
