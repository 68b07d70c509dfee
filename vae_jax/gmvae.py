"""Gaussian-mixture VAEs for clustering, on gmm_jax's mixture log-density.

Two forms share one class, :class:`GMVAE`; ``form`` picks the generative model.

``form="paper"`` (Dilokthanakul et al. 2016, arXiv 1611.02648). Generative model::

    w ~ N(0, I_W),  c ~ Cat(1/K),  x | w, c ~ N(mu_c(w), diag sigma_c^2(w)),  y | x ~ p(y | x)

with inference networks ``q(x | y)`` and ``q(w | y)``; ``p(c | x, w)`` is the posterior of the
per-sample mixture ``sum_c (1/K) N(x | mu_c(w), sigma_c^2(w))``, computed by
``gmm_jax.responsibilities`` (the EM E-step) vmapped over the batch. The ELBO has four terms,
each estimated with ``M`` Monte Carlo samples of ``(x, w)``::

    reconstruction       E_q(x|y) [log p(y | x)]
    conditional prior  - E_q(x|y) q(w|y) [ sum_c p(c|x,w) KL(q(x|y) || p(x | w, c)) ]
    w-prior            - KL(q(w|y) || N(0, I))
    z-prior            - E_q(x|y) q(w|y) [ KL(p(c|x,w) || Cat(1/K)) ]

and the training loss replaces the z-prior term by the information cut-off ("free bits")
``max(lambda, batch mean of KL(p(c|x,w) || p(c)))``: below ``lambda`` nats it gives no gradient.

``form="marginal"``: a VaDE-like model with a learned mixture prior and the sum over ``c`` taken
exactly::

    c ~ Cat(pi),  x | c ~ N(m_c, diag s_c^2) (learned),  y | x ~ p(y | x)
    ELBO(y) = sum_c q(c|y) [ E_q(x|y,c) log p(y|x) + E_q(x|y,c) log p(x, c) + H(q(x|y,c)) ]
              + H(q(c|y))

``E_q log p(x, c)`` is analytic for Gaussians: ``log p(mu_q, c) - 0.5 sum var_q / s_c^2`` with
``log p(mu_q, c)`` taken from ``gmm_jax.log_prob_components`` of the prior mixture. ``q(c|y)`` is
either the mixture posterior ``p(c|x)`` averaged over ``x ~ q(x|y)`` (``q_c="posterior"``,
``gmm_jax.responsibilities``) or a classifier network (``q_c="network"``); ``q(x|y,c)`` either
ignores ``c`` (``conditional_encoder=False``) or has one Gaussian head per component.

Both forms are trained best from a warm start (:func:`pretrain_and_init`): the encoder mean and
the decoder are first trained as a deterministic autoencoder, ``gmm_jax.fit`` (EM, diagonal
covariances) is run on the latent codes, and the mixture prior (marginal form), or the bias of
the prior network ``mu_c(w), sigma_c(w)`` (paper form), starts at the fitted mixture.

Shapes: B batch, D data features, X (``latent_dim``) latent width, W (``w_dim``), K components,
M Monte Carlo samples.
"""

from __future__ import annotations

from collections.abc import Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import gmm_jax
from vae_jax import losses, nets

Array = jax.Array

_LOG_2PI = float(np.log(2.0 * np.pi))
FORMS = ("paper", "marginal")


# ----------------------------------------------------------------------------------------------
# Gaussian helpers (diagonal).
# ----------------------------------------------------------------------------------------------


def gaussian_entropy(log_var: Array) -> Array:
    """(...,) entropy of ``N(., diag e^{log_var})`` from (..., X) log-variances."""
    return 0.5 * jnp.sum(1.0 + _LOG_2PI + log_var, axis=-1)


def _sample(key: Array, mu: Array, log_var: Array, n: int) -> Array:
    """(n, ...) reparametrised samples (``losses.reparameterize``)."""
    return losses.reparameterize(key, mu, log_var, n)


