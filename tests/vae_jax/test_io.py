"""vae_jax.save / vae_jax.load: round trips of every model class (and of the model inside a
training checkpoint) without an optimizer or pickle, and clear errors for bad files."""

import json
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import vae_jax
from vae_jax import io
from vae_jax.gmvae import GMVAE
from vae_jax.m2 import M2

D = 6
Y = jnp.asarray(np.random.default_rng(0).uniform(0.05, 0.95, (5, D)), jnp.float32)

MODELS = {
    "vae": lambda: vae_jax.VAE(D, 2, hidden=(8, 4), activation="tanh", rngs=nnx.Rngs(7)),
    "vae_gaussian": lambda: vae_jax.VAE(D, 2, hidden=(8,), likelihood="gaussian",
                                        learn_variance=False, fixed_log_var=-1.5,
                                        rngs=nnx.Rngs(7)),
    "vae_linear": lambda: vae_jax.VAE(D, 2, hidden=(), likelihood="gaussian", rngs=nnx.Rngs(7)),
    "m2": lambda: M2(D, 3, latent_dim=2, hidden=(8,), alpha=2.5, n_samples=2,
                     entropy_weight=0.5, balance=1.0, rngs=nnx.Rngs(7)),
    "gmvae_marginal": lambda: GMVAE(D, 3, latent_dim=2, hidden=(8,), free_bits=0.5,
                                    prior_covariance="diag",
                                    beta=2.0, balance=0.3, rngs=nnx.Rngs(7)),
    "gmvae_full": lambda: GMVAE(D, 3, latent_dim=2, hidden=(8,), prior_covariance="full",
                                rngs=nnx.Rngs(7)),
    "gmvae_network": lambda: GMVAE(D, 3, latent_dim=2, hidden=(8,), q_c="network",
                                   conditional_encoder=True, rngs=nnx.Rngs(7)),
    "gmvae_paper": lambda: GMVAE(D, 3, latent_dim=2, w_dim=3, hidden=(8,), prior_hidden=(4,),
                                 form="paper", n_samples=2, rngs=nnx.Rngs(7)),
}


def _perturb(model, seed=1):
    """Moves every parameter away from any fresh initialisation (so a load that forgot to
    write the weights cannot pass)."""
    state = nnx.state(model, nnx.Param)
    leaves, treedef = jax.tree.flatten(state)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    new = [x + 0.3 * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys,
                                                                              strict=True)]
    nnx.update(model, jax.tree.unflatten(treedef, new))
    return model


def _assert_same_model(a, b):
    assert type(a) is type(b)
    assert a.get_config() == b.get_config()
    sa, sb = nnx.state(a), nnx.state(b)
    assert jax.tree.structure(sa) == jax.tree.structure(sb)
    for x, y in zip(jax.tree.leaves(sa), jax.tree.leaves(sb), strict=True):
        assert x.dtype == y.dtype and bool(jnp.array_equal(x, y))


@pytest.mark.parametrize("name", list(MODELS))
def test_round_trip_every_model_class(name, tmp_path):
    model = _perturb(MODELS[name]())
    path = vae_jax.save(model, tmp_path / "sub" / "model.npz")
    loaded = vae_jax.load(path)
    _assert_same_model(model, loaded)
    with np.load(path, allow_pickle=False) as z:           # no pickle anywhere
        meta = json.loads(str(z[io.META_KEY]))
    assert meta["model_class"] == type(model).__name__ and meta["version"] == io.VERSION


def test_loaded_model_computes_the_same_function(tmp_path):
    """Same outputs, the activation (tanh here, not the default relu) included."""
    vae = _perturb(MODELS["vae"]())
    back = vae_jax.load(vae_jax.save(vae, tmp_path / "vae.npz"))
    np.testing.assert_array_equal(np.asarray(back.reconstruct(Y)), np.asarray(vae.reconstruct(Y)))
    g = _perturb(MODELS["gmvae_full"]())
    back = vae_jax.load(vae_jax.save(g, tmp_path / "g.npz"))
    np.testing.assert_array_equal(back.predict_proba(Y), g.predict_proba(Y))


def test_settings_changed_after_construction_and_gmvae_flags_are_kept(tmp_path):
    m2 = _perturb(MODELS["m2"]())
    m2.alpha = 7.0
    assert vae_jax.load(vae_jax.save(m2, tmp_path / "m2.npz")).alpha == 7.0
    g = MODELS["gmvae_marginal"]()
    g.pretraining, g.pretrain_noise = True, 0.2
    back = vae_jax.load(vae_jax.save(g, tmp_path / "g.npz"))
    assert back.pretraining is True and back.pretrain_noise == 0.2


