"""The control store: one transactional SQL database for control-plane state.

SQLite in WAL mode by default (safe for several processes on one machine); the same code
runs on PostgreSQL by giving a ``postgresql+psycopg://`` URL. Only SQLAlchemy Core is used,
with portable types; timestamps are ISO-8601 UTC strings so they sort as text everywhere.

All reads go through :meth:`ControlStore.read`, all writes through :meth:`ControlStore.write`:
nobody else opens a connection.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

metadata = sa.MetaData()


def now_iso() -> str:
    """Current UTC time as an ISO-8601 string (microseconds, ``+00:00``)."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _ts(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.String(40), nullable=nullable)


projects = sa.Table(
    "projects",
    metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("path", sa.Text, nullable=False),
    _ts("created_at", False),
)

bundles = sa.Table(
    "bundles",
    metadata,
    sa.Column("project", sa.String(100), primary_key=True),
    sa.Column("bundle_id", sa.String(100), primary_key=True),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("release_notes", sa.Text, nullable=False, default=""),
    sa.Column("created_by", sa.String(100), nullable=False),
    _ts("created_at", False),
)

api_packages = sa.Table(
    "api_packages",
    metadata,
    sa.Column("service", sa.String(100), primary_key=True),
    sa.Column("version", sa.String(100), primary_key=True),
    sa.Column("project", sa.String(100), nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("release_notes", sa.Text, nullable=False, default=""),
    sa.Column("created_by", sa.String(100), nullable=False),
    _ts("created_at", False),
)

infrastructures = sa.Table(
    "infrastructures",
    metadata,
    sa.Column("infra_id", sa.String(100), primary_key=True),
    sa.Column("kind", sa.String(20), nullable=False),  # automation | apinode
    sa.Column("stage", sa.String(50), nullable=False),
    sa.Column("variables_json", sa.Text, nullable=False, default="{}"),
    _ts("created_at", False),
)

deployments = sa.Table(
    "deployments",
    metadata,
    sa.Column("deployment_id", sa.String(200), primary_key=True),
    sa.Column("kind", sa.String(20), nullable=False),  # project | api
    sa.Column("target", sa.String(100), nullable=False),  # project name or API service id
    sa.Column("infra_id", sa.String(100), nullable=False),
    sa.Column("version", sa.String(100), nullable=False),  # desired bundle id / package version
    sa.Column("variables_json", sa.Text, nullable=False, default="{}"),
    sa.Column("node_version", sa.String(100)),  # what the node reports as active
    sa.Column("node_status", sa.String(20), nullable=False, default="UNKNOWN"),
    sa.Column("node_message", sa.Text, nullable=False, default=""),
    _ts("node_reported_at"),
    _ts("node_status_since"),  # when node_status last changed (status flips are not history)
    _ts("created_at", False),
    _ts("updated_at", False),
    sa.UniqueConstraint("kind", "target", "infra_id"),
)

deployment_history = sa.Table(
    "deployment_history",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("deployment_id", sa.String(200), nullable=False, index=True),
    # deploy | update | promote | rollback | variables | trigger (people); activate (a node
    # activated a version, or failed to): real changes only, never a status flip
    sa.Column("action", sa.String(30), nullable=False),
    sa.Column("from_version", sa.String(100)),
    sa.Column("to_version", sa.String(100)),
    sa.Column("outcome", sa.String(20), nullable=False),
    sa.Column("message", sa.Text, nullable=False, default=""),
    sa.Column("actor", sa.String(100), nullable=False),
    _ts("at", False),
)

scenario_runs = sa.Table(
    "scenario_runs",
    metadata,
    sa.Column("run_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("infra_id", sa.String(100), nullable=False, index=True),
    sa.Column("project", sa.String(100), nullable=False),
    sa.Column("scenario", sa.String(100), nullable=False),
    sa.Column("bundle_id", sa.String(100)),
    sa.Column("trigger", sa.String(100), nullable=False),
    sa.Column("params_json", sa.Text, nullable=False, default="{}"),
    sa.Column(
        "status", sa.String(20), nullable=False
    ),  # QUEUED RUNNING SUCCESS WARNING FAILED ABORTED
    sa.Column("message", sa.Text, nullable=False, default=""),
    sa.Column("runner_pid", sa.Integer),
    sa.Column("lease_epoch", sa.Integer),  # the runner lease's epoch it was fired/claimed under
    _ts("requested_at", False),
    _ts("started_at"),
    _ts("ended_at"),
)

step_runs = sa.Table(
    "step_runs",
    metadata,
    sa.Column("run_id", sa.Integer, primary_key=True),
    sa.Column("step_index", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("step_type", sa.String(50), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("message", sa.Text, nullable=False, default=""),
    sa.Column("outputs_json", sa.Text, nullable=False, default="{}"),
    _ts("started_at"),
    _ts("ended_at"),
)

check_results = sa.Table(
    "check_results",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("node", sa.String(100), nullable=False),  # design or an infrastructure id
    sa.Column("project", sa.String(100), nullable=False),
    sa.Column("dataset", sa.String(100), nullable=False),
    sa.Column("partition", sa.String(50)),
    sa.Column("check_name", sa.String(100), nullable=False),
    sa.Column("outcome", sa.String(20), nullable=False),  # OK WARNING ERROR
    sa.Column("value", sa.Text),
    sa.Column("message", sa.Text, nullable=False, default=""),
    sa.Column("run_id", sa.Integer),
    _ts("at", False),
    # JSON: what failed, in the user's words (engine/project/checks.py): check kind, column,
    # failing rows, up to 5 failing values, and whether the check failed (learned checks
    # learn only from partitions that passed, engine/project/check_baselines.py)
    sa.Column("details", sa.Text),
)

# "Accept as the new baseline" (engine/project/check_baselines.py): a check learned from
# history learns from this partition on, even though it failed; who accepted it and when.
check_baselines = sa.Table(
    "check_baselines",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("node", sa.String(100), nullable=False),
    sa.Column("project", sa.String(100), nullable=False),
    sa.Column("dataset", sa.String(100), nullable=False),
    sa.Column("check_name", sa.String(100), nullable=False),
    sa.Column("partition", sa.String(50)),  # null: an unpartitioned dataset's latest run
    sa.Column("value", sa.Text),
    sa.Column("actor", sa.String(100), nullable=False),
    sa.Column("note", sa.Text, nullable=False, default=""),
    _ts("at", False),
)

published_days = sa.Table(
    "published_days",
    metadata,
    sa.Column("infra_id", sa.String(100), primary_key=True),
    sa.Column("project", sa.String(100), primary_key=True),
    sa.Column("dashboard", sa.String(100), primary_key=True),
    sa.Column("day", sa.String(10), primary_key=True),
    sa.Column("run_id", sa.Integer),
    sa.Column("bundle_id", sa.String(100)),
    sa.Column("checks_passed_at", sa.String(40)),
    _ts("published_at", False),
)

# The model evaluation store (engine/automation/evaluation.py): one row per day, model role, metric
# family, feature and metric. Re-evaluating a day replaces its rows.
evaluation_metrics = sa.Table(
    "evaluation_metrics",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("node", sa.String(100), nullable=False, index=True),
    sa.Column("project", sa.String(100), nullable=False),
    sa.Column("model", sa.String(100), nullable=False),
    sa.Column("role", sa.String(20), nullable=False),  # champion | challenger
    sa.Column("model_version", sa.String(100), nullable=False),
    sa.Column("day", sa.String(10), nullable=False),  # the data day the metric describes
    sa.Column("family", sa.String(40), nullable=False),  # input_drift, performance, …
    sa.Column("feature", sa.String(100), nullable=False, default=""),
    sa.Column("metric", sa.String(60), nullable=False),
    sa.Column("value", sa.Float),
    sa.Column("status", sa.String(20), nullable=False),  # OK WARNING ERROR INFO
    sa.Column("message", sa.Text, nullable=False, default=""),
    sa.Column("run_id", sa.Integer),
    _ts("at", False),
)

# Last known worst-of status of each monitored object (engine/monitoring/status.py), so that an alert
# goes out only when a status changes.
monitored_status = sa.Table(
    "monitored_status",
    metadata,
    sa.Column("object_kind", sa.String(20), primary_key=True),  # deployment | endpoint
    sa.Column("object_id", sa.String(300), primary_key=True),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("message", sa.Text, nullable=False, default=""),
    _ts("changed_at", False),
)


# --- API Deployer and API node (engine/deployer/api_deployer.py, engine/deployer/apikeys.py) ---

api_traffic = sa.Table(
    "api_traffic",
    metadata,
    sa.Column("deployment_id", sa.String(200), primary_key=True),
    # [{"generation": "v1", "proba": 0.9}, ...] summing to 1; the node serves each of them.
    sa.Column("traffic_json", sa.Text, nullable=False),
    sa.Column("access_mode", sa.String(20), nullable=False, default="public"),  # public | keys
    _ts("updated_at", False),
)

api_deployment_changes = sa.Table(
    "api_deployment_changes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("deployment_id", sa.String(200), nullable=False, index=True),
    sa.Column(
        "action", sa.String(30), nullable=False
    ),  # deploy | split | switch | rollback | access
    sa.Column("from_json", sa.Text),  # traffic before (null for a new deployment)
    sa.Column("to_json", sa.Text, nullable=False),
    sa.Column("tests_json", sa.Text, nullable=False, default="{}"),  # test queries before/after
    sa.Column("actor", sa.String(100), nullable=False),
    _ts("at", False),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("key_id", sa.String(40), primary_key=True),  # public part of the key
    sa.Column("service", sa.String(100), nullable=False),
    sa.Column("infra_id", sa.String(100)),  # null: valid on every API infrastructure
    sa.Column("salt", sa.String(64), nullable=False),
    sa.Column("secret_hash", sa.String(128), nullable=False),  # sha256(salt + secret), hex
    sa.Column("label", sa.Text, nullable=False, default=""),
    sa.Column("created_by", sa.String(100), nullable=False),
    _ts("created_at", False),
    _ts("revoked_at"),
    sa.Column("revoked_by", sa.String(100)),
)

# --- Fresh enrichment without a new package (issue 15; engine/deployer/enrichments.py) -------

# Immutable versions of an API enrichment's rows, published by an automation node's scenario
# (step publish_enrichment): a Parquet snapshot under the home plus this row. API nodes of
# the same stage serve the newest one (engine/apinode/enrichment_refresh.py).
published_enrichments = sa.Table(
    "published_enrichments",
    metadata,
    sa.Column("project", sa.String(100), primary_key=True),
    sa.Column("dataset", sa.String(100), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),  # 1, 2, … per project and dataset
    sa.Column("stage", sa.String(50), nullable=False, default=""),  # the publishing node's
    sa.Column("rows_selection", sa.String(20), nullable=False),  # all | latest_day
    sa.Column("as_of", sa.String(40)),  # newest value of the rows' day column, if any
    sa.Column("path", sa.Text, nullable=False),  # the snapshot, relative to NODAL_HOME
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("n_rows", sa.Integer, nullable=False),
    sa.Column("run_id", sa.Integer),
    sa.Column("node", sa.String(100), nullable=False),
    sa.Column("published_by", sa.String(100), nullable=False),
    _ts("published_at", False),
)

# What each API worker serves for each enrichment (reported at every sync, like the node's
# status): the package's copy or a published version, with its age. Monitoring judges it.
served_enrichments = sa.Table(
    "served_enrichments",
    metadata,
    sa.Column("infra_id", sa.String(100), primary_key=True),
    sa.Column("service", sa.String(100), primary_key=True),
    sa.Column("generation", sa.String(100), primary_key=True),
    sa.Column("endpoint", sa.String(100), primary_key=True),
    sa.Column("dataset", sa.String(100), primary_key=True),
    sa.Column("worker", sa.String(100), primary_key=True),  # host-pid of the API worker
    sa.Column("project", sa.String(100), nullable=False),
    sa.Column("source", sa.String(20), nullable=False),  # package | published
    sa.Column("version", sa.Integer),  # the published version (null: the package's copy)
    sa.Column("as_of", sa.String(40)),
    sa.Column("published_at", sa.String(40)),  # the package's creation for its own copy
    sa.Column("sha256", sa.String(64)),
    sa.Column("max_age_hours", sa.Float),  # declared on the enrichment, if any
    sa.Column("problem", sa.Text),  # a published version it refused, and why
    _ts("reported_at", False),
)


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # noqa: ANN001 - DBAPI objects
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def _add_missing_columns(engine: Engine) -> None:
    """``ALTER TABLE … ADD COLUMN`` for each column of :data:`metadata` a table lacks.

    The upgrade path of a database made by an earlier version. Only nullable columns can be
    added this way (existing rows get NULL); a new NOT NULL column is left to fail where it
    is used, so add new columns to existing tables as nullable.
    """
    inspector = sa.inspect(engine)
    existing = set(inspector.get_table_names())
    for table in metadata.sorted_tables:
        if table.name not in existing:
            continue
        have = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in have:
                continue
            if not column.nullable:
                continue
            ddl = (
                f"ALTER TABLE {table.name} ADD COLUMN {column.name} "
                f"{column.type.compile(dialect=engine.dialect)}"
            )
            try:
                with engine.begin() as conn:
                    conn.execute(sa.text(ddl))
            except sa.exc.DBAPIError:  # another process added it first
                fresh = {c["name"] for c in sa.inspect(engine).get_columns(table.name)}
                if column.name not in fresh:
                    raise


class ControlStore:
    """The control-plane database. ``read()`` and ``write()`` are the only ways in."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: Engine = sa.create_engine(url, future=True, pool_pre_ping=True)
        if self.engine.dialect.name == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)

    def init_schema(self) -> None:
        """Create missing tables, and add the columns a newer version added to existing ones
        (idempotent; safe when several processes start at once)."""
        metadata.create_all(self.engine)
        _add_missing_columns(self.engine)

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            yield conn

    @contextlib.contextmanager
    def write(self) -> Iterator[Connection]:
        """One transaction: committed on success, rolled back on any exception."""
        with self.engine.begin() as conn:
            yield conn

    def dispose(self) -> None:
        self.engine.dispose()


_stores: dict[str, ControlStore] = {}


def open_store(url: str) -> ControlStore:
    """The process-wide store for ``url`` (created and schema-initialised once)."""
    store = _stores.get(url)
    if store is None:
        if url.startswith("sqlite:///"):
            from pathlib import Path

            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        store = ControlStore(url)
        store.init_schema()
        _stores[url] = store
    return store


# --- Project Deployer and automation node (issue 4) -------------------------------------------

stages = sa.Table(
    "stages",
    metadata,
    sa.Column("name", sa.String(50), primary_key=True),
    sa.Column("position", sa.Integer, nullable=False),  # lifecycle order: dev < test < prod
    sa.Column("description", sa.Text, nullable=False, default=""),
    _ts("created_at", False),
)

deployment_triggers = sa.Table(
    "deployment_triggers",
    metadata,
    sa.Column("deployment_id", sa.String(200), primary_key=True),
    sa.Column("scenario", sa.String(100), primary_key=True),
    sa.Column("trigger_index", sa.Integer, primary_key=True),
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("updated_by", sa.String(100), nullable=False),
    _ts("updated_at", False),
)

run_abort_requests = sa.Table(
    "run_abort_requests",
    metadata,
    sa.Column("run_id", sa.Integer, primary_key=True),
    sa.Column("requested_by", sa.String(100), nullable=False),
    _ts("requested_at", False),
)

run_reports = sa.Table(
    "run_reports",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.Integer, nullable=False, index=True),
    sa.Column("reporter", sa.String(100), nullable=False),
    sa.Column("reporter_type", sa.String(20), nullable=False),  # log | webhook | email
    sa.Column("outcome", sa.String(20), nullable=False),  # SENT | FAILED
    sa.Column("message", sa.Text, nullable=False, default=""),
    _ts("at", False),
)

runner_state = sa.Table(
    "runner_state",
    metadata,
    sa.Column("infra_id", sa.String(100), primary_key=True),
    sa.Column("key", sa.String(300), primary_key=True),  # "alive", "dataset:<project>:<…>"
    sa.Column("value", sa.Text, nullable=False),
    _ts("updated_at", False),
)

# One automation runner per infrastructure schedules and runs: the one holding this lease
# (engine/automation/lease.py). Times are seconds since 1970 on the database's clock.
runner_leases = sa.Table(
    "runner_leases",
    metadata,
    sa.Column("infra_id", sa.String(100), primary_key=True),
    sa.Column("holder", sa.String(200), nullable=False),  # host:pid:random of the runner
    sa.Column("epoch", sa.Integer, nullable=False),  # +1 each time the lease changes hands
    sa.Column("acquired_at", sa.Float, nullable=False),
    sa.Column("renewed_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
)


# --- Design node: metrics computed on datasets (issue 3) --------------------------------------

metric_values = sa.Table(
    "metric_values",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("node", sa.String(100), nullable=False),  # design or an infrastructure id
    sa.Column("project", sa.String(100), nullable=False),
    sa.Column("dataset", sa.String(100), nullable=False),
    sa.Column("partition", sa.String(50)),  # null: the whole (unpartitioned) dataset
    sa.Column("metric", sa.String(100), nullable=False),
    sa.Column("value", sa.Float),  # null when the metric has no value (e.g. mean of no rows)
    sa.Column("run_id", sa.Integer),
    _ts("at", False),
    sa.Index("ix_metric_values_lookup", "project", "dataset", "metric"),
)


# --- Who may do what: accounts, groups, rights, sessions, audit trail (issue 14) --------------

users = sa.Table(
    "users",
    metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("display_name", sa.String(200), nullable=False, default=""),
    sa.Column("password_hash", sa.Text),  # null: signs in through OpenID Connect only
    sa.Column("is_admin", sa.Boolean, nullable=False, default=False),
    sa.Column("enabled", sa.Boolean, nullable=False, default=True),
    sa.Column("source", sa.String(20), nullable=False, default="local"),  # local | oidc
    sa.Column("failed_attempts", sa.Integer, nullable=False, default=0),
    _ts("locked_until"),
    sa.Column("created_by", sa.String(100), nullable=False),
    _ts("created_at", False),
)

groups = sa.Table(
    "groups",
    metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("description", sa.Text, nullable=False, default=""),
    sa.Column("created_by", sa.String(100), nullable=False),
    _ts("created_at", False),
)

group_members = sa.Table(
    "group_members",
    metadata,
    sa.Column("group_name", sa.String(100), primary_key=True),
    sa.Column("user_name", sa.String(100), primary_key=True, index=True),
)

grants = sa.Table(
    "grants",
    metadata,
    sa.Column("principal_kind", sa.String(10), primary_key=True),  # user | group
    sa.Column("principal", sa.String(100), primary_key=True),
    sa.Column("scope_kind", sa.String(20), primary_key=True),  # project | infra | stage | service
    sa.Column("scope", sa.String(200), primary_key=True),  # a name, or * for every one
    sa.Column("right_name", sa.String(20), primary_key=True),
    sa.Column("granted_by", sa.String(100), nullable=False),
    _ts("granted_at", False),
)

sessions = sa.Table(
    "sessions",
    metadata,
    sa.Column("token_sha256", sa.String(64), primary_key=True),  # the token itself is never kept
    sa.Column("user_name", sa.String(100), nullable=False, index=True),
    _ts("created_at", False),
    _ts("expires_at", False),
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    _ts("at", False),
    sa.Column("actor", sa.String(100), nullable=False, index=True),
    sa.Column("action", sa.String(60), nullable=False, index=True),
    sa.Column("object_kind", sa.String(30), nullable=False),
    sa.Column("object_id", sa.String(300), nullable=False, default=""),
    sa.Column("before", sa.Text),  # JSON
    sa.Column("after", sa.Text),  # JSON
)
