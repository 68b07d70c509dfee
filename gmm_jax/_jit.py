"""``jax.jit`` with XLA's CPU backend told to optimise less (the same code, half the compile).

EM programs spend their time in GEMMs and LAPACK calls, which are library code; the loop
fusions around them gain nothing measurable from LLVM's higher optimisation levels, while
compiling them at level 1 instead of the default takes 20-35% less time (measured on the fit
programs of every covariance type: N=50k, D=K=32, per-iteration time unchanged within noise).
The option is only passed when the default backend is the CPU, and the backend is looked up at
the first call, not at import (``jax.distributed.initialize`` must run before any backend is
created). An option the user sets in ``XLA_FLAGS`` (``--xla_backend_optimization_level=N``) wins:
it is not overridden per program.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading

import jax
import numpy as np

CPU_COMPILER_OPTIONS = {"xla_backend_optimization_level": 1}


def as_array(a) -> jax.Array:
    """``jnp.asarray(a)`` without a compile for NumPy input.

    With jax 0.10, ``jnp.asarray`` of a NumPy array lifts it through ``lax.stage``, a small XLA
    program compiled once per shape and dtype; ``jax.device_put`` transfers it with the same
    dtype canonicalisation and compiles nothing. NumPy scalars too; anything else (tracers, Python
    scalars, lists) goes to ``jnp.asarray``.
    """
    if isinstance(a, (np.ndarray, np.generic)):
        return jax.device_put(a)
    return jax.numpy.asarray(a)


_STATE = threading.local()


def cpu_compiler_options() -> dict:
    """``CPU_COMPILER_OPTIONS`` less the options the user already sets in ``XLA_FLAGS``."""
    flags = os.environ.get("XLA_FLAGS", "")
    return {k: v for k, v in CPU_COMPILER_OPTIONS.items() if f"--{k}=" not in flags}


def in_user_transform() -> bool:
    """Whether a gmm_jax program is being traced inside the caller's jit/vmap/grad.

    Kernels that switch JAX's float64 mode locally (``gmm_jax.estep``'s expanded64 form) are
    only safe when gmm_jax owns the whole trace: the caller's transforms may re-trace them
    later, outside the local switch.
    """
    return getattr(_STATE, "nested", 0) > 0


@contextlib.contextmanager
def _nested():
    _STATE.nested = getattr(_STATE, "nested", 0) + 1
    try:
        yield
    finally:
        _STATE.nested -= 1


class cpu_tuned_jit:  # noqa: N801 - used like jax.jit
    """Decorator: ``jax.jit(fun, **kwargs)`` plus CPU compiler options, created lazily."""

    def __init__(self, fun=None, **kwargs):
        self._fun = fun
        self._kwargs = kwargs
        self._jitted = None
        self._nested = None
        if fun is not None:
            functools.update_wrapper(self, fun)

    def __call__(self, *args, **kwargs):
        if self._fun is None:  # used as @cpu_tuned_jit(static_argnames=...)
            return cpu_tuned_jit(args[0], **self._kwargs)
        if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves((args, kwargs))):
            # inside the caller's jit/vmap/grad: compiler options belong to the outer program
            if self._nested is None:
                self._nested = jax.jit(self._fun, **self._kwargs)
            with _nested():
                return self._nested(*args, **kwargs)
        return self.jitted(*args, **kwargs)

    @property
    def jitted(self):
        if self._jitted is None:
            options = (cpu_compiler_options() or None) if jax.default_backend() == "cpu" else None
            self._jitted = jax.jit(self._fun, compiler_options=options, **self._kwargs)
        return self._jitted

    def lower(self, *args, **kwargs):
        return self.jitted.lower(*args, **kwargs)

    def _cache_size(self) -> int:
        return self.jitted._cache_size()

    def clear_cache(self) -> None:
        self.jitted.clear_cache()
