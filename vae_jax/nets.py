"""MLP building blocks for the deep mixture models (Flax NNX, explicit ``rngs``).

Every block is an ``nnx.Module`` whose parameters are ``nnx.Param``; nothing holds hidden RNG
state, so a model is a pure function of its parameters and of the ``key`` passed to its methods.

Blocks:
    * :class:`MLP`: a stack of ``nnx.Linear`` layers with an activation between them.
    * :class:`GaussianEncoder`: ``x (and optional conditioning) -> (mu, log_var)`` of a diagonal
      Gaussian ``q(z | x) = N(mu, diag exp(log_var))``.
    * :class:`BernoulliDecoder`: ``z -> logits`` of independent Bernoulli pixels.
    * :class:`GaussianDecoder`: ``z -> (mean, log_var)`` with a learned (per feature) or a fixed
      observation variance.
    * :func:`make_decoder`: picks one of the two by name.

Decoders expose the same three methods, so a model does not care which one it holds:
``log_prob(x, z) -> (...,)`` (summed over features), ``mean(z) -> (..., D)`` and
``sample(key, z) -> (..., D)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import chex
import jax
import jax.numpy as jnp
from flax import nnx

from vae_jax import losses

Array = jax.Array


ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "relu": nnx.relu,
    "elu": nnx.elu,
    "gelu": nnx.gelu,
    "silu": nnx.silu,
    "leaky_relu": nnx.leaky_relu,
    "softplus": nnx.softplus,
    "tanh": jnp.tanh,
    "sigmoid": nnx.sigmoid,
}
"""Hidden non-linearities by name (names are what :func:`vae_jax.save` stores)."""


def resolve_activation(activation) -> tuple[str | None, Callable[[Array], Array]]:
    """``(name, function)`` for an activation given by name or as a callable.

    A callable that is one of :data:`ACTIVATIONS` gets its name; any other callable gets
    ``None`` (the model works, but :func:`vae_jax.save` cannot store it).

    Raises:
        ValueError: an unknown name.
        TypeError: neither a string nor a callable.

    Example:
        >>> resolve_activation("tanh")[0], resolve_activation(nnx.relu)[0]
        ('tanh', 'relu')
    """
    if isinstance(activation, str):
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {tuple(ACTIVATIONS)} or a callable, "
                             f"got {activation!r}")
        return activation, ACTIVATIONS[activation]
    if not callable(activation):
        raise TypeError(f"activation must be a name or a callable, got {activation!r}")
    for name, fn in ACTIVATIONS.items():
        if fn is activation:
            return name, fn
    return None, activation


def _concat(x: Array, cond: Array | None) -> Array:
    """Concatenates an optional conditioning input (e.g. a one-hot label) on the feature axis."""
    if cond is None:
        return x
    cond = jnp.broadcast_to(cond, x.shape[:-1] + cond.shape[-1:]).astype(x.dtype)
    return jnp.concatenate([x, cond], axis=-1)


class MLP(nnx.Module):
    """Multi-layer perceptron ``in_features -> hidden... -> out_features``.

    The activation is applied after every hidden layer, never after the output layer. With
    ``hidden=()`` the MLP is a single affine map.

    Args:
        in_features: input width D_in.
        hidden: widths of the hidden layers.
        out_features: output width D_out.
        activation: elementwise non-linearity (default ``nnx.relu``).
        rngs: ``nnx.Rngs`` used only to initialise the weights.

    Example:
        >>> from flax import nnx
        >>> import jax.numpy as jnp
        >>> mlp = MLP(4, (8,), 2, rngs=nnx.Rngs(0))
        >>> mlp(jnp.zeros((3, 4))).shape
        (3, 2)
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int],
        out_features: int,
        *,
        activation: Callable[[Array], Array] = nnx.relu,
        rngs: nnx.Rngs,
    ):
        widths = [int(in_features), *[int(h) for h in hidden], int(out_features)]
        self.layers = nnx.List(
            [nnx.Linear(a, b, rngs=rngs) for a, b in zip(widths[:-1], widths[1:], strict=True)]
        )
        self.activation = activation
        self.in_features = int(in_features)
        self.out_features = int(out_features)

    def __call__(self, x: Array) -> Array:
        """Maps (..., D_in) to (..., D_out)."""
        chex.assert_axis_dimension(x, -1, self.in_features)
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = self.activation(x)
        return x