def test_load_the_model_of_a_training_checkpoint_without_an_optimizer(tmp_path):
    X = vae_jax.data.load_digits().X_train[:64]
    m = GMVAE(64, 3, latent_dim=2, hidden=(8,), rngs=nnx.Rngs(0))
    vae_jax.train(m, X, epochs=1, batch_size=32, key=0, progress=False, checkpoint_dir=tmp_path)
    for where in (tmp_path / "checkpoint.npz", tmp_path):
        loaded = vae_jax.load(where)
        for x, y in zip(jax.tree.leaves(nnx.state(m)), jax.tree.leaves(nnx.state(loaded)),
                        strict=True):
            assert bool(jnp.array_equal(x, y))


def test_save_refuses_what_it_cannot_rebuild(tmp_path):
    with pytest.raises(TypeError, match="custom activation"):
        vae_jax.save(vae_jax.VAE(D, 2, activation=lambda x: x * 2, rngs=nnx.Rngs(0)),
                     tmp_path / "a.npz")
    with pytest.raises(TypeError, match="supports"):
        vae_jax.save(nnx.Linear(2, 2, rngs=nnx.Rngs(0)), tmp_path / "b.npz")


def _saved(tmp_path):
    return vae_jax.save(MODELS["vae"](), tmp_path / "ok.npz")


def test_missing_corrupt_and_pickled_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no vae_jax model file"):
        vae_jax.load(tmp_path / "missing.npz")
    good = _saved(tmp_path).read_bytes()
    (tmp_path / "trunc.npz").write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        vae_jax.load(tmp_path / "trunc.npz")
    (tmp_path / "noise.npz").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(ValueError, match="not a valid|corrupt"):
        vae_jax.load(tmp_path / "noise.npz")
    np.savez(tmp_path / "pickled.npz", obj=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="pickled Python objects"):
        vae_jax.load(tmp_path / "pickled.npz")
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="not a vae_jax model file or training checkpoint"):
        vae_jax.load(tmp_path / "other.npz")
    with pytest.raises(ValueError, match="is a directory"):
        vae_jax.load(tmp_path)


def _rewrite_meta(src, dst, edit):
    with np.load(src, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays[io.META_KEY]))
    edit(meta, arrays)
    arrays[io.META_KEY] = np.array(json.dumps(meta))
    np.savez(dst, **arrays)


def test_tampered_descriptions(tmp_path):
    src = _saved(tmp_path)
    _rewrite_meta(src, tmp_path / "v.npz", lambda m, a: m.update(version=io.VERSION + 1))
    with pytest.raises(ValueError, match="newer vae_jax"):
        vae_jax.load(tmp_path / "v.npz")
    _rewrite_meta(src, tmp_path / "c.npz", lambda m, a: m.update(model_class="Transformer"))
    with pytest.raises(ValueError, match="unknown class 'Transformer'"):
        vae_jax.load(tmp_path / "c.npz")
    _rewrite_meta(src, tmp_path / "h.npz", lambda m, a: m["config"].update(hidden=[9, 4]))
    with pytest.raises(ValueError, match=r"float32, the model built from the stored arguments has"):
        vae_jax.load(tmp_path / "h.npz")

    def drop_one(meta, arrays):
        arrays.pop(next(k for k in arrays if k != io.META_KEY))

    _rewrite_meta(src, tmp_path / "d.npz", drop_one)
    with pytest.raises(ValueError, match="missing arrays"):
        vae_jax.load(tmp_path / "d.npz")
    with zipfile.ZipFile(tmp_path / "j.npz", "w") as zf:
        zf.writestr(io.META_KEY + ".npy", b"")
    with pytest.raises(ValueError, match="corrupt|not a valid"):
        vae_jax.load(tmp_path / "j.npz")


def test_model_file_is_not_a_checkpoint(tmp_path):
    m = MODELS["vae"]()
    like = nnx.state((m, nnx.Optimizer(m, __import__("optax").adam(1e-3), wrt=nnx.Param)))
    with pytest.raises(ValueError, match="model file written by vae_jax.save"):
        vae_jax.load_checkpoint(_saved(tmp_path), like)
