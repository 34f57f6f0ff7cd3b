"""Every setting nodal reads, declared once with its type, default and help.

Process entry points (the CLI, the runner, the API node, the Streamlit apps) call
:func:`load_settings` once and pass the result down; nothing below reads the environment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path


def _setting(default: object, env: str, help: str) -> object:
    return field(default=default, metadata={"env": env, "help": help})


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

    @property
    def control_store_url(self) -> str:
        return self.control_url or f"sqlite:///{(self.home / 'control.db').resolve()}"

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
        else:
            values[f.name] = raw
    values.update({k: v for k, v in overrides.items() if v is not None})
    for key in ("home", "data_dir"):
        if key in values:
            values[key] = Path(values[key])
    settings = Settings(**values)
    if settings.basemap not in ("carto", "none"):
        raise ValueError(f"NODAL_BASEMAP must be 'carto' or 'none', not {settings.basemap!r}")
    return settings


def describe_settings() -> str:
    """Human-readable list of settings for --help texts and docs."""
    lines = []
    for f in fields(Settings):
        default = f.default
        lines.append(f"  {f.metadata['env']:<20} {f.metadata['help']} (default: {default})")
    return "\n".join(lines)
