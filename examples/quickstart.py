"""Quick start: fit a 3-component mixture with 8 restarts under vmap, then use it."""

import jax
import numpy as np

import gmm_jax

rng = np.random.default_rng(0)
X = np.concatenate([
    rng.normal([-4.0, 0.0], 1.0, (300, 2)),
    rng.normal([4.0, 0.0], 0.5, (300, 2)),
    rng.normal([0.0, 5.0], [2.0, 0.7], (300, 2)),
]).astype(np.float32)

res = gmm_jax.fit(jax.random.key(0), X, 3, covariance_type="full", n_init=8)
print("converged:", bool(res.converged), "after", int(res.n_iter), "iterations")
print("mean log-likelihood:", round(float(res.log_likelihood), 4))
print("per-restart:", np.round(np.asarray(res.restart_log_likelihoods), 4))
order = np.argsort(np.asarray(res.params.means)[:, 0])
print("weights:", np.round(np.asarray(res.params.weights)[order], 3))
print("means:\n", np.round(np.asarray(res.params.means)[order], 2))

labels = gmm_jax.predict(res.params, X)                 # (N,) hard assignments
stats, ll = gmm_jax.e_step(res.params, X)               # additive sufficient statistics
print("Nk:", np.round(np.asarray(stats.Nk)[order], 1))
km = gmm_jax.kmeans(jax.random.key(1), X, 3, n_init=4)  # jitted Lloyd + k-means++
print("k-means inertia:", round(float(km.inertia), 1))
