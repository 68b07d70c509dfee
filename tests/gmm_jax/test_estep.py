"""The E-step forms (fast expanded, exact whitened, exact expanded in float64), the error bound
that chooses between them, and the bank kernels (many models, wide GEMMs, masked slots)."""

from functools import cache

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp
from sklearn.cluster import KMeans
from sklearn.datasets import load_digits
from threadpoolctl import threadpool_limits

import gmm_jax
from gmm_jax import COVARIANCE_TYPES, estep
from tests.gmm_jax.helpers import (
    blobs,
    numpy_log_joint,
    numpy_m_step,
    precisions_of,
    random_covariances,
)

FORMS = ("fast", "whitened", "expanded64")


def _params(ct, k=3, d=3, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    w = rng.dirichlet(np.ones(k) * 3.0)
    m = rng.normal(scale=2.0, size=(k, d))
    c = random_covariances(rng, ct, k, d)
    return w, m, c, gmm_jax.params_from_covariances(
        jnp.asarray(w, dtype), jnp.asarray(m, dtype), jnp.asarray(c, dtype), ct)


# The library functions under test, compiled once per shape and option (called eagerly, each runs
# op by op: hundreds of small compiles per test).
_e_step = jax.jit(gmm_jax.e_step, static_argnames=("chunk_size", "method", "assignment"))
_bank_moments = jax.jit(estep.bank_moments,
                        static_argnames=("form", "assignment", "chunk_size", "cols"))
_chunked_moments = jax.jit(estep.chunked_moments,
                           static_argnames=("form", "assignment", "chunk_size"))
_fast_error_bound = jax.jit(estep.fast_error_bound)


@jax.jit
def _all_forms(p, X, w):
    return {f: gmm_jax.e_step(p, X, sample_weight=w, method=f, chunk_size=16) for f in FORMS}


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_every_form_gives_the_textbook_m_step(x64, ct):
    """E-step (each form) + M-step equals the float64 textbook EM step, weights included."""
    w_, m_, c_, p = _params(ct)
    X = blobs(n=40, seed=1)
    sw = np.random.default_rng(2).uniform(0.2, 2.0, len(X))
    lj = numpy_log_joint(X, w_, m_, c_, ct)
    ll = logsumexp(lj, axis=1)
    want = numpy_m_step(X, np.exp(lj - ll[:, None]), ct, 1e-6, sw)
    for form, (stats, mean_ll) in _all_forms(p, jnp.asarray(X), jnp.asarray(sw)).items():
        np.testing.assert_allclose(mean_ll, np.sum(sw * ll) / sw.sum(), rtol=1e-12,
                                   err_msg=form)
        got = gmm_jax.m_step(stats, reg_covar=1e-6)
        for name in ("weights", "means", "covariances"):
            np.testing.assert_allclose(getattr(got, name), want[name], rtol=1e-10, atol=1e-12,
                                       err_msg=f"{form} {name}")
        np.testing.assert_allclose(
            gmm_jax.covariance.precisions_from_cholesky(got.precisions_cholesky, ct),
            precisions_of(want["covariances"], ct), rtol=1e-9, atol=1e-10, err_msg=form)


def test_statistics_add_over_chunks_and_padding_rows_count_nothing(x64):
    _, _, _, p = _params("full", d=3)
    X = jnp.asarray(blobs(n=50, seed=3))
    whole, ll = _e_step(p, X, method="exact", chunk_size=64)
    chunked, ll_c = _e_step(p, X, method="exact", chunk_size=16)  # 4 chunks, padded
    a, b = _e_step(p, X[:20], method="exact")[0], _e_step(p, X[20:],
                                                                        method="exact")[0]
    for f in ("Nk", "Fk", "Sk"):
        np.testing.assert_allclose(getattr(chunked, f), getattr(whole, f), rtol=1e-12)
        np.testing.assert_allclose(getattr(a, f) + getattr(b, f), getattr(whole, f), rtol=1e-12)
    np.testing.assert_allclose(ll_c, ll, rtol=1e-13)
    # rows of weight zero change nothing
    Xp = jnp.concatenate([X, jnp.full((14, 3), 1e3)])
    wp = jnp.concatenate([jnp.ones(50), jnp.zeros(14)])
    padded, ll_p = _e_step(p, Xp, sample_weight=wp, shift=gmm_jax.em.default_shift(p),
                                  method="exact")
    np.testing.assert_allclose(padded.Sk, whole.Sk, rtol=1e-12)
    np.testing.assert_allclose(ll_p, ll, rtol=1e-13)


@pytest.mark.parametrize("ct", ["full", "diag", "spherical", "tied"])
def test_bank_equals_a_loop_of_single_models_and_masked_slots_cost_nothing(x64, ct):
    """R models in one bank (wide GEMMs) equal R separate E-steps; a masked slot changes
    nothing, with or without the static compaction of active columns."""
    X = jnp.asarray(blobs(n=40, seed=4))
    models = [_params(ct, seed=s)[3] for s in range(3)]
    bank = jax.tree.map(lambda *a: jnp.stack(a), *models)
    w = jnp.ones(40)
    for form in FORMS:
        got = _bank_moments(bank, X, w, None, form=form, assignment="soft", chunk_size=16)
        for r, p in enumerate(models):
            one = _chunked_moments(p, X, w, None, form=form, assignment="soft",
                                        chunk_size=16)
            for g, o in zip(got, one, strict=True):
                np.testing.assert_allclose(g[r], o, rtol=1e-11, atol=1e-13, err_msg=form)
    # model 1 with its last slot masked (weight 0) == a 2-component model; compaction skips it
    masked = bank._replace(weights=bank.weights.at[1].set(
        jnp.r_[bank.weights[1, :2] / jnp.sum(bank.weights[1, :2]), 0.0]))
    two = jax.tree.map(lambda a: a[1], masked)
    two = two._replace(weights=two.weights[:2], means=two.means[:2],
                       covariances=two.covariances if ct == "tied" else two.covariances[:2],
                       precisions_cholesky=two.precisions_cholesky if ct == "tied"
                       else two.precisions_cholesky[:2])
    cols = (0, 1, 2, 3, 4, 6, 7, 8)  # model 1's slot 2 (flat index 5) is skipped
    for form in FORMS:
        ref = _chunked_moments(two, X, w, None, form=form, assignment="soft", chunk_size=16)
        for c in (None, cols):
            got = _bank_moments(masked, X, w, None, form=form, assignment="soft",
                                     chunk_size=16, cols=c)
            for r in (0, 2):  # the unmasked models, whose columns sit after the skipped one
                one = _chunked_moments(models[r], X, w, None, form=form, assignment="soft",
                                       chunk_size=16)
                for g, o in zip(got, one, strict=True):
                    np.testing.assert_allclose(g[r], o, rtol=1e-11, atol=1e-13,
                                               err_msg=f"{form} cols={c} model {r}")
            np.testing.assert_allclose(got[0][1, :2], ref[0], rtol=1e-11, err_msg=form)
            assert float(got[0][1, 2]) == 0.0
            np.testing.assert_allclose(got[1][1, :2], ref[1], rtol=1e-10, atol=1e-12,
                                       err_msg=form)
            np.testing.assert_allclose(got[3][1], ref[3], rtol=1e-12, err_msg=form)
            if ct != "tied":
                np.testing.assert_allclose(got[2][1, :2], ref[2], rtol=1e-10, atol=1e-12)


def test_hard_assignment_and_labels_in_the_posterior(x64):
    _, _, _, p = _params("diag")
    X = jnp.asarray(blobs(n=30, seed=5))
    lp = np.asarray(gmm_jax.log_prob_components(p, X))
    labels = np.where(np.arange(30) % 3 == 0, 2, -1)
    for form in FORMS:
        stats, ll = _e_step(p, X, method=form, assignment="hard")
        np.testing.assert_allclose(stats.Nk, np.bincount(lp.argmax(1), minlength=3), atol=1e-12)
        np.testing.assert_allclose(ll, lp.max(1).mean(), rtol=1e-12)
        stats, ll = _e_step(p, X, method=form, labels=jnp.asarray(labels))
        r = np.exp(lp - logsumexp(lp, 1, keepdims=True))
        r[labels >= 0] = np.eye(3)[2]
        np.testing.assert_allclose(stats.Nk, r.sum(0), rtol=1e-12)
        want = np.where(labels >= 0, lp[:, 2], logsumexp(lp, 1)).mean()
        np.testing.assert_allclose(ll, want, rtol=1e-12)


# --------------------------------------------------------------------------- float32 accuracy
@cache
def _digits_params(ct: str, k: int, scale: float = 1.0, offset: float = 0.0):
    """Ill-conditioned float64 parameters from sklearn digits: a k-means partition's M-step
    with reg_covar = 1e-6 * scale^2 (constant pixels within clusters: variances 1e-6)."""
    X = load_digits().data * scale + offset
    with threadpool_limits(1):
        labels = KMeans(k, n_init=1, random_state=0).fit(X).labels_
    r = numpy_m_step(X, np.eye(k)[labels], ct, 1e-6 * scale**2)
    return X, r


def _e_step_f32_vs_f64(X, r, ct):
    with jax.enable_x64(True):
        p64 = gmm_jax.params_from_covariances(r["weights"], r["means"], r["covariances"], ct)
        p32 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), p64)
        # reference: float64 arithmetic on exactly the float32 parameters and data
        ref = float(_e_step(jax.tree.map(lambda a: a.astype(jnp.float64), p32),
                                   jnp.asarray(X.astype(np.float32), jnp.float64),
                                   method="whitened")[1])
    got = {m: float(_e_step(p32, jnp.asarray(X, jnp.float32), method=m)[1])
           for m in ("auto", "whitened", "expanded64")}
    bound = float(_fast_error_bound(p32._replace(
        means=p32.means - gmm_jax.em.default_shift(p32))))
    return ref, got, bound


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_float32_e_step_is_within_1e5_of_float64_on_digits(ct):
    """The default float32 E-step on ill-conditioned parameters (digits, reg_covar=1e-6)."""
    X, r = _digits_params(ct, 12)
    ref, got, bound = _e_step_f32_vs_f64(X, r, ct)
    tol = 1e-5 * max(1.0, abs(ref))
    for method, ll in got.items():
        assert abs(ll - ref) <= tol, (method, ll, ref)


