"""gmm_jax.plotting: covariance expansion, projected 2-sigma ellipses, PCA axes, PNG output."""

import numpy as np
import pytest

from gmm_jax.plotting import (
    ellipse_2d,
    full_covariances,
    plot_criterion,
    plot_fit,
    principal_axes,
)

PNG = b"\x89PNG\r\n\x1a\n"


def test_full_covariances_every_type():
    k, d = 2, 3
    full = np.stack([np.diag([1.0, 2.0, 3.0]), np.eye(3) * 0.5])
    full[0, 0, 1] = full[0, 1, 0] = 0.25
    cases = {
        "full": (full, full),
        "tied": (full[0], np.stack([full[0], full[0]])),
        "diag": (np.array([[1.0, 2, 3], [4, 5, 6]]),
                 np.stack([np.diag([1.0, 2, 3]), np.diag([4.0, 5, 6])])),
        "spherical": (np.array([2.0, 3.0]), np.stack([2 * np.eye(3), 3 * np.eye(3)])),
        "tied_diag": (np.array([1.0, 2, 3]), np.stack([np.diag([1.0, 2, 3])] * 2)),
        "tied_spherical": (np.array(4.0), np.stack([4 * np.eye(3)] * 2)),
    }
    for ct, (given, expected) in cases.items():
        np.testing.assert_array_equal(full_covariances(given, ct, k, d), expected, err_msg=ct)
    with pytest.raises(ValueError, match="unknown covariance_type"):
        full_covariances(full, "banana", k, d)


def test_ellipse_2d_is_the_two_sigma_contour_of_the_projection():
    theta = np.radians(30.0)
    R = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    cov = R @ np.diag([9.0, 1.0]) @ R.T
    xy, width, height, angle = ellipse_2d([1.0, 2.0], cov, np.zeros(2), np.eye(2))
    np.testing.assert_allclose(xy, [1.0, 2.0])
    assert width == pytest.approx(2 * 2 * 3.0) and height == pytest.approx(2 * 2 * 1.0)
    assert angle % 180.0 == pytest.approx(30.0)
    # 3-D: projecting on the first two axes gives the marginal covariance's ellipse
    cov3 = np.zeros((3, 3))
    cov3[:2, :2] = cov
    cov3[2, 2] = 100.0
    V = np.eye(3)[:, :2]
    xy3, w3, h3, a3 = ellipse_2d([1.0, 2.0, 5.0], cov3, np.array([0.0, 1.0, 0.0]), V)
    np.testing.assert_allclose(xy3, [1.0, 1.0])
    assert (w3, h3) == pytest.approx((width, height)) and a3 % 180 == pytest.approx(30.0)


def test_principal_axes_order_and_sign():
    rng = np.random.default_rng(0)
    u = np.array([1.0, 1.0]) / np.sqrt(2)
    v = np.array([-1.0, 1.0]) / np.sqrt(2)
    X = rng.normal(size=(4000, 1)) * 3.0 * u + rng.normal(size=(4000, 1)) * v + [5.0, -2.0]
    mean, V, var = principal_axes(X)
    np.testing.assert_allclose(mean, [5.0, -2.0], atol=0.15)
    np.testing.assert_allclose(V[:, 0], u, atol=0.02)  # the long axis first, positive loadings
    assert var[0] == pytest.approx(9.0, rel=0.08) and var[1] == pytest.approx(1.0, rel=0.08)


def test_plot_fit_and_criterion_write_pngs(tmp_path):
    rng = np.random.default_rng(1)
    X3 = np.r_[rng.normal(-3, 1, (200, 3)), rng.normal(3, 1, (200, 3))]
    traces = [np.array([-5.0, -4.0, -3.9, -3.89]), np.array([-6.0, -4.5, -4.4])]
    out = plot_fit(tmp_path / "sub" / "fit3.png", X3, [0.5, 0.5], [[-3.0] * 3, [3.0] * 3],
                   np.eye(3), "tied", traces=traces, best=0, title="three features")
    X1 = X3[:, :1]
    out1 = plot_fit(tmp_path / "fit1.png", X1, [0.5, 0.5, 0.0], [[-3.0], [3.0], [0.0]],
                    np.array([1.0, 1.0, 1.0]), "spherical")
    out2 = plot_criterion(tmp_path / "bic.png", [1, 2, 3], [10.0, 5.0, 7.0], criterion="bic",
                          best=2, other=[9.0, 4.0, 5.0], other_name="AIC")
    for path in (out, out1, out2):
        assert path.read_bytes()[:8] == PNG and path.stat().st_size > 5000
