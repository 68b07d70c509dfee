"""One BLAS thread for the LAPACK kernels JAX runs on the CPU.

On the CPU backend, JAX's linear-algebra custom calls (Cholesky, triangular solve, eigh) call
into the OpenBLAS that scipy bundles, from inside XLA's own thread pool. OpenBLAS then starts
its own threads on top of XLA's: on a machine whose cores are already busy they wait to be
scheduled, and a batched 32 x 32 triangular solve took 7.7 ms per matrix instead of 0.01 ms
(measured on the 2-core development machine, jax 0.10.2; Cholesky and eigh at D >= 256 were 2x
and 13x slower). XLA parallelises over the batch already, so gmm_jax limits *scipy's* OpenBLAS
(not numpy's) to one thread when it is imported. Set ``GMM_JAX_KEEP_BLAS_THREADS=1`` in the
environment to leave it alone (or set ``OPENBLAS_NUM_THREADS`` yourself).
"""

from __future__ import annotations

import os


def limit_scipy_blas_threads() -> list[str]:
    """Limits the BLAS libraries bundled with scipy to one thread; returns their file names."""
    if os.environ.get("GMM_JAX_KEEP_BLAS_THREADS") or os.environ.get("OPENBLAS_NUM_THREADS"):
        return []
    try:
        import scipy
        import scipy.linalg  # noqa: F401  (loads the library JAX's LAPACK kernels use)
        import threadpoolctl
    except ImportError:  # pragma: no cover - both are dependencies of scikit-learn
        return []
    root = os.path.dirname(os.path.dirname(os.path.abspath(scipy.__file__)))
    bundled = os.path.join(root, "scipy.libs")
    controller = threadpoolctl.ThreadpoolController()
    limited = []
    for lib in controller.lib_controllers:
        path = os.path.abspath(lib.filepath or "")
        if lib.user_api == "blas" and path.startswith(bundled + os.sep):
            lib.set_num_threads(1)
            limited.append(os.path.basename(path))
    return limited


LIMITED = limit_scipy_blas_threads()
