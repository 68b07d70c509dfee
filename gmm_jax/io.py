"""Saving and loading mixtures as ``.npz`` files, without pickle.

A file holds the four parameter arrays, the covariance type, a schema version and an optional
JSON metadata string (the estimator uses it for hyper-parameters and fit information). Loading
uses ``allow_pickle=False`` and checks everything: a missing, truncated, corrupt or foreign file,
an unknown schema version, shapes that do not fit the covariance type, non-finite values or
weights off the simplex all raise a ``ValueError`` that names the file and the problem.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile

import numpy as np

from gmm_jax.covariance import check_covariance_type, covariance_shape
from gmm_jax.types import COVARIANCE_TYPES, GMMParams

SCHEMA_VERSION = 1
_FORMAT = "gmm_jax.GMMParams"
_ARRAYS = ("weights", "means", "covariances", "precisions_cholesky")

__all__ = ["SCHEMA_VERSION", "load", "save"]


def save(path, params, *, metadata: dict | None = None) -> None:
    """Writes ``params`` to ``path`` as an uncompressed ``.npz`` (exactly that path).

    The write goes to a temporary file in the same folder that is then renamed, so an
    interrupted save never leaves a half-written file under ``path``.

    Args:
        path: file path (str or ``os.PathLike``); no suffix is added.
        params: ``GMMParams``, or a fitted ``gmm_jax.GaussianMixture`` (saved with its
            hyper-parameters, so ``GaussianMixture.load`` restores it).
        metadata: optional JSON-serialisable dict stored alongside.

    Example:
        >>> import os, tempfile, jax.numpy as jnp, gmm_jax
        >>> p = gmm_jax.params_from_covariances(jnp.array([0.5, 0.5]),
        ...     jnp.array([[0.0], [3.0]]), jnp.array([1.0, 2.0]), "spherical")
        >>> path = os.path.join(tempfile.mkdtemp(), "gmm.npz")
        >>> gmm_jax.save(path, p)
        >>> gmm_jax.load(path).covariance_type
        'spherical'
    """
    if not isinstance(params, GMMParams):
        if hasattr(params, "save") and hasattr(params, "get_params"):
            params.save(path)
            return
        raise TypeError(f"save expects GMMParams or a fitted GaussianMixture, got "
                        f"{type(params).__name__}.")
    check_covariance_type(params.covariance_type)
    arrays = {name: np.asarray(getattr(params, name)) for name in _ARRAYS}
    _check_arrays(arrays, params.covariance_type, where="params")
    try:
        meta = json.dumps(metadata or {}, allow_nan=True)
    except (TypeError, ValueError) as err:
        raise ValueError(f"metadata must be JSON-serialisable: {err}") from err
    payload = dict(
        format=np.asarray(_FORMAT),
        schema_version=np.asarray(SCHEMA_VERSION, np.int64),
        covariance_type=np.asarray(params.covariance_type),
        metadata=np.asarray(meta),
        **arrays,
    )
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".gmm_jax_", suffix=".npz", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **payload)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load(path, *, return_metadata: bool = False):
    """Reads a mixture written by :func:`save`.

    Args:
        path: file path.
        return_metadata: also return the stored metadata dict.

    Returns:
        ``GMMParams`` with NumPy leaves (dtype as saved), or ``(params, metadata)``.

    Raises:
        ValueError: the file is missing, not a gmm_jax file, truncated or corrupt, has an
            unsupported schema version, or holds inconsistent parameters.

    Example:
        >>> import os, tempfile, jax.numpy as jnp, gmm_jax
        >>> p = gmm_jax.params_from_covariances(jnp.array([1.0]), jnp.zeros((1, 2)),
        ...     jnp.ones((1, 2)), "diag")
        >>> path = os.path.join(tempfile.mkdtemp(), "gmm.npz")
        >>> gmm_jax.save(path, p)
        >>> gmm_jax.load(path).means.shape
        (1, 2)
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"cannot load {path!r}: no such file.")
    try:
        with np.load(path, allow_pickle=False) as data:
            contents = {name: data[name] for name in data.files}
    except ValueError as err:  # object arrays need pickle
        raise ValueError(f"cannot load {path!r}: it holds pickled objects, which gmm_jax never "
                         f"writes and refuses to read ({err}).") from err
    except (OSError, EOFError, zipfile.BadZipFile, KeyError, RuntimeError) as err:
        raise ValueError(f"cannot load {path!r}: not a readable .npz file (truncated or corrupt?): "
                         f"{type(err).__name__}: {err}") from err
    except Exception as err:  # zlib and other low-level decode errors
        raise ValueError(f"cannot load {path!r}: corrupt file: {type(err).__name__}: {err}") \
            from err
    if "format" not in contents or str(contents["format"]) != _FORMAT:
        raise ValueError(f"cannot load {path!r}: not a gmm_jax mixture file (no "
                         f"format={_FORMAT!r} entry).")
    version = contents.get("schema_version")
    if version is None or version.shape != () or not np.issubdtype(version.dtype, np.integer):
        raise ValueError(f"cannot load {path!r}: missing or malformed schema_version.")
    if int(version) != SCHEMA_VERSION:
        raise ValueError(f"cannot load {path!r}: schema version {int(version)} is not supported "
                         f"by this gmm_jax (expects {SCHEMA_VERSION}).")
    missing = [k for k in ("covariance_type", "metadata", *_ARRAYS) if k not in contents]
    if missing:
        raise ValueError(f"cannot load {path!r}: missing entries {missing}.")
    ct = str(contents["covariance_type"])
    if ct not in COVARIANCE_TYPES:
        raise ValueError(f"cannot load {path!r}: unknown covariance_type {ct!r}.")
    arrays = {name: contents[name] for name in _ARRAYS}
    try:
        _check_arrays(arrays, ct, where=repr(path))
    except ValueError as err:
        raise ValueError(f"cannot load {path!r}: {err}") from err
    try:
        meta = json.loads(str(contents["metadata"]))
    except json.JSONDecodeError as err:
        raise ValueError(f"cannot load {path!r}: metadata is not valid JSON ({err}).") from err
    params = GMMParams(*(arrays[n] for n in _ARRAYS), covariance_type=ct)
    return (params, meta) if return_metadata else params


def _check_arrays(arrays: dict, covariance_type: str, *, where: str) -> None:
    for name, a in arrays.items():
        if not np.issubdtype(a.dtype, np.floating):
            raise ValueError(f"{name} must be floating point, got dtype {a.dtype}.")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name} contains NaN or infinite values.")
    w, m = arrays["weights"], arrays["means"]
    if m.ndim != 2:
        raise ValueError(f"means must be 2-D (K, D), got shape {m.shape}.")
    k, d = m.shape
    if w.shape != (k,):
        raise ValueError(f"weights must have shape ({k},) to match means {m.shape}, got {w.shape}.")
    if np.any(w < 0) or not np.isclose(np.sum(w), 1.0, rtol=0, atol=1e-4):
        raise ValueError(f"weights must be non-negative and sum to 1, got sum {np.sum(w):.6g}.")
    shape = covariance_shape(covariance_type, k, d)
    for name in ("covariances", "precisions_cholesky"):
        if arrays[name].shape != shape:
            raise ValueError(f"{name} must have shape {shape} for covariance_type="
                             f"{covariance_type!r}, got {arrays[name].shape}.")
