"""Every setting nodal reads, declared once with its type, default and help.

Process entry points (the CLI, the runner, the API node, the Streamlit apps) call
:func:`load_settings` once and pass the result down; nothing below reads the environment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path


def _setting(default: object, env: str, help: str, secret: bool = False) -> object:
    # A secret never appears in repr() (logs, errors, status pages).
    return field(default=default, repr=not secret, metadata={"env": env, "help": help})


@dataclass(frozen=True)
class Settings:
    """Process-wide settings. Build with :func:`load_settings`."""

    home: Path = _setting(
        Path("var"), "NODAL_HOME", "Root folder of all nodal state (design, deployer, nodes)."
    )
    data_dir: Path = _setting(
        Path("data"),
        "NODAL_DATA_DIR",
        "Landing zone of source data (the example generator writes here).",
    )
    control_url: str = _setting(
        "",
        "NODAL_CONTROL_URL",
        "SQLAlchemy URL of the control store; empty means sqlite:///<home>/control.db.",
    )
    basemap: str = _setting(
        "carto",
        "NODAL_BASEMAP",
        "Fraud-map basemap: 'carto' (online tiles) or 'none' (offline, labels only).",
    )
    user: str = _setting(
        os.environ.get("USER", "nodal"), "NODAL_USER", "Name recorded as actor in audit logs."
    )
    poll_seconds: float = _setting(
        5.0, "NODAL_POLL_SECONDS", "How often runners and API nodes pull their desired state."
    )

    smtp_host: str = _setting(
        "", "NODAL_SMTP_HOST", "SMTP host for e-mail reporters of scenarios; empty: no e-mail."
    )
    smtp_port: int = _setting(25, "NODAL_SMTP_PORT", "SMTP port for e-mail reporters.")
    smtp_sender: str = _setting(
        "nodal@localhost", "NODAL_SMTP_FROM", "Sender address of e-mail reporters."
    )
    catch_up: str = _setting(
        "once",
        "NODAL_CATCH_UP",
        "Time triggers missed while a runner was down: 'once' (one run at restart) or 'skip'.",
    )
    runner_lease_seconds: float = _setting(
        20.0,
        "NODAL_RUNNER_LEASE_SECONDS",
        "The runner lease: a runner that has not renewed it for this long is replaced by a "
        "standby runner of the same infrastructure (and stops firing by itself).",
    )
    runner_renew_seconds: float = _setting(
        5.0,
        "NODAL_RUNNER_RENEW_SECONDS",
        "How often the holder renews the runner lease and standbys try to take it "
        "(less than NODAL_RUNNER_LEASE_SECONDS; a takeover needs at most their sum).",
    )
    score_chunk_rows: int = _setting(
        500_000, "NODAL_SCORE_CHUNK_ROWS", "Rows per chunk in batch scoring (bounds memory)."
    )

    status_webhook: str = _setting(
        "",
        "NODAL_STATUS_WEBHOOK",
        "URL POSTed a JSON message when a deployment's or endpoint's status changes "
        "(Monitoring); empty: status changes are only logged.",
    )
    compiled_cache_dir: str = _setting(
        "",
        "NODAL_COMPILED_CACHE",
        "Folder of compiled models (native code made by lleaves, one file per model checksum "
        "and CPU), shared by the runner and API nodes; empty means <home>/cache/compiled.",
    )

    api_max_connections: int = _setting(
        1024,
        "NODAL_API_MAX_CONNECTIONS",
        "Open connections per API node worker; one more gets a 503 and is closed.",
    )
    api_max_pipeline: int = _setting(
        8,
        "NODAL_API_MAX_PIPELINE",
        "Requests a connection may send ahead of their answers; beyond it the worker stops "
        "reading that connection until its answers drain.",
    )
    api_header_timeout: float = _setting(
        10.0,
        "NODAL_API_HEADER_TIMEOUT",
        "Seconds a client has to send a request's headers (from its first byte, or from "
        "connecting); then 408 and the connection is closed.",
    )
    api_body_timeout: float = _setting(
        60.0,
        "NODAL_API_BODY_TIMEOUT",
        "Seconds a client has to send a request's body after its headers, and to read "
        "answers the worker is holding for it; then 408 (or close) and the connection is closed.",
    )
    online_store_url: str = _setting(
        "",
        "NODAL_ONLINE_STORE_URL",
        "Online state of windowed features (recent events per key) that API node workers "
        "and replicas share: redis://host:port/db (replicas on several hosts); empty: an "
        "embedded SQLite file in the API node's home (the workers of one host).",
        True,
    )
    store_url: str = _setting(
        "",
        "NODAL_STORE_URL",
        "Object store shared by hosts (bundles, API packages, published extracts), as "
        "s3://bucket/prefix; empty: the home folder itself (one machine).",
    )
    store_endpoint: str = _setting(
        "",
        "NODAL_STORE_ENDPOINT",
        "S3 endpoint URL of NODAL_STORE_URL (http://host:port for MinIO/SeaweedFS); empty: AWS's.",
    )
    store_region: str = _setting("us-east-1", "NODAL_STORE_REGION", "S3 region of the store.")
    store_access_key: str = _setting(
        "", "NODAL_STORE_ACCESS_KEY", "S3 access key id; empty: the AWS default chain.", True
    )
    store_secret_key: str = _setting(
        "", "NODAL_STORE_SECRET_KEY", "S3 secret key (never logged or shown).", True
    )
    artifact_max_bytes: int = _setting(
        2 * 1024**3,
        "NODAL_ARTIFACT_MAX_BYTES",
        "Largest total uncompressed size of a bundle or API package a node extracts.",
    )
    artifact_max_member_bytes: int = _setting(
        1024**3,
        "NODAL_ARTIFACT_MAX_MEMBER_BYTES",
        "Largest uncompressed size of one file in a bundle or API package.",
    )
    artifact_max_members: int = _setting(
        10_000,
        "NODAL_ARTIFACT_MAX_MEMBERS",
        "Most files a bundle or API package may hold.",
    )

    session_hours: float = _setting(
        12.0, "NODAL_SESSION_HOURS", "How long an app sign-in lasts before signing in again."
    )
    oidc_name_claim: str = _setting(
        "preferred_username",
        "NODAL_OIDC_NAME_CLAIM",
        "OpenID Connect claim used as the nodal user name (then email, then sub).",
    )
    oidc_groups_claim: str = _setting(
        "groups", "NODAL_OIDC_GROUPS_CLAIM", "OpenID Connect claim listing the person's groups."
    )
    oidc_groups: str = _setting(
        "",
        "NODAL_OIDC_GROUPS",
        "Provider group -> nodal group, as 'provider=nodal,other=ops'; unmapped groups are "
        "ignored (the provider itself is configured in Streamlit's secrets, [auth]).",
    )

    def oidc_group_map(self) -> dict[str, str]:
        pairs = (item.partition("=") for item in self.oidc_groups.split(",") if item.strip())
        return {k.strip(): v.strip() for k, _, v in pairs if k.strip() and v.strip()}

    @property
    def control_store_url(self) -> str:
        return self.control_url or f"sqlite:///{(self.home / 'control.db').resolve()}"

    @property
    def compiled_cache(self) -> Path:
        default = self.home / "cache" / "compiled"
        return Path(self.compiled_cache_dir) if self.compiled_cache_dir else default

    def with_home(self, home: Path) -> Settings:
        return replace(self, home=Path(home))


def load_settings(environ: dict[str, str] | None = None, **overrides: object) -> Settings:
    """Read settings from the environment (``NODAL_*``), then apply explicit overrides."""
    env = os.environ if environ is None else environ
    values: dict[str, object] = {}
    for f in fields(Settings):
        raw = env.get(f.metadata["env"])
        if raw is None or raw == "":
            continue
        if f.type in ("Path",):
            values[f.name] = Path(raw)
        elif f.type == "float":
            values[f.name] = float(raw)
        elif f.type == "int":
            values[f.name] = int(raw)
        else:
            values[f.name] = raw
    values.update({k: v for k, v in overrides.items() if v is not None})
    for key in ("home", "data_dir"):
        if key in values:
            values[key] = Path(values[key])
    settings = Settings(**values)
    if settings.catch_up not in ("once", "skip"):
        raise ValueError(f"NODAL_CATCH_UP must be 'once' or 'skip', not {settings.catch_up!r}")
    if settings.basemap not in ("carto", "none"):
        raise ValueError(f"NODAL_BASEMAP must be 'carto' or 'none', not {settings.basemap!r}")
    if not 0 < settings.runner_renew_seconds < settings.runner_lease_seconds:
        raise ValueError(
            "NODAL_RUNNER_RENEW_SECONDS must be positive and less than NODAL_RUNNER_LEASE_SECONDS"
        )
    if settings.store_url and not settings.store_url.startswith("s3://"):
        raise ValueError(
            f"NODAL_STORE_URL must be empty or s3://bucket/prefix, not {settings.store_url!r}"
        )
    limits = ("api_max", "api_header", "api_body", "artifact_max", "session_hours")
    for f in fields(Settings):
        if f.name.startswith(limits) and not getattr(settings, f.name) > 0:
            raise ValueError(f"{f.metadata['env']} must be a positive number")
    return settings


def describe_settings() -> str:
    """Human-readable list of settings for --help texts and docs."""
    lines = []
    for f in fields(Settings):
        default = f.default
        lines.append(f"  {f.metadata['env']:<20} {f.metadata['help']} (default: {default})")
    return "\n".join(lines)
