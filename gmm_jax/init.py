"""Initial responsibilities for EM, as scikit-learn builds them, plus LBG splitting.

Each method returns an (N, K) responsibility matrix; one M-step on it gives the initial
parameters (so every method yields a consistent set of weights, means and covariances):

* ``"kmeans"``: one-hot labels of a k-means++-seeded Lloyd run;
* ``"k-means++"``: one-hot on the K samples the k-means++ seeding picks (other rows zero);
* ``"random_from_data"``: one-hot on K distinct random samples (other rows zero);
* ``"random"``: uniform random rows, normalised;
* ``"lbg"``: one-hot labels of Linde-Buzo-Gray splitting (deterministic).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gmm_jax import kmeans as km

Array = jax.Array

INIT_METHODS = ("kmeans", "k-means++", "random", "random_from_data", "lbg")


def check_init(init: str) -> str:
    if init not in INIT_METHODS:
        raise ValueError(f"init must be one of {INIT_METHODS}, got {init!r}.")
    return init


def initial_responsibilities(key: Array, X: Array, n_components: int, init: str,
                             *, kmeans_max_iter: int = 300) -> Array:
    """(N, K) initial responsibilities.

    Args:
        key: PRNG key.
        X: (N, D) centred samples.
        n_components: K, static.
        init: one of ``INIT_METHODS``, static.
        kmeans_max_iter: Lloyd iteration cap for ``"kmeans"`` and ``"lbg"``.
    """
    n = X.shape[0]
    k = n_components
    dtype = X.dtype
    if init == "random":
        r = jax.random.uniform(key, (n, k), dtype)
        return r / jnp.sum(r, axis=1, keepdims=True)
    if init == "random_from_data":
        idx = jax.random.choice(key, n, (k,), replace=False)
        return jnp.zeros((n, k), dtype).at[idx, jnp.arange(k)].set(1.0)
    if init == "k-means++":
        _, idx = km.kmeans_plusplus(key, X, k)
        return jnp.zeros((n, k), dtype).at[idx, jnp.arange(k)].set(1.0)
    if init == "kmeans":
        C0, _ = km.kmeans_plusplus(key, X, k)
        tol = 1e-4 * jnp.mean(jnp.var(X, axis=0))
        _, labels, _, _ = km.lloyd(X, C0, max_iter=kmeans_max_iter, tol=tol)
        return jax.nn.one_hot(labels, k, dtype=dtype)
    if init == "lbg":
        C = km.lbg_centers(X, k)
        labels, _ = km._assign(X, C)
        return jax.nn.one_hot(labels, k, dtype=dtype)
    raise ValueError(check_init(init))