@pytest.mark.slow
@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
@pytest.mark.parametrize("k", [4, 32])
@pytest.mark.parametrize("variant", [(1.0, 0.0), (1.0, 1e4), (1e-4, 0.0), (1e4, 0.0)])
def test_float32_e_step_accuracy_grid(ct, k, variant):
    scale, offset = variant
    X, r = _digits_params(ct, k, scale, offset)
    ref, got, bound = _e_step_f32_vs_f64(X, r, ct)
    errors = {method: abs(ll - ref) for method, ll in got.items()}
    assert max(errors.values()) <= 1e-5 * max(1.0, abs(ref)), (errors, ref, bound)


@pytest.mark.parametrize("ct", ["full", "diag"])
def test_error_bound_holds_and_chooses_the_exact_form_where_needed(ct):
    """The bound exceeds the fast form's real float32 error, rejects it on digits (where its
    error is far above 1e-5) and accepts it on well-conditioned data."""
    X, r = _digits_params(ct, 12)
    with jax.enable_x64(True):
        p64 = gmm_jax.params_from_covariances(r["weights"], r["means"], r["covariances"], ct)
        ref = float(_e_step(p64, jnp.asarray(X), method="whitened")[1])
    p32 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), p64)
    fast = float(_e_step(p32, jnp.asarray(X, jnp.float32), method="fast")[1])
    shift = gmm_jax.em.default_shift(p32)
    bound = float(_fast_error_bound(p32._replace(means=p32.means - shift)))
    err = abs(fast - ref)
    assert err > 1e-5 * abs(ref)  # the expansion really fails here ...
    assert bound >= err  # ... and the bound says so
    assert not bool(estep.fast_is_safe(jnp.float32(bound), jnp.float32(ref)))
    # well separated blobs: the fast form is accurate and allowed
    Xb = blobs(n=400, d=6, k=4, seed=6)
    labels = np.arange(400) % 4
    rb = numpy_m_step(Xb, np.eye(4)[labels], ct, 1e-6)
    with jax.enable_x64(True):
        pb64 = gmm_jax.params_from_covariances(rb["weights"], rb["means"], rb["covariances"], ct)
        refb = float(_e_step(pb64, jnp.asarray(Xb), method="whitened")[1])
    pb = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), pb64)
    fastb = float(_e_step(pb, jnp.asarray(Xb, jnp.float32), method="fast")[1])
    sb = gmm_jax.em.default_shift(pb)
    boundb = float(_fast_error_bound(pb._replace(means=pb.means - sb)))
    assert abs(fastb - refb) <= boundb
    assert bool(estep.fast_is_safe(jnp.float32(boundb), jnp.float32(refb)))


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_density_ceiling_bounds_every_log_density_and_equals_the_highest_component_peak(x64, ct):
    _, m, _, p = _params(ct, k=3, d=3, seed=2)
    ceiling = float(estep.log_density_ceiling(p))
    rng = np.random.default_rng(0)
    pts = np.r_[m, m + 1e-3 * rng.normal(size=m.shape), rng.normal(scale=3.0, size=(300, 3))]
    ll = np.asarray(gmm_jax.log_likelihood(p, jnp.asarray(pts)))
    assert ll.max() <= ceiling + 1e-12, (ll.max(), ceiling)
    # it is the highest peak of a component: log N(m_k | m_k, S_k), maximised over k
    lpc = np.asarray(gmm_jax.log_prob_components(p, jnp.asarray(m)))  # row j: the point m_j
    peaks = np.diag(lpc) - np.log(np.asarray(p.weights))
    np.testing.assert_allclose(ceiling, peaks.max(), rtol=1e-13)
    # a masked slot (weight zero) does not count, however peaked it is
    if not gmm_jax.covariance.is_tied(ct):
        peaked = p._replace(
            weights=p.weights.at[0].set(0.0),
            precisions_cholesky=p.precisions_cholesky.at[0].multiply(1e3))
        rest = p._replace(weights=p.weights.at[0].set(0.0))
        assert float(estep.log_density_ceiling(peaked)) == float(estep.log_density_ceiling(rest))


