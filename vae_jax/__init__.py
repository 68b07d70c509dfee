"""vae_jax: deep mixture models (VAE, M2, GMVAE) on gmm_jax's mixture log-density.

Modules: ``nets`` (Flax NNX MLP blocks), ``losses`` (ELBO terms; mixture priors call
``gmm_jax``), ``vae`` (the VAE), ``train`` (Optax loop shared by every model), ``data``
(digits, IDX files, Fashion-MNIST), ``metrics`` (clustering accuracy, NMI, purity) and
``plots`` (PNG figures; imported on demand: ``from vae_jax import plots``), ``io``
(:func:`save` / :func:`load` of a model without pickle or optimizer) and ``validation`` (the
input checks every entry point runs before tracing).

Model protocol used by :func:`train`: an ``nnx.Module`` with
``loss(x, key, y=None) -> (scalar, dict of scalars)`` and ``elbo(x, key) -> (B,)``.
"""

from vae_jax import data, io, losses, metrics, nets, validation
from vae_jax.gmvae import GMVAE, fit_gmvae
from vae_jax.inference import cluster, cluster_grid, generate
from vae_jax.io import load, save
from vae_jax.m2 import M2
from vae_jax.metrics import clustering_accuracy, normalized_mutual_info, purity
from vae_jax.train import (
    TrainingDivergedError,
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
    "TrainingDivergedError",
    "VAE",
    "cluster",
    "cluster_grid",
    "clustering_accuracy",
    "data",
    "elbo",
    "evaluate",
    "evaluate_elbo",
    "fit_gmvae",
    "generate",
    "importance_weighted_log_likelihood",
    "io",
    "load",
    "load_checkpoint",
    "losses",
    "metrics",
    "nets",
    "normalized_mutual_info",
    "purity",
    "save",
    "save_checkpoint",
    "train",
    "train_step",
    "validation",
]
