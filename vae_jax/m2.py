"""The M2 model of Kingma, Mohamed, Rezende and Welling (2014), semi-supervised or unsupervised.

Generative model: ``c ~ Cat(1/K)``, ``z ~ N(0, I)``, ``y | z, c ~ p(y | z, c)`` (decoder fed the
one-hot class). Inference networks: a classifier ``q(c | y)`` and ``q(z | y, c)`` (encoder fed the
one-hot class). For a labelled pair::

    L(y, c) = E_q(z|y,c) [log p(y | z, c)] + log p(c) - KL(q(z|y,c) || N(0, I))

and for an unlabelled ``y`` the class is summed out exactly::

    U(y) = sum_c q(c|y) L(y, c) + H(q(c|y))

The training objective (Kingma et al. eq. 9, as a per-sample mean) is::

    J = sum_{labelled} L(y, c) + sum_{unlabelled} U(y) - alpha * sum_{labelled} [-log q(c|y)]

``alpha`` is the weight of one labelled sample's cross-entropy relative to one sample's ELBO;
Kingma et al. use ``0.1 * N`` on the *mean* cross-entropy, i.e. ``alpha = 0.1 * N / N_labelled``
per labelled sample (:func:`default_alpha`). Labels come as an int array with ``-1`` for
unlabelled samples; with no labels at all the model trains fully unsupervised. Two optional
regularisers (off by default, not part of the ELBO) help the unsupervised case: ``entropy_weight``
scales ``H(q(c|y))`` in ``U`` (below 1 rewards confident assignments) and ``balance`` penalises
``KL(mean_batch q(c|y) || uniform)`` (keeps every class in use).

Shapes: B batch, D features, Z latent width, K classes, M Monte Carlo samples.
"""

from __future__ import annotations

from collections.abc import Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vae_jax import losses, nets, validation

Array = jax.Array


def default_alpha(labels, *, factor: float = 0.1) -> float:
    """Kingma et al.'s weight ``0.1 * N / N_labelled`` from a label array (-1 = unlabelled).

    Args:
        labels: (N,) int labels, -1 for unlabelled.
        factor: the 0.1 of the paper.

    Example:
        >>> default_alpha(np.array([0, -1, -1, -1]))
        0.4
    """
    labels = np.asarray(labels)
    n_lab = int(np.sum(labels >= 0))
    return float(factor * labels.shape[0] / max(n_lab, 1))


