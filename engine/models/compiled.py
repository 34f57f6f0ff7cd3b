"""Compiled trees: a saved model's LightGBM forest compiled to native code with lleaves.

LightGBM walks its trees as data; lleaves (on llvmlite) turns each tree into branches of
machine code, which predicts the same probabilities (to ~1e-14 relative) several times
faster, in batch and for one row. The automation node's scoring and the API node's
real-time scoring use the compiled forest; training, the Lab and evaluation keep the
Booster.

Compiling takes seconds (about 15–20 s for the example's 299 trees on 2 cores), so the
machine code is cached in a folder (``Settings.compiled_cache``): one object file per
model, named by the SHA-256 of ``model.txt``, the lleaves and llvmlite versions, the
compile options and the host CPU (lleaves compiles for the CPU it runs on). A compile
writes a private temporary file and renames it into place (``os.replace``), so concurrent
processes (runner, API replicas) never load a half-written file; two processes compiling
the same model at once both succeed and one file wins.

Every compiled forest, fresh or from the cache, is checked against the Booster on probe
rows built from the model's own split thresholds (each threshold, the floats just either
side of it, zero, NaN; every category code and NaN) before it is used: a forest that does
not reproduce the Booster at rtol 1e-12 is refused with :class:`CompileError`, never
used. There is no silent fallback to the Booster: a model lleaves cannot compile fails
the automation node's pre-activation check or the API node's package load, with the reason.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib.metadata
import logging
import os
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.core.errors import NodalError

log = logging.getLogger("nodal.compiled")

# Compile options are part of the cache key; lleaves' defaults (large code model: safe for
# forests of any size; inlining: slower compile, faster predict).
COMPILE_OPTIONS = {"fcodemodel": "large", "finline": True, "fblocksize": 34, "use_fp64": True}
PARITY_RTOL = 1e-12
# Below this many rows one thread is faster than starting a pool.
_SERIAL_ROWS = 20_000
_PROBE_ROWS = 4096
# lleaves' entry point: (features, predictions, first row, end row); ctypes drops the GIL.
_ENTRY = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int32, ctypes.c_int32)


class CompileError(NodalError, ValueError):
    """A saved model cannot be compiled to native code, or its compiled form disagrees."""


@dataclass(frozen=True)
class CompiledForest:
    """A model's forest as native code: ``predict`` gives what ``Booster.predict`` gives."""

    model_file: Path
    cache_file: Path
    n_features: int
    _model: Any  # lleaves.Model, compiled

    def predict(self, matrix: np.ndarray, num_threads: int = 0) -> np.ndarray:
        """Probabilities of a float64 feature matrix; ``num_threads`` 0 means every core."""
        matrix = np.ascontiguousarray(matrix, dtype=np.float64)
        n_jobs = num_threads if num_threads > 0 else os.cpu_count() or 1
        if n_jobs > 1 and len(matrix) >= _SERIAL_ROWS:
            return self._model.predict(matrix, n_jobs=n_jobs)
        if matrix.ndim != 2 or matrix.shape[1] != self.n_features:
            raise ValueError(f"expected a matrix of {self.n_features} columns, got {matrix.shape}")
        out = np.zeros(len(matrix))
        self._serial_entry(matrix.ctypes.data, out.ctypes.data, 0, len(matrix))
        return out

    @functools.cached_property
    def _serial_entry(self) -> Any:
        """The forest's native function, called with raw addresses on one thread.

        lleaves' ``predict`` wraps the same function with pointer conversions that cost
        ~15 µs a call, a tenth of a real-time request's server time (py-spy under wrk).
        """
        address = ctypes.cast(self._model._c_entry_func, ctypes.c_void_p).value
        return _ENTRY(address)


@functools.cache
def compiler_fingerprint() -> str:
    """What, besides the model file, decides the machine code: versions, options, host CPU."""
    import llvmlite.binding as llvm

    llvm.initialize()
    llvm.initialize_native_target()
    try:
        features = llvm.get_host_cpu_features().flatten()
    except RuntimeError:  # lleaves compiles with no extra features then too
        features = ""
    parts = [
        f"lleaves={importlib.metadata.version('lleaves')}",
        f"llvmlite={importlib.metadata.version('llvmlite')}",
        f"triple={llvm.get_process_triple()}",
        f"cpu={llvm.get_host_cpu_name()}",
        f"features={features}",
        f"options={sorted(COMPILE_OPTIONS.items())}",
    ]
    return "\n".join(parts)


def cache_key(model_file: Path) -> str:
    digest = hashlib.sha256(Path(model_file).read_bytes())
    digest.update(b"\0" + compiler_fingerprint().encode())
    return digest.hexdigest()


