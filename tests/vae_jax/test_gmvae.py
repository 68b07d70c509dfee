"""GMVAE (both forms): every ELBO term against a direct numpy computation on a tiny case,
p(c|x,w) against gmm_jax.responsibilities, the exact sum over c against enumeration, the
information cut-off, a short training run, and shapes."""

import types

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import gmm_jax
import vae_jax
from vae_jax.gmvae import GMVAE, init_prior_from_latents, per_sample_responsibilities

D, K, X, W, B = 6, 3, 2, 3, 5


def _data(n=B, seed=0):
    return jnp.asarray(np.random.default_rng(seed).uniform(0.05, 0.95, (n, D)), jnp.float32)


def _model(form, **kw):
    kw.setdefault("prior_covariance", "diag")
    return GMVAE(D, K, latent_dim=X, w_dim=W, hidden=(8,), prior_hidden=(4,), form=form,
                 rngs=nnx.Rngs(0), **kw)


def _np(a):
    return np.asarray(a, np.float64)


# One compiled program per model method instead of hundreds of op-by-op dispatches (each a small
# compile of its own): the numbers are the same, the tests several times cheaper.
_terms = nnx.jit(lambda m, y, key: m.terms(y, key))
_loss = nnx.jit(lambda m, y, key: m.loss(y, key))


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
    t = _terms(m, y, jax.random.key(0))
    chex.assert_shape([t["elbo"], t["recon"], t["kl_x"], t["kl_c"], t["kl_w"]], (B,))
    chex.assert_shape(t["q_c"], (B, K))
    np.testing.assert_allclose(np.sum(_np(t["q_c"]), -1), 1.0, atol=1e-5)
    chex.assert_shape(m.cluster_probs(y), (B, K))
    chex.assert_shape(m.generate(jax.random.key(1), 2, 4), (4, D))
    loss, metrics = _loss(m, y, jax.random.key(0))
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
    t = _terms(m, y, key)
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


def _kl_full(mq, lq, mp, cov_p):
    """Direct KL(N(mq, diag e^lq) || N(mp, cov_p)) for one pair."""
    P = np.linalg.inv(cov_p)
    d = mp - mq
    return 0.5 * (np.sum(np.diag(P) * np.exp(lq)) + d @ P @ d - len(mq)
                  + np.linalg.slogdet(cov_p)[1] - np.sum(lq))


def _log_normal_full(x, mu, cov):
    d = x - mu
    return -0.5 * (len(mu) * np.log(2 * np.pi) + np.linalg.slogdet(cov)[1]
                   + d @ np.linalg.solve(cov, d))


def _random_full_prior(m, seed=0):
    """Non-trivial precision Cholesky factors (correlated components)."""
    rng = np.random.default_rng(seed)
    m.prior_prec_lower[...] = jnp.asarray(rng.normal(size=(K, X, X)), jnp.float32)
    m.prior_prec_log_diag[...] = jnp.asarray(rng.normal(scale=0.3, size=(K, X)), jnp.float32)


@pytest.mark.parametrize("q_c,conditional,prior", [("network", True, "diag"),
                                                   ("posterior", False, "diag"),
                                                   ("posterior", True, "full")])
