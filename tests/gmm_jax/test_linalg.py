"""gmm_jax.linalg: jitter, the whitened (rebased) precision factor, the eigenvalue floor, and a
structural guard against the XLA CPU deadlock: in every compiled program, linear-algebra calls
must be ordered by data dependencies.

The deadlock (jax 0.10, 2-core CPU): LAPACK custom calls split their batch over XLA's intra-op
pool and block a pool thread while waiting; two *independent* batched calls in one loop body
can hold both threads and hang forever. Reproducing it needs a lucky schedule and a long
timeout; checking the program's structure is deterministic: :func:`unordered_linalg_pairs`
walks the jaxpr and reports every pair of linear-algebra calls that could run concurrently.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gmm_jax
from gmm_jax import fitting, linalg
from tests.gmm_jax.helpers import blobs, random_covariances

LINALG_PRIMITIVES = {"cholesky", "triangular_solve", "eigh", "lu", "qr", "svd", "schur"}


def _subjaxprs(eqn):
    for p in eqn.params.values():
        for v in (p if isinstance(p, (list, tuple)) else [p]):
            if hasattr(v, "jaxpr") and hasattr(v.jaxpr, "eqns"):
                yield v.jaxpr
            elif hasattr(v, "eqns"):
                yield v


def _has_linalg(eqn) -> bool:
    if eqn.primitive.name in LINALG_PRIMITIVES:
        return True
    return any(_has_linalg(e) for j in _subjaxprs(eqn) for e in j.eqns)


def unordered_linalg_pairs(jaxpr, path="top") -> list[str]:
    """Pairs of equations (each one containing linear algebra) with no data dependency between
    them, in this jaxpr and, recursively, in every sub-jaxpr (loop bodies, branches, calls)."""
    problems = []
    producers = {}
    ancestors = []
    for i, eqn in enumerate(jaxpr.eqns):
        anc = set()
        for v in eqn.invars:
            j = producers.get(id(v)) if hasattr(v, "aval") and not hasattr(v, "val") else None
            if j is not None:
                anc |= ancestors[j] | {j}
        ancestors.append(anc)
        for v in eqn.outvars:
            producers[id(v)] = i
    nodes = [i for i, e in enumerate(jaxpr.eqns) if _has_linalg(e)]
    for a in range(len(nodes)):
        for b in range(a + 1, len(nodes)):
            i, j = nodes[a], nodes[b]
            if i not in ancestors[j]:
                problems.append(f"{path}: {jaxpr.eqns[i].primitive.name} #{i} and "
                                f"{jaxpr.eqns[j].primitive.name} #{j} are independent")
    for i, eqn in enumerate(jaxpr.eqns):
        for k, sub in enumerate(_subjaxprs(eqn)):
            problems += unordered_linalg_pairs(sub, f"{path}/{eqn.primitive.name}#{i}.{k}")
    return problems


def test_the_guard_catches_independent_calls():
    def bad(a):
        return jnp.linalg.cholesky(a) + jnp.linalg.cholesky(a + 1.0)

    def good(a):
        c = jnp.linalg.cholesky(a)
        return jnp.linalg.cholesky(linalg.after(a + 1.0, c))

    eye = jnp.eye(3)[None].repeat(2, 0)
    assert unordered_linalg_pairs(jax.make_jaxpr(bad)(eye).jaxpr)
    assert not unordered_linalg_pairs(jax.make_jaxpr(good)(eye).jaxpr)


@pytest.mark.parametrize("covariance_type", ["full", "tied"])
@pytest.mark.parametrize("options", [
    dict(), dict(eigenvalue_floor=0.1), dict(loop="scan", max_iter=3),
    dict(init="random", means_init=np.zeros((3, 3)), precisions_init="eye"),
])
def test_fit_programs_order_every_linalg_call(covariance_type, options):
    X = jnp.asarray(blobs(n=64, seed=0), jnp.float32)
    kw = dict(options)
    if kw.get("precisions_init") == "eye":
        kw["precisions_init"] = np.eye(3) if covariance_type == "tied" else \
            np.broadcast_to(np.eye(3), (3, 3, 3)).copy()
    jaxpr = jax.make_jaxpr(lambda X: gmm_jax.fit(0, X, 3, covariance_type=covariance_type,
                                                 **kw))(X)
    assert unordered_linalg_pairs(jaxpr.jaxpr) == []


def _bank_program(X, *, covariance_type, max_iter, exact_kernel):
    """The sweeps' and classifiers' bank program (two models, K = 2 and 3 of 3 slots), unjitted
    so that ``make_jaxpr`` sees its body."""
    fn = fitting.bank_program.jitted._fun if hasattr(fitting.bank_program.jitted, "_fun") \
        else fitting.bank_program._fun
    keys = jax.random.split(jax.random.key(0), 2)[None]
    return fn(keys, X, jnp.ones(64), jnp.ones(64), None, 1e-3, 1e-6, None,
              jnp.array([[2, 3]], jnp.int32), n_components=3, covariance_type=covariance_type,
              max_iter=max_iter, init="kmeans", loop="while", chunk_size=64, assignment="soft",
              method="auto", cache_bytes=0, active_counts=(2, 3), exact_kernel=exact_kernel)


def test_bank_program_orders_every_linalg_call():
    X = jnp.asarray(blobs(n=64, seed=0), jnp.float32)
    jaxpr = jax.make_jaxpr(lambda X: _bank_program(X, covariance_type="full", max_iter=5,
                                                   exact_kernel="expanded64"))(X)
    assert unordered_linalg_pairs(jaxpr.jaxpr) == []


# ------------------------------------------------------------------------------ the functions
def _spd(rng, k, d, cond=1.0):
    a = rng.normal(size=(k, d, d))
    q, _ = np.linalg.qr(a)
    lam = np.geomspace(1.0, cond, d)
    return np.einsum("kij,j,klj->kil", q, lam, q)


def test_stable_cholesky_jitters_only_failed_matrices(x64):
    rng = np.random.default_rng(0)
    good = _spd(rng, 1, 4)[0]
    bad = good.copy()
    bad[0, 0] = -1.0  # indefinite
    chol, used = linalg.stable_cholesky(jnp.asarray(np.stack([good, bad])))
    np.testing.assert_allclose(used[0], good)  # untouched
    np.testing.assert_allclose(chol[0], np.linalg.cholesky(good), rtol=1e-12)
    assert not np.all(np.isfinite(np.asarray(chol[1])))  # too indefinite for jitter
    near = good - np.linalg.eigvalsh(good)[0] * np.eye(4) * (1 + 1e-14)  # barely indefinite
    chol, used = linalg.stable_cholesky(jnp.asarray(near[None]))
    assert np.all(np.isfinite(np.asarray(chol)))
    assert float(jnp.max(jnp.abs(used[0] - near))) < 1e-11
    chol, _ = linalg.stable_cholesky(jnp.asarray(near[None]), allow_jitter=False)
    assert not np.all(np.isfinite(np.asarray(chol)))


def test_rebased_precision_factor_equals_the_direct_one(x64):
    """basis U^{-T} with C = U U^T is the precision factor of A C A^T, A = basis^{-T}."""
    rng = np.random.default_rng(1)
    old = _spd(rng, 3, 5, cond=1e6)
    new_whitened = _spd(rng, 3, 5, cond=10.0)
    basis = np.asarray(linalg.precision_cholesky_from_covariances(jnp.asarray(old))[0])
    A = np.linalg.inv(np.swapaxes(basis, -1, -2))
    cov_new = A @ new_whitened @ np.swapaxes(A, -1, -2)
    got, _ = linalg.rebase_precision_cholesky(jnp.asarray(basis), jnp.asarray(new_whitened))
    got = np.asarray(got)
    assert np.allclose(np.tril(got, -1), 0.0)  # upper triangular
    np.testing.assert_allclose(got @ np.swapaxes(got, -1, -2), np.linalg.inv(cov_new),
                               rtol=1e-8)
    np.testing.assert_allclose(linalg.covariances_from_precision_cholesky(jnp.asarray(got)),
                               cov_new, rtol=1e-8)


def test_floor_eigenvalues(x64):
    rng = np.random.default_rng(2)
    c = _spd(rng, 2, 4, cond=1e3)
    lam, v = np.linalg.eigh(c)
    psi = np.sqrt(lam[:, 0] * lam[:, -1])[:, None]  # floor between the extremes
    want = np.einsum("kij,kj,klj->kil", v, np.maximum(lam, psi), v)
    got, pc = linalg.floor_eigenvalues(jnp.asarray(c), jnp.asarray(psi[:, 0])[:, None])
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    pc = np.asarray(pc)
    np.testing.assert_allclose(pc @ np.swapaxes(pc, -1, -2), np.linalg.inv(want), rtol=1e-9)


# ------------------------------------------------------------------ matmul precision
def default_precision_products(jaxpr, path="top") -> list[str]:
    """Every ``dot_general`` in a jaxpr (sub-jaxprs included) not at ``Precision.HIGHEST``: on
    NVIDIA GPUs such a float32 product may run in TF32, on TPUs in bfloat16 passes."""
    bad = []
    for i, eqn in enumerate(jaxpr.eqns):
        if eqn.primitive.name == "dot_general":
            prec = eqn.params.get("precision")
            precs = prec if isinstance(prec, tuple) else (prec,)
            if not all(p == jax.lax.Precision.HIGHEST for p in precs):
                frames = eqn.source_info.traceback.frames if eqn.source_info.traceback else []
                where = [f"{f.file_name.rsplit('/', 1)[-1]}:{f.line_num}" for f in frames
                         if "gmm_jax" in f.file_name and "tests" not in f.file_name][:1]
                bad.append(f"{path}#{i} precision={prec} at {where}")
        for k, sub in enumerate(_subjaxprs(eqn)):
            bad += default_precision_products(sub, f"{path}/{eqn.primitive.name}#{i}.{k}")
    return bad


def test_the_precision_guard_catches_a_default_product():
    a = jnp.ones((3, 3))
    assert default_precision_products(jax.make_jaxpr(lambda a: a @ a)(a).jaxpr)
    assert not default_precision_products(jax.make_jaxpr(lambda a: linalg.mm(a, a))(a).jaxpr)


@pytest.mark.parametrize("covariance_type", gmm_jax.COVARIANCE_TYPES)
def test_every_product_runs_at_highest_precision(covariance_type):
    """Traced only (no compile): fit with each E-step method and initialisation, the bank
    program behind sweeps and classifiers with each exact kernel, and the functional API."""
    ct = covariance_type
    X = jnp.asarray(blobs(n=64, seed=0), jnp.float32)
    programs = {}
    for method in ("auto", "fast", "exact"):
        programs[f"fit {method}"] = lambda X, m=method: gmm_jax.fit(
            0, X, 3, covariance_type=ct, method=m, max_iter=3)
    for init in ("k-means++", "random", "random_from_data"):
        programs[f"fit init={init}"] = lambda X, i=init: gmm_jax.fit(
            0, X, 3, covariance_type=ct, init=i, max_iter=3)
    programs["fit hard"] = lambda X: gmm_jax.fit(0, X, 3, covariance_type=ct,
                                                 assignment="hard", max_iter=3)
    for kernel in ("whitened", "expanded64"):
        programs[f"bank {kernel}"] = lambda X, kern=kernel: _bank_program(
            X, covariance_type=ct, max_iter=3, exact_kernel=kern)
    rng = np.random.default_rng(1)
    params = gmm_jax.params_from_covariances(
        jnp.full(3, 1 / 3, jnp.float32), jnp.asarray(rng.normal(size=(3, 3)), jnp.float32),
        jnp.asarray(random_covariances(rng, ct, 3, 3), jnp.float32), ct)
    for method in ("fast", "whitened", "expanded64"):
        programs[f"e_step {method}"] = lambda X, m=method: gmm_jax.e_step(params, X, method=m)
    programs["m_step"] = lambda X: gmm_jax.m_step(gmm_jax.e_step(params, X)[0], reg_covar=1e-6)
    for f in (gmm_jax.log_likelihood, gmm_jax.log_prob_components, gmm_jax.responsibilities,
              gmm_jax.predict):
        programs[f.__name__] = lambda X, f=f: f(params, X)
    programs["sample"] = lambda X: gmm_jax.sample(jax.random.key(1), params, 5)
    programs["kmeans"] = lambda X: gmm_jax.kmeans(0, X, 3)
    bad = {name: default_precision_products(jax.make_jaxpr(f)(X).jaxpr)
           for name, f in programs.items()}
    assert {k: v for k, v in bad.items() if v} == {}