def per_sample_responsibilities(
    x: Array, weights: Array, means: Array, log_vars: Array
) -> Array:
    """``p(c | x_b)`` under a per-sample diagonal mixture, by ``gmm_jax.responsibilities``.

    Args:
        x: (B, X) points.
        weights: (K,) mixing weights shared by all samples.
        means: (B, K, X) per-sample component means.
        log_vars: (B, K, X) per-sample component log-variances.

    Returns:
        (B, K) responsibilities.
    """

    logits = jnp.log(weights)

    def one(xb, mb, lvb):
        params = losses.diag_mixture_params(logits, mb, lvb)
        return gmm_jax.responsibilities(params, xb[None, :])[0]

    return jax.vmap(one)(x, means, log_vars)


# ----------------------------------------------------------------------------------------------
# The model.
# ----------------------------------------------------------------------------------------------


class GMVAE(nnx.Module):
    """Gaussian-mixture VAE (see the module docstring for both forms).

    Args:
        n_features: data width D.
        n_components: number of clusters K.
        latent_dim: width X of the mixture-distributed latent ``x``.
        w_dim: width W of the paper form's auxiliary latent ``w`` (unused by the marginal form).
        hidden: hidden widths of the encoders and (reversed) the decoder.
        prior_hidden: hidden widths of the paper form's prior network ``w -> mu_c, sigma_c``.
        form: ``"paper"`` or ``"marginal"``.
        likelihood: ``"bernoulli"`` (data in [0, 1]) or ``"gaussian"`` (learned variance).
        n_samples: M Monte Carlo samples per data point in the loss.
        free_bits: information cut-off lambda (nats) on the KL of the cluster variable.
        beta: weight of the latent KL terms (``kl_x``, ``kl_w``) in the training loss; 1 is
            the ELBO, larger values pull the codes harder onto the mixture prior.
        balance: weight of ``KL(mean_batch q(c|y) || p(c))`` added to the loss (0 = off): the
            aggregate-posterior part of the ELBO's cluster KL, up-weighted to discourage merged
            or empty clusters (not part of the ELBO).
        q_c: marginal form only: ``"posterior"`` or ``"network"``.
        conditional_encoder: marginal form only: one ``q(x|y,c)`` head per component.
        rngs: initialisation RNGs.

    Example:
        >>> from flax import nnx
        >>> import jax, jax.numpy as jnp
        >>> m = GMVAE(6, 3, latent_dim=2, hidden=(8,), rngs=nnx.Rngs(0))
        >>> loss, terms = m.loss(jnp.full((4, 6), 0.5), jax.random.key(0))
        >>> m.elbo(jnp.full((4, 6), 0.5), jax.random.key(1)).shape
        (4,)
    """

    def __init__(
        self,
        n_features: int,
        n_components: int = 10,
        *,
        latent_dim: int = 10,
        w_dim: int = 10,
        hidden: Sequence[int] = (256, 256),
        prior_hidden: Sequence[int] = (64,),
        form: str = "marginal",
        likelihood: str = "bernoulli",
        n_samples: int = 1,
        free_bits: float = 0.0,
        beta: float = 1.0,
        balance: float = 0.0,
        q_c: str = "posterior",
        conditional_encoder: bool = False,
        rngs: nnx.Rngs,
    ):
        if form not in FORMS:
            raise ValueError(f"form must be one of {FORMS}, got {form!r}")
        if q_c not in ("posterior", "network"):
            raise ValueError(f"q_c must be 'posterior' or 'network', got {q_c!r}")
        K, X, W = int(n_components), int(latent_dim), int(w_dim)
        self.form = form
        self.n_features = int(n_features)
        self.n_components = K
        self.latent_dim = X
        self.w_dim = W
        self.n_samples = int(n_samples)
        self.free_bits = float(free_bits)
        self.beta = float(beta)
        self.balance = float(balance)
        self.q_c = q_c
        self.conditional_encoder = bool(conditional_encoder) and form == "marginal"
        self.pretraining = False
        self.pretrain_noise = 0.0
        hidden = tuple(int(h) for h in hidden)
        n_heads = K if self.conditional_encoder else 1
        self.encoder_x = nets.GaussianEncoder(n_features, hidden, X * n_heads, rngs=rngs)
        self.decoder = nets.make_decoder(likelihood, X, hidden[::-1], n_features, rngs=rngs)
        if form == "paper":
            self.encoder_w = nets.GaussianEncoder(n_features, hidden, W, rngs=rngs)
            self.prior_net = nets.MLP(W, tuple(prior_hidden), 2 * K * X, activation=jnp.tanh,
                                      rngs=rngs)
        else:
            self.prior_means = nnx.Param(
                jax.random.normal(rngs.params(), (K, X), jnp.float32))
            self.prior_log_vars = nnx.Param(jnp.zeros((K, X), jnp.float32))
            if q_c == "network":
                self.classifier = nets.MLP(n_features, hidden, K, rngs=rngs)

    # -- pieces ---------------------------------------------------------------------------------

    @property
    def log_weights(self) -> Array:
        """(K,) log of the uniform cluster prior."""
        return jnp.full((self.n_components,), -np.log(self.n_components), jnp.float32)

    def encode_x(self, y: Array) -> tuple[Array, Array]:
        """``q(x | y, c)``: (B, D) -> mean and log-variance, each (B, K, X) (or (B, 1, X))."""
        mu, lv = self.encoder_x(y)
        shape = (*y.shape[:-1], -1, self.latent_dim)
        return mu.reshape(shape), lv.reshape(shape)

    def prior_components(self, w: Array) -> tuple[Array, Array]:
        """Paper form: (..., W) -> ``mu_c(w), log sigma_c^2(w)``, each (..., K, X)."""
        out = self.prior_net(w)
        out = out.reshape(*w.shape[:-1], 2, self.n_components, self.latent_dim)
        return out[..., 0, :, :], out[..., 1, :, :]

    def prior_mixture(self) -> gmm_jax.GMMParams:
        """Marginal form: the learned prior ``p(x) = sum_c (1/K) N(m_c, diag s_c^2)``."""
        return losses.diag_mixture_params(self.log_weights, self.prior_means[...],
                                          self.prior_log_vars[...])

    # -- the ELBO -------------------------------------------------------------------------------

    def terms(self, y: Array, key: Array) -> dict[str, Array]:
        """Per-sample ELBO terms (no cut-off), each (B,).

        Returns:
            dict with ``elbo``, ``recon`` (E log p(y|x)), ``kl_c`` (KL of the cluster variable:
            paper: E KL(p(c|x,w) || p(c)); marginal: KL(q(c|y) || p(c))), ``kl_x`` (paper: the
            conditional prior term; marginal: sum_c q(c|y) KL(q(x|y,c) || p(x|c))), ``kl_w``
            (paper only, zero otherwise) and ``q_c`` (B, K) cluster probabilities.
        """
        chex.assert_rank(y, 2)
        if self.form == "paper":
            return self._paper_terms(y, key)
        return self._marginal_terms(y, key)

    def _paper_terms(self, y, key):
        M = self.n_samples
        kx, kw = jax.random.split(key)
        mu_x, lv_x = self.encode_x(y)
        mu_x, lv_x = mu_x[:, 0], lv_x[:, 0]                              # (B, X)
        mu_w, lv_w = self.encoder_w(y)                                   # (B, W)
        xs = _sample(kx, mu_x, lv_x, M)                                  # (M, B, X)
        ws = _sample(kw, mu_w, lv_w, M)                                  # (M, B, W)
        recon = jnp.mean(self.decoder.log_prob(y[None], xs), axis=0)    # (B,)
        mu_c, lv_c = self.prior_components(ws)                           # (M, B, K, X)
        weights = jnp.exp(self.log_weights)
        p_c = jax.vmap(per_sample_responsibilities, in_axes=(0, None, 0, 0))(
            xs, weights, mu_c, lv_c)                                     # (M, B, K)
        kl_xc = losses.kl_diag_gaussians(mu_x[None, :, None], lv_x[None, :, None],
                                         mu_c, lv_c)                     # (M, B, K)
        cond_prior = jnp.mean(jnp.sum(p_c * kl_xc, axis=-1), axis=0)
        log_p_c = jnp.log(jnp.clip(p_c, 1e-12))
        kl_c = jnp.mean(jnp.sum(p_c * (log_p_c - self.log_weights), axis=-1), axis=0)
        kl_w = losses.kl_standard_normal(mu_w, lv_w)
        chex.assert_shape([recon, cond_prior, kl_c, kl_w], (y.shape[0],))
        return dict(elbo=recon - cond_prior - kl_w - kl_c, recon=recon, kl_x=cond_prior,
                    kl_w=kl_w, kl_c=kl_c, q_c=jnp.mean(p_c, axis=0))

    def _cluster_probs_marginal(self, y, mu, lv, key):
        """(B, K) q(c|y) and its log for the marginal form."""
        if self.q_c == "network":
            logits = self.classifier(y)
            return jax.nn.softmax(logits), jax.nn.log_softmax(logits)
        xs = _sample(key, mu[:, 0], lv[:, 0], self.n_samples)           # (M, B, X)
        prior = self.prior_mixture()
        r = jax.vmap(lambda x: gmm_jax.responsibilities(prior, x))(xs)   # (M, B, K)
        q = jnp.mean(r, axis=0)
        return q, jnp.log(jnp.clip(q, 1e-12))

    def _marginal_terms(self, y, key):
        K, M = self.n_components, self.n_samples
        B = y.shape[0]
        kx, kc = jax.random.split(key)
        mu, lv = self.encode_x(y)                                        # (B, H, X), H in {1, K}
        H = mu.shape[1]
        xs = _sample(kx, mu, lv, M)                                      # (M, B, H, X)
        recon_h = jnp.mean(self.decoder.log_prob(y[None, :, None], xs), axis=0)  # (B, H)
        prior = self.prior_mixture()
        # E_q(x|y,c) log p(x, c), analytic; log p(mu, c) from gmm_jax's mixture density.
        lp = gmm_jax.log_prob_components(prior, mu.reshape(B * H, -1)).reshape(B, H, K)
        if H == K:
            lp = jnp.diagonal(lp, axis1=1, axis2=2)                      # (B, K): [b, c, c]
            trace = 0.5 * jnp.sum(jnp.exp(lv - self.prior_log_vars[...][None]), axis=-1)
        else:
            lp = lp[:, 0]
            trace = 0.5 * jnp.sum(jnp.exp(lv[:, 0, None] - self.prior_log_vars[...][None]),
                                  axis=-1)
        exp_log_joint = lp - trace                                       # (B, K)
        ent_x = gaussian_entropy(lv)                                     # (B, H)
        q, log_q = self._cluster_probs_marginal(y, mu, lv, kc)           # (B, K)
        recon = jnp.sum(q * recon_h, axis=-1) if H == K else recon_h[:, 0]
        # KL(q(x|y,c) || p(x|c)) = -H - E log p(x|c);  E log p(x|c) = E log p(x,c) - log p(c).
        kl_xc = -ent_x - (exp_log_joint - self.log_weights)
        kl_x = jnp.sum(q * kl_xc, axis=-1)
        kl_c = jnp.sum(q * (log_q - self.log_weights), axis=-1)
        chex.assert_shape([recon, kl_x, kl_c], (B,))
        return dict(elbo=recon - kl_x - kl_c, recon=recon, kl_x=kl_x, kl_c=kl_c,
                    kl_w=jnp.zeros_like(kl_c), q_c=q)

    def elbo(self, y: Array, key: Array) -> Array:
        """(B,) ELBO per data point (nats), without the cut-off."""
        if self.pretraining:
            return self._ae_recon(y)
        return self.terms(y, key)["elbo"]

    def _ae_recon(self, y, key=None):
        y_in = y
        if key is not None and self.pretrain_noise > 0:
            y_in = y + self.pretrain_noise * jax.random.normal(key, y.shape, y.dtype)
        mu, _ = self.encode_x(y_in)
        return self.decoder.log_prob(y, mu[:, 0])

    def loss(self, x: Array, key: Array, y: Array | None = None):
        """Training loss: negative batch-mean ELBO with the free-bits cut-off on ``kl_c``.

        While ``pretraining`` is set, the loss is the deterministic autoencoder's negative
        reconstruction log-likelihood ``-log p(y | mean of q(x|y))``; with
        ``pretrain_noise > 0`` the encoder sees ``y + pretrain_noise * N(0, I)`` (a denoising
        autoencoder) while the clean ``y`` is reconstructed.

        Args:
            x: (B, D) data batch (the observed ``y`` of the module docstring).
            key: PRNG key.
            y: labels, ignored (unsupervised model; accepted for the training protocol).

        Returns:
            ``(loss, metrics)`` with scalar metrics.
        """
        del y
        y = x
        if self.pretraining:
            rec = jnp.mean(self._ae_recon(y, key))
            return -rec, dict(recon=rec)
        t = self.terms(y, key)
        kl_c = jnp.mean(t["kl_c"])
        kl_c_cut = jnp.maximum(kl_c, self.free_bits)
        elbo = jnp.mean(t["elbo"])
        loss = (-jnp.mean(t["recon"]) + self.beta * (jnp.mean(t["kl_x"]) + jnp.mean(t["kl_w"]))
                + kl_c_cut)
        if self.balance > 0:
            q_bar = jnp.mean(t["q_c"], axis=0)
            loss = loss + self.balance * jnp.sum(
                q_bar * (jnp.log(jnp.clip(q_bar, 1e-12)) - self.log_weights))
        return loss, dict(elbo=elbo, recon=jnp.mean(t["recon"]), kl_x=jnp.mean(t["kl_x"]),
                          kl_w=jnp.mean(t["kl_w"]), kl_c=kl_c)

    # -- use ------------------------------------------------------------------------------------

    def cluster_probs(self, y: Array, key: Array | None = None) -> Array:
        """(B, K) cluster probabilities ``p(c | y)`` at the posterior means (deterministic).

        Paper form: ``p(c | x = E q(x|y), w = E q(w|y))`` by ``gmm_jax.responsibilities``.
        Marginal form: the classifier, or ``p(c | x = E q(x|y))`` under the learned prior.
        """
        mu, lv = self.encode_x(y)
        if self.form == "paper":
            mu_w, _ = self.encoder_w(y)
            mu_c, lv_c = self.prior_components(mu_w)
            return per_sample_responsibilities(mu[:, 0], jnp.exp(self.log_weights), mu_c, lv_c)
        if self.q_c == "network":
            return jax.nn.softmax(self.classifier(y))
        return gmm_jax.responsibilities(self.prior_mixture(), mu[:, 0])

    def sample_latent(self, key: Array, component: int | Array, n: int) -> Array:
        """(n, X) draws of ``x | c = component`` from the generative model."""
        kw, kx = jax.random.split(key)
        if self.form == "paper":
            w = jax.random.normal(kw, (n, self.w_dim))
            mu_c, lv_c = self.prior_components(w)
            mu, lv = mu_c[:, component], lv_c[:, component]
        else:
            mu = jnp.broadcast_to(self.prior_means[...][component], (n, self.latent_dim))
            lv = jnp.broadcast_to(self.prior_log_vars[...][component], (n, self.latent_dim))
        return _sample(kx, mu, lv, 1)[0]

    def generate(self, key: Array, component: int | Array, n: int) -> Array:
        """(n, D) decoder means ``E[y | x]`` for ``x ~ p(x | c = component)``."""
        return self.decoder.mean(self.sample_latent(key, component, n))

    def latent_mean(self, y: Array, key: Array | None = None) -> Array:
        """(B, X) mean of ``q(x | y)`` (the first head when the encoder is conditional)."""
        return self.encode_x(y)[0][:, 0]


