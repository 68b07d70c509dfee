"""Input checks that run on the host, before anything is traced.

Every public entry point passes its inputs through these functions, so bad input fails fast with
a ``ValueError``/``TypeError`` that says what is wrong and what to do, instead of a tracer error or
a silent NaN deep inside a compiled loop.

Which checks run where:

* concrete inputs (NumPy arrays, lists, committed ``jax.Array`` values): everything: dtype,
  rank, sizes, feature counts, NaN/inf, weights that are negative or sum to zero, initial
  parameters off the simplex or not positive definite;
* traced inputs (called inside the user's ``jax.jit``, ``jax.vmap``, ``jax.grad``): only what
  is known at trace time: dtype, rank, shapes, sizes and feature counts. Values cannot be
  inspected there, so NaN in traced data propagates like in any JAX function.
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
import numpy as np

from gmm_jax.covariance import check_covariance_type, covariance_shape


class DataTypeError(TypeError, ValueError):
    """Data of a kind gmm_jax cannot use (complex, sparse).

    It is both a ``TypeError`` and a ``ValueError`` so callers following either convention
    (NumPy's or scikit-learn's) catch it.
    """


def is_traced(*values) -> bool:
    """Whether any of ``values`` (pytrees allowed) holds a tracer (abstract, no data)."""
    return any(isinstance(leaf, jax.core.Tracer) for v in values for leaf in jax.tree.leaves(v))


def float_dtype(dtype=None) -> np.dtype:
    """The floating dtype JAX will compute in: float64 only when x64 is enabled."""
    if dtype is not None and np.issubdtype(dtype, np.floating) and np.dtype(dtype).itemsize >= 8:
        return np.dtype(jax.dtypes.canonicalize_dtype(np.float64))
    return np.dtype(np.float32)


def check_array(X, *, min_samples: int = 1, name: str = "X", n_features: int | None = None,
                dtype=None):
    """Returns ``X`` as a finite 2-D floating array, or raises.

    Concrete input comes back as a NumPy array; traced input (inside the caller's ``jit``,
    ``vmap`` or ``grad``) as a ``jax.Array`` of the floating dtype, after the static checks only.

    Args:
        X: array-like of shape (N, D); bool and integer input is converted to float.
        min_samples: the fewest rows accepted (the number of components when fitting).
        name: name used in messages.
        n_features: if given, the number of columns required (the fitted model's).
        dtype: force this floating dtype; default float64 when x64 is on and X is float64,
            else float32.

    Raises:
        TypeError: non-numeric data (strings, objects, complex).
        ValueError: wrong rank, empty, NaN/inf, too few samples, wrong number of features.
    """
    if is_traced(X):
        if not (jnp.issubdtype(X.dtype, jnp.number) or X.dtype == bool):
            raise TypeError(f"{name} must be numeric (float, int or bool), got dtype {X.dtype}.")
        if jnp.issubdtype(X.dtype, jnp.complexfloating):
            raise DataTypeError(
                f"Complex data not supported: {name} must be real-valued, got dtype {X.dtype}.")
        _check_shape(X.shape, name=name, min_samples=min_samples, n_features=n_features)
        target = np.dtype(dtype) if dtype is not None else float_dtype(X.dtype)
        return X.astype(target)
    if isinstance(X, jax.Array):
        X = np.asarray(X)
    if _is_sparse(X):
        raise DataTypeError(
            f"Sparse data was passed as {name} ({type(X).__name__}), but gmm_jax needs dense "
            "data: a sparse matrix or sparse array is not supported. Convert it with X.toarray()."
        )
    try:
        arr = np.asarray(X)
    except Exception as err:  # ragged lists and the like
        raise ValueError(f"{name} could not be converted to a numeric array: {err}") from err
    if arr.dtype == object:
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError) as err:
            raise TypeError(
                f"{name} must hold numbers; got an object array that cannot be converted to float "
                f"({err}). Encode categorical columns numerically first."
            ) from err
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TypeError(
            f"{name} must be numeric (float, int or bool), got dtype {arr.dtype}. "
            "Encode strings or categories numerically first."
        )
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise DataTypeError(
            f"Complex data not supported: {name} must be real-valued, got dtype {arr.dtype}."
        )
    _check_rank(arr.shape, name)
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty: found array with 0 sample(s) (shape={arr.shape}) "
                         "while a minimum of 1 is required.")
    if arr.shape[1] == 0:
        raise ValueError(f"{name} is empty: found array with 0 feature(s) (shape={arr.shape}) "
                         "while a minimum of 1 is required.")
    target = np.dtype(dtype) if dtype is not None else float_dtype(arr.dtype)
    if arr.dtype != target:
        arr = arr.astype(target)
    if not np.all(np.isfinite(arr)):
        bad_rows = np.flatnonzero(~np.all(np.isfinite(arr), axis=1))
        bad = int(np.sum(~np.isfinite(arr)))
        raise ValueError(
            f"{name} contains {bad} NaN or infinite value(s) (first in row {int(bad_rows[0])}). "
            "Remove or impute them before fitting or scoring."
        )
    _check_shape(arr.shape, name=name, min_samples=min_samples, n_features=n_features)
    return arr


def _check_rank(shape, name):
    if len(shape) != 2:
        hint = (" Reshape your data with X.reshape(-1, 1) if it has a single feature or "
                "X.reshape(1, -1) if it is a single sample." if len(shape) == 1 else "")
        raise ValueError(
            f"{name} must be 2-D (n_samples, n_features), got shape {tuple(shape)}.{hint}"
        )


def _check_shape(shape, *, name, min_samples, n_features):
    _check_rank(shape, name)
    if shape[0] == 0 or shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {tuple(shape)}.")
    if n_features is not None and shape[1] != n_features:
        raise ValueError(
            f"{name} has {shape[1]} features, but the model was fitted with {n_features} "
            "features."
        )
    if shape[0] < min_samples:
        raise ValueError(
            f"{name} has {shape[0]} samples, fewer than the {min_samples} required "
            "(n_components must not exceed n_samples)."
        )


def _is_sparse(X) -> bool:
    try:
        import scipy.sparse as sp
    except ImportError:  # pragma: no cover - scipy is a dependency
        return False
    return sp.issparse(X)


def check_positive_int(value, name: str) -> int:
    if isinstance(value, (np.ndarray, jax.Array)) and value.shape == () and \
            np.issubdtype(value.dtype, np.integer) and not is_traced(value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}.")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}.")
    return int(value)


def check_nonneg_float(value, name: str):
    """A finite non-negative real; traced scalars pass through unchecked (shape () required)."""
    if is_traced(value):
        if jnp.ndim(value) != 0:
            raise ValueError(f"{name} must be a scalar, got shape {jnp.shape(value)}.")
        return value
    if isinstance(value, (np.ndarray, jax.Array)) and value.shape == ():
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}.")
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value}.")
    return float(value)


def check_loop_options(max_iter, tol, reg_covar, eigenvalue_floor=None) -> tuple:
    """Validates the options of the EM loop (the eigenvalue floor is optional: None stays None);
    returns (max_iter, tol, reg_covar, eigenvalue_floor) normalised."""
    return (
        check_positive_int(max_iter, "max_iter"),
        check_nonneg_float(tol, "tol"),
        check_nonneg_float(reg_covar, "reg_covar"),
        None if eigenvalue_floor is None else check_nonneg_float(eigenvalue_floor,
                                                                 "eigenvalue_floor"),
    )


def check_em_options(n_components, max_iter, tol, reg_covar) -> tuple:
    """Validates the options every EM entry point shares; returns them normalised."""
    return (check_positive_int(n_components, "n_components"),
            *check_loop_options(max_iter, tol, reg_covar)[:3])


def check_key(key):
    """Accepts a JAX PRNG key (typed or raw uint32) or an int seed; returns a key."""
    if isinstance(key, numbers.Integral) and not isinstance(key, bool):
        return jax.random.key(int(key))
    if isinstance(key, jax.Array) or isinstance(key, np.ndarray):
        if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
            if key.shape != ():
                raise TypeError(f"key must be a single PRNG key, got a batch of shape {key.shape} "
                                "(vmap over keys instead).")
            return key
        if key.shape == (2,) and key.dtype == np.uint32:
            return jax.random.wrap_key_data(jnp.asarray(key))
    raise TypeError(f"key must be a jax.random.key(...) or an int seed, got {type(key).__name__}.")


def check_init_arrays(weights_init, means_init, precisions_init, *, n_components: int,
                      n_features: int, covariance_type: str, dtype) -> tuple:
    """Validates user-supplied initial parameters; returns arrays (or None).

    Concrete arrays are fully checked and returned as NumPy arrays of ``dtype``; traced ones
    (inside the caller's transforms) only for shape, and returned as ``jax.Array``.
    """
    check_covariance_type(covariance_type)
    k, d = n_components, n_features
    shapes = {
        "weights_init": (k,),
        "means_init": (k, d),
        "precisions_init": covariance_shape(covariance_type, k, d),
    }
    out = []
    for name, value in (("weights_init", weights_init), ("means_init", means_init),
                        ("precisions_init", precisions_init)):
        if value is None:
            out.append(None)
            continue
        shape = shapes[name]
        if is_traced(value):
            if tuple(jnp.shape(value)) != shape:
                raise ValueError(_shape_message(name, shape, jnp.shape(value), covariance_type))
            out.append(jnp.asarray(value).astype(dtype))
            continue
        a = np.asarray(value, dtype=np.float64)
        if a.shape != shape:
            raise ValueError(_shape_message(name, shape, a.shape, covariance_type))
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name} contains NaN or infinite values.")
        if name == "weights_init":
            if np.any(a < 0) or np.any(a > 1):
                raise ValueError("weights_init must hold finite values in [0, 1].")
            if not np.isclose(np.sum(a), 1.0, rtol=0, atol=1e-6):
                raise ValueError(
                    f"weights_init must sum to 1 (they lie on the simplex), got sum "
                    f"{np.sum(a):.6g}.")
        if name == "precisions_init":
            if covariance_type in ("full", "tied"):
                mats = a.reshape(-1, d, d)
                if not np.allclose(mats, np.swapaxes(mats, -1, -2), rtol=1e-6, atol=1e-10):
                    raise ValueError("precisions_init must be symmetric.")
                if np.any(np.linalg.eigvalsh(mats) <= 0):
                    raise ValueError("precisions_init must be symmetric, positive-definite.")
            elif np.any(a <= 0):
                raise ValueError("precisions_init must be positive.")
        out.append(a.astype(dtype))
    return tuple(out)


def _shape_message(name, shape, got, covariance_type):
    if name == "precisions_init":
        return (f"precisions_init for covariance_type={covariance_type!r} must have shape "
                f"{shape}, got {tuple(got)}.")
    return f"{name} must have shape {shape}, got {tuple(got)}."


def check_sample_weight(sample_weight, n_samples: int, dtype):
    """Validates per-sample weights: shape (N,), finite, non-negative, not all zero.

    Traced weights are checked for shape only.
    """
    if sample_weight is None:
        return None
    if is_traced(sample_weight):
        w = jnp.asarray(sample_weight).astype(dtype)
        if w.ndim == 0:
            return jnp.broadcast_to(w, (n_samples,))
        if w.shape != (n_samples,):
            raise ValueError(f"sample_weight must have shape ({n_samples},), got {w.shape}.")
        return w
    w = np.asarray(sample_weight)
    if not (np.issubdtype(w.dtype, np.number) or w.dtype == bool):
        raise TypeError(f"sample_weight must be numeric, got dtype {w.dtype}.")
    w = w.astype(dtype)
    if w.ndim == 0:
        w = np.full((n_samples,), w, dtype=dtype)
    if w.shape != (n_samples,):
        raise ValueError(f"sample_weight must have shape ({n_samples},), got {w.shape}.")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError("sample_weight must be finite and non-negative.")
    if np.sum(w) <= 0:
        raise ValueError("sample_weight sums to zero; at least one sample needs positive weight.")
    return w


def check_labels(labels, n_samples: int, n_components: int, *, name: str = "labels"):
    """Validates semi-supervised labels: (N,) integers in [-1, K), -1 for unlabelled rows.

    Traced labels are checked for shape and dtype only.
    """
    if labels is None:
        return None
    if is_traced(labels):
        if labels.shape != (n_samples,) or not jnp.issubdtype(labels.dtype, jnp.integer):
            raise ValueError(f"{name} must be ({n_samples},) integers, got {labels.dtype} "
                             f"{labels.shape}.")
        return labels.astype(jnp.int32)
    y = np.asarray(labels)
    if y.shape != (n_samples,):
        raise ValueError(f"{name} must have shape ({n_samples},) (one per row of X), got "
                         f"{y.shape}.")
    if y.dtype == bool or not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and \
                np.all(y == np.round(y)):
            y = y.astype(np.int64)
        else:
            raise TypeError(f"{name} must be integers (component index, -1 for unlabelled), got "
                            f"dtype {y.dtype}.")
    if np.any(y < -1) or np.any(y >= n_components):
        bad = y[(y < -1) | (y >= n_components)]
        raise ValueError(f"{name} must lie in [-1, {n_components}) (-1 marks an unlabelled row); "
                         f"found {bad[:5].tolist()}.")
    return y.astype(np.int32)


def key_from_random_state(random_state):
    """A JAX PRNG key from scikit-learn's ``random_state`` conventions.

    Args:
        random_state: None (fresh OS entropy on every call), an int seed (the same key on every
            call), a ``np.random.Generator`` or ``np.random.RandomState`` (one draw from it, so
            successive calls differ but the sequence is reproducible), or a JAX key (used as is).

    Returns:
        a typed ``jax.random.key``.

    Raises:
        TypeError: for any other type; ValueError: for a negative or too large seed.

    Example:
        >>> import numpy as np
        >>> from gmm_jax.validation import key_from_random_state
        >>> k = key_from_random_state(np.random.default_rng(0))
        >>> k.shape
        ()
    """
    if random_state is None:
        seed = int(np.random.SeedSequence().generate_state(1, dtype=np.uint32)[0])
    elif isinstance(random_state, bool):
        raise TypeError(f"random_state must be None, an int or a numpy Generator, got "
                        f"{random_state!r}.")
    elif isinstance(random_state, numbers.Integral):
        seed = int(random_state)
        if not 0 <= seed < 2**32:
            raise ValueError(f"random_state must be an int in [0, 2**32 - 1], got {seed}.")
    elif isinstance(random_state, np.random.Generator):
        seed = int(random_state.integers(0, 2**32, dtype=np.uint64))
    elif isinstance(random_state, np.random.RandomState):
        seed = int(random_state.randint(0, 2**32, dtype=np.uint64))
    elif isinstance(random_state, (jax.Array, np.ndarray)):
        return check_key(random_state)
    else:
        raise TypeError(
            "random_state must be None, an int, a numpy Generator/RandomState or a JAX key, got "
            f"{type(random_state).__name__}."
        )
    # uint32 seeds keep keys identical with and without x64.
    return jax.random.key(np.uint32(seed))