def test_marginal_sum_equals_enumeration(q_c, conditional, prior):
    """The exact sum over c equals the ELBO enumerated class by class (diagonal and full
    mixture priors; the full prior's KL and p(c|x) written out with dense matrices)."""
    M = 2
    m = _model("marginal", n_samples=M, q_c=q_c, conditional_encoder=conditional,
               prior_covariance=prior)
    if prior == "full":
        _random_full_prior(m)
    y = _data()
    key = jax.random.key(3)
    t = _terms(m, y, key)
    kx, kc = jax.random.split(key)
    mu, lv = (_np(a) for a in m.encode_x(y))                             # (B, H, X)
    H = mu.shape[1]
    assert H == (K if conditional else 1)
    eps = _np(jax.random.normal(kx, (M, B, H, X)))
    xs = mu + np.exp(lv / 2) * eps
    pm = _np(m.prior_means[...])
    if prior == "full":
        L = _np(m.prior_precision_cholesky())
        covs = np.linalg.inv(L @ np.swapaxes(L, -1, -2))
    else:
        plv = _np(m.prior_log_vars[...])
    yn = _np(y)
    if q_c == "network":
        logits = _np(m.classifier(y))
        q = np.exp(logits - np.logaddexp.reduce(logits, 1, keepdims=True))
    else:
        r = []
        xc = mu[:, 0] + np.exp(lv[:, 0] / 2) * _np(jax.random.normal(kc, (M, B, X)))
        for i in range(M):
            if prior == "full":
                lp = np.array([[_log_normal_full(xc[i, b], pm[c], covs[c]) for c in range(K)]
                               for b in range(B)])
            else:
                lp = _log_normal(xc[i][:, None], pm, plv)
            r.append(np.exp(lp - np.logaddexp.reduce(lp, 1, keepdims=True)))
        q = np.mean(r, 0)
    elbo = -np.sum(q * np.log(q * K), 1)                                 # -KL(q(c|y) || 1/K)
    for c in range(K):
        h = c if conditional else 0
        rec = np.mean([_bernoulli(yn, _np(m.decoder(jnp.asarray(xs[i, :, h], jnp.float32))))
                       for i in range(M)], 0)
        if prior == "full":
            kl = np.array([_kl_full(mu[b, h], lv[b, h], pm[c], covs[c]) for b in range(B)])
        else:
            kl = _kl(mu[:, h], lv[:, h], pm[c], plv[c])
        elbo += q[:, c] * (rec - kl)
    np.testing.assert_allclose(_np(t["elbo"]), elbo, rtol=1e-4, atol=1e-4)


def test_marginal_expected_log_prior_matches_monte_carlo():
    """The analytic E_q log p(x, c) (gmm_jax density + trace term) matches a large MC mean."""
    m = _model("marginal")
    y = _data(2)
    mu, lv = m.encode_x(y)
    t = _terms(m, y, jax.random.key(0))
    xs = mu[:, 0] + jnp.exp(lv[:, 0] / 2) * jax.random.normal(jax.random.key(1), (20000, 2, X))
    lp = jax.vmap(lambda x: gmm_jax.log_prob_components(m.prior_mixture(), x))(xs)  # (S,2,K)
    mc_kl = -_np(jnp.mean(lp, 0)) + np.log(1 / K) - _np(
        0.5 * jnp.sum(1 + jnp.log(2 * jnp.pi) + lv[:, 0], -1))[:, None]
    q = _np(t["q_c"])
    np.testing.assert_allclose(_np(t["kl_x"]), np.sum(q * mc_kl, 1), rtol=2e-2)


def test_full_prior_sampling_and_warm_start_match_gmm_jax():
    """x | c is drawn from N(m_c, (L L^T)^-1), and the warm start writes gmm_jax.fit's full
    covariances (through their precision Cholesky factors) into the prior."""
    m = _model("marginal", prior_covariance="full")
    _random_full_prior(m, seed=1)
    # component 2: strongly correlated, so L^-T L^-1 and L^-1 L^-T differ clearly
    m.prior_prec_lower[...] = m.prior_prec_lower[...].at[2].set(jnp.array([[0.0, 0.0],
                                                                           [1.5, 0.0]]))
    m.prior_prec_log_diag[...] = m.prior_prec_log_diag[...].at[2].set(jnp.array([0.3, -0.4]))
    cov = _np(m.prior_mixture().covariances)
    L = _np(m.prior_precision_cholesky())
    np.testing.assert_allclose(cov, np.linalg.inv(L @ np.swapaxes(L, -1, -2)), rtol=1e-4)
    s = _np(m.sample_latent(jax.random.key(0), 2, 40000))
    np.testing.assert_allclose(np.cov(s.T), cov[2], atol=0.05 * np.abs(cov[2]).max())
    np.testing.assert_allclose(s.mean(0), _np(m.prior_means[...][2]), atol=0.03)
    rng = np.random.default_rng(0)
    Z = np.concatenate([rng.multivariate_normal(c, [[1.0, 0.8], [0.8, 1.0]], 200)
                        for c in ([0, 0], [6, 0], [0, 6])]).astype(np.float32)
    res = init_prior_from_latents(m, Z, jax.random.key(0), n_init=2)
    assert res.params.covariance_type == "full"
    np.testing.assert_allclose(_np(m.prior_mixture().covariances), _np(res.params.covariances),
                               rtol=2e-3, atol=1e-4)
    np.testing.assert_allclose(_np(m.prior_means[...]), _np(res.params.means), rtol=1e-6)


