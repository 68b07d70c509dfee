"""Batched small-matrix linear algebra for EM, safe inside compiled loops.

Every function here is a short *chain*: each LAPACK call (Cholesky, triangular solve, eigh)
consumes the output of the previous one. That is deliberate. On the CPU backend (jax 0.10),
LAPACK custom calls split their batch over XLA's intra-op thread pool and block a pool thread
while they wait; two such calls that are independent of each other inside one ``lax.scan`` or
``lax.while_loop`` body can occupy every pool thread at once and deadlock the process (seen
with three independent batched Cholesky calls in a scan body on a 2-core machine, and with two
jitter factorisations in the old M-step). A data dependency between consecutive calls
serialises them. ``tests/gmm_jax/test_linalg.py`` checks the fit programs' jaxprs for any pair
of linear-algebra calls that is not ordered this way.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular

Array = jax.Array

#: Precision of every matrix product in gmm_jax: full float32 (or float64) arithmetic. JAX's
#: default float32 matmul may run in TF32 on NVIDIA GPUs (10 mantissa bits) and in bfloat16 passes
#: on TPUs: errors of about 1e-3 relative in the natural parameters, M-step moments and k-means
#: distances (measured on an H100: the fast full-covariance E-step went from 1e-7 of float64 to
#: 3e-6, and the error bound that picks it does not cover that).
HIGHEST = jax.lax.Precision.HIGHEST


def mm(a: Array, b: Array) -> Array:
    """``a @ b`` at ``HIGHEST`` precision."""
    return jnp.matmul(a, b, precision=HIGHEST)


def einsum(spec: str, *operands: Array) -> Array:
    """``jnp.einsum`` at ``HIGHEST`` precision."""
    return jnp.einsum(spec, *operands, precision=HIGHEST)


# Jitter added (times the mean diagonal) to a matrix whose Cholesky factorisation fails, in
# units of the dtype's epsilon.
_JITTER_EPS = 1e3


def _eye_like(a: Array) -> Array:
    return jnp.broadcast_to(jnp.eye(a.shape[-1], dtype=a.dtype), a.shape)


def symmetrize(a: Array) -> Array:
    return 0.5 * (a + jnp.swapaxes(a, -1, -2))


def _finite_matrix(a: Array) -> Array:
    return jnp.all(jnp.isfinite(a), axis=(-2, -1))


def stable_cholesky(a: Array, allow_jitter=True) -> tuple[Array, Array]:
    """Lower Cholesky factor of a batch of symmetric matrices, with jitter where it fails.

    Rounding can leave a matrix that is positive definite in exact arithmetic (a regularised
    rank-deficient covariance: more features than samples) slightly indefinite, so the
    factorisation returns NaN. Such matrices get ``1e3 * eps`` times their mean diagonal added
    and are factorised again (a second call that depends on the first, see the module
    docstring); matrices whose factorisation succeeded are returned unchanged. With
    ``allow_jitter`` false (a traced bool is fine) failures are left non-finite: a singular
    covariance without regularisation is a collapsed component, for the caller to repair.

    Args:
        a: (..., D, D) symmetric matrices.
        allow_jitter: whether failed factorisations get jitter.

    Returns:
        (chol, a_used): (..., D, D) lower factors and the matrices they factorise.
    """
    chol = jnp.linalg.cholesky(a)
    ok = _finite_matrix(chol) | ~jnp.asarray(allow_jitter)
    scale = jnp.mean(jnp.diagonal(a, axis1=-2, axis2=-1), axis=-1)
    scale = jnp.where(jnp.isfinite(scale) & (scale > 0), scale, 1.0)
    jitter = jnp.where(ok, 0.0, _JITTER_EPS * jnp.finfo(a.dtype).eps * scale)
    # depends on `ok`, hence on the first factorisation: the second call cannot run beside it
    a2 = a + jitter[..., None, None] * _eye_like(a)
    chol2 = jnp.linalg.cholesky(a2)
    keep = ok[..., None, None]
    return jnp.where(keep, chol, chol2), jnp.where(keep, a, a2)


def inv_lower(chol: Array) -> Array:
    """Inverse of a batch of lower-triangular matrices (a triangular solve against I)."""
    return solve_triangular(chol, _eye_like(chol), lower=True)


def inv_upper(u: Array) -> Array:
    """Inverse of a batch of upper-triangular matrices."""
    return solve_triangular(u, _eye_like(u), lower=False)


def precision_cholesky_from_covariances(cov: Array) -> tuple[Array, Array]:
    """Upper ``L`` with ``L L^T = inv(cov)`` (scikit-learn's ``precisions_cholesky_``).

    Returns:
        (prec_chol, cov_used): the factor and the (possibly jittered) covariance it inverts.
    """
    chol, used = stable_cholesky(symmetrize(cov))
    return jnp.swapaxes(inv_lower(chol), -1, -2), used


def covariances_from_precision_cholesky(prec_chol: Array) -> Array:
    """``inv(L L^T) = L^{-T} L^{-1}`` for upper ``L`` (one triangular inverse, no general one)."""
    t = inv_upper(prec_chol)  # L^{-1}, upper
    return symmetrize(mm(jnp.swapaxes(t, -1, -2), t))


def precision_cholesky_from_precisions(prec: Array) -> Array:
    """Upper ``L`` with ``L L^T = prec``: the Cholesky factor of the index-reversed matrix."""
    flipped = jnp.flip(symmetrize(prec), axis=(-1, -2))
    chol, _ = stable_cholesky(flipped)
    return jnp.flip(chol, axis=(-1, -2))


def rebase_precision_cholesky(basis: Array, c: Array, allow_jitter=True
                              ) -> tuple[Array, Array]:
    """Precision factor of ``A c A^T`` with ``A = basis^{-T}``: ``basis U^{-T}`` (``c = U U^T``).

    This is the whitened M-step: ``c`` is the new covariance in the coordinates where the old
    one is the identity (well conditioned near convergence), so the new precision factor is
    found without ever factorising the (possibly very ill-conditioned) covariance itself.

    Args:
        basis: (..., D, D) upper-triangular precision factors of the coordinates.
        c: (..., D, D) symmetric positive definite matrices in those coordinates.
        allow_jitter: see :func:`stable_cholesky`.

    Returns:
        (prec_chol, c_used): the new upper factor and the (possibly jittered) ``c``.
    """
    u, c_used = stable_cholesky(symmetrize(c), allow_jitter)
    # L_new^T = U^{-1} L^T (a triangular solve that consumes U)
    lt = solve_triangular(u, jnp.swapaxes(basis, -1, -2), lower=True)
    return jnp.swapaxes(lt, -1, -2), c_used


def floor_eigenvalues(cov: Array, floor) -> tuple[Array, Array]:
    """Raises every eigenvalue of symmetric ``cov`` to at least ``floor``.

    Returns:
        (cov_floored, prec_chol): the rebuilt covariance ``V max(lambda, floor) V^T`` and the
        upper precision factor of it (from ``V diag(1/lambda') V^T``, factorised after the
        eigendecomposition it depends on).
    """
    lam, v = jnp.linalg.eigh(symmetrize(cov))
    lam = jnp.maximum(lam, floor)
    cov_f = symmetrize(mm(v * lam[..., None, :], jnp.swapaxes(v, -1, -2)))
    prec = symmetrize(mm(v / lam[..., None, :], jnp.swapaxes(v, -1, -2)))
    return cov_f, precision_cholesky_from_precisions(prec)


def after(x: Array, *deps) -> Array:
    """``x``, made to depend on ``deps`` at run time (to order linear-algebra calls).

    Adds ``0 * s`` with ``s`` a finite scalar computed from every leaf of ``deps``; XLA does not
    fold a floating multiplication by zero, so the consumer of the result waits for ``deps``.
    """
    total = jnp.zeros((), x.dtype)
    for leaf in jax.tree.leaves(deps):
        v = jnp.sum(jnp.asarray(leaf, x.dtype))
        total = total + jnp.where(jnp.isfinite(v), v, 0.0)
    return x + jnp.zeros((), x.dtype) * total
