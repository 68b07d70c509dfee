"""gmm_jax.progress.EMProgress: the bar and the per-restart traces fed by fit's callback."""

import io

import jax
import numpy as np

import gmm_jax
from gmm_jax.progress import EMProgress


def test_bar_and_traces_from_direct_calls():
    out = io.StringIO()
    p = EMProgress(file=out, mininterval=0.0)
    p.begin(max_iter=10, n_init=2)
    passes = [(-5.0, -6.0), (-4.0, -5.0), (-3.5, -4.9), (-3.5, -4.85), (-3.5, -4.85)]
    for i in (2, 1, 3, 4, 5):  # callbacks may arrive out of order; traces are sorted
        lb = np.array(passes[i - 1])
        ch = lb - (np.array(passes[i - 2]) if i > 1 else -np.inf)
        if i == 5:
            ch = np.zeros(2)  # the last pass takes only the M-step: no change reported
        p(np.int32(i), lb, ch, True)
    p.end(n_iter=4)
    final = out.getvalue().strip().split("\r")[-1]  # the bar as last drawn
    assert "4/4" in final and "ll=-3.5" in final and "change=5.00e-02" in final, final
    assert p.calls == 5
    t = p.traces()
    np.testing.assert_array_equal(t, np.array(passes))
    r0, r1 = p.restart_traces()
    np.testing.assert_array_equal(r0, [-5.0, -4.0, -3.5])  # stopped changing after pass 3
    np.testing.assert_array_equal(r1, [-6.0, -5.0, -4.9, -4.85])


def test_traces_match_the_fit():
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(-2, 1, (120, 2)), rng.normal(2, 1, (120, 2))].astype(np.float32)
    p = EMProgress(bar=False)
    p.begin(max_iter=40, n_init=3)
    res = gmm_jax.fit(jax.random.key(0), X, 2, n_init=3, max_iter=40, init="random",
                      covariance_type="diag", callback=p)
    p.end()
    traces = p.restart_traces()
    assert len(traces) == 3
    finals = np.array([t[-1] for t in traces])
    np.testing.assert_allclose(finals, np.asarray(res.restart_log_likelihoods), rtol=1e-6)
    best = int(np.argmax(finals))
    n_iter = int(res.n_iter)
    np.testing.assert_allclose(traces[best], np.asarray(res.history)[:n_iter], rtol=1e-6)
    assert p.calls >= n_iter


def test_per_callback_seconds_calls_back_once_per_iteration():
    from gmm_jax.progress import per_callback_seconds

    calls = []
    r = per_callback_seconds(lambda it, lb, ch, fast: calls.append(int(it)), loops=40, repeats=1)
    jax.effects_barrier()
    assert sorted(calls) == sorted(list(range(1, 41)) * 2)  # compile round + one timed round
    assert r["loops"] == 40 and np.isfinite(r["seconds"]) and np.isfinite(r["median_seconds"])
