"""Pytree containers of gmm_jax.

Every container is a ``NamedTuple`` so that ``_replace`` updates state functionally. ``GMMParams``
carries its covariance type as *static* pytree metadata: it is part of the tree structure, not a
leaf, so ``jax.jit``/``vmap``/``scan`` see only arrays and nobody passes the type twice.

Shapes by covariance type (K components, D features), identical to scikit-learn's:

================  ===============  ========================
covariance_type   covariances      precisions_cholesky
================  ===============  ========================
``"full"``        (K, D, D)        (K, D, D) upper triangular
``"tied"``        (D, D)           (D, D) upper triangular
``"diag"``        (K, D)           (K, D)
``"spherical"``   (K,)             (K,)
================  ===============  ========================
"""

from __future__ import annotations

from typing import NamedTuple

import jax

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")

Array = jax.Array


class GMMParams(NamedTuple):
    """Parameters of a Gaussian mixture.

    Attributes:
        weights: (K,) mixing weights on the simplex.
        means: (K, D) component means.
        covariances: covariance matrices, shape by type (module docstring).
        precisions_cholesky: Cholesky factor ``L`` of the precision (``P = L L^T``), shape by type.
        covariance_type: one of ``"full"``, ``"tied"``, ``"diag"``, ``"spherical"``; static.
    """

    weights: Array
    means: Array
    covariances: Array
    precisions_cholesky: Array
    covariance_type: str = "full"

    @property
    def n_components(self) -> int:
        return self.means.shape[-2]

    @property
    def n_features(self) -> int:
        return self.means.shape[-1]


def _params_flatten(p: GMMParams):
    return (p.weights, p.means, p.covariances, p.precisions_cholesky), p.covariance_type


def _params_flatten_with_keys(p: GMMParams):
    names = ("weights", "means", "covariances", "precisions_cholesky")
    children = (p.weights, p.means, p.covariances, p.precisions_cholesky)
    return tuple((jax.tree_util.GetAttrKey(n), c) for n, c in zip(names, children)), p.covariance_type


def _params_unflatten(covariance_type, children):
    return GMMParams(*children, covariance_type=covariance_type)


jax.tree_util.register_pytree_with_keys(
    GMMParams, _params_flatten_with_keys, _params_unflatten, _params_flatten
)


class SuffStats(NamedTuple):
    """Sufficient statistics of a batch under given responsibilities.

    They add: statistics of two chunks (or two devices) sum to the statistics of their union, so
    exact EM over data larger than memory, or sharded over devices, is a sum or a ``psum``.

    Statistics are taken about ``shift`` (a fixed (D,) vector, usually the data mean or zero):
    with ``y = x - shift``, ``Fk = sum_n r_nk y_n`` and ``Sk = sum_n r_nk y_n y_n^T``. Taking
    them about a point inside the data keeps float32 cancellation in ``Sk/Nk - m m^T`` small.

    Attributes:
        Nk: (K,) zeroth order, ``sum_n w_n r_nk``.
        Fk: (K, D) first order about ``shift``.
        Sk: second order about ``shift``: full (K, D, D); tied (D, D), the total
            ``sum_n w_n y_n y_n^T`` (responsibilities sum to one, so per-component sums are not
            needed); diag and spherical (K, D), only the diagonal ``sum_n w_n r_nk y_nd^2``.
        shift: (D,) the point the moments are taken about.
        covariance_type: static type name (pytree metadata), so ``m_step`` needs no second copy.
    """

    Nk: Array
    Fk: Array
    Sk: Array
    shift: Array
    covariance_type: str = "full"


def _stats_flatten(s: SuffStats):
    return (s.Nk, s.Fk, s.Sk, s.shift), s.covariance_type


def _stats_flatten_with_keys(s: SuffStats):
    names = ("Nk", "Fk", "Sk", "shift")
    children = (s.Nk, s.Fk, s.Sk, s.shift)
    return tuple((jax.tree_util.GetAttrKey(n), c) for n, c in zip(names, children)), s.covariance_type


def _stats_unflatten(covariance_type, children):
    return SuffStats(*children, covariance_type=covariance_type)


jax.tree_util.register_pytree_with_keys(
    SuffStats, _stats_flatten_with_keys, _stats_unflatten, _stats_flatten
)


class FitResult(NamedTuple):
    """Outcome of :func:`gmm_jax.fit`.

    Attributes:
        params: fitted ``GMMParams`` of the best restart.
        log_likelihood: () scikit-learn's ``lower_bound_``: the mean per-sample log-likelihood
            at the last E-step of the best restart.
        history: (max_iter,) mean per-sample log-likelihood at each E-step of the best restart;
            entries after ``n_iter`` repeat the final value.
        n_iter: () number of EM iterations the best restart ran.
        converged: () whether the best restart met the tolerance.
        restart_log_likelihoods: (n_init,) final lower bound of every restart.
        n_repaired: () number of collapsed components re-seeded in the best restart.
    """

    params: GMMParams
    log_likelihood: Array
    history: Array
    n_iter: Array
    converged: Array
    restart_log_likelihoods: Array
    n_repaired: Array


class KMeansResult(NamedTuple):
    """Outcome of :func:`gmm_jax.kmeans`.

    Attributes:
        centers: (K, D) cluster centres.
        labels: (N,) int32 index of the nearest centre.
        inertia: () sum of squared distances of samples to their nearest centre.
        n_iter: () Lloyd iterations run by the best restart.
    """

    centers: Array
    labels: Array
    inertia: Array
    n_iter: Array
