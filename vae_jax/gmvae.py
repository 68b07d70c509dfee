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

    c ~ Cat(1/K),  x | c ~ N(m_c, Sigma_c) (learned),  y | x ~ p(y | x)
    ELBO(y) = sum_c q(c|y) [ E_q(x|y,c) log p(y|x) + E_q(x|y,c) log p(x, c) + H(q(x|y,c)) ]
              + H(q(c|y))

``Sigma_c`` is full (``prior_covariance="full"``, the default; parametrised by the Cholesky
factor ``L_c`` of its precision ``P_c = L_c L_c^T``, so no matrix is inverted or factorised
inside the training loop) or diagonal (``"diag"``). ``E_q log p(x, c)`` is analytic for a
Gaussian ``q = N(mu_q, diag v)``: ``log p(mu_q, c) - 0.5 sum_i v_i (P_c)_ii`` with
``log p(mu_q, c)`` taken from ``gmm_jax.log_prob_components`` of the prior mixture. ``q(c|y)`` is
either the mixture posterior ``p(c|x)`` averaged over ``x ~ q(x|y)`` (``q_c="posterior"``,
``gmm_jax.responsibilities``) or a classifier network (``q_c="network"``); ``q(x|y,c)`` either
ignores ``c`` (``conditional_encoder=False``) or has one Gaussian head per component.

