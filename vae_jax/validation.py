"""Input checks for vae_jax that run on the host, before anything is traced.

Every public entry point (the model constructors, :func:`vae_jax.train`, ``evaluate*``,
:func:`vae_jax.cluster`, :func:`vae_jax.generate`, ``predict``) passes its inputs through these
functions, so bad input fails at once with a ``ValueError`` or ``TypeError`` that names the
problem and the fix, instead of a chex ``AssertionError`` from inside the traced loss, a NaN
loss blamed on the learning rate, or a silent NaN.

Inputs that are JAX tracers (a caller's ``jit``/``vmap``) get the static checks only (rank,
feature count); value checks (NaN/inf, range, labels) need concrete data.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

LIKELIHOODS = ("bernoulli", "gaussian")


def _is_tracer(x) -> bool:
    return isinstance(x, jax.core.Tracer)


def _rows(mask_rows: np.ndarray, limit: int = 5) -> str:
    idx = np.flatnonzero(mask_rows)
    shown = ", ".join(str(int(i)) for i in idx[:limit])
    more = f" and {idx.size - limit} more" if idx.size > limit else ""
    return f"row {shown}{more}" if idx.size == 1 else f"rows {shown}{more}"


def _as_array(X, name: str):
    """X as a numpy or JAX array of a numeric dtype (JAX arrays and tracers are kept)."""
    if isinstance(X, jax.Array):
        arr = X
    else:
        if hasattr(X, "toarray") and hasattr(X, "nnz"):
            raise TypeError(f"{name} is a sparse matrix ({type(X).__name__}); vae_jax needs "
                            f"dense data: pass {name}.toarray()")
        try:
            arr = np.asarray(X)
        except Exception as err:  # ragged nested lists and the like
            raise ValueError(f"{name} could not be converted to an array ({err}); pass an "
                             "(N, D) numpy or JAX array") from err
        if arr.dtype == object:
            try:
                arr = arr.astype(np.float64)
            except (TypeError, ValueError) as err:
                raise TypeError(f"{name} must hold numbers, got an object array that cannot be "
                                f"converted to float ({err})") from err
    dtype = np.dtype(arr.dtype)
    if np.issubdtype(dtype, np.complexfloating):
        raise TypeError(f"{name} must be real-valued, got dtype {dtype}")
    if not (np.issubdtype(dtype, np.number) or dtype == np.bool_):
        raise TypeError(f"{name} must be numeric (float, int or bool), got dtype {dtype}; "
                        "encode strings or categories numerically first")
    return arr


def check_data(
    X,
    *,
    name: str = "X",
    n_features: int | None = None,
    likelihood: str | None = None,
    unit_interval: bool = False,
    model_name: str = "the model",
):
    """Checks an (N, D) data matrix and returns it as a float32 JAX array.

    Args:
        X: (N, D) array-like (numpy, JAX, nested lists); bool and int are converted.
        name: argument name used in the messages (``"X"``, ``"X_val"``).
        n_features: the D the model was built for (None: any).
        likelihood: the model's likelihood; ``"bernoulli"`` requires values in [0, 1].
        unit_interval: require values in [0, 1] whatever the likelihood (dynamic
            binarisation reads them as probabilities).
        model_name: how the model is named in the messages.

    Returns:
        (N, D) float32 ``jax.Array``.

    Raises:
        TypeError: non-numeric, complex or sparse data.
        ValueError: wrong rank, no rows or no columns, a feature count other than
            ``n_features``, NaN/inf (the message gives the first bad rows), or values outside
            [0, 1] where they are required.

    Example:
        >>> check_data([[0.0, 1.0], [0.5, 0.5]], n_features=2).shape
        (2, 2)
    """
    arr = _as_array(X, name)
    shape = tuple(arr.shape)
    if len(shape) != 2:
        hint = ""
        if len(shape) == 1:
            hint = (f"; for a single sample pass {name}.reshape(1, -1)")
        elif len(shape) > 2:
            hint = f"; flatten images first, e.g. {name}.reshape(len({name}), -1)"
        raise ValueError(f"{name} must be a 2-D (N, D) array, got shape {shape}{hint}")
    n, d = shape
    if n == 0:
        raise ValueError(f"{name} is empty (0 rows, shape {shape}); pass at least one sample")
    if d == 0:
        raise ValueError(f"{name} has no features (shape {shape})")
    if n_features is not None and d != int(n_features):
        raise ValueError(
            f"{name} has {d} features but {model_name} expects {int(n_features)} (the "
            f"n_features it was built with); pass data with {int(n_features)} columns, or "
            f"build the model with n_features={d}")
    if _is_tracer(arr):
        return arr.astype(jnp.float32)
    xp = jnp if isinstance(arr, jax.Array) else np
    values = arr.astype(xp.float32) if xp is jnp else arr
    if np.issubdtype(np.dtype(arr.dtype), np.floating):
        finite_rows = xp.all(xp.isfinite(values), axis=1)
        if not bool(xp.all(finite_rows)):
            bad = ~np.asarray(finite_rows)
            first = int(np.flatnonzero(bad)[0])
            kinds = np.asarray(values[first])
            what = "NaN" if np.isnan(kinds).any() else "inf"
            raise ValueError(
                f"{name} contains NaN or inf in {int(bad.sum())} of {n} rows ({_rows(bad)}; "
                f"row {first} has {what} in column {int(np.flatnonzero(~np.isfinite(kinds))[0])}"
                "); drop or impute those rows first")
    if likelihood == "bernoulli" or unit_interval:
        lo, hi = float(xp.min(values)), float(xp.max(values))
        if lo < 0.0 or hi > 1.0:
            bad = ~np.asarray(xp.all((values >= 0) & (values <= 1), axis=1))
            why = ("the Bernoulli likelihood reads every feature as a probability in [0, 1]"
                   if likelihood == "bernoulli" else
                   "binarize=True draws Bernoulli(x) and needs x in [0, 1]")
            raise ValueError(
                f"{name} has values in [{lo:g}, {hi:g}] ({_rows(bad)} outside [0, 1]) but {why}; "
                f"rescale it (e.g. {name} / {name}.max(), or (X - min) / (max - min)), or use "
                "likelihood='gaussian' for real-valued data")
    return jnp.asarray(values, jnp.float32)


def check_labels(y, n_samples: int, *, n_classes: int | None = None, name: str = "y") -> jax.Array:
    """Checks an (N,) label vector with ``-1`` for unlabelled samples; returns int32.

    Args:
        y: (N,) integer labels in ``[0, n_classes)`` or -1; floats are accepted when they
            hold whole numbers (``3.0``).
        n_samples: N of the matching data.
        n_classes: number of classes of the model (None: only the -1 / integer checks).
        name: argument name used in the messages.

    Returns:
        (N,) int32 ``jax.Array``.

    Raises:
        TypeError: non-numeric labels.
        ValueError: one-hot or other 2-D labels, a count other than N, non-integer values,
            NaN, negative labels other than -1, labels >= n_classes (with a hint when they look
            1-based), or no labelled sample at all.

    Example:
        >>> check_labels([0, -1, 2], 3, n_classes=3).tolist()
        [0, -1, 2]
    """
    arr = _as_array(y, name)
    shape = tuple(arr.shape)
    if len(shape) == 2 and shape[0] == n_samples and shape[1] > 1:
        raise ValueError(
            f"{name} looks one-hot or multi-column (shape {shape}); pass class indices of shape "
            f"({n_samples},), e.g. {name}.argmax(axis=1), with -1 for unlabelled rows")
    if len(shape) == 2 and shape[1] == 1:
        arr = arr.reshape(-1)
        shape = tuple(arr.shape)
    if len(shape) != 1:
        raise ValueError(f"{name} must be a 1-D array of class indices, got shape {shape}")
    if shape[0] != n_samples:
        raise ValueError(f"{name} has {shape[0]} labels for {n_samples} samples; pass one label "
                         "per row of X (-1 for unlabelled rows)")
    if _is_tracer(arr):
        return arr.astype(jnp.int32)
    a = np.asarray(arr)
    if a.dtype == np.bool_:
        raise TypeError(f"{name} is boolean; pass integer class indices (-1 for unlabelled)")
    if np.issubdtype(a.dtype, np.floating):
        if not np.all(np.isfinite(a)):
            i = int(np.flatnonzero(~np.isfinite(a))[0])
            raise ValueError(f"{name} contains NaN or inf (first at index {i}); use -1 to mark "
                             "an unlabelled sample")
        frac = a != np.round(a)
        if frac.any():
            i = int(np.flatnonzero(frac)[0])
            raise ValueError(f"{name} must hold whole class indices, but {name}[{i}] = {a[i]:g}; "
                             "round or map your labels to integers 0..K-1 (-1 = unlabelled)")
    a = a.astype(np.int64)
    neg = a < -1
    if neg.any():
        i = int(np.flatnonzero(neg)[0])
        raise ValueError(f"{name}[{i}] = {int(a[i])}: only -1 marks an unlabelled sample; "
                         "labels must be -1 or a class index 0..K-1")
    if n_classes is not None:
        K = int(n_classes)
        big = a >= K
        if big.any():
            i = int(np.flatnonzero(big)[0])
            lab = a[a >= 0]
            hint = ""
            if lab.size and lab.min() >= 1 and lab.max() == K:
                hint = " They look 1-based: pass y - 1 (keeping -1 for unlabelled)."
            raise ValueError(f"{name}[{i}] = {int(a[i])} is out of range for a model with "
                             f"{K} classes: labels must be 0..{K - 1}, or -1 for "
                             f"unlabelled.{hint}")
    return jnp.asarray(a, jnp.int32)


# ------------------------------------------------------------------------------- arguments


def check_int(value, name: str, *, minimum: int = 1) -> int:
    """Returns ``value`` as an int >= ``minimum`` or raises TypeError/ValueError.

    Example:
        >>> check_int(3, "latent_dim")
        3
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, numbers.Real) and float(value).is_integer() and not isinstance(
                value, bool):
            value = int(value)
        else:
            raise TypeError(f"{name} must be an integer, got {value!r} "
                            f"({type(value).__name__})")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_float(value, name: str, *, minimum: float | None = None, positive: bool = False
                ) -> float:
    """Returns ``value`` as a finite float (>= ``minimum``, or > 0 if ``positive``).

    Example:
        >>> check_float(0.5, "free_bits", minimum=0.0)
        0.5
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_hidden(hidden, name: str = "hidden", *, allow_empty: bool = True) -> tuple[int, ...]:
    """Hidden layer widths as a tuple of positive ints.

    Example:
        >>> check_hidden([256, 128])
        (256, 128)
    """
    if isinstance(hidden, numbers.Integral) and not isinstance(hidden, bool):
        raise TypeError(f"{name} must be a sequence of layer widths, e.g. ({int(hidden)},), "
                        f"got the int {hidden}")
    if not isinstance(hidden, Sequence) or isinstance(hidden, str):
        raise TypeError(f"{name} must be a sequence of layer widths, got {hidden!r}")
    out = tuple(check_int(h, f"{name}[{i}]") for i, h in enumerate(hidden))
    if not out and not allow_empty:
        raise ValueError(f"{name} needs at least one hidden layer")
    return out


def check_choice(value, name: str, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices``, else a ValueError listing them."""
    if value not in tuple(choices):
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