class GaussianEncoder(nnx.Module):
    """Amortised diagonal-Gaussian posterior ``q(z | x, c) = N(mu, diag exp(log_var))``.

    A shared MLP trunk is followed by two affine heads, one for the mean and one for the
    log-variance (predicting the log keeps the variance positive without a constraint).

    Args:
        in_features: data width D.
        hidden: hidden widths of the trunk; ``()`` makes the encoder affine in ``x``.
        latent_dim: latent width Z.
        cond_features: width C of an optional conditioning input concatenated to ``x``
            (e.g. a one-hot label for M2); 0 for none.
        activation: trunk non-linearity.
        rngs: initialisation RNGs.

    Example:
        >>> from flax import nnx
        >>> import jax.numpy as jnp
        >>> enc = GaussianEncoder(6, (16,), 2, rngs=nnx.Rngs(0))
        >>> mu, log_var = enc(jnp.zeros((5, 6)))
        >>> mu.shape, log_var.shape
        ((5, 2), (5, 2))
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int],
        latent_dim: int,
        *,
        cond_features: int = 0,
        activation: Callable[[Array], Array] = nnx.relu,
        rngs: nnx.Rngs,
    ):
        d_in = int(in_features) + int(cond_features)
        self.trunk = MLP(d_in, tuple(hidden)[:-1], hidden[-1], activation=activation,
                         rngs=rngs) if len(hidden) else None
        head_in = int(hidden[-1]) if len(hidden) else d_in
        self.mean_head = nnx.Linear(head_in, latent_dim, rngs=rngs)
        self.log_var_head = nnx.Linear(head_in, latent_dim, rngs=rngs)
        self.activation = activation
        self.in_features = int(in_features)
        self.cond_features = int(cond_features)
        self.latent_dim = int(latent_dim)

    def __call__(self, x: Array, cond: Array | None = None) -> tuple[Array, Array]:
        """Encodes a batch.

        Args:
            x: (..., D) data.
            cond: optional (..., C) conditioning input (broadcast against ``x``'s batch axes).

        Returns:
            ``(mu, log_var)``, each (..., Z).
        """
        chex.assert_axis_dimension(x, -1, self.in_features)
        h = _concat(x, cond)
        chex.assert_axis_dimension(h, -1, self.in_features + self.cond_features)
        if self.trunk is not None:
            h = self.activation(self.trunk(h))
        return self.mean_head(h), self.log_var_head(h)


class BernoulliDecoder(nnx.Module):
    """``p(x | z) = prod_d Bernoulli(x_d; sigmoid(logits_d(z)))``.

    Args:
        latent_dim: latent width Z (plus ``cond_features`` if conditioned).
        hidden: hidden widths of the MLP.
        out_features: data width D.
        cond_features: width of an optional conditioning input concatenated to ``z``.
        activation: MLP non-linearity.
        rngs: initialisation RNGs.

    Example:
        >>> from flax import nnx
        >>> import jax.numpy as jnp
        >>> dec = BernoulliDecoder(2, (16,), 6, rngs=nnx.Rngs(0))
        >>> dec.log_prob(jnp.ones((5, 6)), jnp.zeros((5, 2))).shape
        (5,)
    """

    likelihood = "bernoulli"

    def __init__(
        self,
        latent_dim: int,
        hidden: Sequence[int],
        out_features: int,
        *,
        cond_features: int = 0,
        activation: Callable[[Array], Array] = nnx.relu,
        rngs: nnx.Rngs,
    ):
        self.net = MLP(int(latent_dim) + int(cond_features), hidden, out_features,
                       activation=activation, rngs=rngs)
        self.out_features = int(out_features)

    def __call__(self, z: Array, cond: Array | None = None) -> Array:
        """(..., Z) latents to (..., D) logits."""
        return self.net(_concat(z, cond))

    def log_prob(self, x: Array, z: Array, cond: Array | None = None) -> Array:
        """``log p(x | z)`` summed over features.

        Args:
            x: (..., D) data in [0, 1] (binary, or grey levels read as probabilities).
            z: (..., Z) latents with the same leading axes as ``x`` (or broadcastable).
            cond: optional conditioning input.

        Returns:
            (...,) log-likelihoods.
        """
        return losses.bernoulli_log_likelihood(x, self(z, cond))

    def mean(self, z: Array, cond: Array | None = None) -> Array:
        """(..., D) pixel probabilities ``sigmoid(logits)``."""
        return jax.nn.sigmoid(self(z, cond))

    def sample(self, key: Array, z: Array, cond: Array | None = None) -> Array:
        """(..., D) binary samples of ``x`` given ``z``."""
        return jax.random.bernoulli(key, self.mean(z, cond)).astype(z.dtype)


class GaussianDecoder(nnx.Module):
    """``p(x | z) = N(x; m(z), diag sigma^2)`` with a learned or a fixed variance.

    Args:
        latent_dim: latent width Z.
        hidden: hidden widths of the MLP for the mean.
        out_features: data width D.
        learn_variance: if True, ``log sigma^2`` is a learned (D,) parameter (one per feature,
            shared over samples); if False, it is the constant ``fixed_log_var``.
        fixed_log_var: log-variance used when ``learn_variance`` is False, and the initial
            value when it is True.
        cond_features: width of an optional conditioning input concatenated to ``z``.
        activation: MLP non-linearity.
        rngs: initialisation RNGs.

    Example:
        >>> from flax import nnx
        >>> import jax.numpy as jnp
        >>> dec = GaussianDecoder(2, (), 3, learn_variance=False, rngs=nnx.Rngs(0))
        >>> dec.log_prob(jnp.zeros((4, 3)), jnp.zeros((4, 2))).shape
        (4,)
    """

    likelihood = "gaussian"

    def __init__(
        self,
        latent_dim: int,
        hidden: Sequence[int],
        out_features: int,
        *,
        learn_variance: bool = True,
        fixed_log_var: float = 0.0,
        cond_features: int = 0,
        activation: Callable[[Array], Array] = nnx.relu,
        rngs: nnx.Rngs,
    ):
        self.net = MLP(int(latent_dim) + int(cond_features), hidden, out_features,
                       activation=activation, rngs=rngs)
        self.learn_variance = bool(learn_variance)
        init = jnp.full((int(out_features),), fixed_log_var, jnp.float32)
        if self.learn_variance:
            self.log_var = nnx.Param(init)
        else:
            self.fixed_log_var = float(fixed_log_var)
        self.out_features = int(out_features)

    def _log_var(self) -> Array:
        if self.learn_variance:
            return self.log_var[...]
        return jnp.asarray(self.fixed_log_var, jnp.float32)

    def __call__(self, z: Array, cond: Array | None = None) -> tuple[Array, Array]:
        """(..., Z) latents to ``(mean (..., D), log_var (D,) or ())``."""
        return self.net(_concat(z, cond)), self._log_var()

    def log_prob(self, x: Array, z: Array, cond: Array | None = None) -> Array:
        """(...,) ``log N(x; m(z), diag sigma^2)`` summed over features."""
        mean, log_var = self(z, cond)
        return losses.gaussian_log_likelihood(x, mean, log_var)

    def mean(self, z: Array, cond: Array | None = None) -> Array:
        """(..., D) decoder mean ``m(z)``."""
        return self(z, cond)[0]

    def sample(self, key: Array, z: Array, cond: Array | None = None) -> Array:
        """(..., D) samples ``m(z) + sigma * eps``."""
        mean, log_var = self(z, cond)
        return losses.reparameterize(key, mean, jnp.broadcast_to(log_var, mean.shape))


def make_decoder(
    likelihood: str,
    latent_dim: int,
    hidden: Sequence[int],
    out_features: int,
    *,
    learn_variance: bool = True,
    fixed_log_var: float = 0.0,
    cond_features: int = 0,
    activation: Callable[[Array], Array] = nnx.relu,
    rngs: nnx.Rngs,
) -> BernoulliDecoder | GaussianDecoder:
    """Builds a decoder by likelihood name, ``"bernoulli"`` or ``"gaussian"``.

    Args:
        likelihood: ``"bernoulli"`` (logits) or ``"gaussian"``.
        latent_dim, hidden, out_features, cond_features, activation: as the decoder classes.
        learn_variance, fixed_log_var: Gaussian only (ignored for Bernoulli).
        rngs: initialisation RNGs.

    Raises:
        ValueError: unknown likelihood name.
    """
    if likelihood == "bernoulli":
        return BernoulliDecoder(latent_dim, hidden, out_features, cond_features=cond_features,
                                activation=activation, rngs=rngs)
    if likelihood == "gaussian":
        return GaussianDecoder(latent_dim, hidden, out_features, learn_variance=learn_variance,
                               fixed_log_var=fixed_log_var, cond_features=cond_features,
                               activation=activation, rngs=rngs)
    raise ValueError(f"likelihood must be 'bernoulli' or 'gaussian', got {likelihood!r}")
