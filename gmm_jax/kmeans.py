"""Jitted Lloyd k-means (EM's hard-assignment limit), k-means++ seeding and LBG splitting.

K-means is EM for a mixture of spherical Gaussians with equal weights and a shared variance that
tends to zero: responsibilities become one-hot (the nearest centre) and the M-step is the mean of
the assigned points. Everything here is one ``jax.jit`` program with static shapes; restarts run
under ``vmap`` and the best (lowest inertia) is returned.
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp

from gmm_jax.covariance import _sq_dist
from gmm_jax.types import KMeansResult

Array = jax.Array


def kmeans_plusplus(key: Array, X: Array, n_clusters: int) -> tuple[Array, Array]:
    """Greedy k-means++ seeding (Arthur & Vassilvitskii 2007, with ``2 + log K`` local trials).

    Args:
        key: PRNG key.
        X: (N, D) samples (centred).
        n_clusters: K, static.

    Returns:
        centers (K, D) and the (K,) indices of the samples chosen.
    """
    n, d = X.shape
    n_trials = 2 + int(math.log(n_clusters))
    key0, key_loop = jax.random.split(key)
    first = jax.random.randint(key0, (), 0, n, dtype=jnp.int32)
    closest = _sq_dist(X, X[first][None])[:, 0]
    centers = jnp.zeros((n_clusters, d), X.dtype).at[0].set(X[first])
    indices = jnp.zeros((n_clusters,), jnp.int32).at[0].set(first)

    def body(c, carry):
        centers, indices, closest = carry
        pot = jnp.sum(closest)
        u = jax.random.uniform(jax.random.fold_in(key_loop, c), (n_trials,), X.dtype) * pot
        cand = jnp.clip(jnp.searchsorted(jnp.cumsum(closest), u), 0, n - 1).astype(jnp.int32)
        dist = _sq_dist(X[cand], X)  # (T, N)
        new_closest = jnp.minimum(closest[None, :], dist)
        # A zero potential (all points already on centres) leaves every candidate equal.
        best = jnp.argmin(jnp.sum(new_closest, axis=1))
        return (
            centers.at[c].set(X[cand[best]]),
            indices.at[c].set(cand[best]),
            new_closest[best],
        )

    centers, indices, _ = jax.lax.fori_loop(1, n_clusters, body, (centers, indices, closest))
    return centers, indices


def _assign(X: Array, C: Array) -> tuple[Array, Array]:
    d = _sq_dist(X, C)
    return jnp.argmin(d, axis=1).astype(jnp.int32), jnp.min(d, axis=1)


def lloyd(X: Array, centers: Array, *, max_iter: int, tol) -> tuple[Array, Array, Array, Array]:
    """Lloyd iterations from given centres until the centre shift is at most ``tol``.

    Empty clusters are moved to the samples farthest from their current centres (as scikit-learn
    does), so no centre is ever NaN.

    Args:
        X: (N, D) centred samples.
        centers: (K, D) initial centres.
        max_iter: static iteration cap.
        tol: absolute tolerance on the summed squared centre shift.

    Returns:
        centers (K, D), labels (N,), inertia (), n_iter ().
    """
    k = centers.shape[0]

    def step(C):
        labels, mind = _assign(X, C)
        onehot = jax.nn.one_hot(labels, k, dtype=X.dtype)
        counts = jnp.sum(onehot, axis=0)
        sums = onehot.T @ X
        empty = counts == 0
        # the j-th empty cluster takes the j-th farthest sample
        far = jax.lax.top_k(mind, k)[1]
        rank = jnp.clip(jnp.cumsum(empty) - 1, 0, k - 1)
        new = jnp.where(empty[:, None], X[far[rank]], sums / jnp.maximum(counts, 1.0)[:, None])
        return new

    def cond(carry):
        _, it, shift = carry
        return (it < max_iter) & (shift > tol)

    def body(carry):
        C, it, _ = carry
        new = step(C)
        return new, it + 1, jnp.sum(jnp.square(new - C))

    init = (centers, jnp.asarray(0, jnp.int32), jnp.asarray(jnp.inf, X.dtype))
    C, n_iter, _ = jax.lax.while_loop(cond, body, init)
    labels, mind = _assign(X, C)
    return C, labels, jnp.sum(mind), n_iter


def lbg_centers(X: Array, n_clusters: int, *, eps: float = 0.01, max_iter: int = 50,
                tol=0.0) -> Array:
    """Linde-Buzo-Gray splitting: start from the mean, split, refine with Lloyd, repeat.

    At each stage the clusters with the largest distortion are split into ``c +/- eps * s``
    (``s`` the per-feature standard deviation of the data) until there are ``n_clusters``;
    deterministic, no key needed. K need not be a power of two.

    Args:
        X: (N, D) centred samples.
        n_clusters: K, static.
        eps: relative split perturbation.
        max_iter: Lloyd iterations per stage.
        tol: Lloyd tolerance.

    Returns:
        (K, D) centres.
    """
    scale = eps * jnp.std(X, axis=0)
    C = jnp.mean(X, axis=0, keepdims=True)
    m = 1
    while m < n_clusters:
        n_split = min(m, n_clusters - m)
        labels, mind = _assign(X, C)
        distortion = jax.ops.segment_sum(mind, labels, num_segments=m)
        order = jnp.argsort(-distortion)[:n_split]
        parents = C[order]
        C = jnp.concatenate([C.at[order].add(-scale), parents + scale], axis=0)
        m += n_split
        C, _, _, _ = lloyd(X, C, max_iter=max_iter, tol=tol)
    return C


@partial(jax.jit, static_argnames=("n_clusters", "n_init", "max_iter", "init"))
def _kmeans_program(key, X, tol, *, n_clusters, n_init, max_iter, init):
    shift = jnp.mean(X, axis=0)
    Xc = X - shift
    tol_abs = tol * jnp.mean(jnp.var(Xc, axis=0))

    def one(k):
        if init == "lbg":
            C0 = lbg_centers(Xc, n_clusters)
        elif init == "random":
            idx = jax.random.choice(k, X.shape[0], (n_clusters,), replace=False)
            C0 = Xc[idx]
        else:
            C0, _ = kmeans_plusplus(k, Xc, n_clusters)
        return lloyd(Xc, C0, max_iter=max_iter, tol=tol_abs)

    C, labels, inertia, n_iter = jax.vmap(one)(jax.random.split(key, n_init))
    best = jnp.argmin(inertia)
    return KMeansResult(C[best] + shift, labels[best], inertia[best], n_iter[best])


def kmeans(
    key: Array,
    X,
    n_clusters: int,
    *,
    n_init: int = 1,
    max_iter: int = 300,
    tol: float = 1e-4,
    init: str = "k-means++",
) -> KMeansResult:
    """Lloyd k-means with k-means++ seeding; ``n_init`` restarts run under ``vmap``.

    Args:
        key: PRNG key.
        X: (N, D) samples.
        n_clusters: number of clusters K.
        n_init: restarts in the same compiled program; the lowest inertia wins.
        max_iter: Lloyd iteration cap.
        tol: tolerance relative to the mean per-feature variance, on the summed squared centre
            shift (scikit-learn's rule).
        init: ``"k-means++"``, ``"random"`` (K distinct samples) or ``"lbg"`` (splitting).

    Returns:
        ``KMeansResult(centers, labels, inertia, n_iter)``.

    Example:
        >>> import jax, numpy as np, gmm_jax
        >>> X = np.r_[np.zeros((5, 2)), np.ones((5, 2)) * 10]
        >>> res = gmm_jax.kmeans(jax.random.key(0), X, 2)
        >>> float(res.inertia)
        0.0
    """
    from gmm_jax import validation

    X = validation.check_array(X, min_samples=n_clusters, name="X")
    validation.check_positive_int(n_clusters, "n_clusters")
    validation.check_positive_int(n_init, "n_init")
    validation.check_positive_int(max_iter, "max_iter")
    validation.check_nonneg_float(tol, "tol")
    if init not in ("k-means++", "random", "lbg"):
        raise ValueError(f"init must be 'k-means++', 'random' or 'lbg', got {init!r}.")
    return _kmeans_program(
        validation.check_key(key), jnp.asarray(X), jnp.asarray(tol, X.dtype),
        n_clusters=int(n_clusters), n_init=int(n_init), max_iter=int(max_iter), init=init,
    )
