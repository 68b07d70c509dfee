"""Tests of gmm_jax.types: the NamedTuple pytrees and their static covariance-type metadata."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gmm_jax import COVARIANCE_TYPES, FitResult, GMMParams, KMeansResult, SuffStats
from gmm_jax.covariance import covariance_shape


def _params(covariance_type: str, k: int = 3, d: int = 2) -> GMMParams:
    """Builds a small ``GMMParams`` with arrays of the right shapes for ``covariance_type``.

    Args:
        covariance_type: one of ``COVARIANCE_TYPES``.
        k: number of components.
        d: number of features.

    Returns:
        GMMParams whose covariances and precision factors are identity-like.
    """
    shape = covariance_shape(covariance_type, k, d)
    if covariance_type in ("full", "tied"):
        c = jnp.broadcast_to(jnp.eye(d), shape)
    else:
        c = jnp.ones(shape)
    return GMMParams(jnp.full((k,), 1.0 / k), jnp.arange(k * d, dtype=jnp.float32).reshape(k, d),
                     c, c, covariance_type)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_gmm_params_pytree_has_four_leaves_and_static_type(covariance_type):
    p = _params(covariance_type)
    leaves, treedef = jax.tree.flatten(p)
    assert len(leaves) == 4
    assert all(isinstance(leaf, jax.Array) for leaf in leaves)
    # the type is aux data: it survives a round trip and distinguishes tree structures
    q = jax.tree.unflatten(treedef, leaves)
    assert q.covariance_type == covariance_type
    other = "diag" if covariance_type != "diag" else "full"
    assert treedef != jax.tree.structure(p._replace(covariance_type=other))
    assert p.n_components == 3 and p.n_features == 2


def test_gmm_params_key_paths_name_fields():
    paths = [jax.tree_util.keystr(k) for k, _ in jax.tree_util.tree_leaves_with_path(
        _params("full"))]
    assert paths == [".weights", ".means", ".covariances", ".precisions_cholesky"]


def test_gmm_params_jit_tree_map_and_replace():
    p = _params("diag")

    @jax.jit
    def double_means(params):
        # the static type is visible as a Python string inside the trace
        assert params.covariance_type == "diag"
        return params._replace(means=2.0 * params.means)

    q = double_means(p)
    assert isinstance(q, GMMParams) and q.covariance_type == "diag"
    np.testing.assert_array_equal(q.means, 2.0 * p.means)
    r = jax.tree.map(lambda a: a + 1.0, p)
    assert r.covariance_type == "diag"
    np.testing.assert_array_equal(r.weights, p.weights + 1.0)
    s = p._replace(weights=jnp.zeros(3))
    np.testing.assert_array_equal(s.weights, 0.0)
    np.testing.assert_array_equal(s.means, p.means)
    assert s.covariance_type == "diag"


def test_gmm_params_vmap_over_leaves():
    p = _params("spherical")
    batched = jax.tree.map(lambda a: jnp.stack([a, a + 1.0]), p)
    out = jax.vmap(lambda q: jnp.sum(q.means) + jnp.sum(q.covariances))(batched)
    assert out.shape == (2,)
    np.testing.assert_allclose(out[1] - out[0], p.means.size + p.covariances.size)


def test_suff_stats_pytree():
    s = SuffStats(jnp.ones(3), jnp.ones((3, 2)), jnp.ones((3, 2, 2)), jnp.zeros(2), "full")
    leaves = jax.tree.leaves(s)
    assert len(leaves) == 4
    total = jax.jit(lambda a, b: jax.tree.map(jnp.add, a, b))(s, s)
    assert isinstance(total, SuffStats) and total.covariance_type == "full"
    np.testing.assert_array_equal(total.Nk, 2.0)
    assert s._replace(Nk=jnp.zeros(3)).covariance_type == "full"
    assert jax.tree.structure(s) != jax.tree.structure(s._replace(covariance_type="tied"))


def test_result_containers_are_pytrees():
    p = _params("tied")
    res = FitResult(p, jnp.array(0.0), jnp.zeros(5), jnp.array(3), jnp.array(True),
                    jnp.zeros(2), jnp.array(0))
    assert len(jax.tree.leaves(res)) == 4 + 6
    assert jax.tree.map(lambda a: a, res).params.covariance_type == "tied"
    km = KMeansResult(jnp.zeros((2, 2)), jnp.zeros(4, jnp.int32), jnp.array(0.0), jnp.array(1))
    assert len(jax.tree.leaves(km)) == 4
