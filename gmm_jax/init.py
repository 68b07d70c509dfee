"""Initial responsibilities for EM, as scikit-learn builds them, plus LBG splitting.

Each method returns an (N, K) responsibility matrix; one M-step on it gives the initial
parameters (so every method yields a consistent set of weights, means and covariances):

* ``"kmeans"``: one-hot labels of a k-means++-seeded Lloyd run;
* ``"k-means++"``: one-hot on the K samples the k-means++ seeding picks (other rows zero);
* ``"random_from_data"``: one-hot on K distinct random samples (other rows zero);
* ``"random"``: uniform random rows, normalised;
* ``"lbg"``: one-hot labels of Linde-Buzo-Gray splitting (deterministic).

Every method is weight-aware (rows of weight zero, e.g. padding, are never picked and never
counted) and mask-aware (only the first ``n_active`` of the K slots get responsibility), and its
random draws are made per row and per component, so padding rows or component slots does not
change the result from the same key.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gmm_jax import kmeans as km
from gmm_jax.linalg import mm

Array = jax.Array

INIT_METHODS = ("kmeans", "k-means++", "random", "random_from_data", "lbg")


#: Methods whose responsibilities are one-hot on one seed row per component (every other row
#: zero): their initial statistics come from the K seed rows alone
#: (``gmm_jax.em.stats_from_seed_rows``), not from a pass over all N rows.
ROW_SEEDED = ("k-means++", "random_from_data")


def check_init(init: str) -> str:
    if init not in INIT_METHODS:
        raise ValueError(f"init must be one of {INIT_METHODS}, got {init!r}.")
    return init


def initial_responsibilities(key: Array, X: Array, n_components: int, init: str,
                             *, sample_weight: Array | None = None, n_active=None,
                             kmeans_max_iter: int = 300) -> Array:
    """(N, K) initial responsibilities (zero in masked columns).

    Args:
        key: PRNG key.
        X: (N, D) centred samples.
        n_components: K, static (the number of slots).
        init: one of ``INIT_METHODS``, static.
        sample_weight: optional (N,) row weights.
        n_active: optional number of active components (<= K, may be traced).
        kmeans_max_iter: Lloyd iteration cap for ``"kmeans"`` and ``"lbg"``.
    """
    n = X.shape[0]
    k = n_components
    dtype = X.dtype
    w = jnp.ones((n,), dtype) if sample_weight is None else sample_weight.astype(dtype)
    active = km._active_mask(k, n_active)
    if init == "random":
        cols = jax.vmap(lambda j: jax.random.uniform(jax.random.fold_in(key, j), (n,), dtype))(
            jnp.arange(k))
        r = jnp.where(active[:, None], cols, 0.0).T
        return r / jnp.sum(r, axis=1, keepdims=True)
    if init in ROW_SEEDED:
        idx = seed_rows(key, X, k, init, sample_weight=w, n_active=n_active)
        return _one_hot_rows(idx, n, k, active, dtype)
    if init == "kmeans":
        C0, _ = km.kmeans_plusplus(key, X, k, sample_weight=w, n_active=n_active)
        mean = mm(w, X) / jnp.sum(w)
        tol = 1e-4 * jnp.mean(mm(w, jnp.square(X - mean)) / jnp.sum(w))
        _, labels, _, _ = km.lloyd(X, C0, max_iter=kmeans_max_iter, tol=tol, sample_weight=w,
                                   n_active=n_active)
        return jax.nn.one_hot(labels, k, dtype=dtype)
    if init == "lbg":
        C = km.lbg_centers(X, k, sample_weight=w, n_active=n_active)
        labels, _ = km.assign(X, C, active)
        return jax.nn.one_hot(labels, k, dtype=dtype)
    raise ValueError(check_init(init))


def seed_rows(key: Array, X: Array, n_components: int, init: str, *,
              sample_weight: Array | None = None, n_active=None) -> Array:
    """(K,) int index of the row seeding each component, for the ``ROW_SEEDED`` methods.

    ``"random_from_data"``: K distinct rows of positive weight, uniformly at random;
    ``"k-means++"``: the rows k-means++ seeding picks. Only the first ``n_active`` entries are
    used (the others index some row and are masked by the caller).
    """
    w = km._weights(X, sample_weight)
    if init == "random_from_data":
        g = jax.random.gumbel(key, (X.shape[0],), X.dtype)
        return jax.lax.top_k(jnp.where(w > 0, g, -jnp.inf), n_components)[1]
    if init == "k-means++":
        return km.kmeans_plusplus(key, X, n_components, sample_weight=w, n_active=n_active)[1]
    raise ValueError(f"seed_rows serves {ROW_SEEDED}, got {init!r}.")


def _one_hot_rows(idx: Array, n: int, k: int, active: Array, dtype) -> Array:
    """(N, K) with a one at (idx[j], j) for every active slot j."""
    vals = jnp.where(active, 1.0, 0.0).astype(dtype)
    return jnp.zeros((n, k), dtype).at[idx, jnp.arange(k)].set(vals)
