"""Clustering metrics for the deep models: re-exported from ``gmm_jax.metrics``.

One implementation serves the EM demo, the benchmarks and vae_jax (gmm_jax never imports vae_jax,
so the shared code lives there).
"""

from gmm_jax.metrics import (
    clustering_accuracy,
    contingency_matrix,
    normalized_mutual_info,
    purity,
)

__all__ = ["clustering_accuracy", "contingency_matrix", "normalized_mutual_info", "purity"]
