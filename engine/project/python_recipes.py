"""Python recipes: a recipe whose body is a Python file of the project, run in its own process.

The contract (``recipes/<name>.py``)::

    import pandas as pd

    TIMEOUT = 600  # optional: seconds before the run is stopped (default 600)

    def run(inputs: dict[str, pd.DataFrame], variables: dict[str, str]) -> pd.DataFrame:
        return inputs["orders"].groupby("city", as_index=False)["amount"].sum()

``inputs`` holds one DataFrame per input dataset of the recipe, read as its mode says (an
input read ``same`` holds only the partitions being built). ``variables`` are the project's
variables (with the node's and the run's overrides); when a build is restricted to some
partitions, ``variables["partitions"]`` lists them, comma-separated. ``run`` returns the
output as a DataFrame; when the output dataset is partitioned by day, it must have that
column (midnight timestamps there, which is what pandas makes of dates, are written as
dates).

The code runs in a child process (``python -m engine.project.python_recipes SPEC``): a crash, a
``sys.exit`` or an endless loop of the analyst's code cannot take the Studio, the runner or
the CLI down, and the run is killed after its timeout, or at once when the scenario run
it belongs to is aborted (:func:`engine.storage.datasets.stop_on_interrupt`). The child writes the frame to a
Parquet file in a private temporary folder; the parent then installs it with
:func:`engine.storage.datasets.write` (staging + ``os.replace``, per partition), exactly as
an SQL recipe's output, so a failed or killed run leaves the previous output in place. On an
error the child reports the exception and the frames of the analyst's file only (never
ours), so the message names the line of their code that failed.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.core.errors import NodalError
from engine.storage import datasets as ds

DEFAULT_TIMEOUT = 600.0
ENTRY = "run"
TEMPLATE = '''"""What this recipe computes, in one sentence."""

import pandas as pd


def run(inputs: dict[str, pd.DataFrame], variables: dict[str, str]) -> pd.DataFrame:
    """inputs: one DataFrame per input dataset; return the output dataset."""
    (frame,) = inputs.values()
    return frame
'''
_ENGINE_ROOT = str(Path(__file__).resolve().parents[1])


class PythonRecipeError(NodalError):
    """A Python recipe failed; ``line`` and ``user_traceback`` point into the analyst's file."""

    def __init__(self, message: str, line: int | None = None, user_traceback: str = "") -> None:
        super().__init__(message)
        self.line = line
        self.user_traceback = user_traceback


def is_python(recipe_file: str) -> bool:
    """Whether a recipe's file is Python (``recipes/<name>.py``) rather than SQL."""
    return recipe_file.endswith(".py")


def check_code(code: str, display: str) -> float:
    """Refuse code that cannot be a recipe (syntax error, no ``run(inputs, variables)``).

    Returns the timeout the code declares (``TIMEOUT = n`` at the top level) or the default.
    """
    try:
        tree = ast.parse(code, filename=display)
    except SyntaxError as exc:
        text = (exc.text or "").strip()
        where = f"at line {exc.lineno} ({text})" if exc.lineno else "at an unknown line"
        raise PythonRecipeError(f"{display} {where}: SyntaxError: {exc.msg}", exc.lineno) from None
    entry = next(
        (
            n
            for n in tree.body
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == ENTRY
        ),
        None,
    )
    if entry is None or len(entry.args.args) < 2:
        raise PythonRecipeError(
            f"{display} must define {ENTRY}(inputs, variables) returning a pandas DataFrame"
        )
    timeout = DEFAULT_TIMEOUT
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "TIMEOUT" for t in node.targets
        ):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                value = None
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                raise PythonRecipeError(
                    f"{display} at line {node.lineno}: TIMEOUT must be a positive number of seconds"
                )
            timeout = float(value)
    return timeout


@dataclass(frozen=True)
class Outcome:
    """Where the child wrote the recipe's output, and what it printed."""

    parquet: Path
    log: str


def run_to_parquet(
    code: str,
    display: str,
    inputs: Mapping[str, str],
    variables: Mapping[str, str],
    workdir: Path,
    cwd: Path,
    partition_column: str | None = None,
    timeout: float | None = None,
    partitions: Sequence[str] | None = None,
) -> Outcome:
    """Run the recipe ``code`` in a child process; its output lands in ``workdir``.

    ``inputs`` maps each input name to a DuckDB table expression reading it. ``display`` is
    the name the analyst knows the file by (``recipes/x.py``), used in messages.
    ``workdir`` must be a private temporary folder; the caller removes it. ``partitions``
    (a build of some partitions) are bound to the child's connection as a parameter
    (:func:`engine.storage.datasets.bind_partitions`) before the inputs are read.
    """
    declared = check_code(code, display)
    limit = float(timeout if timeout is not None else declared)
    script = workdir / "recipe.py"
    script.write_text(code)
    out = workdir / "output.parquet"
    error = workdir / "error.json"
    spec = {
        "script": str(script),
        "display": display,
        "inputs": dict(inputs),
        "variables": dict(variables),
        "output": str(out),
        "error": str(error),
        "partition_column": partition_column,
        "partitions": list(partitions or []),
    }
    spec_path = workdir / "spec.json"
    spec_path.write_text(json.dumps(spec))
    env = {
        **os.environ,
        "PYTHONDONTWRITEBYTECODE": "1",  # never leave __pycache__ in a project
        "PYTHONPATH": os.pathsep.join(p for p in (_ENGINE_ROOT, os.environ.get("PYTHONPATH")) if p),
    }
    log_path = workdir / "output.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine.project.python_recipes", str(spec_path)],
            cwd=cwd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: a timeout kills what it started too
        )
        try:
            with ds.stop_on_interrupt(lambda: _signal_group(proc)) as scope:
                proc.wait(timeout=limit)
            if scope is not None and scope.interrupted:  # an abort killed it
                raise ds.Interrupted(f"interrupted: {display} was stopped")
        except subprocess.TimeoutExpired:
            _kill(proc)
            raise PythonRecipeError(
                f"{display} was stopped after its timeout of {limit:g} s "
                "(set TIMEOUT = <seconds> in the file to allow more)"
            ) from None
        finally:
            if proc.poll() is None:
                _kill(proc)
    printed = log_path.read_text(errors="replace")
    if error.exists():
        report = json.loads(error.read_text())
        raise PythonRecipeError(report["message"], report.get("line"), report.get("traceback", ""))
    if proc.returncode != 0 or not out.exists():
        tail = printed.strip().splitlines()[-1:] or ["no output"]
        raise PythonRecipeError(
            f"{display} ended without a result (exit code {proc.returncode}): {tail[0]}"
        )
    return Outcome(out, printed)


