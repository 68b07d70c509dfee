"""The M-step from sufficient statistics, and the repair of collapsed components.

Statistics come as moments of whitened residuals ``z = B^T (x - c)`` (see ``SuffStats``). With
``delta = Fk / Nk`` (the mean shift, data coordinates) and ``delta_z = B^T delta``:

* means: ``c + delta``;
* covariance in the whitened coordinates: ``C = Sk / Nk - delta_z delta_z^T + reg B^T B``;
* matrix types: with ``C = U U^T``, the new precision factor is ``B U^{-T}`` and the covariance
  ``(L L^T)^{-1}`` (``gmm_jax.linalg.rebase_precision_cholesky``): near convergence ``C`` is
  close to the identity, so no ill-conditioned matrix is ever factorised;
* diagonal types: variances ``C / B^2``, then tied/spherical averaging.

With the identity basis and a zero shift this is the textbook M-step (scikit-learn's formulas,
``reg_covar`` on the diagonal, ``Nk + 10 eps`` in the divisions). The optional eigenvalue floor
raises every covariance eigenvalue to at least ``psi`` (full and tied: ``eigh``, clip, rebuild;
diagonal types: elementwise), the maximiser of the likelihood under that constraint.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from gmm_jax import covariance as cov
from gmm_jax import linalg
from gmm_jax._jit import cpu_tuned_jit
from gmm_jax.types import GMMParams, SuffStats

Array = jax.Array


def _active(stats: SuffStats, active) -> Array:
    k = stats.Nk.shape[-1]
    if active is None:
        return jnp.ones((k,), bool)
    return jnp.asarray(active, bool)


@cpu_tuned_jit
def m_step(stats: SuffStats, *, reg_covar=1e-6, active=None, eigenvalue_floor=None) -> GMMParams:
    """M-step: maximum-likelihood parameters from sufficient statistics.

    ``w_k = N_k / N``, ``mu_k = shift_k + F_k / N_k`` and ``Sigma_k`` the weighted scatter about
    ``mu_k`` plus ``reg_covar I`` (computed in the statistics' whitened basis), tied and averaged
    as the covariance type requires. ``N_k`` gets ``10 * eps`` added, as in scikit-learn, so an
    empty component gives finite (if useless) parameters; ``fit`` repairs such components.

    Args:
        stats: summed sufficient statistics.
        reg_covar: non-negative scalar added to the covariance diagonal (may be traced).
        active: optional (K,) bool mask; inactive components get weight exactly zero and unit
            covariances.
        eigenvalue_floor: optional scalar; every covariance eigenvalue is raised to at least it.

    Returns:
        ``GMMParams`` of the covariance type recorded in ``stats``.

    Example:
        >>> import jax.numpy as jnp, gmm_jax
        >>> X = jnp.array([[0.0], [2.0], [10.0], [12.0]])
        >>> resp = jnp.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
        >>> stats = gmm_jax.stats_from_responsibilities(X, resp, "diag")
        >>> p = gmm_jax.m_step(stats, reg_covar=0.0)
        >>> p.means.ravel().tolist(), p.covariances.ravel().tolist()
        ([1.0, 11.0], [1.0, 1.0])
    """
    ct = stats.covariance_type
    chex.assert_rank(stats.Fk, 2)
    k, d = stats.Fk.shape
    dtype = stats.Fk.dtype
    act = _active(stats, active)
    basis = stats.basis
    if basis is None:
        basis = cov.identity_basis(ct, k, d, dtype)
    shift = jnp.broadcast_to(stats.shift, (k, d))
    nk = stats.Nk + 10.0 * jnp.finfo(dtype).eps
    delta = stats.Fk / nk[:, None]
    corr = 2.0 - stats.Nk / nk
    nk_act = jnp.where(act, nk, 0.0)
    total = jnp.sum(nk_act)
    weights = nk_act / total
    means = jnp.where(act[:, None], shift + delta, 0.0)

    if cov.is_matrix(ct):
        eye = jnp.eye(d, dtype=dtype)
        if ct == "full":
            dz = linalg.einsum("kde,kd->ke", basis, delta)
            C = stats.Sk / nk[:, None, None] - corr[:, None, None] * (
                dz[:, :, None] * dz[:, None, :])
            C = C + reg_covar * linalg.mm(jnp.swapaxes(basis, -1, -2), basis)
            C = jnp.where(act[:, None, None], C, eye)
            B = jnp.where(act[:, None, None], basis, eye)
        else:  # tied
            dz = linalg.mm(delta, basis)
            between = linalg.einsum("k,kd,ke->de", jnp.where(act, nk * corr, 0.0), dz, dz)
            C = (stats.Sk - between) / total + reg_covar * linalg.mm(basis.T, basis)
            B = basis
        # a singular covariance without reg_covar is a collapsed component (repaired by fit);
        # with reg_covar > 0 a failure can only be rounding, and jitter fixes it
        prec_chol, _ = linalg.rebase_precision_cholesky(B, C, allow_jitter=reg_covar > 0)
        covariances = linalg.covariances_from_precision_cholesky(prec_chol)
        if eigenvalue_floor is not None:
            covariances, prec_chol = linalg.floor_eigenvalues(covariances, eigenvalue_floor)
        if ct == "full":
            covariances = jnp.where(act[:, None, None], covariances, eye)
            prec_chol = jnp.where(act[:, None, None], prec_chol, eye)
    else:
        s = cov.expand_precision_cholesky(basis, ct, k, d)  # (K, D)
        dz = delta * s
        var = (stats.Sk / nk[:, None] - corr[:, None] * dz**2) / s**2
        # A variance is >= 0 in exact arithmetic; rounding can make it slightly negative.
        var = jnp.maximum(var, 0.0)
        if ct == "diag":
            covariances = var + reg_covar
        elif ct == "spherical":
            covariances = jnp.mean(var, axis=-1) + reg_covar
        elif ct == "tied_diag":
            covariances = linalg.mm(nk_act, var) / total + reg_covar
        else:  # tied_spherical
            covariances = jnp.mean(linalg.mm(nk_act, var) / total) + reg_covar
        if eigenvalue_floor is not None:
            covariances = jnp.maximum(covariances, eigenvalue_floor)
        if ct in ("diag", "spherical"):
            mask = act.reshape((k,) + (1,) * (covariances.ndim - 1))
            covariances = jnp.where(mask, covariances, 1.0)
        prec_chol = jax.lax.rsqrt(covariances)
    return GMMParams(weights=weights, means=means, covariances=covariances,
                     precisions_cholesky=prec_chol, covariance_type=ct)


def _per_component_finite(a: Array, covariance_type: str, k: int) -> Array:
    """(K,) whether each component's slice of a covariance-shaped array is finite."""
    if cov.is_tied(covariance_type):
        return jnp.broadcast_to(jnp.all(jnp.isfinite(a)), (k,))
    return jnp.all(jnp.isfinite(a.reshape(k, -1)), axis=1)


def repair_components(params: GMMParams, stats: SuffStats, active=None) -> tuple[GMMParams, Array]:
    """Re-seeds collapsed components by splitting the heaviest healthy one.

    A component is collapsed when it has (almost) no responsibility mass or its mean, covariance
    or precision factor is not finite. Each one takes the heaviest healthy component's covariance
    and a mean offset from it by half a standard deviation per feature (alternating sides, larger
    steps for later ones); the heavy component's weight is shared equally between them. When no
    component is healthy (every one collapsed onto single points without ``reg_covar``, or a
    tied covariance is singular) every active component keeps its mean and gets an isotropic
    covariance as wide as the spread of the means, from which EM starts over. Masked (inactive)
    components are never touched.

    Returns:
        (params, n_repaired) with n_repaired the number of components re-seeded.
    """
    ct = params.covariance_type
    k, d = params.means.shape
    dtype = params.means.dtype
    act = _active(stats, active)
    total = jnp.sum(jnp.where(act, stats.Nk, 0.0))
    finite_mean = jnp.all(jnp.isfinite(params.means), axis=1)
    bad = (stats.Nk < 1e-8 * total) | ~finite_mean
    cov_ok = _per_component_finite(params.precisions_cholesky, ct, k) & \
        _per_component_finite(params.covariances, ct, k)
    if not cov.is_tied(ct):
        bad |= ~cov_ok
    bad &= act
    n_bad = jnp.sum(bad)
    healthy = act & ~bad & cov_ok
    heavy = jnp.argmax(jnp.where(healthy, params.weights, -jnp.inf))
    var = cov.expand_covariances(params.covariances, ct, k, d)
    if cov.is_matrix(ct):
        var = jnp.diagonal(var, axis1=-2, axis2=-1)
    std = jnp.sqrt(jnp.maximum(var[heavy], 0.0))
    rank = jnp.cumsum(bad) - 1
    sign = jnp.where(rank % 2 == 0, 1.0, -1.0) * (1 + rank // 2)
    new_means = jnp.where(
        bad[:, None], params.means[heavy][None, :] + 0.5 * sign[:, None] * std[None, :],
        params.means,
    )
    share = params.weights[heavy] / (1.0 + n_bad)
    new_w = jnp.where(bad, share, params.weights).at[heavy].set(share)
    new_w = jnp.where(act, new_w, 0.0)
    new_w = new_w / jnp.sum(new_w)

    def take(a):
        if cov.is_tied(ct):
            return a
        mask = bad.reshape((k,) + (1,) * (a.ndim - 1))
        return jnp.where(mask, a[heavy][None], a)

    repaired = params._replace(
        weights=new_w, means=new_means, covariances=take(params.covariances),
        precisions_cholesky=take(params.precisions_cholesky),
    )
    # nothing healthy to split: start over from wide isotropic components at the means
    use = act & finite_mean
    mass = jnp.where(use, jnp.maximum(stats.Nk, 0.0), 0.0) + jnp.where(use, 1e-30, 0.0)
    mbar = jnp.sum(mass[:, None] * jnp.where(use[:, None], params.means, 0.0), 0) / jnp.sum(mass)
    spread = jnp.sum(mass * jnp.sum(jnp.where(use[:, None], params.means - mbar, 0.0) ** 2,
                                    -1)) / (d * jnp.sum(mass))
    v = jnp.where(jnp.isfinite(spread) & (spread > 0), spread, jnp.asarray(1.0, dtype))
    shape = cov.covariance_shape(ct, k, d)
    if cov.is_matrix(ct):
        eye = jnp.broadcast_to(jnp.eye(d, dtype=dtype), shape)
        cov_fb, pc_fb = v * eye, jax.lax.rsqrt(v) * eye
    else:
        cov_fb = jnp.full(shape, v, dtype)
        pc_fb = jax.lax.rsqrt(cov_fb)
    w_fb = jnp.where(act, 1.0, 0.0).astype(dtype)
    fallback = params._replace(
        weights=w_fb / jnp.sum(w_fb), means=jnp.where(finite_mean[:, None], params.means, mbar),
        covariances=cov_fb, precisions_cholesky=pc_fb)
    none_healthy = ~jnp.any(healthy)
    n_fb = jnp.sum(act)
    out = jax.tree.map(lambda a, b: jnp.where(n_bad > 0, a, b), repaired, params)
    out = jax.tree.map(lambda a, b: jnp.where(none_healthy, a, b), fallback, out)
    return out, jnp.where(none_healthy, n_fb, n_bad).astype(jnp.int32)
