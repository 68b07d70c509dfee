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

from vae_jax import validation
from vae_jax.train import evaluate

# one compiled program per model structure and n (the component is traced, so every row of a
# cluster grid reuses it) instead of a few dozen op-by-op dispatches, each a compile of its own
_generate = nnx.jit(lambda model, key, component, n: model.generate(key, component, n),
                    static_argnums=3)

Array = jax.Array


def cluster(model: nnx.Module, X, *, batch_size: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """Hard cluster labels and cluster probabilities of every sample.

    Args:
        model: a trained ``GMVAE`` or ``M2``.
        X: (N, D) data.
        batch_size: evaluation batch size.

    Returns:
        ``(labels, probs)``: (N,) int32 argmax cluster and (N, K) float probabilities.

    Raises:
        TypeError: a model without clusters (a ``VAE``).
        ValueError: bad data (wrong width, NaN/inf, outside [0, 1] for a Bernoulli model).

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from vae_jax.gmvae import GMVAE
        >>> m = GMVAE(6, 3, latent_dim=2, hidden=(8,), rngs=nnx.Rngs(0))
        >>> labels, probs = cluster(m, jnp.full((5, 6), 0.5))
        >>> labels.shape, probs.shape
        ((5,), (5, 3))
    """
    validation.check_has_clusters(model, "cluster")
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

    Raises:
        TypeError: a model without clusters, a non-integer component or n, a bad key.
        ValueError: a component outside ``[0, K)`` or ``n < 1``.

    Example:
        >>> import jax
        >>> from flax import nnx
        >>> from vae_jax.gmvae import GMVAE
        >>> m = GMVAE(6, 3, latent_dim=2, hidden=(8,), rngs=nnx.Rngs(0))
        >>> generate(m, jax.random.key(0), 2, 4).shape
        (4, 6)
    """
    K = validation.check_has_clusters(model, "generate")
    component = validation.check_int(component, "component", minimum=0)
    if component >= K:
        raise ValueError(f"component must be in [0, {K}) for a model with {K} clusters, got "
                         f"{component}")
    n = validation.check_int(n, "n")
    key = validation.check_key(key)
    return np.asarray(_generate(model, key, jnp.int32(component), n))


def cluster_grid(
    model: nnx.Module,
    key: Array,
    path: str | os.PathLike,
    *,
    image_shape: tuple[int, int],
    n_per_cluster: int = 10,
    order: np.ndarray | None = None,
    title: str | None = None,
    dpi: int | None = None,
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
        dpi: PNG resolution (default ``plots.DEFAULT_DPI``).

    Returns:
        (K, n_per_cluster, H, W) array of the images drawn.
    """
    from vae_jax import plots

    K = validation.check_has_clusters(model, "cluster_grid")
    order = np.arange(K) if order is None else np.asarray(order)
    if order.shape != (K,) or sorted(order.tolist()) != list(range(K)):
        raise ValueError(f"order must be a permutation of 0..{K - 1}, got {order.tolist()}")
    if int(np.prod(image_shape)) != model.n_features:
        raise ValueError(f"image_shape {tuple(image_shape)} has {int(np.prod(image_shape))} "
                         f"pixels but the model generates {model.n_features} features")
    keys = jax.random.split(key, K)
    imgs = np.stack([generate(model, keys[i], int(c), n_per_cluster) for i, c in
                     enumerate(order)]).reshape(K, n_per_cluster, *image_shape)
    plots.sample_grid(imgs.reshape(K * n_per_cluster, *image_shape), path, ncols=n_per_cluster,
                      image_shape=tuple(image_shape), title=title,
                      **({} if dpi is None else {"dpi": dpi}))
    return imgs