@pytest.mark.parametrize("form", ["paper", "marginal"])
def test_free_bits_cutoff(form):
    """Below lambda the cluster KL contributes the constant lambda and no gradient."""
    y = _data()
    key = jax.random.key(0)
    m0 = _model(form)
    t = _terms(m0, y, key)
    base = -(jnp.mean(t["recon"]) - jnp.mean(t["kl_x"]) - jnp.mean(t["kl_w"]))
    kl_c = float(jnp.mean(t["kl_c"]))
    loss0, _ = _loss(m0, y, key)
    np.testing.assert_allclose(float(loss0), float(base) + kl_c, rtol=1e-5)
    big = kl_c + 5.0
    m_big = _model(form, free_bits=big)
    loss_big, metrics = _loss(m_big, y, key)
    np.testing.assert_allclose(float(loss_big), float(base) + big, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["kl_c"]), kl_c, rtol=1e-5)  # reported uncut

    def cut_loss(m):
        return m.loss(y, key)[0]

    def no_kl_c(m):
        tt = m.terms(y, key)
        return -(jnp.mean(tt["recon"]) - jnp.mean(tt["kl_x"]) - jnp.mean(tt["kl_w"]))

    g_cut = nnx.jit(nnx.grad(cut_loss))(m_big)
    g_ref = nnx.jit(nnx.grad(no_kl_c))(m_big)
    for a, b in zip(jax.tree.leaves(g_cut), jax.tree.leaves(g_ref), strict=True):
        np.testing.assert_allclose(_np(a), _np(b), rtol=1e-5, atol=1e-7)
    # Above the cut-off (lambda below the KL) the loss is the negative ELBO again.
    m_small = _model(form, free_bits=0.5 * kl_c)
    np.testing.assert_allclose(float(_loss(m_small, y, key)[0]), float(loss0), rtol=1e-6)


@pytest.mark.parametrize("form", [pytest.param("paper", marks=pytest.mark.slow), "marginal"])
def test_fit_gmvae_raises_the_elbo_and_returns_both_phases(form, tmp_path):
    """The recipe in miniature: warm-up, EM on the codes, ELBO phase, best of 2 restarts by
    training ELBO. Both phases' histories come back, the step budgets become whole epochs
    (3 steps per epoch here: 7 steps -> 3 epochs, 16 -> 6), the ELBO phase raises the ELBO,
    the model returned is the chosen restart, and the sample grid has one row per cluster."""
    from vae_jax.gmvae import training_elbo

    Xtr = vae_jax.data.load_digits().X_train[:192]
    m = GMVAE(64, 4, latent_dim=3, w_dim=2, hidden=(16,), prior_hidden=(4,), form=form,
              rngs=nnx.Rngs(1))
    seen = []

    def callback(r, m_r):   # sees each trained restart; its dict is recorded, nothing else
        seen.append((r, training_elbo(m_r, Xtr, jax.random.fold_in(jax.random.key(0), 2**30))))
        return dict(r=r)

    m, hist = vae_jax.fit_gmvae(m, Xtr, key=0, pretrain_steps=7, steps=16, batch_size=64,
                                learning_rate=3e-3, n_init=1, n_restarts=2, X_val=Xtr[:50],
                                callback=callback)
    assert set(hist) == {"pretrain", "warm_start", "elbo", "restarts", "chosen"}
    assert len(hist["pretrain"]["loss"]) == 3 and len(hist["elbo"]["loss"]) == 6
    assert "val_elbo" in hist["pretrain"] and "kl_c" in hist["elbo"]
    ws = hist["warm_start"]
    assert sum(ws["cluster_sizes"]) == 192 and len(ws["cluster_sizes"]) == 4
    assert np.isfinite(ws["log_likelihood"]) and not m.pretraining
    val = hist["elbo"]["val_elbo"]
    assert np.all(np.isfinite(val)) and val[-1] > val[0] + 1.0, val
    elbos = [r["train_elbo"] for r in hist["restarts"]]
    assert len(elbos) == 2 and elbos[0] != elbos[1]
    assert hist["chosen"] == int(np.argmax(elbos))
    assert [r for r, _ in seen] == [0, 1] and [e for _, e in seen] == elbos
    assert [x["callback"] for x in hist["restarts"]] == [dict(r=0), dict(r=1)]
    assert hist["warm_start"] == hist["restarts"][hist["chosen"]]["warm_start"]
    assert training_elbo(m, Xtr, jax.random.fold_in(jax.random.key(0), 2**30)) == max(elbos)
    imgs = vae_jax.cluster_grid(m, jax.random.key(0), tmp_path / "g.png", image_shape=(8, 8),
                                n_per_cluster=3)
    assert imgs.shape == (4, 3, 8, 8) and (tmp_path / "g.png").stat().st_size > 0
    with pytest.raises(ValueError, match="63 features"):
        vae_jax.fit_gmvae(m, Xtr[:, :63], key=0)
    with pytest.raises(TypeError, match="trains a GMVAE"):
        vae_jax.fit_gmvae(vae_jax.VAE(64, 2, rngs=nnx.Rngs(0)), Xtr, key=0)


