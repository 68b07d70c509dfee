"""LBG growth (gmm_jax.lbg, fit_lbg, init="lbg"): stage sizes, the split, one stage per size."""

import jax.numpy as jnp
import numpy as np
import pytest

import gmm_jax
from gmm_jax import lbg

# two groups far apart along x, two blobs in each along y: the structure LBG is made for (the
# first split separates the groups along the principal direction, the second the blobs)
CENTRES = np.array([[-10.0, -4.0, 0.0], [-10.0, 4.0, 0.0], [10.0, -4.0, 1.0], [10.0, 4.0, 0.0]])
X = CENTRES[np.arange(200) % 4] + np.random.default_rng(0).normal(size=(200, 3))


def test_stage_sizes():
    assert lbg.stage_sizes(1) == [1]
    assert lbg.stage_sizes(4) == [1, 2, 4]
    assert lbg.stage_sizes(6) == [1, 2, 4, 6]
    assert lbg.stage_sizes(256)[-1] == 256 and len(lbg.stage_sizes(256)) == 9
    np.testing.assert_array_equal(lbg.stage_schedule(np.array([6, 3]), 6),
                                  [[1, 1], [2, 2], [4, 3], [6, 3]])


def test_split_along_the_principal_eigenvector(x64):
    """Component 0 (the heavier) splits into mu -/+ 0.1 sqrt(lambda_max) v_max; each half gets
    half its weight and its covariance; component 1 is untouched."""
    c0 = np.array([[4.0, 1.0, 0.0], [1.0, 2.0, 0.0], [0.0, 0.0, 1.0]])
    lam, v = np.linalg.eigh(c0)
    p = gmm_jax.params_from_covariances(
        np.array([0.7, 0.3, 0.0]), np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [0, 0, 0]]),
        np.stack([c0, np.eye(3), np.eye(3)]), "full")
    q = lbg.split_components(p, 2, 3, 0.1, jnp.zeros(3))
    d = 0.1 * np.sqrt(lam[-1]) * v[:, -1]
    got = np.asarray(q.means)
    # the sign of an eigenvector is arbitrary: the pair is {mu - d, mu + d}
    pair = sorted([got[0].tolist(), got[2].tolist()])
    want = sorted([(np.array([1.0, 2.0, 3.0]) - d).tolist(), (np.array([1.0, 2.0, 3.0]) + d)
                   .tolist()])
    np.testing.assert_allclose(pair, want, rtol=1e-12)
    np.testing.assert_allclose(q.weights, [0.35, 0.3, 0.35], rtol=1e-12)
    np.testing.assert_allclose(q.covariances[2], c0, rtol=1e-12)
    np.testing.assert_allclose(q.means[1], 0.0)
    # n_to == n_from: nothing changes
    same = lbg.split_components(p, 2, 2, 0.1, jnp.zeros(3))
    np.testing.assert_array_equal(same.means, p.means)


@pytest.mark.parametrize("covariance_type, scale", [("full", 0.1), ("diag", 0.1),
                                                    ("spherical", 0.1), ("tied", 1.0)])
def test_fit_lbg_grows_one_size_at_a_time_and_finds_the_clusters(x64, covariance_type, scale):
    """(Tied covariances need a wide split: right after a small one the shared covariance is the
    data's, and EM moves the halves apart by about 1% per iteration.)"""
    fits = gmm_jax.fit_lbg(0, X, 4, covariance_type=covariance_type, split_scale=scale)
    assert [f.params.means.shape[0] for f in fits] == [1, 2, 4]
    lbs = [float(f.log_likelihood) for f in fits]
    assert lbs[0] < lbs[1] < lbs[2]  # each stage starts from the last optimum
    # stage 1 is the single-Gaussian MLE
    np.testing.assert_allclose(fits[0].params.means[0], X.mean(0), rtol=1e-10)
    means = np.asarray(fits[-1].params.means)
    found = np.min(np.linalg.norm(means[:, None] - CENTRES[None], axis=-1), axis=0)
    assert np.all(found < 0.5), means
    # fit(init="lbg") is the last stage of the growth
    if scale == 0.1:  # the default
        res = gmm_jax.fit(0, X, 4, covariance_type=covariance_type, init="lbg", tol=1e-6)
        np.testing.assert_allclose(res.params.means, fits[-1].params.means, rtol=1e-9)


def test_a_size_that_is_not_a_power_of_two_splits_the_heaviest(x64):
    fits = gmm_jax.fit_lbg(0, X, 3, covariance_type="diag")
    assert [f.params.means.shape[0] for f in fits] == [1, 2, 3]
    assert np.all(np.asarray(fits[-1].params.weights) > 0.05)


def test_lbg_with_eigenvalue_floor_and_in_the_estimators():
    fits = gmm_jax.fit_lbg(0, X.astype(np.float32), 4, covariance_type="full",
                           eigenvalue_floor=2.0)
    for f in fits:
        assert np.all(np.linalg.eigvalsh(np.asarray(f.params.covariances)) >= 2.0 * (1 - 1e-5))
    gm = gmm_jax.GaussianMixture(4, init_params="lbg", random_state=0).fit(X)
    assert gm.converged_
    clf = gmm_jax.GMMClassifier({0: 2, 1: 1}, init_params="lbg", covariance_type="diag")
    y = (np.arange(200) % 4 >= 2).astype(int)  # class 0: two blobs, class 1: two blobs
    clf.fit(X, y)
    assert clf.score(X, y) > 0.7


def test_a_wider_split_leaves_the_saddle(x64):
    """Two clusters at x = -6 and 6 (the case the module docstring warns about): the split
    offset reaches the EM program (half a standard deviation finds both modes, the default 0.1
    stops near the saddle between them)."""
    rng = np.random.default_rng(0)
    two = np.r_[rng.normal([-6, 0], 0.7, (35, 2)), rng.normal([6, 0], 0.7, (35, 2))]
    wide = gmm_jax.fit_lbg(0, two, 2, split_scale=0.5)[1]
    np.testing.assert_allclose(np.sort(np.asarray(wide.params.means)[:, 0]), [-6.0, 6.0],
                               atol=0.2)
    narrow = gmm_jax.fit_lbg(0, two, 2)[1]
    assert float(narrow.log_likelihood) < float(wide.log_likelihood) - 1.0