def test_first_e_step_runs_fast_where_the_ceiling_allows_it_and_matches_float64():
    """Before any log-likelihood is known, the bound is scaled by the density ceiling: on
    well-conditioned blobs the first E-step already takes the fast form (it ran exact whatever
    the bound before), and every iteration's float32 log-likelihood matches float64."""
    X = blobs(n=400, d=6, k=4, seed=6)
    res = gmm_jax.fit(0, jnp.asarray(X, jnp.float32), 4, max_iter=5, tol=0.0)  # a shared program
    assert np.all(np.asarray(res.fast_path))
    with jax.enable_x64(True):
        ref = gmm_jax.fit(0, jnp.asarray(X), 4, max_iter=5, tol=0.0, method="exact")
        np.testing.assert_allclose(np.asarray(res.history), np.asarray(ref.history), rtol=1e-6)


def test_float64_inner_kernel_runs_without_global_x64():
    """The expanded64 kernel builds float64 arithmetic inside a float32 program."""
    assert not jax.config.jax_enable_x64
    _, _, _, p = _params("diag", dtype=np.float32)
    X = jnp.asarray(blobs(n=30, seed=7), jnp.float32)
    stats, ll = jax.jit(lambda p, X: gmm_jax.e_step(p, X, method="expanded64"))(p, X)
    assert stats.Sk.dtype == jnp.float32 and ll.dtype == jnp.float32
    ref_stats, ref_ll = gmm_jax.e_step(p, X, method="whitened")
    np.testing.assert_allclose(ll, ref_ll, rtol=1e-6)
    np.testing.assert_allclose(stats.Sk, ref_stats.Sk, rtol=1e-5, atol=1e-5)


