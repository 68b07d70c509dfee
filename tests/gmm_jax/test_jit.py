"""gmm_jax._jit: per-program CPU compiler options; a user's XLA_FLAGS entry wins over them.
The functional API runs as compiled programs, not op by op."""

import jax
import numpy as np

import gmm_jax
from gmm_jax import _jit
from gmm_jax import covariance as cov


def test_compiler_options_leave_an_option_set_in_xla_flags_alone(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
    assert _jit.cpu_compiler_options() == _jit.CPU_COMPILER_OPTIONS
    monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=3 --xla_dump_to=/tmp/x")
    assert "xla_backend_optimization_level" not in _jit.cpu_compiler_options()
    monkeypatch.delenv("XLA_FLAGS")
    assert _jit.cpu_compiler_options() == _jit.CPU_COMPILER_OPTIONS



def _n_compiles(fn, *args):
    """(XLA compilations while ``fn(*args)`` runs, its result), from JAX's own compile events."""
    n = [0]

    def listener(event, duration, **kwargs):
        n[0] += event == "/jax/core/compile/backend_compile_duration"

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        out = jax.block_until_ready(fn(*args))
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    return n[0], out


def test_functional_api_on_a_new_shape_compiles_one_program_per_call():
    """Called on concrete arrays of a shape not seen before, each function of the functional API
    compiles its one program, not one per operation (op by op, the second shape here compiled
    31 programs in e_step and 29 in m_step; NumPy input goes to the device without a compile)."""
    rng = np.random.default_rng(0)
    for n, k, d in ((50, 2, 3), (70, 3, 4)):  # round 1 warms up what no shape changes
        X = rng.normal(size=(n, d)).astype(np.float32)
        counts = {}
        counts["params"], p = _n_compiles(
            gmm_jax.params_from_covariances, np.full(k, 1 / k, np.float32), X[:k],
            np.broadcast_to(np.eye(d, dtype=np.float32), (k, d, d)), "full")
        counts["e_step"], (stats, _) = _n_compiles(gmm_jax.e_step, p, X)
        counts["m_step"], _ = _n_compiles(gmm_jax.m_step, stats)
        counts["precisions"], _ = _n_compiles(cov.precisions_from_cholesky,
                                              p.precisions_cholesky, "full")
    assert max(counts.values()) <= 1, counts
