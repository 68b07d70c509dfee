"""Shared test helpers: numpy references (textbook formulas), random parameters, data sets.

Compilation dominates the test run time on CPU, so the property tests share a few canonical
shapes (``SMALL``: 64 rows, 3 features, 3 components) and static options; every distinct shape
or option is one more compiled program.
"""

from __future__ import annotations

from functools import cache

import jax
import numpy as np
from scipy.special import logsumexp
from sklearn.datasets import load_digits, load_iris

import gmm_jax
from gmm_jax.covariance import covariance_shape

N_SMALL, D_SMALL, K_SMALL = 64, 3, 3
MAX_ITER = 60


@cache
def dataset(name: str) -> np.ndarray:
    """float64 data: ``"iris"``, the first 600 ``"digits"``, or ``"blobs"`` (canonical small)."""
    if name == "iris":
        return load_iris().data
    if name == "digits":
        return load_digits().data[:600]
    if name == "digits_all":
        return load_digits().data
    if name == "blobs":
        return blobs()
    raise KeyError(name)


def blobs(n: int = N_SMALL, d: int = D_SMALL, k: int = K_SMALL, seed: int = 0,
          spread: float = 4.0) -> np.ndarray:
    """(n, d) float64 rows from k anisotropic Gaussians with means ``spread`` apart."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * spread
    labels = np.arange(n) % k
    scales = rng.uniform(0.5, 1.5, size=(k, d))
    return centres[labels] + rng.normal(size=(n, d)) * scales[labels]


def random_covariances(rng: np.random.Generator, covariance_type: str, k: int,
                       d: int) -> np.ndarray:
    """Well-conditioned random covariances in the shape of ``covariance_type``."""
    if covariance_type in ("full", "tied"):
        n = k if covariance_type == "full" else 1
        a = rng.normal(size=(n, d, d))
        c = a @ np.swapaxes(a, -1, -2) + 0.5 * np.eye(d)
        return c if covariance_type == "full" else c[0]
    shape = covariance_shape(covariance_type, k, d)
    return rng.uniform(0.3, 3.0, size=shape)


def dense_covariances(cov, covariance_type: str, k: int, d: int) -> np.ndarray:
    """Covariances of any type expanded to (K, D, D) matrices."""
    cov = np.asarray(cov)
    if covariance_type == "full":
        return cov
    if covariance_type == "tied":
        return np.broadcast_to(cov, (k, d, d))
    if covariance_type == "diag":
        return np.stack([np.diag(c) for c in cov])
    if covariance_type == "spherical":
        return np.stack([c * np.eye(d) for c in cov])
    if covariance_type == "tied_diag":
        return np.broadcast_to(np.diag(cov), (k, d, d))
    return np.broadcast_to(float(cov) * np.eye(d), (k, d, d))


def numpy_log_joint(X, weights, means, covs, covariance_type) -> np.ndarray:
    """(N, K) ``log w_k + log N(x_n | mu_k, Sigma_k)`` from the textbook formula (float64)."""
    n, d = X.shape
    k = len(weights)
    dense = dense_covariances(covs, covariance_type, k, d)
    out = np.empty((n, k))
    for j in range(k):
        diff = X - means[j]
        _, logdet = np.linalg.slogdet(dense[j])
        maha = np.einsum("nd,de,ne->n", diff, np.linalg.inv(dense[j]), diff)
        with np.errstate(divide="ignore"):
            out[:, j] = np.log(weights[j]) - 0.5 * (d * np.log(2 * np.pi) + logdet + maha)
    return out


def numpy_m_step(X, resp, covariance_type, reg_covar, sample_weight=None):
    """M-step from responsibilities, in float64 numpy (scikit-learn's formulas).

    ``N_k`` gets 10 eps (scikit-learn's floor); full: the weighted scatter about the new mean
    plus reg; tied: ``sum_k N_k Sigma_k / N``; diag: its diagonal; spherical: the mean of that;
    tied_diag: the diagonal of tied; tied_spherical: the mean of tied_diag.
    """
    n, d = X.shape
    w = np.ones(n) if sample_weight is None else np.asarray(sample_weight, np.float64)
    r = resp * w[:, None]
    nk = r.sum(axis=0) + 10 * np.finfo(np.float64).eps
    mu = r.T @ X / nk[:, None]
    sig = np.stack([(r[:, j, None] * (X - mu[j])).T @ (X - mu[j]) / nk[j]
                    for j in range(resp.shape[1])])
    tied = np.einsum("k,kde->de", nk, sig) / nk.sum()
    ct = covariance_type
    if ct == "full":
        cov = sig + reg_covar * np.eye(d)
    elif ct == "tied":
        cov = tied + reg_covar * np.eye(d)
    elif ct == "diag":
        cov = np.diagonal(sig, axis1=1, axis2=2) + reg_covar
    elif ct == "spherical":
        cov = np.diagonal(sig, axis1=1, axis2=2).mean(axis=1) + reg_covar
    elif ct == "tied_diag":
        cov = np.diagonal(tied) + reg_covar
    else:
        cov = np.diagonal(tied).mean() + reg_covar
    return dict(weights=nk / nk.sum(), means=mu, covariances=cov)


def numpy_em_step(X, weights, means, covs, covariance_type, reg_covar, sample_weight=None):
    """One EM iteration from the textbook formulas (float64 numpy).

    Returns:
        dict with gamma (N, K), Nk (K,), weights, means, covariances (type's shape) and
        mean_ll, the (weighted) mean log-likelihood under the *old* parameters.
    """
    w = np.ones(len(X)) if sample_weight is None else np.asarray(sample_weight, np.float64)
    lj = numpy_log_joint(X, weights, means, covs, covariance_type)
    ll = logsumexp(lj, axis=1)
    gamma = np.exp(lj - ll[:, None])
    out = numpy_m_step(X, gamma, covariance_type, reg_covar, w)
    return dict(out, gamma=gamma, Nk=(gamma * w[:, None]).sum(axis=0),
                mean_ll=float(np.sum(w * ll) / np.sum(w)))


def precisions_of(cov, covariance_type):
    """Precisions in the type's shape from covariances (numpy)."""
    if covariance_type in ("full", "tied"):
        p = np.linalg.inv(cov)
        return 0.5 * (p + np.swapaxes(p, -1, -2))
    return 1.0 / np.asarray(cov)


def user_init(X, k, covariance_type, rng):
    """A data-dependent starting point: K distinct samples as means, the data variance.

    Returns:
        dict of ``weights_init``, ``means_init``, ``precisions_init`` for ``gmm_jax.fit``.
    """
    n, d = X.shape
    means = X[rng.choice(n, k, replace=False)]
    var = float(np.mean(np.var(X, axis=0))) + 1e-3
    shape = covariance_shape(covariance_type, k, d)
    if covariance_type in ("full", "tied"):
        prec = np.broadcast_to(np.eye(d) / var, shape).copy()
    else:
        prec = np.full(shape, 1.0 / var)
    return dict(weights_init=np.full(k, 1.0 / k), means_init=means, precisions_init=prec)


def init_from_labels(X, labels, k, covariance_type, reg_covar):
    """(weights, means, precisions) of a mixture from hard labels (numpy)."""
    r = numpy_m_step(X, np.eye(k)[labels], covariance_type, reg_covar)
    return r["weights"], r["means"], precisions_of(r["covariances"], covariance_type)


def assert_finite(tree):
    """Every leaf of a pytree is finite."""
    for leaf in jax.tree.leaves(tree):
        assert np.all(np.isfinite(np.asarray(leaf))), leaf


def assert_params_close(got, want, *, rtol, atol=0.0, names=None):
    """Compares the parameter arrays of ``GMMParams`` with a sklearn model or ``GMMParams``."""
    names = names or ("weights", "means", "covariances", "precisions_cholesky")
    for name in names:
        g = np.asarray(getattr(got, name))
        w = getattr(want, name + "_") if hasattr(want, name + "_") else getattr(want, name)
        np.testing.assert_allclose(g, np.asarray(w), rtol=rtol, atol=atol, err_msg=name)


def params(weights, means, covs, covariance_type):
    """``GMMParams`` from numpy arrays (in the current default float dtype)."""
    return gmm_jax.params_from_covariances(np.asarray(weights), np.asarray(means),
                                           np.asarray(covs), covariance_type)
