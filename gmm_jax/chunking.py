"""Row-chunked reductions with static shapes.

Sufficient statistics add over rows, so any E-step can run over fixed-size chunks of X under
``lax.scan`` and sum the results: memory is bounded by the chunk, and one shape compiles once.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

Array = jax.Array


def n_chunks(n: int, size: int) -> int:
    return max(1, -(-n // size))


def pad_rows(a: Array | None, n_total: int) -> Array | None:
    """Pads the leading axis of ``a`` with zeros to ``n_total`` rows (no copy when equal)."""
    if a is None or a.shape[0] == n_total:
        return a
    widths = ((0, n_total - a.shape[0]),) + ((0, 0),) * (a.ndim - 1)
    return jnp.pad(a, widths)


def sum_over_chunks(fn: Callable, X: Array, w: Array, size: int, *rows: Array | None):
    """``sum_c fn(X_c, w_c, *rows_c)`` over row chunks of at most ``size`` rows (a pytree sum).

    The last chunk is padded with zero rows of weight zero, so ``fn`` must give zero for rows of
    weight zero (every weighted statistic does). Inputs whose row count is already a multiple of
    ``size`` are only reshaped (no copy), so callers inside a loop pad once, outside it.

    Args:
        fn: ``fn(X_chunk (size, D), w_chunk (size,), *row_chunks) -> pytree`` of arrays.
        X: (N, D) rows.
        w: (N,) non-negative row weights.
        size: static chunk size; with ``size >= N`` this is just ``fn(X, w, *rows)``.
        *rows: further per-row arrays (leading axis N) chunked alongside, or None.

    Returns:
        The pytree sum over chunks.
    """
    n = X.shape[0]
    if size >= n:
        return fn(X, w, *rows)
    nc = n_chunks(n, size)
    total = nc * size

    def split(a):
        if a is None:
            return None
        a = pad_rows(a, total)
        return a.reshape((nc, size) + a.shape[1:])

    chunks = (split(X), split(w)) + tuple(split(r) for r in rows)
    present = [i for i, c in enumerate(chunks) if c is not None]

    def call(args):
        full = [None] * len(chunks)
        for i, a in zip(present, args, strict=True):
            full[i] = a
        return fn(*full)

    xs = tuple(chunks[i] for i in present)
    first = tuple(c[0] for c in xs)

    def body(acc, chunk):
        return jax.tree.map(jnp.add, acc, call(chunk)), None

    zero = jax.tree.map(jnp.zeros_like, jax.eval_shape(call, first))
    out, _ = jax.lax.scan(body, zero, xs)
    return out