# ----------------------------------------------------------------------------------------------
# Warm start.
# ----------------------------------------------------------------------------------------------


def init_prior_from_latents(model: GMVAE, Z: Array, key: Array, *, n_init: int = 5,
                            max_iter: int = 200) -> gmm_jax.FitResult:
    """Fits a diagonal GMM to latent codes with ``gmm_jax.fit`` and writes it into the prior.

    Marginal form: ``prior_means``/``prior_log_vars`` take the fitted means and log-variances.
    Paper form: the output layer of ``prior_net`` is shrunk (x0.1) and its bias set to the fitted
    means and log-variances, so ``mu_c(w), sigma_c(w)`` start near the fitted mixture for every w.
    With a conditional encoder every head starts as a copy of the first one.

    Args:
        model: the GMVAE (modified in place).
        Z: (N, X) latent codes, e.g. ``model.latent_mean(Y)``.
        key: PRNG key for EM's k-means initialisation.
        n_init: EM restarts (run under vmap).
        max_iter: EM iterations.

    Returns:
        The ``gmm_jax.FitResult``.
    """
    res = gmm_jax.fit(key, jnp.asarray(Z), model.n_components, covariance_type="diag",
                      n_init=n_init, max_iter=max_iter, reg_covar=1e-4)
    means = res.params.means.astype(jnp.float32)
    log_vars = jnp.log(res.params.covariances).astype(jnp.float32)
    if model.form == "marginal":
        model.prior_means[...] = means
        model.prior_log_vars[...] = log_vars
        if model.conditional_encoder:
            K = model.n_components
            for head in (model.encoder_x.mean_head, model.encoder_x.log_var_head):
                X = model.latent_dim
                head.kernel[...] = jnp.tile(head.kernel[...][:, :X], (1, K))
                head.bias[...] = jnp.tile(head.bias[...][:X], (K,))
    else:
        last = model.prior_net.layers[-1]
        last.kernel[...] = 0.1 * last.kernel[...]
        last.bias[...] = jnp.concatenate([means.reshape(-1), log_vars.reshape(-1)])
    return res


