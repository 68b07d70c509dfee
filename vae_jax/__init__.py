"""vae_jax: deep mixture models (VAE, M2, GMVAE) on gmm_jax's mixture log-density."""
