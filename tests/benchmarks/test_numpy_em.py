"""The numpy baseline (benchmarks/numpy_em.py) agrees with gmm_jax from the same initial params."""

import numpy as np
import pytest

import gmm_jax
from benchmarks import numpy_em


def _problem(ct, n=400, d=3, k=3, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * 3
    X = centres[rng.integers(0, k, n)] + rng.normal(size=(n, d)) + 5.0
    means = X[rng.choice(n, k, replace=False)]
    var = X.var(0)
    precisions = {
        "full": np.broadcast_to(np.diag(1 / var), (k, d, d)).copy(),
        "tied": np.diag(1 / var),
        "diag": np.broadcast_to(1 / var, (k, d)).copy(),
        "spherical": np.full(k, 1 / var.mean()),
    }[ct]
    return X, np.full(k, 1.0 / k), means, precisions


@pytest.mark.parametrize("ct", ["full", "tied", "diag", "spherical"])
def test_numpy_em_matches_gmm_jax(x64, ct):
    X, w, m, p = _problem(ct)
    kw = dict(covariance_type=ct, max_iter=8, tol=0.0, weights_init=w, means_init=m,
              precisions_init=p)
    ref = numpy_em.fit(X, 3, **kw)
    res = gmm_jax.fit(0, X, 3, loop="scan", **kw)
    assert ref.n_iter == int(res.n_iter) == 8
    np.testing.assert_allclose(ref.history, np.asarray(res.history), rtol=1e-9)
    np.testing.assert_allclose(ref.log_likelihood, float(res.log_likelihood), rtol=1e-9)
    np.testing.assert_allclose(ref.params.weights, res.params.weights, rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(ref.params.means, res.params.means, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(ref.params.covariances, res.params.covariances,
                               rtol=1e-7, atol=1e-9)


def test_numpy_em_convergence_rule():
    X, w, m, p = _problem("diag")
    res = numpy_em.fit(X, 3, covariance_type="diag", max_iter=500, tol=1e-3,
                       weights_init=w, means_init=m, precisions_init=p)
    assert res.converged and res.n_iter < 500
    h = res.history[: res.n_iter]
    assert abs(h[-1] - h[-2]) < 1e-3 and np.all(np.diff(h) > -1e-9)