def load_or_compile(
    model_file: Path, cache_dir: Path, booster: Any, categorical: Mapping[int, int] | None = None
) -> CompiledForest:
    """The compiled forest of ``model_file``, from ``cache_dir`` or compiled into it.

    ``booster`` is the same model loaded by LightGBM: the reference the compiled forest must
    reproduce; ``categorical`` maps the index of each feature that holds category codes to
    its number of known categories (see :func:`probe_matrix`).
    """
    model_file, cache_dir = Path(model_file), Path(cache_dir)
    try:
        key = cache_key(model_file)
    except OSError as exc:
        raise CompileError(f"cannot read {model_file}: {exc}") from None
    target = cache_dir / f"{key}.o"
    probe = probe_matrix(model_file, booster.num_feature(), categorical)
    expected = booster.predict(probe, num_threads=1)
    if target.exists():
        forest = _load(model_file, target)
        if _agrees(forest, probe, expected):
            return forest
        log.warning("compiled cache file %s disagrees with its model: compiling again", target)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CompileError(f"cannot create the compiled-model cache {cache_dir}: {exc}") from None
    with _compile_lock(cache_dir / f".{key}.lock"):
        if target.exists():  # another process compiled it while this one waited
            forest = _load(model_file, target)
            if _agrees(forest, probe, expected):
                return forest
        return _compile_into(model_file, cache_dir, key, target, probe, expected)


@contextmanager
def _compile_lock(path: Path) -> Iterator[None]:
    """One compile per model at a time across processes (the runner and API workers start
    together); the OS drops the lock if its holder dies. Without flock, no waiting."""
    try:
        import fcntl
    except ImportError:  # not POSIX: concurrent compiles stay safe, only wasteful
        yield
        return
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _compile_into(
    model_file: Path,
    cache_dir: Path,
    key: str,
    target: Path,
    probe: np.ndarray,
    expected: np.ndarray,
) -> CompiledForest:
    tmp = cache_dir / f".{key}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
    try:
        _compile(model_file, tmp)
        if not tmp.exists() or tmp.stat().st_size == 0:
            raise CompileError(f"compiling {model_file} wrote no machine code to {tmp}")
        forest = _load(model_file, tmp)  # what the next process will load, byte for byte
        if not _agrees(forest, probe, expected):
            raise CompileError(
                f"the compiled form of {model_file} does not reproduce LightGBM's predictions "
                f"(rtol {PARITY_RTOL}): refusing it"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("compiled %s into %s", model_file, target)
    return CompiledForest(model_file, target, forest.n_features, forest._model)


def _compile(model_file: Path, out: Path) -> None:
    import lleaves

    try:
        model = lleaves.Model(model_file=str(model_file))
        model.compile(cache=str(out), **COMPILE_OPTIONS)
    except CompileError:
        raise
    except Exception as exc:  # noqa: BLE001 - lleaves raises many kinds for unsupported models
        raise CompileError(
            f"model {model_file} cannot be compiled to native code by lleaves "
            f"({type(exc).__name__}: {exc})"
        ) from None


def _load(model_file: Path, object_file: Path) -> CompiledForest:
    import lleaves

    try:
        model = lleaves.Model(model_file=str(model_file))
        model.compile(cache=str(object_file), **COMPILE_OPTIONS)
    except Exception as exc:  # noqa: BLE001 - same as _compile
        raise CompileError(
            f"compiled model {object_file} cannot be loaded ({type(exc).__name__}: {exc})"
        ) from None
    return CompiledForest(model_file, object_file, model.num_feature(), model)


def _agrees(forest: CompiledForest, probe: np.ndarray, expected: np.ndarray) -> bool:
    got = forest.predict(probe, num_threads=1)
    return got.shape == expected.shape and bool(
        np.allclose(got, expected, rtol=PARITY_RTOL, atol=0.0, equal_nan=True)
    )


def probe_matrix(
    model_file: Path, n_features: int, categorical: Mapping[int, int] | None = None
) -> np.ndarray:
    """Rows that take every branch edge of the model: thresholds, their neighbours, 0, NaN.

    Numeric features draw from each split threshold of that feature, the floats just below
    and above it, 0, -1, a huge value and NaN; categorical ones (``categorical`` maps their
    index to the number of known categories) from every known code, two unseen codes and
    NaN. Columns are drawn independently (seeded), so the rows mix the edges of all trees.
    """
    categorical = dict(categorical or {})
    thresholds: list[set[float]] = [set() for _ in range(n_features)]
    features: list[int] = []
    for line in Path(model_file).read_text().splitlines():
        if line.startswith("split_feature="):
            features = [int(v) for v in line.split("=", 1)[1].split()]
        elif line.startswith("threshold=") and features:
            for f, t in zip(features, line.split("=", 1)[1].split(), strict=False):
                thresholds[f].add(float(t))
            features = []
    rng = np.random.default_rng(20261127)
    probe = np.empty((_PROBE_ROWS, n_features), dtype=np.float64)
    for j in range(n_features):
        if j in categorical:  # a categorical split's "threshold" is a bitset index: ignore it
            pool = np.concatenate([np.arange(categorical[j] + 2, dtype=np.float64), [np.nan]])
        else:
            t = np.array(sorted(thresholds[j]), dtype=np.float64)
            pool = np.concatenate(
                [t, np.nextafter(t, -np.inf), np.nextafter(t, np.inf), [0.0, -1.0, 1e12, np.nan]]
            )
        probe[:, j] = rng.choice(pool, size=_PROBE_ROWS)
    return probe
