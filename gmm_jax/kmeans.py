"""Jitted Lloyd k-means (EM's hard-assignment limit), k-means++ seeding and LBG splitting.

K-means is EM for a mixture of spherical Gaussians with equal weights and a shared variance that
tends to zero: responsibilities become one-hot (the nearest centre) and the M-step is the mean of
the assigned points. Everything here is one ``jax.jit`` program with static shapes; restarts run
under ``vmap`` and the best (lowest inertia) is returned.

Every function takes row weights (zero for padding rows, which are then never chosen as a seed
and never counted) and an optional number of *active* centres ``n_active <= K`` (a traced int):
centres beyond it are ignored, so a model padded to ``K_max`` slots gives the same centres as the
unpadded one, and rows padded with weight zero give the same result as no padding, from the
same key. The random draws are per row and per centre (``fold_in``), which is what makes both
paddings invisible.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from gmm_jax._jit import cpu_tuned_jit
from gmm_jax.linalg import mm
from gmm_jax.types import KMeansResult

Array = jax.Array


def _sq_dist(a: Array, b: Array) -> Array:
    """(N, K) squared Euclidean distances, clipped at zero (centre the data first)."""
    d = (
        jnp.sum(jnp.square(a), axis=-1)[:, None]
        - 2.0 * mm(a, b.T)
        + jnp.sum(jnp.square(b), axis=-1)[None, :]
    )
    return jnp.maximum(d, 0.0)


def _active_mask(k: int, n_active) -> Array:
    if n_active is None:
        return jnp.ones((k,), bool)
    return jnp.arange(k) < n_active


def _weights(X: Array, sample_weight) -> Array:
    if sample_weight is None:
        return jnp.ones((X.shape[0],), X.dtype)
    return sample_weight.astype(X.dtype)


# Uniform draws per seeding step: every step uses the first ``2 + floor(log K)`` of a fixed
# number, so the draws of step c do not depend on K (nor on K_max), and one call makes them all.
_TRIAL_DRAWS = 8


def _searchsorted(cum: Array, v: Array) -> Array:
    """``searchsorted(cum, v, side="left")`` for non-decreasing ``cum`` by counting (cheap to
    compile, and rows of weight zero at the end are never chosen since ``v < cum[-1]``)."""
    return jnp.sum(cum[None, :] < v[:, None], axis=1).astype(jnp.int32)


def kmeans_plusplus(key: Array, X: Array, n_clusters: int, *, sample_weight=None,
                    n_active=None) -> tuple[Array, Array]:
    """Greedy k-means++ seeding (Arthur & Vassilvitskii 2007, with ``2 + log K`` local trials).

    Samples are drawn with probability proportional to ``weight * distance^2`` (scikit-learn's
    weighted rule; the first one proportional to its weight).

    Args:
        key: PRNG key.
        X: (N, D) samples (centred).
        n_clusters: K (static): the number of centre slots.
        sample_weight: optional (N,) non-negative weights.
        n_active: optional number of centres to seed (<= K, may be traced); the remaining slots
            hold the first centre.

    Returns:
        centers (K, D) and the (K,) indices of the samples chosen.
    """
    n, d = X.shape
    w = _weights(X, sample_weight)
    k_act = n_clusters if n_active is None else n_active
    n_trials = 2 + jnp.floor(jnp.log(jnp.maximum(k_act, 1))).astype(jnp.int32)
    t_max = min(_TRIAL_DRAWS, max(2 + int(math.log(n_clusters)), 2))
    # all draws at once: row 0 picks the first centre, row c the candidates of step c
    u = jax.random.uniform(key, (n_clusters, _TRIAL_DRAWS), X.dtype)[:, :t_max]
    cum_w = jnp.cumsum(w)
    first = jnp.minimum(_searchsorted(cum_w, u[0, :1] * cum_w[-1])[0], n - 1)
    closest = _sq_dist(X, X[first][None])[:, 0]
    centers = jnp.broadcast_to(X[first], (n_clusters, d))
    indices = jnp.full((n_clusters,), first, jnp.int32)

    def body(c, carry):
        centers, indices, closest = carry
        cum = jnp.cumsum(w * closest)
        cand = jnp.minimum(_searchsorted(cum, u[c] * cum[-1]), n - 1)
        dist = _sq_dist(X[cand], X)  # (T, N)
        new_closest = jnp.minimum(closest[None, :], dist)
        cost = jnp.where(jnp.arange(t_max) < n_trials, mm(new_closest, w), jnp.inf)
        # A zero potential (all points already on centres) leaves every candidate equal.
        best = jnp.argmin(cost)
        use = c < k_act
        return (
            centers.at[c].set(jnp.where(use, X[cand[best]], centers[c])),
            indices.at[c].set(jnp.where(use, cand[best], indices[c])),
            jnp.where(use, new_closest[best], closest),
        )

    centers, indices, _ = jax.lax.fori_loop(1, n_clusters, body, (centers, indices, closest))
    return centers, indices


def assign(X: Array, C: Array, active: Array | None = None) -> tuple[Array, Array]:
    """(labels (N,) int32, squared distance to the nearest active centre (N,))."""
    d = _sq_dist(X, C)
    if active is not None:
        d = jnp.where(active[None, :], d, jnp.inf)
    return jnp.argmin(d, axis=1).astype(jnp.int32), jnp.min(d, axis=1)


def lloyd(X: Array, centers: Array, *, max_iter: int, tol, sample_weight=None,
          n_active=None) -> tuple[Array, Array, Array, Array]:
    """Weighted Lloyd iterations from given centres until the centre shift is at most ``tol``.

    Empty clusters are moved to the (positive-weight) samples farthest from their current
    centres (as scikit-learn does), so no centre is ever NaN.

    Args:
        X: (N, D) centred samples.
        centers: (K, D) initial centres.
        max_iter: static iteration cap.
        tol: absolute tolerance on the summed squared centre shift.
        sample_weight: optional (N,) weights.
        n_active: optional number of active centres (the first ``n_active`` slots).

    Returns:
        centers (K, D), labels (N,), weighted inertia (), n_iter ().
    """
    k = centers.shape[0]
    w = _weights(X, sample_weight)
    active = _active_mask(k, n_active)

    def step(C):
        labels, mind = assign(X, C, active)
        onehot = jax.nn.one_hot(labels, k, dtype=X.dtype) * w[:, None]
        counts = jnp.sum(onehot, axis=0)
        sums = mm(onehot.T, X)
        empty = active & (counts == 0)
        # the j-th empty cluster takes the j-th farthest positive-weight sample
        far = jax.lax.top_k(jnp.where(w > 0, mind, -jnp.inf), k)[1]
        rank = jnp.clip(jnp.cumsum(empty) - 1, 0, k - 1)
        means = sums / jnp.where(counts > 0, counts, 1.0)[:, None]
        new = jnp.where(empty[:, None], X[far[rank]], means)
        return jnp.where(active[:, None], new, C)

    def cond(carry):
        _, it, shift = carry
        return (it < max_iter) & (shift > tol)

    def body(carry):
        C, it, _ = carry
        new = step(C)
        return new, it + 1, jnp.sum(jnp.where(active[:, None], jnp.square(new - C), 0.0))

    init = (centers, jnp.asarray(0, jnp.int32), jnp.asarray(jnp.inf, X.dtype))
    C, n_iter, _ = jax.lax.while_loop(cond, body, init)
    labels, mind = assign(X, C, active)
    return C, labels, jnp.sum(w * mind), n_iter


def lbg_centers(X: Array, n_clusters: int, *, eps: float = 0.01, max_iter: int = 50,
                tol=0.0, sample_weight=None, n_active=None) -> Array:
    """Linde-Buzo-Gray splitting: start from the mean, split, refine with Lloyd, repeat.

    At each stage the clusters with the largest distortion are split into ``c +/- eps * s``
    (``s`` the per-feature standard deviation of the data) until there are ``n_active``;
    deterministic, no key needed. K need not be a power of two.

    Args:
        X: (N, D) centred samples.
        n_clusters: K (static): the number of slots.
        eps: relative split perturbation.
        max_iter: Lloyd iterations per stage.
        tol: Lloyd tolerance.
        sample_weight: optional (N,) weights.
        n_active: optional number of centres to grow (<= K, may be traced).

    Returns:
        (K, D) centres (slots beyond ``n_active`` hold unused copies).
    """
    k = n_clusters
    w = _weights(X, sample_weight)
    k_act = k if n_active is None else n_active
    mean = mm(w, X) / jnp.sum(w)
    var = mm(w, jnp.square(X - mean)) / jnp.sum(w)
    scale = eps * jnp.sqrt(var)
    C = jnp.broadcast_to(mean, (k, X.shape[1]))
    count = jnp.asarray(1, jnp.int32)
    idx = jnp.arange(k)
    for _ in range(max(0, math.ceil(math.log2(k)))):
        active = idx < count
        n_split = jnp.clip(k_act - count, 0, count)
        labels, mind = assign(X, C, active)
        distortion = jax.ops.segment_sum(w * mind, labels, num_segments=k)
        distortion = jnp.where(active, distortion, -jnp.inf)
        order = jnp.argsort(-distortion)
        rank = jnp.zeros((k,), jnp.int32).at[order].set(jnp.arange(k, dtype=jnp.int32))
        split = active & (rank < n_split)
        target = jnp.where(split, count + rank, k)  # out of range: dropped
        children = C + scale
        C = jnp.where(split[:, None], C - scale, C)
        C = C.at[target].set(children, mode="drop")
        count = count + n_split
        C, _, _, _ = lloyd(X, C, max_iter=max_iter, tol=tol, sample_weight=w, n_active=count)
    return C


@cpu_tuned_jit(static_argnames=("n_clusters", "n_init", "max_iter", "init"))
def _kmeans_program(key, X, w, tol, *, n_clusters, n_init, max_iter, init):
    shift = mm(w, X) / jnp.sum(w)
    Xc = X - shift
    var = mm(w, jnp.square(Xc)) / jnp.sum(w)
    tol_abs = tol * jnp.mean(var)

    def one(k):
        if init == "lbg":
            C0 = lbg_centers(Xc, n_clusters, sample_weight=w)
        elif init == "random":
            g = jax.random.gumbel(k, w.shape, X.dtype)
            score = jnp.where(w > 0, g, -jnp.inf)
            C0 = Xc[jax.lax.top_k(score, n_clusters)[1]]
        else:
            C0, _ = kmeans_plusplus(k, Xc, n_clusters, sample_weight=w)
        return lloyd(Xc, C0, max_iter=max_iter, tol=tol_abs, sample_weight=w)

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
    sample_weight=None,
) -> KMeansResult:
    """Lloyd k-means with k-means++ seeding; ``n_init`` restarts run under ``vmap``.

    Works under the caller's ``jax.jit`` and ``jax.vmap`` (e.g. over keys or data sets): value
    checks (NaN, weights) run only when the inputs are concrete; under tracing, the static checks
    (rank, shapes, dtypes) still run.

    Args:
        key: PRNG key.
        X: (N, D) samples.
        n_clusters: number of clusters K.
        n_init: restarts in the same compiled program; the lowest inertia wins.
        max_iter: Lloyd iteration cap.
        tol: tolerance relative to the mean per-feature variance, on the summed squared centre
            shift (scikit-learn's rule).
        init: ``"k-means++"``, ``"random"`` (K distinct samples) or ``"lbg"`` (splitting).
        sample_weight: optional (N,) non-negative weights.

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

    n_clusters = validation.check_positive_int(n_clusters, "n_clusters")
    n_init = validation.check_positive_int(n_init, "n_init")
    max_iter = validation.check_positive_int(max_iter, "max_iter")
    tol = validation.check_nonneg_float(tol, "tol")
    if init not in ("k-means++", "random", "lbg"):
        raise ValueError(f"init must be 'k-means++', 'random' or 'lbg', got {init!r}.")
    X = validation.check_array(X, min_samples=n_clusters, name="X")
    n = X.shape[0]
    w = validation.check_sample_weight(sample_weight, n, X.dtype)
    w = jnp.ones((n,), X.dtype) if w is None else w
    return _kmeans_program(
        validation.check_key(key), X, w, jnp.asarray(tol, X.dtype),
        n_clusters=n_clusters, n_init=n_init, max_iter=max_iter, init=init,
    )
