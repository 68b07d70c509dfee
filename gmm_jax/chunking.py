"""Row-chunked reductions with static shapes.

Sufficient statistics add over rows, so any E-step can run over fixed-size chunks of X under
``lax.scan`` and sum the results: memory is bounded by the chunk, and one shape compiles once.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

Array = jax.Array


def sum_over_chunks(fn: Callable[[Array, Array], object], X: Array, w: Array, size: int):
    """``sum_c fn(X_c, w_c)`` over row chunks of at most ``size`` rows (a pytree sum).

    The last chunk is padded with zero rows of weight zero, so ``fn`` must give zero for rows of
    weight zero (every weighted statistic does).

    Args:
        fn: ``fn(X_chunk (size, D), w_chunk (size,)) -> pytree`` of arrays.
        X: (N, D) rows.
        w: (N,) non-negative row weights.
        size: static chunk size; with ``size >= N`` this is just ``fn(X, w)``.

    Returns:
        The pytree sum over chunks.
    """
    n, d = X.shape
    if size >= n:
        return fn(X, w)
    n_chunks = -(-n // size)
    pad = n_chunks * size - n
    Xp = jnp.pad(X, ((0, pad), (0, 0))).reshape(n_chunks, size, d)
    wp = jnp.pad(w, (0, pad)).reshape(n_chunks, size)

    def body(acc, chunk):
        return jax.tree.map(jnp.add, acc, fn(*chunk)), None

    zero = jax.tree.map(jnp.zeros_like, jax.eval_shape(fn, Xp[0], wp[0]))
    out, _ = jax.lax.scan(body, zero, (Xp, wp))
    return out