def test_balance_term_adds_kl_of_mean_assignment():
    y = _data()
    key = jax.random.key(0)
    m0, m1 = _model("marginal"), _model("marginal", balance=2.0)
    q = _np(_terms(m0, y, key)["q_c"]).mean(0)
    extra = 2.0 * np.sum(q * np.log(q * K))
    np.testing.assert_allclose(float(_loss(m1, y, key)[0]) - float(_loss(m0, y, key)[0]), extra,
                               rtol=1e-4, atol=1e-6)


def test_one_recipe_the_defaults_the_example_and_the_benchmark_use():
    """RECIPE is what GMVAE() and fit_gmvae() default to, and the example, the benchmark and
    the README section call them without overriding any of it."""
    import ast
    import inspect
    from pathlib import Path

    from vae_jax.gmvae import RECIPE, fit_gmvae

    ctor = inspect.signature(GMVAE.__init__).parameters
    fit = inspect.signature(fit_gmvae).parameters
    for name, value in RECIPE.items():
        if name == "prior_covariance":
            assert GMVAE(8, 2, rngs=nnx.Rngs(0)).prior_covariance == value
        elif name in ctor:
            assert ctor[name].default == value, name
        else:
            assert fit[name].default == value, name
    root = Path(__file__).resolve().parents[2]

    def calls(source):
        tree = ast.parse(source)
        return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
                and getattr(n.func, "attr", getattr(n.func, "id", None)) in ("GMVAE",
                                                                            "fit_gmvae")]

    section = (root / "benchmarks/results/vae_README_section.md").read_text()
    snippets = [block.split("\n", 1)[1] for block in section.split("```")[1::2]
                if block.startswith("python") and "fit_gmvae" in block]
    sources = {"example": (root / "examples/vae_digits.py").read_text(),
               "benchmark": (root / "benchmarks/bench_clustering.py").read_text(),
               **{f"README snippet {i}": s for i, s in enumerate(snippets)}}
    assert snippets, "the README section has no fit_gmvae snippet"
    for where, source in sources.items():
        found = calls(source)
        assert found, where
        for call in found:
            overridden = {k.arg for k in call.keywords} & set(RECIPE)
            assert not overridden, (where, overridden)


