"""Using a trained mixture model: cluster assignment and conditional generation.

Works with any model that has ``cluster_probs(x, key) -> (B, K)`` and
``generate(key, component, n) -> (n, D)`` (``GMVAE`` in both forms, ``M2``).
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vae_jax.train import evaluate

Array = jax.Array


def cluster(model: nnx.Module, X, *, batch_size: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """Hard cluster labels and cluster probabilities of every sample.

    Args:
        model: a trained ``GMVAE`` or ``M2``.
        X: (N, D) data.
        batch_size: evaluation batch size.

    Returns:
        ``(labels, probs)``: (N,) int32 argmax cluster and (N, K) float probabilities.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from vae_jax.gmvae import GMVAE
        >>> m = GMVAE(6, 3, latent_dim=2, hidden=(8,), rngs=nnx.Rngs(0))
        >>> labels, probs = cluster(m, jnp.full((5, 6), 0.5))
        >>> labels.shape, probs.shape
        ((5,), (5, 3))
    """
    probs = np.asarray(evaluate(model, X, jax.random.key(0), method="cluster_probs",
                                batch_size=batch_size))
    return probs.argmax(axis=-1).astype(np.int32), probs


def generate(model: nnx.Module, key: Array, component: int, n: int) -> np.ndarray:
    """(n, D) samples (decoder means) of cluster ``component``.

    Args:
        model: a trained ``GMVAE`` or ``M2``.
        key: PRNG key.
        component: cluster index in ``[0, K)``.
        n: number of samples.
    """
    if not 0 <= int(component) < model.n_components:
        raise ValueError(f"component must be in [0, {model.n_components}), got {component}")
    return np.asarray(model.generate(key, jnp.int32(component), int(n)))


def cluster_grid(
    model: nnx.Module,
    key: Array,
    path: str | os.PathLike,
    *,
    image_shape: tuple[int, int],
    n_per_cluster: int = 10,
    order: np.ndarray | None = None,
    title: str | None = None,
) -> np.ndarray:
    """Writes a PNG grid with one row of generated samples per cluster (``plots.sample_grid``).

    Args:
        model: a trained ``GMVAE`` or ``M2``.
        key: PRNG key.
        path: output PNG file.
        image_shape: (H, W) of one image; D must equal H * W.
        n_per_cluster: samples (columns) per row.
        order: optional permutation of the clusters for the rows (e.g. sorted by the class
            they match best); default 0..K-1.
        title: optional figure title.

    Returns:
        (K, n_per_cluster, H, W) array of the images drawn.
    """
    from vae_jax import plots

    K = model.n_components
    order = np.arange(K) if order is None else np.asarray(order)
    keys = jax.random.split(key, K)
    imgs = np.stack([generate(model, keys[i], int(c), n_per_cluster) for i, c in
                     enumerate(order)]).reshape(K, n_per_cluster, *image_shape)
    plots.sample_grid(imgs.reshape(K * n_per_cluster, *image_shape), path, ncols=n_per_cluster,
                      image_shape=tuple(image_shape), title=title)
    return imgs
