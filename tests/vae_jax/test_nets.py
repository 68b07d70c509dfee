"""Shapes and wiring of the NNX building blocks."""

import chex
import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from vae_jax import nets


def test_mlp_shapes_and_linear_when_no_hidden():
    mlp = nets.MLP(5, (7, 3), 2, rngs=nnx.Rngs(0))
    chex.assert_shape(mlp(jnp.ones((4, 5))), (4, 2))
    chex.assert_shape(mlp(jnp.ones((6, 4, 5))), (6, 4, 2))
    lin = nets.MLP(3, (), 2, rngs=nnx.Rngs(0))
    a, b = jnp.ones((1, 3)), 2 * jnp.ones((1, 3))
    # affine: f(2a) - f(a) = f(a) - f(0)
    chex.assert_trees_all_close(lin(b) - lin(a), lin(a) - lin(jnp.zeros((1, 3))), atol=1e-6)
    with pytest.raises(AssertionError):
        mlp(jnp.ones((4, 6)))


def test_encoder_outputs_and_conditioning():
    enc = nets.GaussianEncoder(6, (8,), 3, cond_features=2, rngs=nnx.Rngs(1))
    x = jnp.ones((5, 6))
    y = jax.nn.one_hot(jnp.arange(5) % 2, 2)
    mu, log_var = enc(x, y)
    chex.assert_shape([mu, log_var], (5, 3))
    mu2, _ = enc(x, 1.0 - y)
    assert not jnp.allclose(mu, mu2)  # the condition is used
    enc0 = nets.GaussianEncoder(6, (), 3, rngs=nnx.Rngs(1))
    chex.assert_shape(enc0(x)[0], (5, 3))


def test_decoders_same_interface():
    z = jnp.zeros((4, 5, 2))  # (S, B, Z)
    x = jnp.ones((5, 3))
    for dec in (nets.make_decoder("bernoulli", 2, (8,), 3, rngs=nnx.Rngs(0)),
                nets.make_decoder("gaussian", 2, (8,), 3, rngs=nnx.Rngs(0)),
                nets.make_decoder("gaussian", 2, (), 3, learn_variance=False, rngs=nnx.Rngs(0))):
        chex.assert_shape(dec.log_prob(x[None], z), (4, 5))
        chex.assert_shape(dec.mean(z), (4, 5, 3))
        chex.assert_shape(dec.sample(jax.random.key(0), z), (4, 5, 3))
    with pytest.raises(ValueError, match="likelihood"):
        nets.make_decoder("poisson", 2, (), 3, rngs=nnx.Rngs(0))


def test_gaussian_decoder_variance_is_param_only_when_learned():
    learned = nets.GaussianDecoder(2, (), 3, learn_variance=True, rngs=nnx.Rngs(0))
    fixed = nets.GaussianDecoder(2, (), 3, learn_variance=False, fixed_log_var=-1.0,
                                 rngs=nnx.Rngs(0))
    n_learned = sum(x.size for x in jax.tree.leaves(nnx.state(learned, nnx.Param)))
    n_fixed = sum(x.size for x in jax.tree.leaves(nnx.state(fixed, nnx.Param)))
    assert n_learned == n_fixed + 3
    _, lv = fixed(jnp.zeros((1, 2)))
    assert float(lv) == -1.0
