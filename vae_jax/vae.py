"""Variational autoencoder (Kingma & Welling 2014): EM with a learned, amortised E-step.

Seed 004 section 2.4: the intractable E-step posterior ``p(z | x)`` is replaced by an encoder
``q(z | x) = N(mu(x), diag sigma^2(x))`` (log-variance output), and encoder and decoder
``p(x | z)`` are trained together on

    ELBO(x) = E_q[log p(x | z)] - KL(q(z | x) || N(0, I)) <= log p(x),

with the reconstruction term estimated by reparametrised Monte Carlo and the KL in closed form.
For evaluation, the importance-weighted bound (Burda et al. 2016)

    L_k(x) = E[log (1/k) sum_i p(x, z_i) / q(z_i | x)],  z_i ~ q(z | x),

increases with k towards ``log p(x)`` (``L_1`` is the ELBO).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import chex
import jax
import jax.numpy as jnp
from flax import nnx

from vae_jax import losses, validation
from vae_jax.nets import GaussianEncoder, make_decoder, resolve_activation

Array = jax.Array


class VAE(nnx.Module):
    """VAE with a diagonal-Gaussian encoder, a standard-normal prior and an MLP decoder.

    Args:
        in_features: data width D.
        latent_dim: latent width Z.
        hidden: encoder hidden widths; the decoder mirrors them. ``()`` gives affine maps
            (a linear-Gaussian model with ``likelihood="gaussian"``).
        likelihood: ``"bernoulli"`` (decoder logits) or ``"gaussian"``.
        learn_variance: Gaussian decoder only: learn a per-feature variance, else fix it.
        fixed_log_var: Gaussian decoder only: the fixed (or initial) log-variance.
        activation: hidden non-linearity, a name from ``nets.ACTIVATIONS`` (``"relu"``,
            ``"tanh"``...) or a callable (a custom callable cannot be saved by
            :func:`vae_jax.save`).
        rngs: initialisation RNGs.

    Raises:
        TypeError, ValueError: bad hyper-parameters (non-integer or non-positive widths, an
            unknown likelihood or activation, ``rngs`` that is not an ``nnx.Rngs``).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from flax import nnx
        >>> vae = VAE(64, 2, hidden=(32,), rngs=nnx.Rngs(0))
        >>> vae.elbo(jnp.zeros((5, 64)), jax.random.key(1)).shape
        (5,)
    """

    uses_labels = False
    """Whether ``loss`` reads labels ``y`` (``train`` refuses labels for models that do not)."""

    def __init__(
        self,
        in_features: int,
        latent_dim: int,
        *,
        hidden: Sequence[int] = (500,),
        likelihood: str = "bernoulli",
        learn_variance: bool = True,
        fixed_log_var: float = 0.0,
        activation: str | Callable[[Array], Array] = "relu",
        rngs: nnx.Rngs,
    ):
        in_features = validation.check_int(in_features, "in_features")
        latent_dim = validation.check_int(latent_dim, "latent_dim")
        hidden = validation.check_hidden(hidden)
        likelihood = validation.check_choice(likelihood, "likelihood", validation.LIKELIHOODS)
        fixed_log_var = validation.check_float(fixed_log_var, "fixed_log_var")
        validation.check_rngs(rngs)
        self.activation_name, activation = resolve_activation(activation)
        self.hidden = hidden
        self.learn_variance = bool(learn_variance)
        self.fixed_log_var = fixed_log_var
        self.encoder = GaussianEncoder(in_features, hidden, latent_dim, activation=activation,
                                       rngs=rngs)
        self.decoder = make_decoder(likelihood, latent_dim, hidden[::-1], in_features,
                                    learn_variance=learn_variance, fixed_log_var=fixed_log_var,
                                    activation=activation, rngs=rngs)
        self.in_features = int(in_features)
        self.latent_dim = int(latent_dim)
        self.likelihood = likelihood

    @property
    def n_features(self) -> int:
        """Data width D (alias of ``in_features``, the name M2 and GMVAE use)."""
        return self.in_features

    def get_config(self) -> dict:
        """Constructor arguments (JSON-serialisable) that rebuild this model's architecture.

        Used by :func:`vae_jax.save`; ``VAE(**cfg, rngs=...)`` rebuilds the model.
        """
        return dict(in_features=self.in_features, latent_dim=self.latent_dim,
                    hidden=list(self.hidden), likelihood=self.likelihood,
                    learn_variance=self.learn_variance, fixed_log_var=self.fixed_log_var,
                    activation=self.activation_name)

    # ------------------------------------------------------------------ encoder / decoder
    def encode(self, x: Array) -> tuple[Array, Array]:
        """(B, D) -> ``(mu, log_var)``, each (B, Z)."""
        chex.assert_rank(x, 2)
        chex.assert_axis_dimension(x, 1, self.in_features)
        return self.encoder(x)

    def latent_mean(self, x: Array, key: Array | None = None) -> Array:
        """(B, D) -> (B, Z) posterior mean ``mu(x)`` (for ``evaluate(method="latent_mean")``)."""
        return self.encode(x)[0]

    def decode(self, z: Array) -> Array:
        """(..., Z) latents -> (..., D) decoder mean (pixel probabilities for Bernoulli)."""
        return self.decoder.mean(z)

    def reconstruct(self, x: Array) -> Array:
        """(B, D) -> (B, D) decoder mean at the posterior mean ``z = mu(x)``."""
        mu, _ = self.encode(x)
        return self.decode(mu)

    def sample(self, key: Array, n: int, *, mean: bool = True) -> Array:
        """Draws ``n`` samples ``z ~ N(0, I)``, ``x ~ p(x | z)``.

        Args:
            key: PRNG key.
            n: number of samples.
            mean: return the decoder mean (default, what sample grids show) instead of a draw.

        Returns:
            (n, D) samples.
        """
        kz, kx = jax.random.split(key)
        z = jax.random.normal(kz, (n, self.latent_dim))
        return self.decoder.mean(z) if mean else self.decoder.sample(kx, z)

    # ------------------------------------------------------------------------- objectives
    def elbo_terms(self, x: Array, key: Array, *, n_samples: int = 1) -> dict[str, Array]:
        """Per-sample ELBO and its two terms.

        Args:
            x: (B, D) batch.
            key: PRNG key for the reparametrised samples.
            n_samples: Monte Carlo samples S of the reconstruction term (averaged).

        Returns:
            dict of (B,) arrays: ``elbo = recon - kl``, ``recon`` (the Monte Carlo
            ``E_q[log p(x | z)]``), ``kl`` (analytic ``KL(q || N(0, I))``).
        """
        mu, log_var = self.encode(x)
        z = losses.reparameterize(key, mu, log_var, n_samples)  # (S, B, Z)
        chex.assert_shape(z, (n_samples, x.shape[0], self.latent_dim))
        recon = jnp.mean(self.decoder.log_prob(x[None], z), axis=0)
        kl = losses.kl_standard_normal(mu, log_var)
        chex.assert_shape([recon, kl], (x.shape[0],))
        return {"elbo": recon - kl, "recon": recon, "kl": kl}

    def elbo(self, x: Array, key: Array) -> Array:
        """(B, D) -> (B,) single-sample per-sample ELBO (the training protocol's ``elbo``)."""
        return self.elbo_terms(x, key)["elbo"]

    def loss(self, x: Array, key: Array, y: Array | None = None):
        """Mean negative ELBO of a batch; ``y`` is accepted for the protocol and ignored.

        Returns:
            ``(loss, {"loss", "elbo", "recon", "kl"})``, all scalars.
        """
        del y
        t = self.elbo_terms(x, key)
        loss = -jnp.mean(t["elbo"])
        return loss, {"loss": loss, "elbo": jnp.mean(t["elbo"]), "recon": jnp.mean(t["recon"]),
                      "kl": jnp.mean(t["kl"])}

    def log_marginal(self, x: Array, key: Array, k: int = 100) -> Array:
        """Importance-weighted estimate ``L_k`` of ``log p(x)`` with k samples from q.

        Args:
            x: (B, D) batch.
            key: PRNG key.
            k: number of importance samples (``k = 1`` is the ELBO with a Monte Carlo KL).

        Returns:
            (B,) estimates; a lower bound in expectation, tightening as k grows.
        """
        mu, log_var = self.encode(x)
        z = losses.reparameterize(key, mu, log_var, k)  # (k, B, Z)
        log_w = (self.decoder.log_prob(x[None], z) + losses.standard_normal_log_prob(z)
                 - losses.diag_gaussian_log_prob(z, mu, log_var))
        chex.assert_shape(log_w, (k, x.shape[0]))
        return jax.nn.logsumexp(log_w, axis=0) - math.log(k)


def elbo(model: VAE, x: Array, key: Array, *, n_samples: int = 1) -> dict[str, Array]:
    """Per-sample ELBO terms of a VAE: dict of (B,) ``elbo``, ``recon``, ``kl``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from flax import nnx
        >>> m = VAE(4, 2, hidden=(8,), rngs=nnx.Rngs(0))
        >>> sorted(elbo(m, jnp.zeros((3, 4)), jax.random.key(0)))
        ['elbo', 'kl', 'recon']
    """
    return model.elbo_terms(x, key, n_samples=n_samples)


def importance_weighted_log_likelihood(model: VAE, x: Array, key: Array, *, k: int = 100) -> Array:
    """(B,) importance-weighted estimate of ``log p(x)`` (see :meth:`VAE.log_marginal`)."""
    return model.log_marginal(x, key, k)
