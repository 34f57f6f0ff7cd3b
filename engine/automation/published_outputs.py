"""Published dashboard extracts in the object store, for Monitoring on another host.

When ``NODAL_STORE_URL`` names an S3 store, the automation node uploads each extract a run
published (one file per dashboard and day) after the run, under a key of its own that no
later publish reuses (objects are immutable; a re-run of a day publishes a new object and
its ``published_days`` row names the new run):

    outputs/<infra>/<project>/dashboards/<dashboard>/day=<day>/run-<run_id>.parquet

With the embedded store (the home) nothing is copied: Monitoring reads the node's folder.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa

from engine.project.project import Project, ProjectError
from engine.storage import datasets as ds
from engine.storage import objects as objstore
from engine.storage.control import ControlStore, published_days

log = logging.getLogger("nodal.automation")


def extract_key(infra_id: str, project: str, dashboard: str, day: str, run_id: int) -> str:
    """The object key of the extract ``run_id`` published for ``dashboard`` and ``day``."""
    return f"outputs/{infra_id}/{project}/dashboards/{dashboard}/day={day}/run-{run_id}.parquet"


def extract_file(project: Project, dashboard: str, day: str):  # noqa: ANN201 - a Path
    """The extract's file for ``day`` in ``project``'s data (a partition, or the whole file)."""
    spec = project.dashboards.get(dashboard)
    if spec is None:
        raise ProjectError(f"project {project.name!r} has no dashboard {dashboard!r}")
    ref = project.dataset(spec["output"])
    folder = ref.partition_path(day) if ref.partitioned_by else ref.path
    return folder / ds.DATA_FILE


def upload_run_outputs(
    objects: objstore.ObjectStore, store: ControlStore, project: Project, infra_id: str, run_id: int
) -> list[str]:
    """Upload what run ``run_id`` published; return the keys written (none to the home)."""
    if objects.local_path("outputs") is not None:
        return []  # the embedded store is the home: the files are already where readers look
    with store.read() as conn:
        rows = conn.execute(
            sa.select(published_days.c.dashboard, published_days.c.day).where(
                published_days.c.infra_id == infra_id,
                published_days.c.project == project.name,
                published_days.c.run_id == run_id,
            )
        ).all()
    written = []
    for dashboard, day in rows:
        key = extract_key(infra_id, project.name, dashboard, day, run_id)
        if not objects.exists(key):
            objects.put_file(key, extract_file(project, dashboard, day))
            written.append(key)
    return written
