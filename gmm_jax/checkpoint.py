"""Checkpoints of a running EM fit: the state after an iteration, written atomically, no pickle.

A long fit (:func:`gmm_jax.fit_batches`, :func:`gmm_jax.distributed.fit_sharded`,
:func:`gmm_jax.multihost.fit_multiprocess` with ``checkpoint=PATH``) writes its state after every
EM iteration; a later call with the same path, data and arguments resumes from it and ends with
the same result as an uninterrupted run (bit for bit on the same machine: the state holds every
value the loop carries, at full precision).

File format: an uncompressed ``.npz`` written to a temporary file in the same folder, flushed to
disk (``fsync``) and renamed over ``PATH`` (``os.replace`` is atomic on POSIX), so a kill at any
moment leaves either the previous checkpoint or the new one, never a torn file. It holds

* ``metadata``: a JSON string with the format name, schema version, the *fingerprint* of the fit
  (sizes, dtype, options, initialisation and a BLAKE2b checksum of the data as the fit reads it)
  and the loop's scalars (iterations done, repaired components, convergence, whether finished);
* arrays: the parameters in the loop's centred coordinates (``weights``, ``means``,
  ``covariances``, ``precisions_cholesky``), ``lower_bound`` (the last E-step's mean
  log-likelihood, in the computation dtype), ``history`` and ``fast_path`` (per iteration).

Loading uses ``allow_pickle=False``. A file that is not a readable checkpoint, whose fingerprint
differs from the call's (other data, sizes or options), or whose arrays do not fit the
fingerprint is refused with a ``ValueError`` that says what differs and what to do.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from typing import NamedTuple

import numpy as np

from gmm_jax.covariance import covariance_shape
from gmm_jax.types import COVARIANCE_TYPES, GMMParams

FORMAT = "gmm_jax.EMCheckpoint"
SCHEMA_VERSION = 1
_PARAM_ARRAYS = ("weights", "means", "covariances", "precisions_cholesky")

__all__ = ["EMState", "FORMAT", "SCHEMA_VERSION", "DataDigest", "check_path", "fresh_state",
           "load", "read_metadata", "save"]


class EMState(NamedTuple):
    """What the EM loop carries from one iteration to the next (host values).

    Attributes:
        params: ``GMMParams`` (NumPy leaves, computation dtype) for the next E-step, in the
            loop's centred coordinates (means about the data mean).
        iteration: number of E-steps done (0 before the first).
        lower_bound: () array, the last E-step's mean log-likelihood (``-inf`` before any).
        history: (max_iter,) mean log-likelihood of each E-step done so far.
        fast_path: (max_iter,) bool, whether each E-step ran in the fast form.
        n_repaired: number of collapsed components re-seeded so far.
        converged: whether the tolerance was met.
        finished: whether the fit has ended (converged, ``max_iter`` reached, or stopped on a
            non-finite value); a finished checkpoint is returned as it is.
    """

    params: GMMParams
    iteration: int
    lower_bound: np.ndarray
    history: np.ndarray
    fast_path: np.ndarray
    n_repaired: int
    converged: bool
    finished: bool


def fresh_state(params: GMMParams, max_iter: int, dtype) -> EMState:
    """The state before the first E-step, starting from ``params`` (centred)."""
    dtype = np.dtype(dtype)
    params = GMMParams(*(np.asarray(getattr(params, n), dtype) for n in _PARAM_ARRAYS),
                       covariance_type=params.covariance_type)
    return EMState(params, 0, np.asarray(-np.inf, dtype), np.zeros((max_iter,), dtype),
                   np.zeros((max_iter,), bool), 0, False, False)


class DataDigest:
    """BLAKE2b checksum of the rows a fit reads, in order, in the computation dtype.

    Each batch contributes its shape and its bytes, so the same rows cut into different batches
    give different digests (the batch layout changes the order of the sums, hence the last bits
    of the result, so a resumed fit must read the same layout).
    """

    def __init__(self):
        self._h = hashlib.blake2b(digest_size=32)

    def update(self, batch: np.ndarray) -> None:
        a = np.ascontiguousarray(batch)
        self._h.update(np.asarray(a.shape, np.int64).tobytes())
        self._h.update(a.dtype.str.encode())
        self._h.update(memoryview(a).cast("B"))

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def check_path(checkpoint) -> str | None:
    """Validates a ``checkpoint=`` argument before any work: None, or a file path whose folder
    exists. Returns the path as a string."""
    if checkpoint is None:
        return None
    if not isinstance(checkpoint, (str, os.PathLike)):
        raise TypeError(f"checkpoint must be a file path (str or os.PathLike) or None, got "
                        f"{type(checkpoint).__name__}.")
    path = os.fspath(checkpoint)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if path == "" or os.path.isdir(path):
        raise ValueError(f"checkpoint must name a file, got the folder {path!r}; pass e.g. "
                         f"{os.path.join(path or '.', 'em_checkpoint.npz')!r}.")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"checkpoint {path!r}: the folder {folder!r} does not exist; create it "
                         "first.")
    return path


# ----------------------------------------------------------------------------------- writing
def save(path: str, state: EMState, fingerprint: dict) -> None:
    """Writes ``state`` with its ``fingerprint`` to ``path`` atomically (temporary file, fsync,
    rename).

    Args:
        path: destination file (no suffix is added).
        state: the loop state after an iteration.
        fingerprint: JSON-serialisable dict identifying the fit (see :func:`load`).
    """
    p = state.params
    meta = {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "fingerprint": fingerprint,
        "covariance_type": p.covariance_type,
        "iteration": int(state.iteration),
        "n_repaired": int(state.n_repaired),
        "converged": bool(state.converged),
        "finished": bool(state.finished),
    }
    arrays = {name: np.asarray(getattr(p, name)) for name in _PARAM_ARRAYS}
    arrays.update(lower_bound=np.asarray(state.lower_bound), history=np.asarray(state.history),
                  fast_path=np.asarray(state.fast_path, bool))
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".gmm_jax_ckpt_", suffix=".npz.tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, metadata=np.asarray(json.dumps(meta, allow_nan=True)), **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    try:  # make the rename itself durable (best effort: not every filesystem allows it)
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


# ----------------------------------------------------------------------------------- reading
_WHAT_TO_DO = ("Delete it (or pass another checkpoint path) to start a new fit, or call again "
               "with the data and arguments it was written with to resume it.")


def _read(path: str) -> tuple[dict, dict]:
    try:
        with np.load(path, allow_pickle=False) as data:
            contents = {name: data[name] for name in data.files}
    except ValueError as err:  # object arrays need pickle
        raise ValueError(f"checkpoint {path!r} holds pickled objects, which gmm_jax never writes "
                         f"and refuses to read ({err}). {_WHAT_TO_DO}") from err
    except Exception as err:  # truncated zip, zlib errors, not a zip at all
        raise ValueError(f"checkpoint {path!r} is not a readable .npz file (truncated or "
                         f"corrupt?): {type(err).__name__}: {err}. {_WHAT_TO_DO}") from err
    if "metadata" not in contents:
        raise ValueError(f"checkpoint {path!r} is not a gmm_jax EM checkpoint (no metadata "
                         f"entry). {_WHAT_TO_DO}")
    try:
        meta = json.loads(str(contents.pop("metadata")))
    except json.JSONDecodeError as err:
        raise ValueError(f"checkpoint {path!r}: its metadata is not valid JSON ({err}). "
                         f"{_WHAT_TO_DO}") from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"checkpoint {path!r} is not a gmm_jax EM checkpoint (format "
                         f"{meta.get('format') if isinstance(meta, dict) else None!r}, expected "
                         f"{FORMAT!r}). {_WHAT_TO_DO}")
    if meta.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"checkpoint {path!r} has schema version {meta.get('schema_version')!r}; "
                         f"this gmm_jax reads version {SCHEMA_VERSION}. {_WHAT_TO_DO}")
    return meta, contents


def read_metadata(path) -> dict:
    """The JSON metadata of a checkpoint (fingerprint, iterations done, finished), for tools
    that watch a running fit. Raises ``ValueError`` for a file that is not a checkpoint."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"checkpoint {path!r} does not exist.")
    return _read(path)[0]


