"""GMVAE (both forms): every ELBO term against a direct numpy computation on a tiny case,
p(c|x,w) against gmm_jax.responsibilities, the exact sum over c against enumeration, the
information cut-off, a short training run, and shapes."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import gmm_jax
import vae_jax
from vae_jax import inference
from vae_jax.gmvae import GMVAE, init_prior_from_latents, per_sample_responsibilities

D, K, X, W, B = 6, 3, 2, 3, 5


def _data(n=B, seed=0):
    return jnp.asarray(np.random.default_rng(seed).uniform(0.05, 0.95, (n, D)), jnp.float32)


def _model(form, **kw):
    return GMVAE(D, K, latent_dim=X, w_dim=W, hidden=(8,), prior_hidden=(4,), form=form,
                 rngs=nnx.Rngs(0), **kw)


def _np(a):
    return np.asarray(a, np.float64)


def _log_normal(x, mu, lv):
    """Direct log N(x | mu, diag e^lv) summed over the last axis."""
    return np.sum(-0.5 * (np.log(2 * np.pi) + lv + (x - mu) ** 2 / np.exp(lv)), axis=-1)


def _kl(mq, lq, mp, lp):
    """Direct KL between diagonal Gaussians, summed over the last axis."""
    return 0.5 * np.sum(lp - lq + (np.exp(lq) + (mq - mp) ** 2) / np.exp(lp) - 1, axis=-1)


def _bernoulli(y, logits):
    p = 1 / (1 + np.exp(-logits))
    return np.sum(y * np.log(p) + (1 - y) * np.log(1 - p), axis=-1)


@pytest.mark.parametrize("form", ["paper", "marginal"])
def test_shapes(form):
    m = _model(form, n_samples=2)
    y = _data()
    t = m.terms(y, jax.random.key(0))
    chex.assert_shape([t["elbo"], t["recon"], t["kl_x"], t["kl_c"], t["kl_w"]], (B,))
    chex.assert_shape(t["q_c"], (B, K))
    np.testing.assert_allclose(np.sum(_np(t["q_c"]), -1), 1.0, atol=1e-5)
    chex.assert_shape(m.cluster_probs(y), (B, K))
    chex.assert_shape(m.generate(jax.random.key(1), 2, 4), (4, D))
    loss, metrics = m.loss(y, jax.random.key(0))
    chex.assert_shape(loss, ())
    assert set(metrics) >= {"elbo", "recon", "kl_x", "kl_c", "kl_w"}
    labels, probs = vae_jax.cluster(m, y)
    chex.assert_shape([labels, probs], [(B,), (B, K)])


def test_pc_given_xw_is_gmm_responsibilities():
    """p(c|x,w) of the paper form equals gmm_jax.responsibilities of each sample's mixture."""
    m = _model("paper")
    y = _data()
    mu_x, _ = m.encode_x(y)
    mu_w, _ = m.encoder_w(y)
    mu_c, lv_c = m.prior_components(mu_w)
    got = _np(per_sample_responsibilities(mu_x[:, 0], jnp.full((K,), 1 / K), mu_c, lv_c))
    for b in range(B):
        params = gmm_jax.params_from_covariances(
            jnp.full((K,), 1 / K), mu_c[b], jnp.exp(lv_c[b]), "diag")
        ref = _np(gmm_jax.responsibilities(params, mu_x[b:b + 1, 0]))[0]
        np.testing.assert_allclose(got[b], ref, rtol=1e-5, atol=1e-6)
        # and against Bayes' rule written out.
        lp = _log_normal(_np(mu_x[b, 0])[None], _np(mu_c[b]), _np(lv_c[b]))
        np.testing.assert_allclose(got[b], np.exp(lp - np.logaddexp.reduce(lp)), rtol=1e-4)
    np.testing.assert_allclose(_np(m.cluster_probs(y)), got, rtol=1e-6)


