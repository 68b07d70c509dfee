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


def _register_static_last(cls) -> None:
    """Registers a NamedTuple whose last field is static metadata (not a leaf)."""
    names = cls._fields[:-1]

    def flatten(t):
        return tuple(getattr(t, n) for n in names), t[-1]

    def flatten_with_keys(t):
        return tuple((jax.tree_util.GetAttrKey(n), getattr(t, n)) for n in names), t[-1]

    def unflatten(static, children):
        return cls(*children, static)

    jax.tree_util.register_pytree_with_keys(cls, flatten_with_keys, unflatten, flatten)


_register_static_last(GMMParams)


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


_register_static_last(SuffStats)


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
