"""Pytree containers of gmm_jax.

Every container is a ``NamedTuple`` so that ``_replace`` updates state functionally. ``GMMParams``
carries its covariance type as *static* pytree metadata: it is part of the tree structure, not a
leaf, so ``jax.jit``/``vmap``/``scan`` see only arrays and nobody passes the type twice.

Shapes by covariance type (K components, D features). The first four are scikit-learn's; the two
tied-and-constrained types share one diagonal (or one scalar) covariance between components:

===================  ===============  ========================
covariance_type      covariances      precisions_cholesky
===================  ===============  ========================
``"full"``           (K, D, D)        (K, D, D) upper triangular
``"tied"``           (D, D)           (D, D) upper triangular
``"diag"``           (K, D)           (K, D)
``"spherical"``      (K,)             (K,)
``"tied_diag"``      (D,)             (D,)
``"tied_spherical"`` ()               ()
===================  ===============  ========================

Inactive components: a component whose weight is exactly zero is *masked*. It has no density
(``log w = -inf``), gets no responsibility, keeps weight zero through the M-step and is never
repaired, counted as a parameter or sampled. A model with ``K_max`` slots of which ``K`` are
active therefore behaves exactly like a ``K``-component model, with one compiled shape for every
``K <= K_max`` (one-program sweeps over K, per-class K in classifiers).
"""

from __future__ import annotations

from typing import NamedTuple

import jax

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical", "tied_diag", "tied_spherical")

Array = jax.Array


class GMMParams(NamedTuple):
    """Parameters of a Gaussian mixture.

    Attributes:
        weights: (K,) mixing weights on the simplex; exactly zero marks an inactive component.
        means: (K, D) component means.
        covariances: covariance matrices, shape by type (module docstring).
        precisions_cholesky: Cholesky factor ``L`` of the precision (``P = L L^T``), shape by type.
        covariance_type: one of ``COVARIANCE_TYPES``; static.
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


def _register_with_static(cls, static: str) -> None:
    """Registers a NamedTuple whose field ``static`` is pytree metadata (not a leaf)."""
    names = tuple(n for n in cls._fields if n != static)

    def flatten(t):
        return tuple(getattr(t, n) for n in names), getattr(t, static)

    def flatten_with_keys(t):
        return tuple((jax.tree_util.GetAttrKey(n), getattr(t, n)) for n in names), \
            getattr(t, static)

    def unflatten(aux, children):
        return cls(**dict(zip(names, children, strict=True)), **{static: aux})

    jax.tree_util.register_pytree_with_keys(cls, flatten_with_keys, unflatten, flatten)


_register_with_static(GMMParams, "covariance_type")


class SuffStats(NamedTuple):
    """Sufficient statistics of a batch under given responsibilities.

    They add: statistics of two chunks (or two devices, or two processes) taken about the same
    ``shift`` in the same ``basis`` sum to the statistics of their union, so exact EM over data
    larger than memory, or sharded over devices, is a sum or a ``psum`` of ``Nk``, ``Fk``, ``Sk``.

    The moments are those of the *whitened residuals* ``z_nk = B_k^T (x_n - c_k)``, with ``c_k``
    the shift of component k and ``B_k`` the basis (a precision Cholesky factor of the type's
    shape; ``None`` means the identity, i.e. plain moments about ``shift``). EM takes them about
    the current means in the coordinates of the current precisions, where the new covariance is
    close to the identity: nothing cancels in float32 however tight a component is or however far
    it sits from the origin.

    Attributes:
        Nk: (K,) zeroth order, ``sum_n w_n r_nk``.
        Fk: (K, D) first order, ``sum_n w_n r_nk z_nk``.
        Sk: second order: full (K, D, D) ``sum_n w_n r_nk z_nk z_nk^T``; tied (D, D), the same
            summed over components; diag and spherical (K, D), the diagonal only; tied_diag and
            tied_spherical (K, D) too (the M-step ties them).
        shift: (D,) or (K, D) point(s) the moments are taken about.
        covariance_type: static type name (pytree metadata), so ``m_step`` needs no second copy.
        basis: ``None`` (identity) or precision-Cholesky-shaped array of the whitening.
    """

    Nk: Array
    Fk: Array
    Sk: Array
    shift: Array
    covariance_type: str = "full"
    basis: Array | None = None


_register_with_static(SuffStats, "covariance_type")


class FitResult(NamedTuple):
    """Outcome of :func:`gmm_jax.fit`.

    Attributes:
        params: fitted ``GMMParams`` of the best restart.
        log_likelihood: () scikit-learn's ``lower_bound_``: the mean per-sample log-likelihood
            at the last E-step of the best restart (for ``assignment="hard"`` the mean
            classification log-likelihood ``max_k log w_k N(x | k)``; rows with a label use
            ``log w_y N(x | y)``).
        history: (max_iter,) mean per-sample log-likelihood at each E-step of the best restart;
            entries after ``n_iter`` repeat the final value.
        n_iter: () number of EM iterations the best restart ran.
        converged: () whether the best restart met the tolerance.
        restart_log_likelihoods: (n_init,) final lower bound of every restart.
        n_repaired: () number of collapsed components re-seeded in the best restart.
        fast_path: (max_iter,) bool, for each iteration whether the E-step ran in the fast
            expanded form (its computed error bound was small enough) rather than the exact
            whitened form; entries after ``n_iter`` are False.
    """

    params: GMMParams
    log_likelihood: Array
    history: Array
    n_iter: Array
    converged: Array
    restart_log_likelihoods: Array
    n_repaired: Array
    fast_path: Array | None = None


class KMeansResult(NamedTuple):
    """Outcome of :func:`gmm_jax.kmeans`.

    Attributes:
        centers: (K, D) cluster centres.
        labels: (N,) int32 index of the nearest centre.
        inertia: () (weighted) sum of squared distances of samples to their nearest centre.
        n_iter: () Lloyd iterations run by the best restart.
    """

    centers: Array
    labels: Array
    inertia: Array
    n_iter: Array
