"""A VAE and a GMVAE on the embedded digits, trained with Optax (a short CPU run)."""

import jax
import numpy as np
from flax import nnx

import vae_jax

ds = vae_jax.data.load_digits()  # 8x8 digits scaled to [0, 1], 80/20 split
vae = vae_jax.VAE(64, 8, hidden=(128,), rngs=nnx.Rngs(0))
vae, hist = vae_jax.train(vae, ds.X_train, epochs=30, batch_size=64, learning_rate=1e-3,
                          key=jax.random.key(0), X_val=ds.X_test, progress=False)
print(f"VAE test ELBO after 30 epochs: {hist['val_elbo'][-1]:.2f} nats")

gmvae = vae_jax.GMVAE(64, 10, latent_dim=5, hidden=(128,), rngs=nnx.Rngs(1))
gmvae, _ = vae_jax.gmvae.fit_gmvae(gmvae, ds.X_train, key=jax.random.key(1),
                                   pretrain_epochs=30, epochs=30)
labels, probs = vae_jax.cluster(gmvae, ds.X_test)
acc = vae_jax.clustering_accuracy(ds.y_test, labels)
print(f"GMVAE clusters: test Hungarian accuracy {acc:.3f}, probs {probs.shape}")
x = vae_jax.generate(gmvae, jax.random.key(2), component=3, n=5)  # conditional generation
print("generated:", np.asarray(x).shape)
