"""The query audit log: SIGKILL-safe lines, compaction to Parquet, exactly-once reads."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap

from engine.apinode import querylog
from engine.storage import datasets as ds

INFRA = "api-test"


def _record(log: querylog.QueryLog, i: int, status: int = 200) -> None:
    log.record(
        service="svc",
        endpoint="ep",
        generation="v1",
        method="predict",
        status=status,
        error_type=None if status == 200 else "InvalidRecord",
        duration_us=100 + i,
        n_records=1,
        features={"i": i},
        context={"who": "test"},
        result={"p": 0.5},
    )


def _ids(home) -> list[int]:
    table = querylog.scan_sql(home, INFRA)
    frame = ds.query_df(f"SELECT CAST(json_extract(features, '$.i') AS INTEGER) AS i FROM {table}")
    return sorted(frame["i"].tolist())


def test_no_log_yet_means_none(tmp_path):
    assert querylog.scan_sql(tmp_path, INFRA) is None


def test_a_worker_killed_with_sigkill_loses_no_answered_query(tmp_path):
    """The child acknowledges each query after record() returns, as the server answers after
    logging; every acknowledged query must be readable after SIGKILL."""
    code = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from engine.apinode import querylog
        log = querylog.QueryLog(Path({str(tmp_path)!r}), {INFRA!r})
        i = 0
        while True:
            log.record(service="svc", endpoint="ep", generation="v1", method="predict",
                       status=200, error_type=None, duration_us=1, n_records=1,
                       features={{"i": i}}, context=None, result=None)
            sys.stdout.write(f"{{i}}\\n"); sys.stdout.flush()
            i += 1
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    acked = []
    for line in proc.stdout:
        acked.append(int(line))
        if len(acked) == 2000:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    logged = _ids(tmp_path)
    assert set(acked) <= set(logged)
    assert logged == list(range(len(logged)))  # no torn or duplicated line
    # The dead worker's segment is no longer locked: compaction takes it, nothing is lost.
    assert querylog.compact(tmp_path, INFRA) == 1
    assert _ids(tmp_path) == logged
    assert not list((tmp_path / "apinode" / INFRA / "querylog" / "segments").glob("*.jsonl"))


def test_compaction_skips_live_segments_and_reads_exactly_once(tmp_path):
    log = querylog.QueryLog(tmp_path, INFRA)
    for i in range(5):
        _record(log, i)
    assert querylog.compact(tmp_path, INFRA) == 0  # the live segment is locked by its writer
    assert log.rotate_if_due(max_age=0)
    for i in range(5, 8):
        _record(log, i, status=400)
    assert querylog.compact(tmp_path, INFRA) == 1
    assert _ids(tmp_path) == list(range(8))

    # A compaction killed between its rename and its delete: both copies exist on disk.
    log.rotate_if_due(max_age=0)
    root = tmp_path / "apinode" / INFRA / "querylog"
    [seg] = [p for p in (root / "segments").glob("*.jsonl") if p != log.segment]
    keep = tmp_path / "kept.jsonl"
    shutil.copy(seg, keep)
    querylog.compact(tmp_path, INFRA)
    shutil.copy(keep, seg)  # the segment "survived"
    assert _ids(tmp_path) == list(range(8))  # still counted once
    assert querylog.compact(tmp_path, INFRA) == 1 and not seg.exists()
    assert _ids(tmp_path) == list(range(8))

    table = querylog.scan_sql(tmp_path, INFRA)
    types = dict(
        ds.query_df(f"DESCRIBE SELECT * FROM {table}")[["column_name", "column_type"]].values
    )
    assert types == {
        "ts": "TIMESTAMP",
        "service": "VARCHAR",
        "endpoint": "VARCHAR",
        "generation": "VARCHAR",
        "method": "VARCHAR",
        "status": "INTEGER",
        "error_type": "VARCHAR",
        "duration_us": "BIGINT",
        "n_records": "INTEGER",
        "features": "VARCHAR",
        "context": "VARCHAR",
        "result": "VARCHAR",
        "worker": "VARCHAR",
    }
    errors = ds.query_df(f"SELECT count(*) AS n FROM {table} WHERE error_type = 'InvalidRecord'")
    assert errors["n"][0] == 3
    log.close()


def test_huge_fields_are_logged_as_a_size_marker(tmp_path):
    log = querylog.QueryLog(tmp_path, INFRA)
    log.record(
        service="svc",
        endpoint="ep",
        generation=None,
        method="predict",
        status=400,
        error_type="InvalidRecord",
        duration_us=1,
        n_records=1,
        features={"blob": "x" * (querylog.MAX_FIELD_BYTES + 1)},
    )
    [row] = querylog.read_queries(tmp_path, INFRA)
    assert '"_truncated":true' in row["features"]
    log.close()


def test_metrics_of_all_workers_add_up(tmp_path):
    a = querylog.Metrics(tmp_path, INFRA, "a")
    b = querylog.Metrics(tmp_path, INFRA, "b")
    a.observe("svc", "ep", "v1", "predict", 200, 0.0004)
    a.snapshot()
    b.observe("svc", "ep", "v1", "predict", 200, 0.003)
    b.observe("svc", "ep", "v1", "predict", 400, 0.0001)
    text = b.render()
    labels = 'service="svc",endpoint="ep",generation="v1",method="predict"'
    assert f'nodal_api_requests_total{{{labels},status="200"}} 2' in text
    assert f"nodal_api_errors_total{{{labels}}} 1" in text
    assert f'nodal_api_request_duration_seconds_bucket{{{labels},le="0.0005"}} 2' in text
    assert f"nodal_api_request_duration_seconds_count{{{labels}}} 3" in text
