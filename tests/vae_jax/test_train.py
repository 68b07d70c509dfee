"""Training loop: a step lowers the loss, determinism, resume equality, NaN stop, protocol."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import vae_jax
from vae_jax.train import train_step

X = vae_jax.data.load_digits().X_train[:256]
KW = dict(batch_size=64, learning_rate=1e-2, progress=False)


def _model(seed=0):
    return vae_jax.VAE(64, 2, hidden=(16,), rngs=nnx.Rngs(seed))


def _params(m):
    return jax.tree.leaves(nnx.state(m, nnx.Param))


def _same(a, b):
    return all(bool(jnp.array_equal(x, y)) for x, y in zip(_params(a), _params(b), strict=True))


def test_train_step_lowers_the_loss():
    m = _model()
    opt = nnx.Optimizer(m, optax.adam(1e-2), wrt=nnx.Param)
    graphdef, state = nnx.split((m, opt))
    x, key = jnp.asarray(X[:64]), jax.random.key(0)
    losses = []
    for _ in range(5):  # same batch and key: a deterministic objective
        state, loss, metrics = train_step(graphdef, state, x, None, key, False)
        chex.assert_shape(loss, ())
        losses.append(float(loss))
    assert losses[-1] < losses[0], losses
    assert set(metrics) >= {"recon", "kl"}


def test_train_history_and_same_key_same_params():
    m1, h1 = vae_jax.train(_model(), X, epochs=3, key=jax.random.key(1), X_val=X[:50], **KW)
    m2, h2 = vae_jax.train(_model(), X, epochs=3, key=jax.random.key(1), X_val=X[:50], **KW)
    m3, _ = vae_jax.train(_model(), X, epochs=3, key=jax.random.key(2), **KW)
    assert _same(m1, m2) and not _same(m1, m3)
    assert h1["loss"] == h2["loss"] and h1["val_elbo"] == h2["val_elbo"]
    assert len(h1["loss"]) == 3 and {"recon", "kl", "val_elbo", "steps_per_s"} <= set(h1)
    assert h1["loss"][-1] < h1["loss"][0]
    assert h1["val_elbo"][-1] > h1["val_elbo"][0]


def test_resume_equals_uninterrupted(tmp_path):
    kw = dict(KW, binarize=True, key=jax.random.key(3), X_val=X[:50])
    full, hf = vae_jax.train(_model(), X, epochs=4, **kw)
    _, hp = vae_jax.train(_model(), X, epochs=2, checkpoint_dir=tmp_path, checkpoint_every=1,
                          **kw)
    resumed, hr = vae_jax.train(_model(seed=9), X, epochs=4, checkpoint_dir=tmp_path,
                                checkpoint_every=1, resume=True, **kw)
    assert _same(full, resumed)
    assert hr["loss"] == hf["loss"] and hr["val_elbo"] == hf["val_elbo"]
    # the checkpoint holds no pickled objects
    with np.load(tmp_path / "checkpoint.npz", allow_pickle=False) as z:
        assert int(z["_epoch"]) == 4
    with pytest.raises(ValueError, match="model array .* the model differs"):
        vae_jax.train(vae_jax.VAE(64, 3, hidden=(16,), rngs=nnx.Rngs(0)), X, epochs=5,
                      checkpoint_dir=tmp_path, resume=True, **kw)
    with pytest.raises(ValueError, match="written for a different model: 10 model arrays vs 14"):
        vae_jax.train(vae_jax.VAE(64, 2, hidden=(16, 16), rngs=nnx.Rngs(0)), X, epochs=5,
                      checkpoint_dir=tmp_path, resume=True, **kw)
    with pytest.raises(ValueError, match="written for"):
        vae_jax.train(_model(), X, epochs=5, checkpoint_dir=tmp_path, resume=True,
                      **dict(kw, batch_size=32))
    # the same model with another optimizer is reported as an optimizer mismatch
    with pytest.raises(ValueError, match="state of a different optimizer.*optimizer="):
        vae_jax.train(_model(), X, epochs=5, checkpoint_dir=tmp_path, resume=True,
                      **dict(kw, optimizer=optax.sgd(1e-2)))
    with pytest.raises(ValueError, match="different optimizer"):
        vae_jax.train(_model(), X, epochs=5, checkpoint_dir=tmp_path, resume=True,
                      **dict(kw, learning_rate=optax.constant_schedule(1e-2)))


def test_resume_needs_an_existing_checkpoint_unless_if_present(tmp_path):
    missing = tmp_path / "runs" / "typo"
    with pytest.raises(FileNotFoundError, match="does not exist.*'if_present'"):
        vae_jax.train(_model(), X, epochs=1, checkpoint_dir=missing, resume=True, key=0, **KW)
    missing.mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="has no checkpoint.npz"):
        vae_jax.train(_model(), X, epochs=1, checkpoint_dir=missing, resume=True, key=0, **KW)
    _, h = vae_jax.train(_model(), X, epochs=1, checkpoint_dir=missing, resume="if_present",
                         key=0, **KW)
    assert len(h["loss"]) == 1 and (missing / "checkpoint.npz").is_file()
    _, h2 = vae_jax.train(_model(), X, epochs=2, checkpoint_dir=missing, resume="if_present",
                          key=0, **KW)
    assert h2["loss"][0] == h["loss"][0] and len(h2["loss"]) == 2   # resumed, not restarted
    (missing / "checkpoint.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ValueError, match="corrupt or truncated"):
        vae_jax.train(_model(), X, epochs=3, checkpoint_dir=missing, resume=True, key=0, **KW)


def _nan_after(n_steps):
    """An optax transform that turns the updates into NaN from step ``n_steps`` on."""
    base = optax.adam(1e-2)

    def init(params):
        return (base.init(params), jnp.zeros((), jnp.int32))

    def update(g, state, params=None):
        u, s = base.update(g, state[0], params)
        bad = state[1] >= n_steps
        u = jax.tree.map(lambda v: jnp.where(bad, jnp.nan, v), u)
        return u, (s, state[1] + 1)

    return optax.GradientTransformation(init, update)


def test_nan_stops_training_and_keeps_last_good_checkpoint(tmp_path):
    steps = X.shape[0] // KW["batch_size"]
    m = _model()
    with pytest.raises(FloatingPointError, match="non-finite") as info:
        vae_jax.train(m, X, epochs=5, key=jax.random.key(4), optimizer=_nan_after(2 * steps),
                      checkpoint_dir=tmp_path, checkpoint_every=1, **KW)
    err = info.value
    assert isinstance(err, vae_jax.TrainingDivergedError) and err.epoch == 2
    assert len(err.history["loss"]) == 2 and np.all(np.isfinite(err.history["loss"]))
    assert err.checkpoint == tmp_path / "checkpoint.npz"
    like = nnx.state((m, nnx.Optimizer(m, _nan_after(0), wrt=nnx.Param)))
    state, epoch, _, hist, _ = vae_jax.load_checkpoint(tmp_path / "checkpoint.npz", like)
    assert epoch == 2 and len(hist["loss"]) == 2
    assert all(bool(jnp.all(jnp.isfinite(p))) for p in _params(m))
    saved, _ = nnx.merge(nnx.graphdef((m, nnx.Optimizer(m, _nan_after(0), wrt=nnx.Param))), state)
    assert _same(m, saved)  # the model was left at the last good epoch


class _NanElbo(nnx.Module):
    """A protocol model whose training loss is finite and whose ELBO is NaN."""

    def __init__(self):
        self.w = nnx.Param(jnp.ones(2))

    def loss(self, x, key, y=None):
        return jnp.sum(self.w[...] ** 2) + 0.0 * jnp.sum(x), {}

    def elbo(self, x, key):
        return jnp.full(x.shape[0], jnp.nan)


def test_non_finite_validation_elbo_is_an_error_not_a_silent_nan():
    with pytest.raises(vae_jax.TrainingDivergedError, match="validation ELBO") as info:
        vae_jax.train(_NanElbo(), X, X_val=X[:10], epochs=2, key=0, **KW)
    assert info.value.history == {} and info.value.epoch == 0
    with pytest.raises(FloatingPointError, match="not finite for 10 of 10 samples"):
        vae_jax.evaluate_elbo(_NanElbo(), X[:10], jax.random.key(0))


class _LabelProbe(nnx.Module):
    """Minimal protocol model: counts labelled samples it is given."""

    def __init__(self):
        self.w = nnx.Param(jnp.ones(2))

    def loss(self, x, key, y=None):
        loss = jnp.sum(self.w[...] ** 2) + 0.0 * jnp.sum(x)
        n_lab = jnp.sum(y >= 0) if y is not None else jnp.array(-1)
        return loss, {"n_labelled": n_lab}

    def elbo(self, x, key):
        return jnp.zeros(x.shape[0])


def test_protocol_labels_schedule_and_argument_errors():
    y = np.where(np.arange(256) % 4 == 0, 1, -1)
    sched = optax.adam(optax.exponential_decay(0.1, 4, 0.5))
    m, h = vae_jax.train(_LabelProbe(), X, y=y, epochs=2, key=0, optimizer=sched, **KW)
    assert h["n_labelled"] == [16.0, 16.0]
    assert h["loss"][1] < h["loss"][0]
    with pytest.raises(ValueError, match="labels"):
        vae_jax.train(_LabelProbe(), X, y=y[:10], epochs=1, key=0, **KW)
    with pytest.raises(ValueError, match="X must be"):
        vae_jax.train(_LabelProbe(), X[0], epochs=1, key=0, **KW)
    assert vae_jax.evaluate(_model(), X[:30], jax.random.key(0), batch_size=8).shape == (30,)


def test_evaluate_with_a_padded_last_batch_equals_one_unpadded_batch():
    """evaluate pads the last batch (with copies of row 0) and drops the padding: 20 rows in
    batches of 7 (last batch 6 rows + 1 pad) give exactly what one batch of 20 gives, for
    deterministic per-row methods, and cluster() agrees across batch sizes."""
    m = vae_jax.GMVAE(64, 3, latent_dim=2, hidden=(16,), rngs=nnx.Rngs(0))
    Xs = X[:20]
    for method in ("latent_mean", "cluster_probs"):
        whole = np.asarray(vae_jax.evaluate(m, Xs, 0, method=method, batch_size=20))
        padded = np.asarray(vae_jax.evaluate(m, Xs, 0, method=method, batch_size=7))
        assert padded.shape == whole.shape
        np.testing.assert_allclose(padded, whole, rtol=1e-5, atol=1e-6)
    labels, probs = vae_jax.cluster(m, Xs, batch_size=7)
    labels_1, probs_1 = vae_jax.cluster(m, Xs, batch_size=1000)
    np.testing.assert_array_equal(labels, labels_1)
    np.testing.assert_allclose(probs, probs_1, rtol=1e-5, atol=1e-6)
    # the per-row ELBO of a padded evaluation: one finite value per real row
    elbo = np.asarray(vae_jax.evaluate(m, Xs, 0, method="elbo", batch_size=7))
    assert elbo.shape == (20,) and np.isfinite(elbo).all()
