"""API service definitions of a project (``api_services/<service>.yaml``): the parts that
the design node (API Designer, packaging), the deployer and the API node read alike."""

from __future__ import annotations

from typing import Any


def key_mapping(spec: Any) -> dict[str, str]:
    """``card_id`` / ``[a, b]`` / ``{request_field: dataset_column}`` → a mapping."""
    if isinstance(spec, str):
        return {spec: spec}
    if isinstance(spec, list) and spec and all(isinstance(k, str) for k in spec):
        return {k: k for k in spec}
    if isinstance(spec, dict) and spec and all(isinstance(v, str) for v in spec.values()):
        return {str(k): v for k, v in spec.items()}
    raise ValueError("a lookup key is a column name, a list of them, or {field: column}")