def test_paper_terms_against_direct_computation():
    """Each of the four ELBO terms, with M = 3 samples, recomputed from the network outputs."""
    M = 3
    m = _model("paper", n_samples=M)
    y = _data()
    key = jax.random.key(7)
    t = m.terms(y, key)
    kx, kw = jax.random.split(key)
    mu_x, lv_x = (_np(a[:, 0]) for a in m.encode_x(y))
    mu_w, lv_w = (_np(a) for a in m.encoder_w(y))
    xs = mu_x + np.exp(lv_x / 2) * _np(jax.random.normal(kx, (M, B, X)))
    ws = mu_w + np.exp(lv_w / 2) * _np(jax.random.normal(kw, (M, B, W)))
    yn = _np(y)
    recon = np.mean([_bernoulli(yn, _np(m.decoder(jnp.asarray(xs[i], jnp.float32))))
                     for i in range(M)], axis=0)
    cond, klc = np.zeros(B), np.zeros(B)
    for i in range(M):
        mu_c, lv_c = (_np(a) for a in m.prior_components(jnp.asarray(ws[i], jnp.float32)))
        lp = _log_normal(xs[i][:, None], mu_c, lv_c)                      # (B, K)
        pc = np.exp(lp - np.logaddexp.reduce(lp, axis=1, keepdims=True))
        cond += np.sum(pc * _kl(mu_x[:, None], lv_x[:, None], mu_c, lv_c), 1) / M
        klc += np.sum(pc * np.log(pc * K), 1) / M
    klw = _kl(mu_w, lv_w, 0.0, 0.0)
    np.testing.assert_allclose(_np(t["recon"]), recon, rtol=1e-4)
    np.testing.assert_allclose(_np(t["kl_x"]), cond, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(_np(t["kl_w"]), klw, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(_np(t["kl_c"]), klc, rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(_np(t["elbo"]), recon - cond - klw - klc, rtol=1e-4)


@pytest.mark.parametrize("q_c,conditional", [("network", True), ("posterior", False)])
def test_marginal_sum_equals_enumeration(q_c, conditional):
    """The exact sum over c equals the ELBO enumerated class by class."""
    M = 2
    m = _model("marginal", n_samples=M, q_c=q_c, conditional_encoder=conditional)
    y = _data()
    key = jax.random.key(3)
    t = m.terms(y, key)
    kx, kc = jax.random.split(key)
    mu, lv = (_np(a) for a in m.encode_x(y))                             # (B, H, X)
    H = mu.shape[1]
    assert H == (K if conditional else 1)
    eps = _np(jax.random.normal(kx, (M, B, H, X)))
    xs = mu + np.exp(lv / 2) * eps
    pm, plv = _np(m.prior_means[...]), _np(m.prior_log_vars[...])
    yn = _np(y)
    if q_c == "network":
        logits = _np(m.classifier(y))
        q = np.exp(logits - np.logaddexp.reduce(logits, 1, keepdims=True))
    else:
        r = []
        xc = mu[:, 0] + np.exp(lv[:, 0] / 2) * _np(jax.random.normal(kc, (M, B, X)))
        for i in range(M):
            lp = _log_normal(xc[i][:, None], pm, plv)
            r.append(np.exp(lp - np.logaddexp.reduce(lp, 1, keepdims=True)))
        q = np.mean(r, 0)
    elbo = -np.sum(q * np.log(q * K), 1)                                 # -KL(q(c|y) || 1/K)
    for c in range(K):
        h = c if conditional else 0
        rec = np.mean([_bernoulli(yn, _np(m.decoder(jnp.asarray(xs[i, :, h], jnp.float32))))
                       for i in range(M)], 0)
        kl = _kl(mu[:, h], lv[:, h], pm[c], plv[c])
        elbo += q[:, c] * (rec - kl)
    np.testing.assert_allclose(_np(t["elbo"]), elbo, rtol=1e-4, atol=1e-4)


def test_marginal_expected_log_prior_matches_monte_carlo():
    """The analytic E_q log p(x, c) (gmm_jax density + trace term) matches a large MC mean."""
    m = _model("marginal")
    y = _data(2)
    mu, lv = m.encode_x(y)
    t = m.terms(y, jax.random.key(0))
    xs = mu[:, 0] + jnp.exp(lv[:, 0] / 2) * jax.random.normal(jax.random.key(1), (20000, 2, X))
    lp = jax.vmap(lambda x: gmm_jax.log_prob_components(m.prior_mixture(), x))(xs)  # (S,2,K)
    mc_kl = -_np(jnp.mean(lp, 0)) + np.log(1 / K) - _np(
        0.5 * jnp.sum(1 + jnp.log(2 * jnp.pi) + lv[:, 0], -1))[:, None]
    q = _np(t["q_c"])
    np.testing.assert_allclose(_np(t["kl_x"]), np.sum(q * mc_kl, 1), rtol=2e-2)


@pytest.mark.parametrize("form", ["paper", "marginal"])
def test_free_bits_cutoff(form):
    """Below lambda the cluster KL contributes the constant lambda and no gradient."""
    y = _data()
    key = jax.random.key(0)
    m0 = _model(form)
    t = m0.terms(y, key)
    base = -(jnp.mean(t["recon"]) - jnp.mean(t["kl_x"]) - jnp.mean(t["kl_w"]))
    kl_c = float(jnp.mean(t["kl_c"]))
    loss0, _ = m0.loss(y, key)
    np.testing.assert_allclose(float(loss0), float(base) + kl_c, rtol=1e-5)
    big = kl_c + 5.0
    m_big = _model(form, free_bits=big)
    loss_big, metrics = m_big.loss(y, key)
    np.testing.assert_allclose(float(loss_big), float(base) + big, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["kl_c"]), kl_c, rtol=1e-5)  # reported uncut

    def cut_loss(m):
        return m.loss(y, key)[0]

    def no_kl_c(m):
        tt = m.terms(y, key)
        return -(jnp.mean(tt["recon"]) - jnp.mean(tt["kl_x"]) - jnp.mean(tt["kl_w"]))

    g_cut = nnx.grad(cut_loss)(m_big)
    g_ref = nnx.grad(no_kl_c)(m_big)
    for a, b in zip(jax.tree.leaves(g_cut), jax.tree.leaves(g_ref), strict=True):
        np.testing.assert_allclose(_np(a), _np(b), rtol=1e-5, atol=1e-7)
    # Above the cut-off (lambda below the KL) the loss is the negative ELBO again.
    m_small = _model(form, free_bits=0.5 * kl_c)
    np.testing.assert_allclose(float(m_small.loss(y, key)[0]), float(loss0), rtol=1e-6)


@pytest.mark.parametrize("form", [pytest.param("paper", marks=pytest.mark.slow), "marginal"])
def test_short_training_raises_elbo(form, tmp_path):
    ds = vae_jax.data.load_digits()
    Xtr = ds.X_train[:192]
    m = GMVAE(64, 4, latent_dim=3, w_dim=2, hidden=(16,), prior_hidden=(4,), form=form,
              rngs=nnx.Rngs(1))
    m.pretraining = True
    vae_jax.train(m, Xtr, epochs=3, batch_size=64, learning_rate=3e-3, key=0, progress=False)
    init_prior_from_latents(m, m.latent_mean(jnp.asarray(Xtr)), jax.random.key(0), n_init=1,
                            max_iter=20)
    m.pretraining = False
    before = vae_jax.evaluate_elbo(m, Xtr, jax.random.key(5))
    vae_jax.train(m, Xtr, epochs=6, batch_size=64, learning_rate=3e-3, key=1, progress=False)
    after = vae_jax.evaluate_elbo(m, Xtr, jax.random.key(5))
    assert np.isfinite(after) and after > before + 1.0, (before, after)
    imgs = inference.cluster_grid(m, jax.random.key(0), tmp_path / "g.png", image_shape=(8, 8),
                                  n_per_cluster=3)
    assert imgs.shape == (4, 3, 8, 8) and (tmp_path / "g.png").stat().st_size > 0


def test_balance_term_adds_kl_of_mean_assignment():
    y = _data()
    key = jax.random.key(0)
    m0, m1 = _model("marginal"), _model("marginal", balance=2.0)
    q = _np(m0.terms(y, key)["q_c"]).mean(0)
    extra = 2.0 * np.sum(q * np.log(q * K))
    np.testing.assert_allclose(float(m1.loss(y, key)[0]) - float(m0.loss(y, key)[0]), extra,
                               rtol=1e-4, atol=1e-6)
