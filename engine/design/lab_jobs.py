"""The Lab's background trainings: :func:`start` trains a :class:`~engine.design.lab.LabSpec`
in a thread of this process that reports progress; pages poll it with :func:`get_job`.

A training in progress is also a small record, ``lab/.jobs/<job>.json``, locked (``flock``) by
the process training it for as long as it trains: if that process stops (a Studio restart)
the lock goes with it, and :func:`interrupted_jobs` reports the training as interrupted,
with its settings, so it can be started again (:func:`train_again`), never left "running".
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
import threading
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from engine.design import lab
from engine.project import definitions
from engine.project.project import LAB_DIR, Project, ProjectError


@dataclass
class TrainingJob:
    """A training running in a thread of this process; pages poll it."""

    job_id: str
    spec: lab.LabSpec
    status: str = "RUNNING"  # RUNNING | DONE | FAILED
    progress: float = 0.0
    message: str = "starting"
    result: dict[str, Any] | None = None
    error: str | None = None
    thread: threading.Thread | None = field(default=None, repr=False)

    def update(self, fraction: float, message: str) -> None:
        self.progress, self.message = min(max(fraction, 0.0), 1.0), message


_JOBS: dict[str, TrainingJob] = {}
_JOBS_LOCK = threading.Lock()


JOBS_DIR = ".jobs"  # under lab/: records of trainings in progress
INTERRUPTED = "INTERRUPTED"


def _jobs_dir(project: Project) -> Path:
    return project.root / LAB_DIR / JOBS_DIR


def _hold_record(project: Project, job: TrainingJob, user: str) -> int:
    """Write the job's record and lock it for as long as this process trains; the fd."""
    folder = _jobs_dir(project)
    folder.mkdir(parents=True, exist_ok=True)
    record = {
        "job_id": job.job_id,
        "status": "RUNNING",
        "spec": asdict(job.spec),
        "user": user,
        "started_at": pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds"),
        "pid": os.getpid(),
    }
    # Locked before it is visible under its name: no one can see it unlocked while we train.
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".new-")
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, json.dumps(record, indent=1).encode())
    os.rename(tmp, folder / f"{job.job_id}.json")
    return fd


def _release_record(project: Project, job_id: str, fd: int) -> None:
    (_jobs_dir(project) / f"{job_id}.json").unlink(missing_ok=True)
    os.close(fd)  # releases the lock


def start(project: Project, spec: lab.LabSpec, user: str) -> TrainingJob:
    """Start training in a background thread; the caller polls :func:`get_job`."""
    project.require("write")
    lab.check_spec(spec)
    job = TrainingJob(uuid.uuid4().hex[:12], spec)
    fd = _hold_record(project, job, user)

    def work() -> None:
        from engine.core.errors import NodalError

        try:
            # lab.train, looked up when called: a test may replace it.
            job.result = lab.train(project, spec, user, job.update)
            job.status = "DONE"
        except NodalError as exc:
            job.error, job.status = str(exc), "FAILED"
        except Exception as exc:  # noqa: BLE001 - a bug; shown, and the thread does not die silently
            job.error, job.status = f"internal error: {exc!r}", "FAILED"
        finally:
            _release_record(project, job.job_id, fd)

    job.thread = threading.Thread(target=work, name=f"lab-{job.job_id}", daemon=True)
    with _JOBS_LOCK:
        _JOBS[job.job_id] = job
    try:
        job.thread.start()
    except BaseException:
        _release_record(project, job.job_id, fd)
        raise
    return job


def interrupted_jobs(project: Project) -> list[dict[str, Any]]:
    """Trainings whose process stopped before they ended (oldest first).

    A record still locked belongs to a training in progress (in this process or another)
    and is not listed. An unlocked record is marked ``INTERRUPTED`` with a message saying
    what happened; it stays until :func:`train_again` or :func:`dismiss_job`.
    """
    out = []
    for path in sorted(_jobs_dir(project).glob("*.json")):
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:  # ended meanwhile
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # still training
            if not path.exists():  # released and removed while we waited
                continue
            record = json.loads(path.read_text())
            if record.get("status") != INTERRUPTED:
                record["status"] = INTERRUPTED
                record["message"] = (
                    f"The training of {record['spec']['model']} started at "
                    f"{record['started_at']} by {record['user']} was interrupted: the process "
                    f"training it (PID {record['pid']}) stopped before it ended, most likely a "
                    "restart of the Studio. Nothing was saved; train again with the same settings."
                )
                definitions._write_atomic(path, json.dumps(record, indent=1))
            out.append(record)
        finally:
            os.close(fd)
    return sorted(out, key=lambda r: r["started_at"])


def dismiss_job(project: Project, job_id: str) -> None:
    """Forget an interrupted training (a running one cannot be dismissed)."""
    if not any(r["job_id"] == job_id for r in interrupted_jobs(project)):
        raise ProjectError(f"there is no interrupted training {job_id!r}")
    (_jobs_dir(project) / f"{job_id}.json").unlink(missing_ok=True)


def train_again(project: Project, job_id: str, user: str) -> TrainingJob:
    """Start an interrupted training again, with the same settings; the old record goes."""
    project.require("write")
    record = next((r for r in interrupted_jobs(project) if r["job_id"] == job_id), None)
    if record is None:
        raise ProjectError(f"there is no interrupted training {job_id!r}")
    job = start(project, lab.LabSpec(**record["spec"]), user)
    (_jobs_dir(project) / f"{job_id}.json").unlink(missing_ok=True)
    return job


def get_job(job_id: str) -> TrainingJob | None:
    with _JOBS_LOCK:
        return _JOBS.get(job_id)