def test_expanded64_sums_cache_sized_row_blocks_with_a_ragged_end(x64):
    """The expanded64 kernel splits a chunk into row blocks whose float64 features stay in cache
    (1024 rows at D=32, full): 2500 rows in a 4096-row chunk run as three blocks, the last one
    padded, and give the whitened kernel's statistics."""
    assert estep.expanded_chunk(4096, "full", 32) == 1024
    assert estep.expanded_chunk(4096, "full", 64) == 256
    assert estep.expanded_chunk(512, "diag", 64) == 512  # narrow features: the chunk as given
    _, _, _, p = _params("full", k=3, d=32, seed=4)
    bank = jax.tree.map(lambda a: a[None], p)
    X = jnp.asarray(blobs(n=2500, d=32, k=3, seed=4))
    w = jnp.asarray(np.random.default_rng(4).uniform(0.5, 2.0, 2500))
    got = _bank_moments(bank, X, w, None, form="expanded64", assignment="soft", chunk_size=4096)
    want = _bank_moments(bank, X, w, None, form="whitened", assignment="soft", chunk_size=4096)
    for name, a, b in zip(("Nk", "Fk", "Sk", "sum_ll"), got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-8, err_msg=name)


class _KernelChosen(Exception):
    pass


def test_exact_kernel_follows_the_shape_at_every_entry_point(monkeypatch):
    """On the CPU the whitened kernel runs where few components share the rows (a per-class
    classifier, a small fit: for full covariances measured 2-20x faster by
    ``benchmarks/bench_exact_kernels.py``) and expanded64 where many do (a sweep, many
    restarts); every entry point passes its own shape. The spy stops each call before it
    compiles anything."""
    if jax.default_backend() != "cpu":
        pytest.skip("the expanded64 kernel is chosen on the CPU only")
    assert estep.exact_kernel("full", 4, 50) == "whitened"
    assert estep.exact_kernel("full", 32, 50) == "expanded64"
    assert estep.exact_kernel("full", 3, 8) == "whitened"
    assert estep.exact_kernel("full", 4, 8) == "expanded64"
    assert estep.exact_kernel("diag", 4, 64) == "whitened"
    assert estep.exact_kernel("diag", 8, 64) == "expanded64"
    assert estep.exact_kernel("spherical", 1, 8) == "expanded64"
    assert estep.exact_kernel("full") == "expanded64"  # shape unknown
    seen = []
    real = estep.exact_kernel

    def spy(*args, **kwargs):
        seen.append(real(*args, **kwargs))
        raise _KernelChosen

    monkeypatch.setattr(estep, "exact_kernel", spy)
    X = np.random.default_rng(0).normal(size=(80, 40)).astype(np.float32)
    y = np.arange(80) % 2
    _, _, _, p = _params("full", k=2, d=40, dtype=np.float32)
    e_step = jax.jit(gmm_jax.e_step._fun, static_argnames=("method",))  # traced afresh
    cases = {
        "fit K=2": (lambda: gmm_jax.fit(0, X, 2), "whitened"),
        "fit K=4, 8 restarts": (lambda: gmm_jax.fit(0, X, 4, n_init=8), "expanded64"),
        "classifier": (lambda: gmm_jax.classifier.fit_classifier(0, X, y, 3), "whitened"),
        "LBG classifier": (lambda: gmm_jax.classifier.fit_classifier_lbg(X, y, 2), "whitened"),
        "sweep K=1..8": (lambda: gmm_jax.select_n_components(0, X, range(1, 9)), "expanded64"),
        "sweep K=1,2": (lambda: gmm_jax.select_n_components(0, X, [1, 2]), "whitened"),
        "fit_lbg": (lambda: gmm_jax.fit_lbg(0, X, 4), "whitened"),
        "e_step": (lambda: e_step(p, jnp.asarray(X), method="exact"), "whitened"),
    }
    for name, (call, want) in cases.items():
        seen.clear()
        with pytest.raises(_KernelChosen):
            call()
        assert seen == [want], name


