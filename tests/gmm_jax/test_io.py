"""save/load round trips and clear errors on bad files."""

import os
import zipfile

import jax.numpy as jnp
import numpy as np
import pytest

import gmm_jax
from gmm_jax import COVARIANCE_TYPES, GaussianMixture
from tests.gmm_jax.helpers import random_covariances


def _params(ct, k=2, d=3):
    rng = np.random.default_rng(0)
    covs = random_covariances(rng, ct, k, d)
    means = jnp.asarray(rng.normal(size=(k, d)), jnp.float32)
    return gmm_jax.params_from_covariances(jnp.full(k, 1.0 / k), means,
                                           jnp.asarray(covs, jnp.float32), ct)


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_params_round_trip(tmp_path, ct):
    p = _params(ct)
    path = tmp_path / "m.npz"
    gmm_jax.save(path, p)
    q = gmm_jax.load(path)
    assert q.covariance_type == ct
    for a, b in zip(p[:4], q[:4], strict=True):
        np.testing.assert_array_equal(np.asarray(a), b)
    # no pickle anywhere in the file
    with np.load(path, allow_pickle=False) as data:
        assert int(data["schema_version"]) == gmm_jax.io.SCHEMA_VERSION


def test_estimator_round_trip(tmp_path):
    X = np.random.default_rng(0).normal(size=(40, 3))
    gm = GaussianMixture(3, covariance_type="diag", random_state=0, n_init=1).fit(X)
    path = tmp_path / "est.npz"
    gm.save(path)
    back = GaussianMixture.load(path)
    assert back.get_params() == gm.get_params()
    np.testing.assert_array_equal(back.score_samples(X), gm.score_samples(X))
    assert back.n_iter_ == gm.n_iter_ and back.converged_ == gm.converged_
    assert back.lower_bound_ == gm.lower_bound_
    # gmm_jax.save accepts the estimator too, and gmm_jax.load reads its params
    gmm_jax.save(tmp_path / "est2.npz", gm)
    np.testing.assert_array_equal(gmm_jax.load(tmp_path / "est2.npz").means, gm.means_)


def _write(path, **arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def test_bad_files_raise_clear_value_errors(tmp_path):
    p = _params("full")
    good = tmp_path / "good.npz"
    gmm_jax.save(good, p)
    raw = good.read_bytes()

    with pytest.raises(ValueError, match="no such file"):
        gmm_jax.load(tmp_path / "missing.npz")
    (tmp_path / "trunc.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="truncated or corrupt|corrupt"):
        gmm_jax.load(tmp_path / "trunc.npz")
    (tmp_path / "garbage.npz").write_bytes(b"this is not a zip file at all")
    with pytest.raises(ValueError, match="cannot load"):
        gmm_jax.load(tmp_path / "garbage.npz")
    (tmp_path / "empty.npz").write_bytes(b"")
    with pytest.raises(ValueError, match="cannot load"):
        gmm_jax.load(tmp_path / "empty.npz")

    with np.load(good) as d:
        base = {k: d[k] for k in d.files}
    cases = {
        "foreign": ({"x": np.ones(3)}, "not a gmm_jax mixture file"),
        "version": (dict(base, schema_version=np.asarray(99)), "schema version 99"),
        "missing": ({k: v for k, v in base.items() if k != "means"}, "missing entries"),
        "ctype": (dict(base, covariance_type=np.asarray("weird")), "unknown covariance_type"),
        "shape": (dict(base, covariances=np.ones((2, 3))), r"covariances must have shape"),
        "weights": (dict(base, weights=np.array([0.9, 0.9], np.float32)), "sum to 1"),
        "nan": (dict(base, means=np.full((2, 3), np.nan, np.float32)), "NaN"),
        "meta": (dict(base, metadata=np.asarray("{not json")), "JSON"),
    }
    for name, (arrays, match) in cases.items():
        path = tmp_path / f"{name}.npz"
        _write(path, **arrays)
        with pytest.raises(ValueError, match=match):
            gmm_jax.load(path)
    # an object array would need pickle: refused with a clear message
    path = tmp_path / "pickled.npz"
    _write(path, **dict(base, metadata=np.array([{"a": 1}], dtype=object)))
    with pytest.raises(ValueError, match="pickle"):
        gmm_jax.load(path)


def test_corrupted_member_bytes(tmp_path):
    p = _params("diag")
    good = tmp_path / "good.npz"
    gmm_jax.save(good, p)
    bad = tmp_path / "bad.npz"
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(bad, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename == "means.npy":
                data = data[:20]  # truncated array member
            zout.writestr(info, data)
    with pytest.raises(ValueError, match="cannot load"):
        gmm_jax.load(bad)


def test_save_rejects_bad_input(tmp_path):
    with pytest.raises(TypeError, match="GMMParams"):
        gmm_jax.save(tmp_path / "x.npz", {"weights": 1})
    with pytest.raises(ValueError, match="JSON"):
        gmm_jax.save(tmp_path / "x.npz", _params("tied"), metadata={"f": object()})
    assert not os.path.exists(tmp_path / "x.npz")
    # a failed write leaves no temporary file behind, and an existing model is not clobbered
    gmm_jax.save(tmp_path / "x.npz", _params("tied"))
    before = (tmp_path / "x.npz").read_bytes()
    with pytest.raises(ValueError, match="JSON"):
        gmm_jax.save(tmp_path / "x.npz", _params("diag"), metadata={"f": object()})
    assert (tmp_path / "x.npz").read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["x.npz"]
