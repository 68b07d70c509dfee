"""Sharded data-parallel EM equals single-device EM, for every covariance type (4 CPU devices in
one subprocess), and the checkpointed (host-driven) sharded loop equals the compiled one."""

import os
import subprocess
import sys
import textwrap

import pytest

# A watchdog on progress, not on the whole run: the child dumps every thread's stack and exits
# if one stage (start-up, one covariance type, the checkpoint check) makes no progress for
# STAGE_LIMIT_S (each takes 1-10 s, more on a loaded machine), so a hang (e.g. a collective that
# never completes) fails within a minute with the place it hung, while a slow but progressing run
# on a busy machine does not fail. The subprocess timeout is only a backstop.
STAGE_LIMIT_S = 60
BACKSTOP_S = 8 * STAGE_LIMIT_S

SCRIPT = textwrap.dedent(
    """
    import faulthandler, os, sys, tempfile

    def progress():  # re-arms the watchdog (cancels the previous timer)
        faulthandler.dump_traceback_later(float(sys.argv[1]), exit=True)

    progress()
    import jax
    jax.config.update("jax_enable_x64", True)
    import numpy as np
    import gmm_jax
    from gmm_jax import checkpoint
    from gmm_jax import covariance as cov
    from gmm_jax.distributed import data_mesh, fit_sharded, shard_rows

    assert jax.device_count() == 4, jax.devices()
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(c, s, (333, 3)) for c, s in ((-3, 1.0), (0, 0.6), (3, 1.4))])
    mesh = data_mesh()
    Xs, ws = shard_rows(X, mesh)
    assert Xs.shape == (1000, 3) and float(ws.sum()) == 999.0
    assert len(Xs.sharding.device_set) == 4
    means0 = X[[0, 400, 900]]
    for ct in gmm_jax.COVARIANCE_TYPES:
        shape = cov.covariance_shape(ct, 3, 3)
        covs = np.broadcast_to(np.eye(3), shape) if cov.is_matrix(ct) else np.ones(shape)
        start = gmm_jax.params_from_covariances(np.full(3, 1 / 3), means0, covs, ct)
        prec = cov.precisions_from_cholesky(start.precisions_cholesky, ct)
        single = gmm_jax.fit(0, X, 3, covariance_type=ct, tol=1e-8, max_iter=50,
                             weights_init=np.asarray(start.weights), means_init=means0,
                             precisions_init=np.asarray(prec))
        sharded = fit_sharded(0, X, 3, covariance_type=ct, tol=1e-8, max_iter=50,
                              init_params=start, mesh=mesh)
        assert int(sharded.n_iter) == int(single.n_iter) > 5, (ct, sharded.n_iter, single.n_iter)
        assert bool(sharded.converged) and bool(single.converged), ct
        np.testing.assert_allclose(float(sharded.log_likelihood), float(single.log_likelihood),
                                   rtol=1e-13, err_msg=ct)
        np.testing.assert_allclose(sharded.params.means, single.params.means, atol=1e-11,
                                   err_msg=ct)
        np.testing.assert_allclose(sharded.params.covariances, single.params.covariances,
                                   atol=1e-11, err_msg=ct)
        print(ct, "iterations", int(single.n_iter), flush=True)
        progress()

    # checkpointed sharded fit (host-driven loop): interrupted after iteration 3, resumed, it
    # ends where the compiled loop ends
    path = os.path.join(tempfile.mkdtemp(), "sharded.npz")
    ct = "tied"

    def interrupt(it, lb, change, fast):
        if it == 3:
            raise KeyboardInterrupt
    kw = dict(covariance_type=ct, tol=1e-8, max_iter=50, mesh=mesh)
    try:
        fit_sharded(0, X, 3, checkpoint=path, callback=interrupt, **kw)
        raise AssertionError("not interrupted")
    except KeyboardInterrupt:
        pass
    assert checkpoint.read_metadata(path)["iteration"] == 3
    seen = []
    resumed = fit_sharded(0, X, 3, checkpoint=path, callback=lambda it, *a: seen.append(it),
                          **kw)
    assert seen[0] == 4, seen
    compiled = fit_sharded(0, X, 3, **kw)
    assert int(resumed.n_iter) == int(compiled.n_iter) > 5
    np.testing.assert_allclose(resumed.params.covariances, compiled.params.covariances,
                               atol=1e-11)
    np.testing.assert_allclose(resumed.params.means, compiled.params.means, atol=1e-11)
    np.testing.assert_allclose(resumed.history, compiled.history, rtol=1e-13)
    progress()
    # default path: its own initialisation, on all devices, float32
    res = fit_sharded(jax.random.key(0), X.astype(np.float32), 3)
    assert bool(res.converged) and np.all(np.isfinite(np.asarray(res.params.means)))
    print("SHARDED_OK")
    """
)


def test_sharded_equals_single_device_every_covariance_type():
    env = dict(os.environ)
    env["XLA_FLAGS"] = env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
    env["JAX_PLATFORMS"] = "cpu"
    try:
        out = subprocess.run([sys.executable, "-c", SCRIPT, str(STAGE_LIMIT_S)], env=env,
                             capture_output=True, text=True, timeout=BACKSTOP_S)
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"the 4-device sharded EM subprocess did not finish within "
                    f"{BACKSTOP_S} s and did not dump its stacks either: hung in a "
                    f"collective or the import? Output so far:\n{err.stdout}\n{err.stderr}")
    assert out.returncode == 0, (
        f"sharded EM subprocess failed (exit {out.returncode}; a faulthandler stack dump means "
        f"a stage made no progress for {STAGE_LIMIT_S} s):\n" + out.stdout + out.stderr[-8000:])
    assert "SHARDED_OK" in out.stdout
