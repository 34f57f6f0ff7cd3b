"""Safe saves of a project's text definitions, for several analysts on one design node.

Every definition file has a *version*: the SHA-256 of its bytes (``ABSENT`` when the file
does not exist). An editor remembers the version it read; saving passes it back as
``base``. Under an exclusive lock on the project, the save compares ``base`` with what is
on disk now: if someone saved in between, the save is refused with
:class:`DefinitionConflict`, which carries the difference between their saved text and
ours, so nothing is silently overwritten. Structured edits ("add this check") pass a
function instead, applied to the current text under the same lock, so two analysts adding
different things both land.

Before anything is written, the changed project is loaded from a staged copy: a save that
would make the project unreadable is refused and changes nothing. Each file is replaced
atomically (temporary name, then ``os.replace``).
"""

from __future__ import annotations

import contextlib
import difflib
import fcntl
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from engine.core.errors import NodalError
from engine.project.project import Project, ProjectError, definition_files, load_project

ABSENT = "absent"
LOCK_FILE = ".nodal.lock"


class DefinitionConflict(NodalError):
    """Someone saved the same definition since it was read; ``diff`` shows theirs vs ours."""

    def __init__(self, path: str, diff: str, current_version: str) -> None:
        super().__init__(
            f"{path} was changed by someone else since you opened it: your save was refused "
            "(reload to see their version, then apply your change again)"
        )
        self.path = path
        self.diff = diff
        self.current_version = current_version


def version_of(text: str | None) -> str:
    return ABSENT if text is None else hashlib.sha256(text.encode()).hexdigest()


def read(root: Path, rel: str) -> tuple[str | None, str]:
    """The file's text (``None`` if absent) and its version."""
    path = Path(root) / rel
    text = path.read_text() if path.is_file() else None
    return text, version_of(text)


@contextlib.contextmanager
def project_lock(root: Path) -> Iterator[None]:
    """Exclusive, cross-process lock on one project's definitions (held for milliseconds)."""
    with open(Path(root) / LOCK_FILE, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def diff_text(rel: str, theirs: str | None, ours: str | None) -> str:
    return "".join(
        difflib.unified_diff(
            (theirs or "").splitlines(keepends=True),
            (ours or "").splitlines(keepends=True),
            fromfile=f"{rel} (saved by someone else)",
            tofile=f"{rel} (yours)",
        )
    )


def _validate(
    root: Path,
    changes: Mapping[str, str | None],
    variables: Mapping[str, str] | None,
    validate: Callable[[Project], None] | None,
) -> None:
    """Load the project as it would be after ``changes`` (from a staged copy), then
    ``validate`` it (its managed data is the real project's)."""
    with tempfile.TemporaryDirectory(prefix="nodal-validate-") as tmp:
        staged = Path(tmp) / "project"
        staged.mkdir()
        for rel in definition_files(root):
            (staged / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(root / rel, staged / rel)
        for rel, text in changes.items():
            target = staged / rel
            if text is None:
                target.unlink(missing_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text)
        project = load_project(staged, root / "data", dict(variables or {}))
        if validate is not None:
            validate(project)


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _check_rel(rel: str) -> str:
    p = Path(rel)
    if p.is_absolute() or ".." in p.parts or not p.parts:
        raise ProjectError(f"{rel!r} is not a path inside the project")
    return str(p)


def save(
    root: Path,
    changes: Mapping[str, str | None],
    base: Mapping[str, str] | None = None,
    validate: Callable[[Project], None] | None = None,
    variables: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Write ``changes`` (path → text, ``None`` deletes) if every ``base`` version still holds.

    Returns the new version of each changed file. ``validate`` may raise a
    :class:`NodalError` to refuse the change after the staged project loaded.
    """
    return update(root, lambda _current: dict(changes), base, validate, variables=variables)


def save_project(
    project: Project,
    changes: Mapping[str, str | None],
    base: Mapping[str, str] | None = None,
    validate: Callable[[Project], None] | None = None,
) -> dict[str, str]:
    """:func:`save` in ``project``'s folder, as the person acting on it (``write`` right)."""
    project.require("write")
    return save(project.root, changes, base, validate, variables=project.variables)


def update_project(
    project: Project,
    change: Callable[[dict[str, str | None]], Mapping[str, str | None]],
    base: Mapping[str, str] | None = None,
    validate: Callable[[Project], None] | None = None,
    paths: list[str] | None = None,
) -> dict[str, str]:
    """:func:`update` in ``project``'s folder, as the person acting on it (``write`` right)."""
    project.require("write")
    return update(project.root, change, base, validate, paths, variables=project.variables)


def update(
    root: Path,
    change: Callable[[dict[str, str | None]], Mapping[str, str | None]],
    base: Mapping[str, str] | None = None,
    validate: Callable[[Project], None] | None = None,
    paths: list[str] | None = None,
    variables: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Like :func:`save`, but ``change`` computes the new texts from the current ones.

    ``change`` receives the current text of ``paths`` (plus every ``base`` path) and returns
    path → new text; it runs under the project lock.
    """
    root = Path(root)
    if not (root / "project.yaml").is_file():
        raise ProjectError(f"{root} is not a project folder")
    base = {_check_rel(k): v for k, v in (base or {}).items()}
    with project_lock(root):
        wanted = sorted(set(base) | {_check_rel(p) for p in paths or []})
        current = {rel: read(root, rel)[0] for rel in wanted}
        changes = {_check_rel(k): v for k, v in change(dict(current)).items()}
        for rel, version in base.items():
            now_text, now_version = read(root, rel)
            if now_version != version:
                raise DefinitionConflict(
                    rel, diff_text(rel, now_text, changes.get(rel, now_text)), now_version
                )
        _validate(root, changes, variables, validate)
        for rel, text in changes.items():
            if text is None:
                (root / rel).unlink(missing_ok=True)
            else:
                _write_atomic(root / rel, text)
    return {rel: version_of(text) for rel, text in changes.items()}
