"""Helpers shared by the benchmark scripts: problem generation, machine facts, subprocess workers.

Every contender runs in its own Python subprocess so that its peak resident memory
(``resource.getrusage(...).ru_maxrss``) is its own, and so that one library's thread pools or
allocator state do not colour another's timing.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")


def make_problem(n: int, d: int, k: int, covariance_type: str, dtype: str = "float32",
                 seed: int = 0):
    """Synthetic mixture data and shared initial parameters (identical for every contender).

    Returns:
        (X, weights_init, means_init, precisions_init): X (n, d) drawn from k Gaussians with
        random means (spread 3) and random anisotropic covariances; initial means are k random
        samples, weights uniform, precisions the inverse of the data covariance (shaped by type).
    """
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * 3.0
    scales = rng.uniform(0.5, 1.5, size=(k, d))
    labels = rng.integers(0, k, size=n)
    X = np.empty((n, d), dtype)
    step = 1 << 18
    for s in range(0, n, step):  # bounded temporaries even at N = 1e6
        lab = labels[s:s + step]
        X[s:s + step] = centres[lab] + rng.standard_normal((len(lab), d)) * scales[lab]
    means = X[rng.choice(n, k, replace=False)].astype(np.float64)
    cov = np.cov(X[: min(n, 100_000)].T.astype(np.float64))
    var = np.diag(cov)
    prec = {
        "full": np.broadcast_to(np.linalg.inv(cov), (k, d, d)).copy(),
        "tied": np.linalg.inv(cov),
        "diag": np.broadcast_to(1.0 / var, (k, d)).copy(),
        "spherical": np.full(k, 1.0 / var.mean()),
    }[covariance_type]
    return X, np.full(k, 1.0 / k), means, prec


def flops_per_iter(covariance_type: str, n: int, d: int, k: int) -> float:
    """Floating-point operations counted for one EM iteration (E-step + M-step).

    * full: ``4 N K D^2`` (E: ``(x - mu_k)^T L_k`` for all k, ``2 N K D^2``; M: second moments
      ``sum_n r_nk x_n x_n^T``, ``2 N K D^2``), as the issue prescribes;
    * tied: ``4 N D^2 + 4 N K D`` (E: ``X L`` and the cross term; M: ``X^T X`` and ``R^T X``);
    * diag: ``8 N K D`` (E: ``X^2 P^T`` and ``X (M P)^T``; M: ``R^T X^2`` and ``R^T X``);
    * spherical: ``6 N K D`` (E: ``X M^T``; M: ``R^T X`` and ``R^T X^2``).

    Lower-order terms (log-sum-exp, exp, parameter updates) are not counted.
    """
    return {
        "full": 4.0 * n * k * d * d,
        "tied": 4.0 * n * d * d + 4.0 * n * k * d,
        "diag": 8.0 * n * k * d,
        "spherical": 6.0 * n * k * d,
    }[covariance_type]


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict:
    """Machine, software versions, date and load average (for the JSON header)."""
    import jax
    import sklearn

    info = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jax_backend": jax.default_backend(),
        "jax_devices": [str(d) for d in jax.devices()],
        "numpy": np.__version__,
        "sklearn": sklearn.__version__,
        "loadavg_start": list(os.getloadavg()),
    }
    try:
        from importlib.metadata import version

        import gmmx  # noqa: F401

        info["gmmx"] = version("gmmx")
    except Exception:
        info["gmmx"] = None
    return info


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (Linux reports KiB)."""
    import resource

    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024.0 if sys.platform != "darwin" else kb / 2**20


def current_rss_mb() -> float:
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:
        return float("nan")


def matmul_peak_gflops(n: int = 2048, repeats: int = 10, dtype: str = "float32") -> float:
    """Best-of-``repeats`` GFLOP/s of a jitted ``n x n`` float32 jnp matmul (default device).

    The product runs at ``Precision.HIGHEST``, the precision of gmm_jax's own GEMMs: on NVIDIA
    GPUs JAX's default float32 matmul may use TF32, whose peak gmm_jax never uses.
    """
    import jax

    from gmm_jax.linalg import mm

    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    b = jax.random.normal(jax.random.key(1), (n, n), dtype)
    f = jax.jit(mm)
    f(a, b).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        f(a, b).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2.0 * n**3 / best / 1e9


def run_worker(module: str, spec: dict, timeout: float = 1800,
               blas_threads: int | None = None) -> dict:
    """Runs ``python -m <module> --worker '<json spec>'`` and returns the JSON it prints last.

    ``blas_threads`` (if given) sets OPENBLAS/OMP/MKL thread counts for the subprocess: on a
    machine shared with other jobs, multi-threaded OpenBLAS spin-waits and numpy/sklearn become
    10x slower than single-threaded; on a quiet machine leave it None (library defaults).
    """
    cmd = [sys.executable, "-m", module, "--worker", json.dumps(spec)]
    env = dict(os.environ)
    if blas_threads:
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(blas_threads)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    try:
        out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout} s"}
    for line in reversed(out.stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return {"error": (out.stderr or out.stdout).strip()[-2000:]}


def footer(info: dict) -> str:
    """One-line provenance for plots and tables."""
    return (f"{info['cpu']} x{info['cpu_count']} | JAX {info['jax']} ({info['jax_backend']}) | "
            f"{info['date']} | load {info['loadavg_start'][0]:.1f}")