def test_warm_start_refines_with_uniform_weights_and_keeps_the_likeliest_with_them(
        monkeypatch):
    """fit_latent_mixture: equal-weight EM keeps the weights at 1/K and never lowers the
    likelihood; of the restarts, the one with the highest likelihood *with weights 1/K* is
    kept, even when another restart is likelier with its own (free) weights."""
    from vae_jax import gmvae
    from vae_jax.gmvae import _equal_weight_em, fit_latent_mixture

    rng = np.random.default_rng(0)
    # two overlapping groups (A, B) and one two-lobed group (C1, C2)
    Z = np.concatenate([rng.normal([0, 0], 1.0, (200, 2)), rng.normal([1, 0], 1.0, (200, 2)),
                        rng.normal([0, 10], 0.7, (100, 2)), rng.normal([2.5, 10], 0.7, (100, 2))])
    Z = jnp.asarray(Z, jnp.float32)
    res = gmm_jax.fit(jax.random.key(0), Z, 3, covariance_type="full", n_init=1)
    refined, lls = _equal_weight_em(res.params, Z, 1e-4, n_iter=30)
    np.testing.assert_allclose(_np(refined.weights), 1 / 3, rtol=1e-6)
    assert np.all(np.diff(_np(lls)) > -1e-4), lls          # EM with fixed weights is monotone
    assert _np(lls)[-1] > _np(lls)[0]

    def mixture(groups):
        comp = np.asarray(groups)[np.repeat(np.arange(4), [200, 200, 100, 100])]
        Zn = np.asarray(Z)
        means = np.stack([Zn[comp == k].mean(0) for k in range(3)])
        covs = np.stack([np.cov(Zn[comp == k].T) + 1e-3 * np.eye(2) for k in range(3)])
        return gmm_jax.params_from_covariances(
            jnp.asarray(np.bincount(comp) / len(comp), jnp.float32),
            jnp.asarray(means, jnp.float32), jnp.asarray(covs, jnp.float32), "full")

    # "merged": A+B in one component (weight 2/3), C split in two (1/6 each); "balanced":
    # A, B, C (1/3 each). The free weights favour the merged one, uniform weights do not.
    candidates = [mixture([0, 0, 1, 2]), mixture([0, 1, 2, 2])]

    def ll(p, w=None):
        p = p if w is None else p._replace(weights=jnp.full(3, w, jnp.float32))
        return float(jnp.mean(gmm_jax.log_likelihood(p, Z)))

    assert ll(candidates[0]) > ll(candidates[1]) + 0.03          # free weights: merged
    calls = iter(candidates)
    monkeypatch.setattr(gmvae.gmm_jax, "fit",
                        lambda *a, **k: types.SimpleNamespace(params=next(calls)))
    ws = fit_latent_mixture(Z, 3, jax.random.key(1), n_init=2, refine_iter=0)
    np.testing.assert_allclose(ws.restart_log_likelihoods,
                               [ll(c, 1 / 3) for c in candidates], rtol=1e-5)
    assert ws.chosen == 1 and ws.log_likelihood == ws.restart_log_likelihoods[1]
    np.testing.assert_allclose(_np(ws.params.weights), 1 / 3, rtol=1e-6)
    frac = ws.cluster_sizes / ws.cluster_sizes.sum()
    np.testing.assert_allclose(np.sum(frac * np.log(frac * 3)), ws.restart_kl_to_uniform[1],
                               rtol=1e-5)
    # Balance is reported, not chosen by: two groups of 400 and 200; a restart that cuts the
    # 400 group (350/250 assigned) is more balanced but far less likely, and is not kept.
    Z2 = jnp.asarray(np.concatenate([rng.normal([0, 0], 1.0, (400, 2)),
                                     rng.normal([8, 0], 1.0, (200, 2))]), jnp.float32)

    def two(comp):
        Zn = np.asarray(Z2)
        return gmm_jax.params_from_covariances(
            jnp.full(2, 0.5), jnp.asarray(np.stack([Zn[comp == k].mean(0) for k in (0, 1)])),
            jnp.asarray(np.stack([np.cov(Zn[comp == k].T) for k in (0, 1)])), "full")

    cut = (np.asarray(Z2)[:, 0] > np.sort(np.asarray(Z2)[:, 0])[299]).astype(int)
    calls = iter([two(cut), two(np.repeat([0, 1], [400, 200]))])
    ws2 = fit_latent_mixture(Z2, 2, jax.random.key(1), n_init=2, refine_iter=0)
    assert ws2.restart_kl_to_uniform[0] < ws2.restart_kl_to_uniform[1]
    assert ws2.chosen == 1 and sorted(ws2.cluster_sizes.tolist()) == [200, 400]


def _blobs(n=100, seed=0):
    """(3 n, 2) latent codes in 3 well-separated blobs, centred at (0, 0), (8, 0), (0, 8)."""
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0], [8.0, 0.0], [0.0, 8.0]])
    return np.concatenate([c + 0.5 * rng.normal(size=(n, X)) for c in centres]).astype(
        np.float32)


def _prior_assignment(m, Z, key):
    """(N,) argmax of the model's own p(c | x) at latent points Z (paper form: at random w)."""
    if m.form == "marginal":
        return np.asarray(gmm_jax.predict(m.prior_mixture(), Z))
    w = jax.random.normal(key, (Z.shape[0], m.w_dim))
    mu_c, lv_c = m.prior_components(w)
    r = per_sample_responsibilities(jnp.asarray(Z), jnp.exp(m.log_weights), mu_c, lv_c)
    return np.asarray(r.argmax(-1))


@pytest.mark.parametrize("form,prior", [("marginal", "diag"), ("marginal", "full"),
                                        ("paper", "diag")])
