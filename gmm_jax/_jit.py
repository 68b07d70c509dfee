"""``jax.jit`` with XLA's CPU backend told to compile faster where compiling dominates.

EM programs spend their time in GEMMs and LAPACK calls, which are library code; the loop
fusions around them gain little from LLVM's higher optimisation levels or from XLA's newer MLIR
fusion emitters, while both cost compile time. Two per-program options:

- ``xla_backend_optimization_level=1`` instead of the default, always: 20-35% less compile time
  (measured on the fit programs of every covariance type: N=50k, D=K=32, per-iteration time
  unchanged within noise).
- ``xla_cpu_use_fusion_emitters=False`` (XLA's classic loop emitters) for programs whose data
  are small next to the compile: on top of the first option, the XLA compile of a first ``fit``
  on digits (K=10, float32) drops from about 3.1 s to 1.3-1.8 s, with the same results to the
  last digit. The newer emitters make the element-wise fusions 7-36% faster (one E-step at
  N=100k, D=32, K=8-32, measured side by side), which pays for their compile only on large
  data: programs whose largest argument times ``n_components`` reaches ``EMITTER_WORK``
  (e.g. N=100k, D=32, K=32) keep them. ``python benchmarks/profile_compile.py`` measures the
  compile, ``python -m benchmarks.bench_em`` the speed.

The options are only passed when the default backend is the CPU, and the backend is looked up at
the first call, not at import (``jax.distributed.initialize`` must run before any backend is
created). An option this jaxlib does not know is dropped (one tiny probe compile per option, at
the first call). An option the user sets in ``XLA_FLAGS`` (``--xla_backend_optimization_level=N``,
``--xla_cpu_use_fusion_emitters=true``) wins: it is not overridden per program.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading

import jax
import numpy as np

CPU_COMPILER_OPTIONS = {"xla_backend_optimization_level": 1}
#: The option that trades run-time speed of element-wise fusions for compile time.
SMALL_PROGRAM_OPTIONS = {"xla_cpu_use_fusion_emitters": False}
#: Largest argument's size times ``n_components`` from which a program keeps XLA's newer fusion
#: emitters: there, 7-36% faster fusions over tens of iterations outweigh 1-1.5 s of compile.
EMITTER_WORK = 1 << 25


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


_KNOWN: dict[str, bool] = {}


def _known_option(name: str, value) -> bool:
    """Whether this jaxlib's CPU compiler accepts ``name=value`` (a tiny compile, once)."""
    if name not in _KNOWN:
        try:
            jax.jit(lambda x: x + 1, compiler_options={name: value}).lower(
                np.float32(0)).compile()
            _KNOWN[name] = True
        except Exception:  # noqa: BLE001 - jaxlib raises its own error type for unknown options
            _KNOWN[name] = False
    return _KNOWN[name]


def cpu_compiler_options(small: bool = False) -> dict:
    """``CPU_COMPILER_OPTIONS`` (plus ``SMALL_PROGRAM_OPTIONS`` when ``small``) less the options
    the user already sets in ``XLA_FLAGS`` and those this jaxlib does not know."""
    flags = os.environ.get("XLA_FLAGS", "")
    options = {**CPU_COMPILER_OPTIONS, **(SMALL_PROGRAM_OPTIONS if small else {})}
    return {k: v for k, v in options.items() if f"--{k}=" not in flags and _known_option(k, v)}


def program_work(args, kwargs) -> int:
    """A rough size of a program's per-iteration work: its largest array argument's size times
    its static ``n_components`` (or ``n_clusters``; 1 when it has neither)."""
    shapes = (getattr(leaf, "shape", None) for leaf in jax.tree.leaves((args, kwargs)))
    size = max((int(np.prod(s, dtype=np.int64)) for s in shapes if isinstance(s, tuple)),
               default=0)  # arrays only: a Mesh's shape is a dict
    k = kwargs.get("n_components", kwargs.get("n_clusters", 1))
    return size * (k if isinstance(k, int) else 1)


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
    """Decorator: ``jax.jit(fun, **kwargs)`` plus CPU compiler options, created lazily.

    Two compiled variants: one with ``SMALL_PROGRAM_OPTIONS`` for calls whose
    :func:`program_work` is below ``EMITTER_WORK``, one without for the others.
    """

    def __init__(self, fun=None, **kwargs):
        self._fun = fun
        self._kwargs = kwargs
        self._jitted: dict[bool, object] = {}  # by "small"
        self._variants: dict = {}  # by options: variants with the same options are one jit
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
        return self._for(args, kwargs)(*args, **kwargs)

    def _for(self, args, kwargs):
        return self._variant(program_work(args, kwargs) < EMITTER_WORK)

    def _variant(self, small: bool):
        if small not in self._jitted:
            options = None
            if jax.default_backend() == "cpu":
                options = cpu_compiler_options(small) or None
            key = tuple(sorted((options or {}).items()))
            if key not in self._variants:
                self._variants[key] = jax.jit(self._fun, compiler_options=options,
                                              **self._kwargs)
            self._jitted[small] = self._variants[key]
        return self._jitted[small]

    @property
    def jitted(self):
        """The variant for small programs (what most calls run)."""
        return self._variant(True)

    def lower(self, *args, **kwargs):
        return self._for(args, kwargs).lower(*args, **kwargs)

    def _cache_size(self) -> int:
        return sum(j._cache_size() for j in self._variants.values())

    def clear_cache(self) -> None:
        for j in self._variants.values():
            j.clear_cache()