def _signal_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the recipe's process group: the recipe and whatever it started."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    _signal_group(proc)
    proc.wait()


def private_workdir() -> tempfile.TemporaryDirectory[str]:
    """A private temporary folder for one run (removed when the ``with`` block ends)."""
    return tempfile.TemporaryDirectory(prefix="nodal-pyrecipe-")


# --- the child process ----------------------------------------------------------------------


def _user_frames(tb: Any, script: str, display: str) -> tuple[int | None, str, str]:
    """The last line of the analyst's file in a traceback, its text, and their frames only."""
    frames = [f for f in traceback.extract_tb(tb) if f.filename == script]
    if not frames:
        return None, "", ""
    text = "".join(
        f'  File "{display}", line {f.lineno}, in {f.name}\n    {(f.line or "").strip()}\n'
        for f in frames
    )
    return frames[-1].lineno, (frames[-1].line or "").strip(), text


def _report(spec: dict[str, Any], message: str, line: int | None = None, tb: str = "") -> int:
    Path(spec["error"]).write_text(json.dumps({"message": message, "line": line, "traceback": tb}))
    return 1


def _child(spec: dict[str, Any]) -> int:
    from engine.storage import datasets as ds

    script, display = spec["script"], spec["display"]
    with ds.session() as con:
        ds.bind_partitions(con, spec.get("partitions") or [])
        return _run_child(spec, con, script, display)


def _run_child(spec: dict[str, Any], con: Any, script: str, display: str) -> int:
    import importlib.util

    import duckdb
    import pandas as pd

    try:
        frames = {
            name: con.sql(f"SELECT * FROM {expr}").df() for name, expr in spec["inputs"].items()
        }
    except duckdb.Error as exc:
        return _report(spec, f"{display}: its inputs cannot be read: {exc}")
    module_spec = importlib.util.spec_from_file_location("nodal_recipe", script)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
        result = getattr(module, ENTRY)(frames, dict(spec["variables"]))
    except BaseException as exc:  # the analyst's code: report it, whatever it raised
        if isinstance(exc, SystemExit) and exc.code in (0, None):
            return _report(spec, f"{display} called sys.exit() before returning a DataFrame")
        line, text, tb = _user_frames(exc.__traceback__, script, display)
        what = f"{type(exc).__name__}: {exc}".rstrip(": ")
        where = f" at line {line} ({text})" if line else ""
        return _report(spec, f"{display} failed{where}: {what}", line, tb)
    if not isinstance(result, pd.DataFrame):
        return _report(
            spec, f"{display}: {ENTRY}() returned {type(result).__name__}, not a pandas DataFrame"
        )
    columns = [str(c) for c in result.columns]
    if not columns:
        return _report(spec, f"{display}: {ENTRY}() returned a DataFrame with no columns")
    if len(set(columns)) != len(columns):
        return _report(spec, f"{display}: {ENTRY}() returned duplicate column names")
    key = spec.get("partition_column")
    if key and key not in columns:
        return _report(
            spec,
            f"{display}: {ENTRY}() returned no {key!r} column, but its output dataset is "
            f"partitioned by {key}",
        )
    result = result.set_axis(columns, axis=1).reset_index(drop=True)
    try:
        con.register("recipe_result", result)
        select = "*"
        types = {r[0]: r[1] for r in con.execute("DESCRIBE recipe_result").fetchall()}
        if key and types[key].startswith("TIMESTAMP"):
            # pandas turns a DATE partition column into midnight timestamps: give days back.
            odd = con.execute(
                f"SELECT count(*) FROM recipe_result WHERE CAST(\"{key}\" AS TIME) <> TIME '00:00'"
            ).fetchone()[0]
            if not odd:
                select = f'* REPLACE (CAST("{key}" AS DATE) AS "{key}")'
        target = spec["output"].replace("'", "''")
        con.execute(f"COPY (SELECT {select} FROM recipe_result) TO '{target}' (FORMAT parquet)")
    except (duckdb.Error, ValueError, TypeError) as exc:
        return _report(spec, f"{display}: the DataFrame {ENTRY}() returned cannot be saved: {exc}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m engine.project.python_recipes SPEC.json``: run one recipe (internal)."""
    sys.dont_write_bytecode = True
    # The project folder is the working directory; it must not shadow installed packages.
    sys.path[:] = [p for p in sys.path if p not in ("", os.getcwd())]
    args = argv if argv is not None else sys.argv[1:]
    spec = json.loads(Path(args[0]).read_text())
    return _child(spec)


if __name__ == "__main__":
    raise SystemExit(main())
