"""gmm_jax._jit: per-program CPU compiler options; a user's XLA_FLAGS entry wins over them."""

from gmm_jax import _jit


def test_compiler_options_leave_an_option_set_in_xla_flags_alone(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
    assert _jit.cpu_compiler_options() == _jit.CPU_COMPILER_OPTIONS
    monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=3 --xla_dump_to=/tmp/x")
    assert "xla_backend_optimization_level" not in _jit.cpu_compiler_options()
    monkeypatch.delenv("XLA_FLAGS")
    assert _jit.cpu_compiler_options() == _jit.CPU_COMPILER_OPTIONS
