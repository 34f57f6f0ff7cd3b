"""A fresh install is the locked one: every package pinned in requirements-test.lock is
installed at exactly that version (the Makefile installs from the lock)."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

LOCK = Path(__file__).resolve().parents[1] / "requirements-test.lock"


def test_the_installed_versions_are_the_locked_ones():
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==([^\s;]+)", LOCK.read_text(), re.M))
    assert len(pins) > 50
    wrong = {}
    for name, version in pins.items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        if installed != version:
            wrong[name] = (version, installed)
    assert wrong == {}
