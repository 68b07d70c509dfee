"""vae_jax: deep mixture models (VAE, M2, GMVAE) on gmm_jax's mixture log-density.

Modules: ``nets`` (Flax NNX MLP blocks), ``losses`` (ELBO terms; mixture priors call
``gmm_jax``), ``vae`` (the VAE), ``train`` (Optax loop shared by every model), ``data``
(digits, IDX files, Fashion-MNIST), ``metrics`` (clustering accuracy, NMI, purity) and
``plots`` (PNG figures; imported on demand: ``from vae_jax import plots``).

Model protocol used by :func:`train`: an ``nnx.Module`` with
``loss(x, key, y=None) -> (scalar, dict of scalars)`` and ``elbo(x, key) -> (B,)``.
"""

from vae_jax import data, losses, metrics, nets
from vae_jax.gmvae import GMVAE
from vae_jax.inference import cluster, generate
from vae_jax.m2 import M2
from vae_jax.metrics import clustering_accuracy, normalized_mutual_info, purity
from vae_jax.train import (
    evaluate,
    evaluate_elbo,
    load_checkpoint,
    save_checkpoint,
    train,
    train_step,
)
from vae_jax.vae import VAE, elbo, importance_weighted_log_likelihood

__all__ = [
    "GMVAE",
    "M2",
    "VAE",
    "cluster",
    "clustering_accuracy",
    "data",
    "elbo",
    "evaluate",
    "evaluate_elbo",
    "generate",
    "importance_weighted_log_likelihood",
    "load_checkpoint",
    "losses",
    "metrics",
    "nets",
    "normalized_mutual_info",
    "purity",
    "save_checkpoint",
    "train",
    "train_step",
]
