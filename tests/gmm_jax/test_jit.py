"""gmm_jax._jit: per-program CPU compiler options; a user's XLA_FLAGS entry wins over them.
The functional API runs as compiled programs, not op by op."""

import jax
import numpy as np

import gmm_jax
from gmm_jax import _jit
from gmm_jax import covariance as cov


def test_compiler_options_leave_an_option_set_in_xla_flags_alone(monkeypatch):
    both = {**_jit.CPU_COMPILER_OPTIONS, **_jit.SMALL_PROGRAM_OPTIONS}
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
    assert _jit.cpu_compiler_options() == _jit.CPU_COMPILER_OPTIONS
    assert _jit.cpu_compiler_options(small=True) == both
    monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=3 --xla_dump_to=/tmp/x "
                                    "--xla_cpu_use_fusion_emitters=true")
    assert _jit.cpu_compiler_options(small=True) == {}
    monkeypatch.delenv("XLA_FLAGS")
    assert _jit.cpu_compiler_options(small=True) == both


def test_an_option_this_jaxlib_does_not_know_is_dropped(monkeypatch):
    """jaxlib raises on an unknown compile option (and older or newer ones lack some), so a
    program must not fail because of one."""
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    monkeypatch.setattr(_jit, "CPU_COMPILER_OPTIONS",
                        {**_jit.CPU_COMPILER_OPTIONS, "xla_no_such_option_here": True})
    assert _jit.cpu_compiler_options() == {"xla_backend_optimization_level": 1}
    fn = _jit.cpu_tuned_jit(lambda x: x * 2)
    np.testing.assert_array_equal(fn(np.arange(3.0, dtype=np.float32)), [0, 2, 4])


def test_large_programs_compile_with_the_newer_fusion_emitters(monkeypatch):
    """Small programs (compile-bound) get XLA's classic fusion emitters, large ones (run-bound)
    keep the newer, faster ones: one compiled variant each, chosen by the arguments."""
    monkeypatch.setattr(_jit, "EMITTER_WORK", 1000)
    seen = []

    def options(small=False):
        seen.append(small)
        return {"xla_cpu_use_fusion_emitters": False} if small else {}

    monkeypatch.setattr(_jit, "cpu_compiler_options", options)

    def f(x, *, n_components):
        return x * n_components

    fn = _jit.cpu_tuned_jit(f, static_argnames=("n_components",))
    assert _jit.program_work((np.ones((10, 5)),), {"n_components": 4}) == 200
    assert _jit.program_work((np.ones((10, 5)), np.ones(3)), {"n_clusters": 30}) == 1500
    mesh = jax.make_mesh((1,), ("data",))  # a static argument of the sharded fit
    assert _jit.program_work((np.ones(3),), {"mesh": mesh, "max_iter": 5}) == 3
    np.testing.assert_array_equal(fn(np.ones((10, 5), np.float32), n_components=4), 4.0)
    np.testing.assert_array_equal(fn(np.ones((10, 5), np.float32), n_components=30), 30.0)
    assert seen == [True, False] and set(fn._jitted) == {True, False}
    assert fn._cache_size() == 2
    np.testing.assert_array_equal(fn(np.ones((10, 5), np.float32), n_components=4), 4.0)
    assert fn._cache_size() == 2 and seen == [True, False]
    # with the same options (a user's XLA_FLAGS set the option) both are one program cache
    monkeypatch.setattr(_jit, "cpu_compiler_options", lambda small=False: {})
    fn = _jit.cpu_tuned_jit(f, static_argnames=("n_components",))
    fn(np.ones((10, 5), np.float32), n_components=4)
    fn(np.ones((10, 5), np.float32), n_components=30)
    assert fn._jitted[True] is fn._jitted[False] and fn._cache_size() == 2


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