def test_method_is_checked():
    _, _, _, p = _params("diag", dtype=np.float32)
    with pytest.raises(ValueError, match="method must be one of"):
        gmm_jax.e_step(p, jnp.zeros((4, 3)), method="natural")
    with pytest.raises(ValueError, match="assignment"):
        gmm_jax.e_step(p, jnp.zeros((4, 3)), assignment="fuzzy")


@pytest.mark.parametrize("bound_trusted", [True, False])
def test_auto_follows_the_bound_where_trusted_and_is_exact_elsewhere(monkeypatch, bound_trusted):
    """``method="auto"`` returns the exact form's value where the bound rejects the fast form
    (digits + 1e4, K=4, full: the fast form is 1e-3 nats off) and the fast form's where it
    accepts it; on a backend outside ``AUTO_FAST_BACKENDS`` (emulated here by emptying it) it
    is the exact form's everywhere, in ``e_step`` and in ``fit`` (no fast iteration recorded)."""
    monkeypatch.setattr(estep, "AUTO_FAST_BACKENDS", ("cpu",) if bound_trusted else ())
    run = jax.jit(gmm_jax.e_step._fun, static_argnames=("method",))  # traced afresh
    X, r = _digits_params("full", 4, 1.0, 1e4)
    p = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32),
                     gmm_jax.params_from_covariances(r["weights"], r["means"],
                                                     r["covariances"], "full"))
    X = jnp.asarray(X, jnp.float32)
    got = {m: float(run(p, X, method=m)[1]) for m in ("auto", "exact", "fast")}
    assert abs(got["fast"] - got["exact"]) > 1e-4  # the forms really differ here ...
    assert got["auto"] == got["exact"]  # ... and auto took the exact one
    # fit on blobs, where the bound allows the fast form after the first iteration
    Xb = jnp.asarray(blobs(n=400, d=6, k=4, seed=6), jnp.float32)
    # max_iter is static: 7 iterations is a program no other test compiles, traced afresh here
    res = gmm_jax.fit(0, Xb, 4, max_iter=5 if bound_trusted else 7, tol=0.0)
    assert bool(np.any(res.fast_path)) == bound_trusted
    if not bound_trusted:
        exact = gmm_jax.fit(0, Xb, 4, max_iter=7, tol=0.0, method="exact")
        np.testing.assert_array_equal(res.history, exact.history)
