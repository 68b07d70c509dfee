"""Bad input raises a ValueError/TypeError that names the problem, before anything is traced.

Every case here used to fail deep inside the traced loss (a chex AssertionError), end as a
"non-finite loss ... lower the learning rate" message, or pass silently (issue 15). The models
are tiny and no case trains, so the file runs in a few seconds.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import vae_jax
from vae_jax import validation
from vae_jax.gmvae import GMVAE
from vae_jax.m2 import M2

X = vae_jax.data.load_digits().X_train[:40]          # (40, 64) in [0, 1]
KW = dict(epochs=1, batch_size=20, key=0, progress=False)


def _vae(**kw):
    return vae_jax.VAE(64, 2, hidden=(8,), rngs=nnx.Rngs(0), **kw)


def _gmvae(**kw):
    return GMVAE(64, 3, latent_dim=2, hidden=(8,), rngs=nnx.Rngs(0), **kw)


def _m2(**kw):
    return M2(64, 10, latent_dim=2, hidden=(8,), rngs=nnx.Rngs(0), **kw)


def _with_nan(value=np.nan, row=5, col=3):
    bad = X.copy()
    bad[row, col] = value
    return bad


# --------------------------------------------------------------------------- data: every entry


ENTRIES = {
    "train": lambda m, data: vae_jax.train(m, data, **KW),
    "train X_val": lambda m, data: vae_jax.train(m, X, X_val=data, **KW),
    "evaluate": lambda m, data: vae_jax.evaluate(m, data, jax.random.key(0)),
    "evaluate_elbo": lambda m, data: vae_jax.evaluate_elbo(m, data, jax.random.key(0)),
    "cluster": lambda m, data: vae_jax.cluster(m, data),
    "predict": lambda m, data: m.predict(data),
    "predict_proba": lambda m, data: m.predict_proba(data),
}
MODEL_FOR = {"cluster": _gmvae, "predict": _m2, "predict_proba": _gmvae}


@pytest.mark.parametrize("entry", list(ENTRIES))
def test_wrong_feature_count_names_both_widths(entry):
    m = MODEL_FOR.get(entry, _vae)()
    name = "X_val" if "X_val" in entry else "X"
    with pytest.raises(ValueError, match=rf"{name} has 63 features but \w+ expects 64"):
        ENTRIES[entry](m, X[:, :63])


@pytest.mark.parametrize("entry", list(ENTRIES))
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nan_or_inf_names_the_first_bad_row(entry, value):
    m = MODEL_FOR.get(entry, _vae)()
    with pytest.raises(ValueError, match=r"NaN or inf in 1 of 40 rows \(row 5; row 5 has "
                                         r"(NaN|inf) in column 3\)"):
        ENTRIES[entry](m, _with_nan(value))


def test_nan_in_jax_array_is_found_too():
    with pytest.raises(ValueError, match="rows 5, 7"):
        vae_jax.evaluate(_vae(), jnp.asarray(_with_nan(row=7)).at[5, 0].set(jnp.nan),
                         jax.random.key(0))


@pytest.mark.parametrize("entry", ["train", "train X_val", "evaluate", "cluster"])
def test_raw_digit_intensities_rejected_for_bernoulli(entry):
    m = MODEL_FOR.get(entry, _vae)()
    with pytest.raises(ValueError, match=r"values in \[0, 16\].*Bernoulli.*rescale"):
        ENTRIES[entry](m, np.round(X * 16))


def test_gaussian_likelihood_accepts_any_range_but_binarize_needs_unit_interval():
    m = _vae(likelihood="gaussian")
    raw = np.round(X * 16)
    _, hist = vae_jax.train(m, raw, **KW)                      # fine: real-valued likelihood
    assert np.isfinite(hist["loss"][0])
    with pytest.raises(ValueError, match=r"binarize=True .* needs x in \[0, 1\]"):
        vae_jax.train(m, raw, binarize=True, **KW)


@pytest.mark.parametrize("data,exc,match", [
    (np.zeros((0, 64), np.float32), ValueError, "empty"),
    (X[0], ValueError, r"2-D \(N, D\).*reshape\(1, -1\)"),
    (X.reshape(40, 8, 8), ValueError, "flatten images"),
    (np.full((40, 64), "a"), TypeError, "numeric"),
    (X.astype(np.complex64), TypeError, "real-valued"),
    ([[0.1] * 64, [0.2] * 3], ValueError, "could not be converted"),
])
def test_shape_and_type_errors(data, exc, match):
    with pytest.raises(exc, match=match):
        vae_jax.train(_vae(), data, **KW)


# ------------------------------------------------------------------------------------- labels


@pytest.mark.parametrize("labels,match", [
    (np.r_[np.arange(10), np.full(30, -1)] + np.r_[np.zeros(9), 1, np.zeros(30)],
     r"y\[9\] = 10 is out of range for a model with 10 classes"),
    (np.r_[np.arange(1, 11), np.full(30, -1)], r"1-based: pass y - 1"),
    (np.r_[-2, np.zeros(39)], r"y\[0\] = -2: only -1 marks an unlabelled sample"),
    (np.r_[3.7, np.zeros(39)], r"whole class indices, but y\[0\] = 3.7"),
    (np.r_[np.nan, np.zeros(39)], r"NaN or inf \(first at index 0\)"),
    (np.eye(10)[np.arange(40) % 10], r"one-hot.*argmax\(axis=1\)"),
    (np.zeros(39), "39 labels for 40 samples"),
])
def test_bad_labels(labels, match):
    with pytest.raises(ValueError, match=match):
        vae_jax.train(_m2(), X, y=labels, **KW)


def test_boolean_labels_and_labels_for_unsupervised_models():
    with pytest.raises(TypeError, match="boolean"):
        vae_jax.train(_m2(), X, y=np.zeros(40, bool), **KW)
    for m in (_vae(), _gmvae()):
        with pytest.raises(ValueError, match="unsupervised and ignores labels"):
            vae_jax.train(m, X, y=np.zeros(40, int), **KW)


def test_valid_labels_pass_through():
    y = validation.check_labels(np.r_[0.0, 9.0, -1.0], 3, n_classes=10)
    assert y.dtype == jnp.int32 and y.tolist() == [0, 9, -1]


# ----------------------------------------------------------------------- models, arguments


def test_cluster_generate_and_grid_need_a_model_with_clusters(tmp_path):
    vae = _vae()
    with pytest.raises(TypeError, match="VAE has none.*gmm_jax.fit"):
        vae_jax.cluster(vae, X)
    with pytest.raises(TypeError, match="GMVAE or M2"):
        vae_jax.generate(vae, jax.random.key(0), 0, 2)
    with pytest.raises(TypeError, match="GMVAE or M2"):
        vae_jax.cluster_grid(vae, jax.random.key(0), tmp_path / "g.png", image_shape=(8, 8))


def test_generate_arguments():
    m = _gmvae()
    with pytest.raises(ValueError, match=r"component must be in \[0, 3\)"):
        vae_jax.generate(m, jax.random.key(0), 3, 2)
    with pytest.raises(TypeError, match="component must be an integer"):
        vae_jax.generate(m, jax.random.key(0), 1.5, 2)
    with pytest.raises(ValueError, match="n must be >= 1"):
        vae_jax.generate(m, jax.random.key(0), 0, 0)
    with pytest.raises(TypeError, match="key must be"):
        vae_jax.generate(m, "seed", 0, 2)
    with pytest.raises(ValueError, match="image_shape"):
        vae_jax.cluster_grid(m, jax.random.key(0), "unused.png", image_shape=(7, 7))


@pytest.mark.parametrize("build,exc,match", [
    (lambda: vae_jax.VAE(64.5, 2, rngs=nnx.Rngs(0)), TypeError, "in_features must be an int"),
    (lambda: vae_jax.VAE(64, 0, rngs=nnx.Rngs(0)), ValueError, "latent_dim must be >= 1"),
    (lambda: vae_jax.VAE(64, 2, hidden=128, rngs=nnx.Rngs(0)), TypeError, r"e\.g\. \(128,\)"),
    (lambda: vae_jax.VAE(64, 2, hidden=(8, -1), rngs=nnx.Rngs(0)), ValueError,
     r"hidden\[1\] must be >= 1"),
    (lambda: vae_jax.VAE(64, 2, likelihood="poisson", rngs=nnx.Rngs(0)), ValueError,
     "likelihood must be one of"),
    (lambda: vae_jax.VAE(64, 2, activation="swish2", rngs=nnx.Rngs(0)), ValueError,
     "activation must be one of"),
    (lambda: vae_jax.VAE(64, 2, rngs=0), TypeError, r"nnx\.Rngs"),
    (lambda: GMVAE(64, 1, rngs=nnx.Rngs(0)), ValueError, "n_components must be >= 2"),
    (lambda: GMVAE(64, 3, form="vade", rngs=nnx.Rngs(0)), ValueError, "form must be one of"),
    (lambda: GMVAE(64, 3, form="paper", prior_covariance="full", rngs=nnx.Rngs(0)),
     ValueError, "needs form='marginal'"),
    (lambda: GMVAE(64, 3, free_bits=-1.0, rngs=nnx.Rngs(0)), ValueError, "free_bits must be"),
    (lambda: GMVAE(64, 3, beta=float("nan"), rngs=nnx.Rngs(0)), ValueError, "finite"),
    (lambda: M2(64, 10, alpha=-0.1, rngs=nnx.Rngs(0)), ValueError, "alpha must be >= 0"),
    (lambda: M2(64, 10, n_samples=0, rngs=nnx.Rngs(0)), ValueError, "n_samples must be >= 1"),
])
def test_constructor_arguments(build, exc, match):
    with pytest.raises(exc, match=match):
        build()


@pytest.mark.parametrize("kw,exc,match", [
    (dict(epochs=-1), ValueError, "epochs must be >= 0"),
    (dict(batch_size=0), ValueError, "batch_size must be >= 1"),
    (dict(learning_rate=-1e-3), ValueError, "learning_rate must be > 0"),
    (dict(learning_rate=float("nan")), ValueError, "learning_rate must be finite"),
    (dict(optimizer="adam"), TypeError, "optax.GradientTransformation"),
    (dict(key="abc"), TypeError, "key must be"),
    (dict(resume="yes"), ValueError, "resume must be"),
    (dict(resume=True), ValueError, "resume needs checkpoint_dir"),
])
def test_train_arguments(kw, exc, match):
    with pytest.raises(exc, match=match):
        vae_jax.train(_vae(), X, **dict(KW, **kw))


def test_checks_are_static_under_tracing():
    """Under a caller's jit only shapes are checked; values cannot be (they are tracers)."""
    m = _vae()

    @jax.jit
    def f(x):
        return validation.check_model_data(m, x)

    assert f(jnp.asarray(np.round(X * 16))).shape == (40, 64)   # range unknowable: passes
    with pytest.raises(ValueError, match="63 features"):
        f(jnp.asarray(X[:, :63]))


def test_optax_schedule_is_accepted_as_learning_rate():
    _, hist = vae_jax.train(_vae(), X, **dict(KW, learning_rate=optax.constant_schedule(1e-3)))
    assert len(hist["loss"]) == 1