def fit_gmvae(
    model: GMVAE,
    X,
    *,
    key: Array,
    pretrain_epochs: int = 100,
    epochs: int = 100,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    pretrain_noise: float = 0.0,
    n_init: int = 5,
    X_val=None,
    progress: bool = False,
) -> tuple[GMVAE, dict]:
    """The full recipe: autoencoder warm-up, EM on the codes, then ELBO training.

    1. ``pretrain_epochs`` of deterministic (optionally denoising) autoencoder training.
    2. :func:`init_prior_from_latents`: ``gmm_jax.fit`` (diag, ``n_init`` restarts under vmap)
       on the codes ``E q(x|y)``.
    3. ``epochs`` of ELBO training (Adam with cosine decay of the learning rate to 10%).

    No labels are used anywhere.

    Args:
        model: a fresh ``GMVAE`` (trained in place).
        X: (N, D) training data.
        key: PRNG key.
        pretrain_epochs, epochs, batch_size, learning_rate: schedule.
        pretrain_noise: std of the Gaussian input noise of the warm-up autoencoder.
        n_init: EM restarts.
        X_val: optional validation data (its ELBO is recorded each epoch).
        progress: show progress bars.

    Returns:
        ``(model, history)`` of the ELBO phase.
    """
    import optax

    from vae_jax.train import evaluate, train

    k_pre, k_em, k_fit = jax.random.split(key, 3)
    X = jnp.asarray(X, jnp.float32)
    model.pretraining = True
    model.pretrain_noise = float(pretrain_noise)
    if pretrain_epochs > 0:
        train(model, X, epochs=pretrain_epochs, batch_size=batch_size,
              learning_rate=learning_rate, key=k_pre, progress=progress)
    model.pretraining = False
    Z = evaluate(model, X, k_em, method="latent_mean")
    init_prior_from_latents(model, Z, k_em, n_init=n_init)
    steps = max(1, epochs * (X.shape[0] // batch_size))
    schedule = optax.cosine_decay_schedule(learning_rate, steps, alpha=0.1)
    return train(model, X, epochs=epochs, batch_size=batch_size, learning_rate=schedule,
                 key=k_fit, X_val=X_val, progress=progress)