The recipe (:data:`RECIPE`, the defaults of :class:`GMVAE` and :func:`fit_gmvae`): the encoder
mean and the decoder are first trained as a deterministic denoising autoencoder, ``gmm_jax.fit``
(EM with the prior's covariance type) is run on the latent codes, and the mixture prior
(marginal form), or the bias of the prior network ``mu_c(w), sigma_c(w)`` (paper form), starts
at the fitted mixture; then the ELBO is trained. It was chosen without labels; what each part
does on digits and Fashion-MNIST is in ``benchmarks/results/clustering_notes.md``.

Shapes: B batch, D data features, X (``latent_dim``) latent width, W (``w_dim``), K components,
M Monte Carlo samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import gmm_jax
from vae_jax import losses, nets, validation

Array = jax.Array

_LOG_2PI = float(np.log(2.0 * np.pi))
FORMS = ("paper", "marginal")
PRIOR_COVARIANCES = ("diag", "full")

RECIPE: dict = dict(
    # model (GMVAE constructor defaults)
    latent_dim=10,
    hidden=(256, 256),
    form="marginal",
    prior_covariance="full",
    # training (fit_gmvae defaults)
    pretrain_steps=20_000,
    steps=10_000,
    batch_size=64,
    learning_rate=1e-3,
    pretrain_noise=0.1,
    n_init=20,
    n_restarts=4,
)
"""The one GMVAE recipe: the defaults of :class:`GMVAE` and :func:`fit_gmvae`, used as they
are by the README and ``benchmarks/bench_clustering.py`` (chosen without labels; see the
module docstring)."""


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
        prior_covariance: ``"full"`` (marginal form only: each mixture component has a full
            covariance, parametrised by the Cholesky factor of its precision) or ``"diag"``;
            None picks ``RECIPE["prior_covariance"]`` for the marginal form and ``"diag"``
            for the paper form.
        rngs: initialisation RNGs.

    Example:
        >>> from flax import nnx
        >>> import jax, jax.numpy as jnp
        >>> m = GMVAE(6, 3, latent_dim=2, hidden=(8,), rngs=nnx.Rngs(0))
        >>> loss, terms = m.loss(jnp.full((4, 6), 0.5), jax.random.key(0))
        >>> m.elbo(jnp.full((4, 6), 0.5), jax.random.key(1)).shape
        (4,)
    """

    uses_labels = False
    """Whether ``loss`` reads labels ``y`` (``train`` refuses labels for models that do not)."""

    def __init__(
        self,
        n_features: int,
        n_components: int = 10,
        *,
        latent_dim: int = RECIPE["latent_dim"],
        w_dim: int = 10,
        hidden: Sequence[int] = RECIPE["hidden"],
        prior_hidden: Sequence[int] = (64,),
        form: str = RECIPE["form"],
        likelihood: str = "bernoulli",
        n_samples: int = 1,
        free_bits: float = 0.0,
        beta: float = 1.0,
        balance: float = 0.0,
        q_c: str = "posterior",
        conditional_encoder: bool = False,
        prior_covariance: str | None = None,
        rngs: nnx.Rngs,
    ):
        n_features = validation.check_int(n_features, "n_features")
        K = validation.check_int(n_components, "n_components", minimum=2)
        X = validation.check_int(latent_dim, "latent_dim")
        W = validation.check_int(w_dim, "w_dim")
        hidden = validation.check_hidden(hidden)
        prior_hidden = validation.check_hidden(prior_hidden, "prior_hidden")
        form = validation.check_choice(form, "form", FORMS)
        likelihood = validation.check_choice(likelihood, "likelihood", validation.LIKELIHOODS)
        q_c = validation.check_choice(q_c, "q_c", ("posterior", "network"))
        if prior_covariance is None:
            prior_covariance = RECIPE["prior_covariance"] if form == "marginal" else "diag"
        prior_covariance = validation.check_choice(prior_covariance, "prior_covariance",
                                                   PRIOR_COVARIANCES)
        if prior_covariance == "full" and form != "marginal":
            raise ValueError("prior_covariance='full' needs form='marginal' (the paper form's "
                             "prior network outputs diagonal components)")
        validation.check_rngs(rngs)
        self.form = form
        self.n_features = n_features
        self.n_components = K
        self.latent_dim = X
        self.w_dim = W
        self.hidden = hidden
        self.prior_hidden = prior_hidden
        self.likelihood = likelihood
        self.n_samples = validation.check_int(n_samples, "n_samples")
        self.free_bits = validation.check_float(free_bits, "free_bits", minimum=0)
        self.beta = validation.check_float(beta, "beta", minimum=0)
        self.balance = validation.check_float(balance, "balance", minimum=0)
        self.q_c = q_c
        self.conditional_encoder = bool(conditional_encoder) and form == "marginal"
        self.prior_covariance = prior_covariance
        self.pretraining = False
        self.pretrain_noise = 0.0
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
            if prior_covariance == "diag":
                self.prior_log_vars = nnx.Param(jnp.zeros((K, X), jnp.float32))
            else:  # precision Cholesky L = strict_lower(A) + diag(exp(d)), P = L L^T
                self.prior_prec_log_diag = nnx.Param(jnp.zeros((K, X), jnp.float32))
                self.prior_prec_lower = nnx.Param(jnp.zeros((K, X, X), jnp.float32))
            if q_c == "network":
                self.classifier = nets.MLP(n_features, hidden, K, rngs=rngs)

    def get_config(self) -> dict:
        """Constructor arguments (JSON-serialisable) that rebuild this model; used by
        :func:`vae_jax.save` (current values, so settings changed after construction count)."""
        return dict(n_features=self.n_features, n_components=self.n_components,
                    latent_dim=self.latent_dim, w_dim=self.w_dim, hidden=list(self.hidden),
                    prior_hidden=list(self.prior_hidden), form=self.form,
                    likelihood=self.likelihood, n_samples=self.n_samples,
                    free_bits=self.free_bits, beta=self.beta, balance=self.balance,
                    q_c=self.q_c, conditional_encoder=self.conditional_encoder,
                    prior_covariance=self.prior_covariance)

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

    def prior_precision_cholesky(self) -> Array:
        """Marginal form, full prior: (K, X, X) lower-triangular ``L_c`` with positive diagonal,
        the Cholesky factor of the component precision ``P_c = L_c L_c^T``."""
        X = self.latent_dim
        lower = jnp.tril(self.prior_prec_lower[...], -1)
        return lower + jnp.exp(self.prior_prec_log_diag[...])[..., None] * jnp.eye(X)

    def prior_precision_diagonal(self) -> Array:
        """Marginal form: (K, X) diagonal of each component's precision ``P_c``."""
        if self.prior_covariance == "diag":
            return jnp.exp(-self.prior_log_vars[...])
        L = self.prior_precision_cholesky()
        return jnp.sum(jnp.square(L), axis=-1)            # P_ii = sum_j L_ij^2

    def prior_mixture(self) -> gmm_jax.GMMParams:
        """Marginal form: the learned prior ``p(x) = sum_c (1/K) N(m_c, Sigma_c)``.

        ``Sigma_c`` is ``diag s_c^2`` (``prior_covariance="diag"``) or full,
        ``Sigma_c = (L_c L_c^T)^{-1}`` (``"full"``; the covariances are computed from the
        precision Cholesky by a triangular solve, which jit drops when only densities are
        needed).
        """
        if self.prior_covariance == "diag":
            return losses.diag_mixture_params(self.log_weights, self.prior_means[...],
                                              self.prior_log_vars[...])
        L = self.prior_precision_cholesky()
        eye = jnp.broadcast_to(jnp.eye(self.latent_dim), L.shape)
        L_inv = jax.scipy.linalg.solve_triangular(L, eye, lower=True)
        cov = jnp.einsum("kji,kjl->kil", L_inv, L_inv)      # L^-T L^-1
        return gmm_jax.GMMParams(jnp.exp(self.log_weights), self.prior_means[...], cov, L,
                                 "full")

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
        # tr(P_c diag(v)) = sum_i v_i (P_c)_ii for q = N(mu, diag v).
        prec_diag = self.prior_precision_diagonal()[None]                # (1, K, X)
        if H == K:
            lp = jnp.diagonal(lp, axis1=1, axis2=2)                      # (B, K): [b, c, c]
            trace = 0.5 * jnp.sum(jnp.exp(lv) * prec_diag, axis=-1)
        else:
            lp = lp[:, 0]
            trace = 0.5 * jnp.sum(jnp.exp(lv[:, 0, None]) * prec_diag, axis=-1)
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

    def predict_proba(self, X, *, batch_size: int = 1000) -> np.ndarray:
        """(N, K) cluster probabilities of every row of ``X`` (:meth:`cluster_probs`, checked
        and batched; the same as ``vae_jax.cluster(model, X)[1]``)."""
        from vae_jax.inference import cluster

        return cluster(self, X, batch_size=batch_size)[1]

    def predict(self, X, *, batch_size: int = 1000) -> np.ndarray:
        """(N,) int32 most probable cluster of every row of ``X``."""
        from vae_jax.inference import cluster

        return cluster(self, X, batch_size=batch_size)[0]

    def sample_latent(self, key: Array, component: int | Array, n: int) -> Array:
        """(n, X) draws of ``x | c = component`` from the generative model."""
        kw, kx = jax.random.split(key)
        if self.form == "paper":
            w = jax.random.normal(kw, (n, self.w_dim))
            mu_c, lv_c = self.prior_components(w)
            mu, lv = mu_c[:, component], lv_c[:, component]
        elif self.prior_covariance == "full":
            L = self.prior_precision_cholesky()[component]               # (X, X)
            eps = jax.random.normal(kx, (n, self.latent_dim))
            # x = m + L^{-T} eps has covariance L^{-T} L^{-1} = P^{-1}.
            z = jax.scipy.linalg.solve_triangular(L.T, eps.T, lower=False).T
            return self.prior_means[...][component] + z
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


class WarmStart(NamedTuple):
    """The mixture :func:`init_prior_from_latents` wrote into the prior, and its restarts.

    Attributes:
        params: the chosen ``gmm_jax.GMMParams`` (weights 1/K).
        log_likelihood: its mean log-likelihood of the codes.
        cluster_sizes: (K,) codes assigned to each component (hard assignment).
        restart_log_likelihoods: (R,) the same for every restart.
        restart_kl_to_uniform: (R,) ``KL(cluster proportions || 1/K)`` of every restart.
        chosen: index of the chosen restart.
    """

    params: gmm_jax.GMMParams
    log_likelihood: float
    cluster_sizes: np.ndarray
    restart_log_likelihoods: np.ndarray
    restart_kl_to_uniform: np.ndarray
    chosen: int


@partial(jax.jit, static_argnames=("n_iter",))
def _equal_weight_em(params: gmm_jax.GMMParams, Z: Array, reg_covar, *, n_iter: int):
    """``n_iter`` EM iterations with the mixing weights held at 1/K (``gmm_jax.e_step`` /
    ``m_step``, weights reset after each M-step): the maximum-likelihood mixture in the family
    of the GMVAE's prior, whose ``p(c)`` is uniform."""
    K = params.weights.shape[0]
    uniform = jnp.full((K,), 1.0 / K, params.weights.dtype)

    def body(p, _):
        stats, ll = gmm_jax.e_step(p, Z)
        return gmm_jax.m_step(stats, reg_covar=reg_covar)._replace(weights=uniform), ll

    return jax.lax.scan(body, params._replace(weights=uniform), None, length=n_iter)


def fit_latent_mixture(Z, n_components: int, key: Array, *, covariance_type: str = "full",
                       n_init: int = 20, max_iter: int = 200, refine_iter: int = 100,
                       reg_covar: float = 1e-4) -> WarmStart:
    """The recipe's warm start: a mixture with uniform weights fitted to latent codes.

    1. ``n_init`` independent EM fits (``gmm_jax.fit``, one k-means start each).
    2. Each is refined by ``refine_iter`` EM iterations with the weights held at ``1/K``
       (:func:`_equal_weight_em`): the GMVAE's prior has ``p(c) = 1/K``, so this is the
       maximum-likelihood fit in the family the prior can represent.
    3. The restart with the highest log-likelihood *with weights 1/K* is kept: the likelihood
       of the model the prior will actually be. (Choosing by the free-weight likelihood, as
       ``gmm_jax.fit`` does, favours a component that spans two classes, since its larger
       weight pays for its width.) No labels are used.

    The restarts' cluster proportions are reported as ``KL(n_k / N || 1/K)`` (a diagnostic:
    a merged class shows up as one component holding about twice its share).

    Args:
        Z: (N, X) codes.
        n_components: K.
        key: PRNG key (restart ``r`` uses ``split(key, n_init)[r]``).
        covariance_type: ``"full"`` or ``"diag"``.
        n_init: EM restarts.
        max_iter: EM iterations of each free-weight fit.
        refine_iter: equal-weight EM iterations after it.
        reg_covar: added to the covariance diagonals.

    Returns:
        :class:`WarmStart` (its ``params`` have weights ``1/K``).

    Example:
        >>> import jax, numpy as np
        >>> Z = np.random.default_rng(0).normal(size=(300, 2)).astype(np.float32)
        >>> Z[:150] += 6.0
        >>> ws = fit_latent_mixture(Z, 2, jax.random.key(0), n_init=3)
        >>> sorted(ws.cluster_sizes.tolist())
        [150, 150]
    """
    Z = validation.check_data(Z, name="Z")
    K = validation.check_int(n_components, "n_components", minimum=2)
    n_init = validation.check_int(n_init, "n_init")
    refine_iter = validation.check_int(refine_iter, "refine_iter", minimum=0)
    fits, lls, kls = [], [], []
    uniform = jnp.full((K,), 1.0 / K, jnp.float32)
    for k in jax.random.split(validation.check_key(key), n_init):
        res = gmm_jax.fit(k, Z, K, covariance_type=covariance_type, n_init=1,
                          max_iter=max_iter, reg_covar=reg_covar)
        params = res.params
        if refine_iter:
            params, _ = _equal_weight_em(params, Z, reg_covar, n_iter=refine_iter)
        params = params._replace(weights=uniform.astype(params.weights.dtype))
        sizes = np.bincount(np.asarray(gmm_jax.predict(params, Z)), minlength=K)
        frac = sizes / sizes.sum()
        kls.append(float(np.sum(np.where(frac > 0, frac * np.log(np.maximum(frac, 1e-300) * K),
                                         0.0))))
        lls.append(float(jnp.mean(gmm_jax.log_likelihood(params, Z))))
        fits.append((params, sizes))
    lls_a, kls_a = np.asarray(lls), np.asarray(kls)
    finite = np.isfinite(lls_a)
    if not finite.any():
        raise FloatingPointError("every EM restart on the latent codes gave a non-finite "
                                 "log-likelihood")
    chosen = int(np.argmax(np.where(finite, lls_a, -np.inf)))
    params, sizes = fits[chosen]
    return WarmStart(params, lls[chosen], sizes, lls_a, kls_a, chosen)


def init_prior_from_latents(model: GMVAE, Z: Array, key: Array, *,
                            n_init: int = RECIPE["n_init"], max_iter: int = 200,
                            refine_iter: int = 100) -> WarmStart:
    """Fits the warm-start mixture to latent codes (:func:`fit_latent_mixture`) and writes it
    into the prior.

    The mixture has the covariance type of the prior (``model.prior_covariance``; always
    diagonal for the paper form).

    Marginal form: ``prior_means`` take the fitted means and ``prior_log_vars`` the fitted
    log-variances (diagonal prior) or ``prior_prec_*`` the Cholesky factor of the fitted
    precisions (full prior).
    Paper form: the output layer of ``prior_net`` is shrunk (x0.1) and its bias set to the fitted
    means and log-variances, so ``mu_c(w), sigma_c(w)`` start near the fitted mixture for every w.
    With a conditional encoder every head starts as a copy of the first one.

    Args:
        model: the GMVAE (modified in place).
        Z: (N, X) latent codes, e.g. ``model.latent_mean(Y)``.
        key: PRNG key for EM's k-means initialisations.
        n_init: EM restarts.
        max_iter: EM iterations of each restart.
        refine_iter: equal-weight EM iterations after each restart.

    Returns:
        The :class:`WarmStart`.
    """
    Z = validation.check_data(Z, name="Z", n_features=model.latent_dim,
                              model_name="the latent space")
    full = model.form == "marginal" and model.prior_covariance == "full"
    res = fit_latent_mixture(Z, model.n_components, key,
                             covariance_type="full" if full else "diag", n_init=n_init,
                             max_iter=max_iter, refine_iter=refine_iter)
    means = res.params.means.astype(jnp.float32)
    if model.form == "marginal":
        model.prior_means[...] = means
        if full:
            # Lower Cholesky factor of each fitted precision, on the host in float64.
            prec = np.linalg.inv(np.asarray(res.params.covariances, np.float64))
            L = np.linalg.cholesky(0.5 * (prec + np.swapaxes(prec, -1, -2)))
            diag = np.diagonal(L, axis1=-2, axis2=-1)
            model.prior_prec_log_diag[...] = jnp.asarray(np.log(diag), jnp.float32)
            model.prior_prec_lower[...] = jnp.asarray(np.tril(L, -1), jnp.float32)
        else:
            model.prior_log_vars[...] = jnp.log(res.params.covariances).astype(jnp.float32)
        if model.conditional_encoder:
            K = model.n_components
            for head in (model.encoder_x.mean_head, model.encoder_x.log_var_head):
                X = model.latent_dim
                head.kernel[...] = jnp.tile(head.kernel[...][:, :X], (1, K))
                head.bias[...] = jnp.tile(head.bias[...][:X], (K,))
    else:
        log_vars = jnp.log(res.params.covariances).astype(jnp.float32)
        last = model.prior_net.layers[-1]
        last.kernel[...] = 0.1 * last.kernel[...]
        last.bias[...] = jnp.concatenate([means.reshape(-1), log_vars.reshape(-1)])
    return res


def _epochs_for(steps: int, n: int, batch_size: int) -> int:
    """Epochs needed for about ``steps`` optimisation steps over ``n`` samples (>= 1)."""
    per_epoch = max(1, n // min(batch_size, n))
    return max(1, -(-int(steps) // per_epoch))


def _fit_once(model: GMVAE, X: Array, key: Array, *, pretrain_epochs: int, epochs: int,
              batch_size: int, learning_rate: float, pretrain_noise: float, n_init: int,
              X_val, progress: bool) -> dict:
    """One run of the recipe on ``model`` (in place); returns its history."""
    from vae_jax.train import TrainingDivergedError, evaluate, train

    n = int(X.shape[0])
    history: dict = {"pretrain": {}, "warm_start": {}, "elbo": {}}
    k_pre, k_em, k_fit = jax.random.split(key, 3)
    model.pretraining = True
    model.pretrain_noise = pretrain_noise
    try:
        if pretrain_epochs > 0:
            _, history["pretrain"] = train(
                model, X, epochs=pretrain_epochs, batch_size=batch_size,
                learning_rate=learning_rate, key=k_pre, X_val=X_val, progress=progress)
        model.pretraining = False
        Z = evaluate(model, X, k_em, method="latent_mean")
        res = init_prior_from_latents(model, Z, k_em, n_init=n_init)
        history["warm_start"] = dict(
            log_likelihood=res.log_likelihood, cluster_sizes=res.cluster_sizes.tolist(),
            restart_log_likelihoods=res.restart_log_likelihoods.tolist(),
            restart_kl_to_uniform=res.restart_kl_to_uniform.tolist(), chosen=res.chosen)
        total = max(1, epochs * (n // min(batch_size, n)))
        schedule = optax.cosine_decay_schedule(learning_rate, total, alpha=0.1)
        _, history["elbo"] = train(model, X, epochs=epochs, batch_size=batch_size,
                                   learning_rate=schedule, key=k_fit, X_val=X_val,
                                   progress=progress)
    except TrainingDivergedError as err:
        phase = "pretrain" if model.pretraining else "elbo"
        history[phase] = err.history
        err.history = history
        model.pretraining = False
        raise
    return history


def training_elbo(model: nnx.Module, X, key: Array, *, min_samples: int = 20_000) -> float:
    """Mean ELBO over ``X`` with enough Monte Carlo passes for a precise comparison.

    The data are passed ``ceil(min_samples / N)`` times (with keys split from ``key``), so
    small data sets (1 437 digits: 14 passes) get about as many ELBO samples as large ones;
    comparing models with the same ``key`` uses common random numbers.
    """
    from vae_jax.train import evaluate_elbo

    passes = max(1, -(-int(min_samples) // int(np.shape(X)[0])))
    keys = jax.random.split(validation.check_key(key), passes)
    return float(np.mean([evaluate_elbo(model, X, k) for k in keys]))


def fit_gmvae(
    model: GMVAE,
    X,
    *,
    key: Array,
    pretrain_steps: int = RECIPE["pretrain_steps"],
    steps: int = RECIPE["steps"],
    pretrain_epochs: int | None = None,
    epochs: int | None = None,
    batch_size: int = RECIPE["batch_size"],
    learning_rate: float = RECIPE["learning_rate"],
    pretrain_noise: float = RECIPE["pretrain_noise"],
    n_init: int = RECIPE["n_init"],
    n_restarts: int = RECIPE["n_restarts"],
    X_val=None,
    progress: bool = False,
    callback=None,
) -> tuple[GMVAE, dict]:
    """The GMVAE recipe: autoencoder warm-up, EM on the codes, ELBO training, best of restarts.

    1. About ``pretrain_steps`` Adam steps (rounded up to whole epochs) of deterministic,
       denoising autoencoder training: the encoder sees ``y + pretrain_noise * N(0, I)`` and
       the decoder reconstructs the clean ``y`` from the encoder mean.
    2. :func:`init_prior_from_latents`: ``n_init`` EM fits (``gmm_jax.fit``, the prior's
       covariance type) to the codes ``E q(x|y)``, each refined with the weights held at
       ``1/K``; the likeliest with weights ``1/K`` starts the prior
       (:func:`fit_latent_mixture`).
    3. About ``steps`` steps of ELBO training (Adam with cosine decay of the learning rate
       to 10%).
    4. Steps 1-3 run ``n_restarts`` times from independent initialisations (the first is
       ``model`` as given, the others are fresh models built from ``model.get_config()``);
       the run with the highest training-set ELBO (:func:`training_elbo`) is kept, as EM keeps
       the restart with the highest likelihood. A bad warm start (two classes merged into one
       component) ends with a clearly lower ELBO, so this choice needs no labels.

    The budgets are in steps, not epochs, so the same recipe fits 1 437 digits and 60 000
    Fashion-MNIST images. No labels are used anywhere. The defaults are :data:`RECIPE`.

    Args:
        model: a fresh ``GMVAE``; on return it holds the chosen restart's parameters.
        X: (N, D) training data (in [0, 1] for the Bernoulli likelihood).
        key: PRNG key (or int seed).
        pretrain_steps, steps: step budgets of the two training phases.
        pretrain_epochs, epochs: explicit epoch counts that replace the step budgets.
        batch_size, learning_rate: Adam schedule of both phases.
        pretrain_noise: std of the Gaussian input noise of the warm-up autoencoder.
        n_init: EM restarts of the warm start (:func:`fit_latent_mixture`: refined with
            uniform weights, the likeliest with uniform weights kept).
        n_restarts: independent runs of the whole recipe (chosen by training ELBO).
        X_val: optional validation data (its ELBO, or the autoencoder's reconstruction
            log-likelihood during the warm-up, is recorded each epoch; not used to choose).
        progress: show progress bars.
        callback: optional ``callback(r, model_r)`` called after each finished restart ``r``
            with its trained model (before the choice; e.g. to log or score it); a dict it
            returns is stored as ``history["restarts"][r]["callback"]``. It cannot influence
            which restart is kept.

    Returns:
        ``(model, history)``. ``history["pretrain"]`` and ``history["elbo"]`` are the
        :func:`vae_jax.train` histories of the chosen run's two phases,
        ``history["warm_start"]`` its mixture fit on the codes (``log_likelihood``,
        ``cluster_sizes`` of the training data, ``restart_log_likelihoods``,
        ``restart_kl_to_uniform``, ``chosen``), ``history["restarts"]`` one
        entry per run (``train_elbo``, ``warm_start``, or ``error`` if it diverged) and
        ``history["chosen"]`` the index of the kept run.

    Raises:
        ValueError, TypeError: bad data or arguments (checked before anything runs).
        TrainingDivergedError: every run diverged; its ``history`` holds the last run's
            phases in the layout above.

    Example:
        >>> import jax, vae_jax
        >>> from flax import nnx
        >>> ds = vae_jax.data.load_digits()
        >>> m = vae_jax.GMVAE(64, 10, latent_dim=2, hidden=(16,), rngs=nnx.Rngs(0))
        >>> m, hist = vae_jax.fit_gmvae(m, ds.X_train[:200], key=0, pretrain_steps=3, steps=3,
        ...                             n_restarts=1)
        >>> sorted(hist), len(hist["elbo"]["loss"])
        (['chosen', 'elbo', 'pretrain', 'restarts', 'warm_start'], 1)
    """
    import warnings

    from vae_jax.train import TrainingDivergedError

    if not isinstance(model, GMVAE):
        raise TypeError(f"fit_gmvae trains a GMVAE, got {type(model).__name__}")
    X = validation.check_model_data(model, X)
    if X_val is not None:
        X_val = validation.check_model_data(model, X_val, name="X_val")
    key = validation.check_key(key)
    batch_size = validation.check_int(batch_size, "batch_size")
    learning_rate = validation.check_float(learning_rate, "learning_rate", positive=True)
    pretrain_noise = validation.check_float(pretrain_noise, "pretrain_noise", minimum=0)
    n_init = validation.check_int(n_init, "n_init")
    n_restarts = validation.check_int(n_restarts, "n_restarts")
    n = int(X.shape[0])
    if pretrain_epochs is None:
        pretrain_epochs = (0 if validation.check_int(pretrain_steps, "pretrain_steps",
                                                     minimum=0) == 0
                           else _epochs_for(pretrain_steps, n, batch_size))
    if epochs is None:
        epochs = _epochs_for(validation.check_int(steps, "steps"), n, batch_size)
    pretrain_epochs = validation.check_int(pretrain_epochs, "pretrain_epochs", minimum=0)
    epochs = validation.check_int(epochs, "epochs")
    settings = dict(pretrain_epochs=pretrain_epochs, epochs=epochs, batch_size=batch_size,
                    learning_rate=learning_rate, pretrain_noise=pretrain_noise, n_init=n_init,
                    X_val=X_val, progress=progress)

    k_select = jax.random.fold_in(key, 2**30)
    best, best_elbo, best_hist, restarts, last_err = None, -np.inf, None, [], None
    for r in range(n_restarts):
        if r == 0:
            m_r, k_r = model, key
        else:
            k_r = jax.random.fold_in(key, r)
            seed = int(jax.random.randint(k_r, (), 0, 2**31 - 1))
            m_r = GMVAE(**model.get_config(), rngs=nnx.Rngs(seed))
        try:
            hist = _fit_once(m_r, X, k_r, **settings)
        except TrainingDivergedError as err:
            last_err = err
            restarts.append(dict(error=str(err)))
            if n_restarts > 1:
                warnings.warn(f"fit_gmvae: restart {r} diverged and is skipped ({err})",
                              stacklevel=2)
            continue
        elbo = training_elbo(m_r, X, k_select) if n_restarts > 1 else float("nan")
        restarts.append(dict(train_elbo=elbo, warm_start=hist["warm_start"]))
        if callback is not None:
            extra = callback(r, m_r)
            if isinstance(extra, dict):
                restarts[-1]["callback"] = extra
        if best is None or elbo > best_elbo:
            best, best_elbo, best_hist, chosen = m_r, elbo, hist, r
    if best is None:
        last_err.history = dict(last_err.history, restarts=restarts, chosen=None)
        raise last_err
    if best is not model:
        nnx.update(model, nnx.state(best))
    model.pretraining = False
    return model, dict(best_hist, restarts=restarts, chosen=chosen)