def test_warm_start_is_the_prior_the_model_uses(form, prior):
    """After init_prior_from_latents the model's own prior is the EM fit: it assigns the codes
    as gmm_jax.predict of the fitted mixture does, and (marginal form) gives them the fitted
    log-likelihood. Fails if the warm start writes nothing (or the wrong field) into the prior,
    e.g. the random initial prior means / unit variances are left in place."""
    m = _model(form, prior_covariance=prior)
    Z = _blobs()
    before = _prior_assignment(m, Z, jax.random.key(1))
    res = init_prior_from_latents(m, Z, jax.random.key(0), n_init=2)
    expected = np.asarray(gmm_jax.predict(res.params, Z))
    assert sorted(np.bincount(expected, minlength=K).tolist()) == [100] * K
    np.testing.assert_array_equal(_prior_assignment(m, Z, jax.random.key(1)), expected)
    assert not np.array_equal(before, expected)       # the random prior did not already agree
    if form == "marginal":
        ll = float(jnp.mean(gmm_jax.log_likelihood(m.prior_mixture(), Z)))
        np.testing.assert_allclose(ll, res.log_likelihood, rtol=1e-4)
    else:  # mu_c(w) ~ the fitted means for every w
        mu_c, _ = m.prior_components(jax.random.normal(jax.random.key(2), (50, W)))
        np.testing.assert_allclose(_np(mu_c), np.broadcast_to(_np(res.params.means), mu_c.shape),
                                   atol=0.5)


@pytest.mark.parametrize("form,prior", [("marginal", "diag"), ("marginal", "full"),
                                        ("paper", "diag")])
def test_generate_decodes_latents_drawn_from_the_chosen_component(form, prior):
    """generate(model, key, c, n) decodes latents from p(x | c): with the prior set to separated
    components, the latents behind the samples sit at component c's mean and the prior assigns
    them to c, and the samples are the decoder means of exactly those latents."""
    m = _model(form, prior_covariance=prior)
    init_prior_from_latents(m, _blobs(), jax.random.key(0), n_init=2)
    means = _np(m.prior_mixture().means if form == "marginal"
                else m.prior_components(jnp.zeros((W,)))[0])
    for c in range(K):
        key = jax.random.key(10 + c)
        z = _np(m.sample_latent(key, c, 500))
        np.testing.assert_allclose(z.mean(0), means[c], atol=0.3)
        assert np.mean(_prior_assignment(m, z, jax.random.key(3)) == c) > 0.99
        x = vae_jax.generate(m, key, c, 500)
        np.testing.assert_allclose(x, _np(m.decoder.mean(jnp.asarray(z))), rtol=1e-5,
                                   atol=1e-6)


def _prototypes(n=300, seed=0):
    """3 classes of 12-pixel images: class c is bright (0.9) on pixels 4c..4c+3, dark (0.1)
    elsewhere, plus a little noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    P = np.full((3, 12), 0.1)
    for c in range(3):
        P[c, 4 * c:4 * c + 4] = 0.9
    X_ = np.clip(P[y] + rng.normal(0, 0.05, (n, 12)), 0, 1).astype(np.float32)
    return X_, y.astype(np.int32), P


def test_generated_samples_of_a_trained_model_belong_to_their_cluster():
    """Conditional generation by content, after training on 3 easy classes: the samples that
    GMVAE.generate (the recipe, tiny budgets) and M2.generate (all labels) produce for cluster c
    are assigned to c by the same model and look like the class matched to c."""
    from vae_jax.m2 import M2

    Xp, yp, P = _prototypes()
    g = GMVAE(12, 3, latent_dim=2, hidden=(16,), rngs=nnx.Rngs(0))
    g, _ = vae_jax.fit_gmvae(g, Xp, key=0, pretrain_steps=60, steps=60, n_init=2, n_restarts=1,
                             learning_rate=1e-2)
    m2 = M2(12, 3, latent_dim=2, hidden=(16,), rngs=nnx.Rngs(0))
    vae_jax.train(m2, Xp, y=yp, epochs=20, batch_size=50, learning_rate=1e-2, key=0,
                  progress=False)
    for model in (g, m2):
        pred = model.predict(Xp)
        assert vae_jax.clustering_accuracy(yp, pred) == 1.0, type(model).__name__
        for c in range(3):
            x = vae_jax.generate(model, jax.random.key(c), c, 100)
            assert np.mean(model.predict(x) == c) > 0.95, (type(model).__name__, c)
            cls = np.bincount(yp[pred == c], minlength=3).argmax()    # class matched to c
            np.testing.assert_allclose(x.mean(0), P[cls], atol=0.15)
