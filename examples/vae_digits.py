"""A VAE and the GMVAE recipe on the embedded digits, trained with Optax on a CPU.

Prints the VAE's test ELBO, the GMVAE's clustering accuracy on the held-out test split (labels
are used only for that score), and the wall time of each part.

    python examples/vae_digits.py            # the recipe as it is (7-11 min on 2 busy CPU cores)
    python examples/vae_digits.py --quick    # smoke run (seconds; accuracy meaningless)

``--quick`` shortens the budgets only: 2 VAE epochs, and for ``fit_gmvae`` 2 epochs per phase
(``pretrain_epochs``/``epochs`` instead of the step budgets), one run (``n_restarts=1``) and
2 EM starts (``n_init=2``); the model and the rest of the recipe stay at their defaults.
"""

import argparse
import tempfile
import time
from pathlib import Path

import jax
from flax import nnx

import vae_jax

parser = argparse.ArgumentParser(description="VAE and GMVAE on the embedded digits")
parser.add_argument("--quick", action="store_true", help="tiny budgets (smoke run)")
args = parser.parse_args()
vae_epochs = 2 if args.quick else 30
budget = dict(pretrain_epochs=2, epochs=2, n_restarts=1, n_init=2) if args.quick else {}

t0 = time.perf_counter()
ds = vae_jax.data.load_digits()  # 8x8 digits scaled to [0, 1], 80/20 split
vae = vae_jax.VAE(64, 8, hidden=(128,), rngs=nnx.Rngs(0))
vae, hist = vae_jax.train(vae, ds.X_train, epochs=vae_epochs, batch_size=64, learning_rate=1e-3,
                          key=jax.random.key(0), X_val=ds.X_test, progress=False)
print(f"VAE test ELBO after {vae_epochs} epochs: {hist['val_elbo'][-1]:.2f} nats "
      f"({time.perf_counter() - t0:.0f} s)")

t1 = time.perf_counter()
gmvae = vae_jax.GMVAE(64, 10, rngs=nnx.Rngs(1))                  # the recipe's defaults
gmvae, hist = vae_jax.fit_gmvae(gmvae, ds.X_train, key=jax.random.key(1), **budget)
labels, probs = vae_jax.cluster(gmvae, ds.X_test)
acc = vae_jax.clustering_accuracy(ds.y_test, labels)
print(f"GMVAE clusters: test Hungarian accuracy {acc:.3f}, probs {probs.shape} "
      f"({time.perf_counter() - t1:.0f} s)")
x = vae_jax.generate(gmvae, jax.random.key(2), component=3, n=5)  # conditional generation
print("generated:", x.shape)

path = vae_jax.save(gmvae, Path(tempfile.mkdtemp()) / "gmvae.npz")  # no pickle, no optimizer
same = (vae_jax.load(path).predict(ds.X_test) == labels).all()
print(f"saved to {path.name} and loaded back: same clusters {bool(same)}")
print(f"total {time.perf_counter() - t0:.0f} s")