class M2(nnx.Module):
    """M2 (Kingma et al. 2014): classifier q(c|y), encoder q(z|y,c), decoder p(y|z,c).

    Args:
        n_features: data width D.
        n_classes: number of classes K.
        latent_dim: width Z of the continuous latent.
        hidden: hidden widths of the classifier and encoder, reversed for the decoder.
        likelihood: ``"bernoulli"`` or ``"gaussian"``.
        alpha: weight of each labelled sample's cross-entropy (see module docstring); None uses
            ``0.1 * B / B_labelled`` of each batch, an estimate of ``0.1 * N / N_labelled``.
        n_samples: M Monte Carlo samples of z per (sample, class).
        entropy_weight: multiplier of ``H(q(c|y))`` in the unlabelled bound (1 = the ELBO).
        balance: weight of ``KL(mean_batch q(c|y) || uniform)`` in the loss (0 = off).
        rngs: initialisation RNGs.

    Raises:
        TypeError, ValueError: bad hyper-parameters (non-integer or non-positive widths, fewer
            than 2 classes, an unknown likelihood, negative weights, ``rngs`` that is not an
            ``nnx.Rngs``).

    Example:
        >>> from flax import nnx
        >>> import jax, jax.numpy as jnp
        >>> m = M2(6, 3, latent_dim=2, hidden=(8,), rngs=nnx.Rngs(0))
        >>> m.elbo(jnp.full((4, 6), 0.5), jax.random.key(0)).shape
        (4,)
    """

    uses_labels = True
    """Whether ``loss`` reads labels ``y`` (``train`` refuses labels for models that do not)."""

    def __init__(
        self,
        n_features: int,
        n_classes: int = 10,
        *,
        latent_dim: int = 16,
        hidden: Sequence[int] = (256, 256),
        likelihood: str = "bernoulli",
        alpha: float | None = None,
        n_samples: int = 1,
        entropy_weight: float = 1.0,
        balance: float = 0.0,
        rngs: nnx.Rngs,
    ):
        n_features = validation.check_int(n_features, "n_features")
        K = validation.check_int(n_classes, "n_classes", minimum=2)
        latent_dim = validation.check_int(latent_dim, "latent_dim")
        hidden = validation.check_hidden(hidden)
        likelihood = validation.check_choice(likelihood, "likelihood", validation.LIKELIHOODS)
        validation.check_rngs(rngs)
        self.n_features = n_features
        self.n_components = K
        self.latent_dim = latent_dim
        self.hidden = hidden
        self.likelihood = likelihood
        self.alpha = None if alpha is None else validation.check_float(alpha, "alpha", minimum=0)
        self.n_samples = validation.check_int(n_samples, "n_samples")
        self.entropy_weight = validation.check_float(entropy_weight, "entropy_weight", minimum=0)
        self.balance = validation.check_float(balance, "balance", minimum=0)
        self.classifier = nets.MLP(n_features, hidden, K, rngs=rngs)
        self.encoder = nets.GaussianEncoder(n_features, hidden, latent_dim, cond_features=K,
                                            rngs=rngs)
        self.decoder = nets.make_decoder(likelihood, latent_dim, hidden[::-1], n_features,
                                         cond_features=K, rngs=rngs)

    @property
    def n_classes(self) -> int:
        """Number of classes K (also ``n_components``, the name the clustering helpers use)."""
        return self.n_components

    def get_config(self) -> dict:
        """Constructor arguments (JSON-serialisable) that rebuild this model; used by
        :func:`vae_jax.save`. ``alpha`` is the current value (it is often set after
        construction from the labels, ``m.alpha = default_alpha(y)``)."""
        return dict(n_features=self.n_features, n_classes=self.n_components,
                    latent_dim=self.latent_dim, hidden=list(self.hidden),
                    likelihood=self.likelihood, alpha=self.alpha, n_samples=self.n_samples,
                    entropy_weight=self.entropy_weight, balance=self.balance)

    @property
    def log_prior(self) -> Array:
        """(K,) log of the uniform class prior."""
        K = self.n_components
        return jnp.full((K,), -np.log(K), jnp.float32)

    def class_logits(self, y: Array) -> Array:
        """(B, K) logits of q(c | y)."""
        return self.classifier(y)

    def labelled_elbo_all(self, y: Array, key: Array) -> tuple[Array, dict[str, Array]]:
        """``L(y, c)`` for every class c at once.

        Args:
            y: (B, D) data.
            key: PRNG key for the z samples.

        Returns:
            ``(L, parts)``: L is (B, K); parts holds ``recon`` and ``kl_z``, each (B, K).
        """
        chex.assert_rank(y, 2)
        B, K = y.shape[0], self.n_components
        onehots = jnp.eye(K, dtype=y.dtype)[None]                       # (1, K, K)
        yy = jnp.broadcast_to(y[:, None], (B, K, y.shape[-1]))           # (B, K, D)
        mu, lv = self.encoder(yy, onehots)                              # (B, K, Z)
        z = losses.reparameterize(key, mu, lv, self.n_samples)          # (M, B, K, Z)
        recon = jnp.mean(self.decoder.log_prob(yy[None], z, onehots[None]), axis=0)  # (B, K)
        kl_z = losses.kl_standard_normal(mu, lv)                        # (B, K)
        L = recon + self.log_prior[None] - kl_z
        chex.assert_shape([L, recon, kl_z], (B, K))
        return L, dict(recon=recon, kl_z=kl_z)

    def labelled_elbo(self, y: Array, c: Array, key: Array) -> Array:
        """(B,) ``L(y, c)`` for given int labels ``c`` (B,)."""
        L, _ = self.labelled_elbo_all(y, key)
        return jnp.take_along_axis(L, c[:, None].astype(jnp.int32), axis=1)[:, 0]

    def unlabelled_elbo(self, y: Array, key: Array) -> Array:
        """(B,) ``U(y) = sum_c q(c|y) L(y, c) + H(q(c|y))``."""
        L, _ = self.labelled_elbo_all(y, key)
        log_q = jax.nn.log_softmax(self.class_logits(y))
        q = jnp.exp(log_q)
        return jnp.sum(q * (L - log_q), axis=-1)

    def elbo(self, y: Array, key: Array) -> Array:
        """(B,) the unlabelled ELBO ``U(y)``, a lower bound on ``log p(y)``."""
        return self.unlabelled_elbo(y, key)

    def loss(self, x: Array, key: Array, y: Array | None = None):
        """Negative objective J per sample, with the classification term.

        Args:
            x: (B, D) data.
            key: PRNG key.
            y: optional (B,) int labels, -1 for unlabelled; None = all unlabelled.

        Returns:
            ``(loss, metrics)`` with scalar metrics ``elbo`` (mean of L on labelled and U on
            unlabelled samples), ``ce`` (mean cross-entropy on labelled samples), ``h_c``
            (mean entropy of q(c|y)), ``recon``, ``kl_z``.
        """
        labels, y = y, x
        B = y.shape[0]
        if labels is None:
            labels = jnp.full((B,), -1, jnp.int32)
        labels = labels.astype(jnp.int32)
        is_lab = labels >= 0
        L, parts = self.labelled_elbo_all(y, key)
        log_q = jax.nn.log_softmax(self.class_logits(y))
        q = jnp.exp(log_q)
        ent = -jnp.sum(q * log_q, axis=-1)
        U = jnp.sum(q * L, axis=-1) + ent
        U_train = jnp.sum(q * L, axis=-1) + self.entropy_weight * ent
        safe = jnp.where(is_lab, labels, 0)
        L_lab = jnp.take_along_axis(L, safe[:, None], axis=1)[:, 0]
        ce = -jnp.take_along_axis(log_q, safe[:, None], axis=1)[:, 0]
        n_lab = jnp.sum(is_lab)
        alpha = (0.1 * B / jnp.maximum(n_lab, 1)) if self.alpha is None else self.alpha
        objective = jnp.where(is_lab, L_lab, U_train)
        loss = -jnp.mean(objective) + alpha * jnp.sum(jnp.where(is_lab, ce, 0.0)) / B
        if self.balance > 0:
            q_bar = jnp.mean(q, axis=0)
            loss = loss + self.balance * jnp.sum(q_bar * (jnp.log(q_bar + 1e-12) - self.log_prior))
        elbo = jnp.where(is_lab, L_lab, U)
        w = jnp.where(is_lab[:, None], jax.nn.one_hot(safe, self.n_components), q)
        return loss, dict(
            elbo=jnp.mean(elbo),
            ce=jnp.sum(jnp.where(is_lab, ce, 0.0)) / jnp.maximum(n_lab, 1),
            h_c=jnp.mean(ent),
            recon=jnp.mean(jnp.sum(w * parts["recon"], -1)),
            kl_z=jnp.mean(jnp.sum(w * parts["kl_z"], -1)),
        )

    # -- use ------------------------------------------------------------------------------------

    def cluster_probs(self, y: Array, key: Array | None = None) -> Array:
        """(B, K) class probabilities q(c | y)."""
        return jax.nn.softmax(self.class_logits(y))

    def predict_proba(self, X, *, batch_size: int = 1000) -> np.ndarray:
        """(N, K) class probabilities ``q(c | x)`` of every row of ``X`` (checked, batched).

        Args:
            X: (N, D) data in the training data's range.
            batch_size: evaluation batch size.

        Raises:
            ValueError, TypeError: bad data (see :func:`vae_jax.validation.check_data`).

        Example:
            >>> import numpy as np
            >>> from flax import nnx
            >>> m = M2(6, 3, latent_dim=2, hidden=(8,), rngs=nnx.Rngs(0))
            >>> m.predict_proba(np.full((4, 6), 0.5)).shape
            (4, 3)
        """
        from vae_jax.inference import cluster

        return cluster(self, X, batch_size=batch_size)[1]

    def predict(self, X, *, batch_size: int = 1000) -> np.ndarray:
        """(N,) int32 most probable class ``argmax_c q(c | x)`` of every row of ``X``.

        Example:
            >>> import numpy as np
            >>> from flax import nnx
            >>> m = M2(6, 3, latent_dim=2, hidden=(8,), rngs=nnx.Rngs(0))
            >>> m.predict(np.full((4, 6), 0.5)).shape
            (4,)
        """
        from vae_jax.inference import cluster

        return cluster(self, X, batch_size=batch_size)[0]

    def generate(self, key: Array, component: int | Array, n: int) -> Array:
        """(n, D) decoder means for ``z ~ N(0, I)`` and class ``component``."""
        z = jax.random.normal(key, (n, self.latent_dim))
        c = jax.nn.one_hot(jnp.full((n,), component), self.n_components)
        return self.decoder.mean(z, c)
