"""M2: labelled and unlabelled ELBO against direct computations, the semi-supervised objective
with a -1 label mask, the default alpha, a short training run, and shapes."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import vae_jax
from vae_jax.m2 import M2, default_alpha

D, K, Z, B = 6, 3, 2, 5


def _np(a):
    return np.asarray(a, np.float64)


def _data(seed=0):
    return jnp.asarray(np.random.default_rng(seed).uniform(0.05, 0.95, (B, D)), jnp.float32)


def _model(**kw):
    return M2(D, K, latent_dim=Z, hidden=(8,), rngs=nnx.Rngs(0), **kw)


def _direct_L(m, y, key, M):
    """L(y, c) for every c from the network outputs, written out with numpy."""
    eps = _np(jax.random.normal(key, (M, B, K, Z)))
    yn = _np(y)
    out = np.zeros((B, K))
    for c in range(K):
        oh = jnp.broadcast_to(jax.nn.one_hot(c, K), (B, K))
        mu, lv = (_np(a) for a in m.encoder(y, oh))
        rec = 0.0
        for i in range(M):
            z = mu + np.exp(lv / 2) * eps[i, :, c]
            logits = _np(m.decoder(jnp.asarray(z, jnp.float32), oh))
            p = 1 / (1 + np.exp(-logits))
            rec = rec + np.sum(yn * np.log(p) + (1 - yn) * np.log(1 - p), -1) / M
        kl = 0.5 * np.sum(np.exp(lv) + mu**2 - 1 - lv, -1)
        out[:, c] = rec + np.log(1 / K) - kl
    return out


def test_shapes():
    m = _model(n_samples=2)
    y = _data()
    L, parts = m.labelled_elbo_all(y, jax.random.key(0))
    chex.assert_shape([L, parts["recon"], parts["kl_z"]], (B, K))
    chex.assert_shape(m.elbo(y, jax.random.key(0)), (B,))
    chex.assert_shape(m.cluster_probs(y), (B, K))
    chex.assert_shape(m.generate(jax.random.key(0), 1, 7), (7, D))
    loss, metrics = m.loss(y, jax.random.key(0), y=jnp.array([0, -1, 2, -1, -1]))
    chex.assert_shape(loss, ())
    assert set(metrics) >= {"elbo", "ce", "h_c", "recon", "kl_z"}
    labels, probs = vae_jax.cluster(m, y)
    chex.assert_shape([labels, probs], [(B,), (B, K)])


def test_labelled_and_unlabelled_elbo_against_direct():
    M = 3
    m = _model(n_samples=M)
    y = _data()
    key = jax.random.key(4)
    ref = _direct_L(m, y, key, M)
    L, _ = m.labelled_elbo_all(y, key)
    np.testing.assert_allclose(_np(L), ref, rtol=1e-4)
    c = jnp.array([0, 2, 1, 1, 0])
    np.testing.assert_allclose(_np(m.labelled_elbo(y, c, key)),
                               ref[np.arange(B), _np(c).astype(int)], rtol=1e-4)
    logits = _np(m.classifier(y))
    logq = logits - np.logaddexp.reduce(logits, 1, keepdims=True)
    q = np.exp(logq)
    U = np.sum(q * ref, 1) - np.sum(q * logq, 1)       # sum_c q L + H(q), enumerated
    np.testing.assert_allclose(_np(m.unlabelled_elbo(y, key)), U, rtol=1e-4)
    np.testing.assert_allclose(_np(m.elbo(y, key)), U, rtol=1e-4)


@pytest.mark.parametrize("alpha", [None, 2.5])
def test_semi_supervised_objective(alpha):
    M = 1
    m = _model(alpha=alpha)
    y = _data()
    key = jax.random.key(1)
    labels = jnp.array([1, -1, 0, -1, -1])
    loss, metrics = m.loss(y, key, y=labels)
    ref = _direct_L(m, y, key, M)
    logits = _np(m.classifier(y))
    logq = logits - np.logaddexp.reduce(logits, 1, keepdims=True)
    q = np.exp(logq)
    U = np.sum(q * ref, 1) - np.sum(q * logq, 1)
    lab = np.array([1, -1, 0, -1, -1])
    is_lab = lab >= 0
    obj = np.where(is_lab, ref[np.arange(B), np.maximum(lab, 0)], U)
    ce = -logq[np.arange(B), np.maximum(lab, 0)] * is_lab
    a = 0.1 * B / is_lab.sum() if alpha is None else alpha
    np.testing.assert_allclose(float(loss), -obj.mean() + a * ce.sum() / B, rtol=1e-4)
    np.testing.assert_allclose(float(metrics["ce"]), ce.sum() / is_lab.sum(), rtol=1e-4)
    # All labels -1 (or None): the unsupervised objective, no classification term.
    l_none, _ = m.loss(y, key)
    l_mask, _ = m.loss(y, key, y=jnp.full((B,), -1))
    np.testing.assert_allclose(float(l_none), -U.mean(), rtol=1e-4)
    np.testing.assert_allclose(float(l_mask), float(l_none), rtol=1e-6)


def test_default_alpha():
    y = np.full(1000, -1)
    y[:100] = np.arange(100) % 10
    assert default_alpha(y) == pytest.approx(0.1 * 1000 / 100)


def test_short_training_raises_elbo_and_learns_labels():
    ds = vae_jax.data.load_digits()
    X, yt = ds.X_train[:300], ds.y_train[:300]
    labels = np.where(np.arange(300) < 150, yt, -1).astype(np.int32)
    m = M2(64, 10, latent_dim=4, hidden=(32,), rngs=nnx.Rngs(0))
    m.alpha = default_alpha(labels)
    before = vae_jax.evaluate_elbo(m, X, jax.random.key(5))
    vae_jax.train(m, X, y=labels, epochs=15, batch_size=50, learning_rate=3e-3, key=0,
                  progress=False)
    after = vae_jax.evaluate_elbo(m, X, jax.random.key(5))
    assert np.isfinite(after) and after > before + 1.0, (before, after)
    pred, probs = vae_jax.cluster(m, X[150:])
    assert np.mean(pred == yt[150:]) > 0.5
    # predict / predict_proba: the classifier q(c|x) on whole arrays, checked and batched
    np.testing.assert_array_equal(m.predict(X[150:], batch_size=64), pred)
    proba = m.predict_proba(X[150:])
    np.testing.assert_allclose(proba, probs, rtol=1e-6)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-5)
    assert proba.shape == (150, 10) and m.predict(X[:1]).dtype == np.int32
