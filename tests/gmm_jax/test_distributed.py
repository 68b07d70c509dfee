"""Sharded data-parallel EM equals single-device EM (4 CPU devices in a subprocess)."""

import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import sys
    import jax
    jax.config.update("jax_enable_x64", True)
    import numpy as np
    import gmm_jax
    from gmm_jax import covariance as cov
    from gmm_jax.distributed import data_mesh, fit_sharded, shard_rows

    assert jax.device_count() == 4, jax.devices()
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(c, 1.0, (333, 3)) for c in (-1.5, 0.0, 1.5)])  # 999 rows
    mesh = data_mesh()
    Xs, ws = shard_rows(X, mesh)
    assert Xs.shape == (1000, 3) and float(ws.sum()) == 999.0
    assert len(Xs.sharding.device_set) == 4
    for ct in sys.argv[1].split(","):
        start = gmm_jax.fit(0, X, 3, covariance_type=ct, max_iter=1, tol=0.0).params
        prec = cov.precisions_from_cholesky(start.precisions_cholesky, ct)
        single = gmm_jax.fit(0, X, 3, covariance_type=ct, tol=1e-9, max_iter=50,
                             weights_init=np.asarray(start.weights),
                             means_init=np.asarray(start.means), precisions_init=np.asarray(prec))
        sharded = fit_sharded(0, X, 3, covariance_type=ct, tol=1e-9, max_iter=50,
                              init_params=start, mesh=mesh)
        assert int(sharded.n_iter) == int(single.n_iter) > 5, (ct, sharded.n_iter, single.n_iter)
        np.testing.assert_allclose(float(sharded.log_likelihood), float(single.log_likelihood),
                                   rtol=1e-10)
        np.testing.assert_allclose(sharded.params.means, single.params.means, atol=1e-8)
        np.testing.assert_allclose(sharded.params.covariances, single.params.covariances,
                                   atol=1e-8)
    # default path: its own initialisation, on all devices
    res = fit_sharded(jax.random.key(0), X.astype(np.float32), 3)
    assert bool(res.converged) and np.all(np.isfinite(np.asarray(res.params.means)))
    print("SHARDED_OK")
    """
)


@pytest.mark.parametrize("types", [
    "full,spherical",
    pytest.param("tied,diag", marks=pytest.mark.slow),
])
def test_sharded_equals_single_device(types):
    env = dict(os.environ)
    env["XLA_FLAGS"] = env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
    env["JAX_PLATFORMS"] = "cpu"
    out = subprocess.run([sys.executable, "-c", SCRIPT, types], env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SHARDED_OK" in out.stdout