def check_rngs(rngs) -> None:
    """Raises TypeError unless ``rngs`` is an ``nnx.Rngs``."""
    from flax import nnx

    if not isinstance(rngs, nnx.Rngs):
        raise TypeError(f"rngs must be an nnx.Rngs (e.g. rngs=nnx.Rngs(0)), got "
                        f"{type(rngs).__name__}")


def check_key(key):
    """A typed PRNG key from a key, raw uint32 key data or an int seed.

    Raises:
        TypeError: anything else (a float, a string, None).
    """
    if isinstance(key, bool):
        raise TypeError("key must be a jax.random.key(...) or an int seed, got a bool")
    if isinstance(key, numbers.Integral):
        return jax.random.key(int(key))
    if isinstance(key, jax.Array | np.ndarray):
        if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
            if key.shape != ():
                raise ValueError(f"key must be a single PRNG key, got an array of keys of shape "
                                 f"{key.shape}")
            return key
        if np.issubdtype(np.dtype(key.dtype), np.unsignedinteger) and key.shape == (2,):
            return jax.random.wrap_key_data(jnp.asarray(key, jnp.uint32))
    raise TypeError(f"key must be a jax.random.key(...) or an int seed, got {key!r}")


# ------------------------------------------------------------------------------ model facts


def model_n_features(model) -> int | None:
    """The data width D a model was built for (``n_features``), or None if it does not say."""
    for attr in ("n_features", "in_features"):
        v = getattr(model, attr, None)
        if isinstance(v, numbers.Integral):
            return int(v)
    return None


def model_likelihood(model) -> str | None:
    """``"bernoulli"`` / ``"gaussian"`` from the model's decoder, or None."""
    dec = getattr(model, "decoder", None)
    lik = getattr(dec, "likelihood", None) or getattr(model, "likelihood", None)
    return lik if lik in LIKELIHOODS else None


def check_model_data(model, X, *, name: str = "X", unit_interval: bool = False):
    """:func:`check_data` with the width and likelihood read from ``model``."""
    return check_data(X, name=name, n_features=model_n_features(model),
                      likelihood=model_likelihood(model), unit_interval=unit_interval,
                      model_name=type(model).__name__)


def check_has_clusters(model, what: str = "cluster") -> int:
    """Returns the model's number of clusters K; TypeError if it has none (e.g. a VAE)."""
    K = getattr(model, "n_components", None)
    if not callable(getattr(model, "cluster_probs", None)) or not isinstance(K, numbers.Integral):
        raise TypeError(
            f"{what} needs a model with clusters (GMVAE or M2); {type(model).__name__} has "
            "none. For a VAE, cluster its codes instead: gmm_jax.fit(key, "
            "vae_jax.evaluate(vae, X, key, method='latent_mean'), K)")
    return int(K)