def _describe(name: str, saved, current) -> str:
    if name == "data_checksum":
        return ("the data differ (checksum of the rows as read, in order and batch layout: "
                f"{str(saved)[:16]}... in the checkpoint, {str(current)[:16]}... now)")
    return f"{name} is {saved!r} in the checkpoint but {current!r} in this call"


def load(path, fingerprint: dict) -> EMState | None:
    """Reads the checkpoint at ``path`` written for the fit ``fingerprint`` identifies.

    Args:
        path: checkpoint file.
        fingerprint: the current call's fingerprint (dict of JSON values; must contain
            ``n_components``, ``n_features``, ``covariance_type``, ``dtype`` and ``max_iter``).

    Returns:
        the saved ``EMState``, or None when no file exists at ``path`` (start afresh).

    Raises:
        ValueError: the file is not a readable gmm_jax checkpoint, was written by a fit with
            other data, sizes or options, or holds arrays that do not fit them.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        return None
    meta, arrays = _read(path)
    saved = meta.get("fingerprint")
    if not isinstance(saved, dict):
        raise ValueError(f"checkpoint {path!r} has no fingerprint. {_WHAT_TO_DO}")
    diffs = [_describe(k, saved.get(k), fingerprint.get(k))
             for k in sorted(set(saved) | set(fingerprint)) if saved.get(k) != fingerprint.get(k)]
    if diffs:
        raise ValueError(f"checkpoint {path!r} was written by a different fit: "
                         + "; ".join(diffs) + f". {_WHAT_TO_DO}")
    return _state_from(path, meta, arrays, fingerprint)


def _state_from(path: str, meta: dict, arrays: dict, fp: dict) -> EMState:
    def bad(msg):
        return ValueError(f"checkpoint {path!r} is corrupt: {msg}. {_WHAT_TO_DO}")

    ct = meta.get("covariance_type")
    if ct not in COVARIANCE_TYPES or ct != fp["covariance_type"]:
        raise bad(f"covariance_type {ct!r}")
    k, d, max_iter = fp["n_components"], fp["n_features"], fp["max_iter"]
    dtype = np.dtype(fp["dtype"])
    shapes = dict(weights=(k,), means=(k, d), covariances=covariance_shape(ct, k, d),
                  precisions_cholesky=covariance_shape(ct, k, d), lower_bound=(),
                  history=(max_iter,), fast_path=(max_iter,))
    for name, shape in shapes.items():
        if name not in arrays:
            raise bad(f"missing array {name!r}")
        a = arrays[name]
        want = bool if name == "fast_path" else dtype
        if a.shape != shape or a.dtype != want:
            raise bad(f"{name} has shape {a.shape} and dtype {a.dtype}, expected {shape} {want}")
    for name in _PARAM_ARRAYS:
        if not np.all(np.isfinite(arrays[name])):
            raise bad(f"{name} holds NaN or infinite values")
    try:
        iteration = int(meta["iteration"])
        n_rep = int(meta["n_repaired"])
        converged, finished = meta["converged"], meta["finished"]
    except (KeyError, TypeError, ValueError) as err:
        raise bad(f"metadata lacks the loop counters ({err})") from err
    if not 0 <= iteration <= max_iter or n_rep < 0 or not isinstance(converged, bool) \
            or not isinstance(finished, bool):
        raise bad(f"loop counters out of range (iteration {iteration}, n_repaired {n_rep})")
    if iteration == max_iter and not finished:
        raise bad("max_iter iterations done but not marked finished")
    params = GMMParams(*(arrays[n] for n in _PARAM_ARRAYS), covariance_type=ct)
    return EMState(params, iteration, arrays["lower_bound"], arrays["history"],
                   arrays["fast_path"], n_rep, converged, finished)
