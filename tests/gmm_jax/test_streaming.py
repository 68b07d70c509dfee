"""Exact batch EM equals full-batch EM from every kind of source; checkpoints resume a killed fit
exactly and refuse foreign ones; online EM converges near the batch solution."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

import gmm_jax
from gmm_jax import checkpoint, streaming
from gmm_jax import covariance as cov
from gmm_jax.streaming import fit_batches, online_em


def _blobs(seed=0, n=600, d=3):
    rng = np.random.default_rng(seed)
    centers = np.array([[-4.0, 0, 1], [4.0, 1, -1], [0, 5.0, 0]])[:, :d]
    X = np.concatenate([rng.normal(c, 1.0 + i * 0.3, (n // 3, d)) for i, c in enumerate(centers)])
    return rng.permutation(X)


def _init_arrays(params):
    prec = cov.precisions_from_cholesky(params.precisions_cholesky, params.covariance_type)
    return dict(weights_init=np.asarray(params.weights), means_init=np.asarray(params.means),
                precisions_init=np.asarray(prec))


def _start(X, dtype=np.float64):
    """Fixed initial parameters (three data rows as means, unit covariances), no compile."""
    means = X[[0, 1, 2]].astype(dtype)
    return gmm_jax.GMMParams(np.full(3, 1 / 3, dtype), means,
                             np.broadcast_to(np.eye(3, dtype=dtype), (3, 3, 3)).copy(),
                             np.broadcast_to(np.eye(3, dtype=dtype), (3, 3, 3)).copy(), "full")


def _assert_same_result(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("covariance_type", gmm_jax.COVARIANCE_TYPES)
def test_fit_batches_equals_full_batch(x64, covariance_type):
    X = _blobs() * 0.4  # overlapping clusters: EM needs many iterations
    # three data rows as means and unit covariances (no one-iteration fit: one program less)
    shape = cov.covariance_shape(covariance_type, 3, 3)
    covs = np.broadcast_to(np.eye(3), shape) if cov.is_matrix(covariance_type) else np.ones(shape)
    start = gmm_jax.params_from_covariances(np.full(3, 1 / 3), X[[0, 1, 2]], covs,
                                            covariance_type)
    full = gmm_jax.fit(0, X, 3, covariance_type=covariance_type, tol=1e-8, max_iter=60,
                       **_init_arrays(start))
    batches = [X[i:i + 128] for i in range(0, len(X), 128)]  # last batch is partial
    streamed = fit_batches(0, batches, 3, covariance_type=covariance_type, tol=1e-8,
                           max_iter=60, init_params=start, dtype=np.float64)
    assert int(streamed.n_iter) == int(full.n_iter) > 3
    np.testing.assert_array_equal(streamed.fast_path, full.fast_path)
    np.testing.assert_allclose(float(streamed.log_likelihood), float(full.log_likelihood),
                               rtol=1e-13)
    np.testing.assert_allclose(streamed.params.means, full.params.means, atol=1e-11)
    np.testing.assert_allclose(streamed.params.covariances, full.params.covariances, atol=1e-11)
    n = int(full.n_iter)
    np.testing.assert_allclose(streamed.history[:n], full.history[:n], rtol=1e-13)


def test_every_source_kind_gives_the_list_result(x64, tmp_path, monkeypatch):
    """A generator factory, .npy paths, one file cut into batches and a memory map read the same
    rows in the same batches as the list: bit-identical fits. The in-memory array (one batch on
    the device) agrees to rounding. Files are read ``batch_size`` rows at a time."""
    X = _blobs() * 0.4
    start = _start(X)
    kw = dict(tol=1e-8, max_iter=60, init_params=start, dtype=np.float64, batch_size=128)
    batches = [X[i:i + 128] for i in range(0, len(X), 128)]
    listed = fit_batches(0, batches, 3, **kw)
    assert int(listed.n_iter) > 5
    paths = []
    for i, b in enumerate(batches):
        paths.append(str(tmp_path / f"part{i}.npy"))
        np.save(paths[-1], b)
    whole = tmp_path / "all.npy"
    np.save(whole, X)
    reads = []
    real_read = streaming.NpyFile.read

    def spy(self, start, stop):
        reads.append(stop - start)
        return real_read(self, start, stop)

    monkeypatch.setattr(streaming.NpyFile, "read", spy)
    sources = {
        "generator factory": lambda: (b for b in batches),
        "list of .npy paths": paths,
        "one .npy path": whole,
        "memory map": np.load(whole, mmap_mode="r"),
        "factory of a memory map": lambda: iter([np.load(whole, mmap_mode="r")]),
    }
    for name, source in sources.items():
        reads.clear()
        res = fit_batches(0, source, 3, **kw)
        try:
            _assert_same_result(res, listed)
        except AssertionError as err:
            raise AssertionError(f"source {name!r} differs from the list of arrays") from err
        if "path" in name:
            assert max(reads) <= 128 and sum(reads) % len(X) == 0, (name, reads[:8])
    resident = fit_batches(0, X, 3, **kw)
    assert int(resident.n_iter) == int(listed.n_iter)
    np.testing.assert_allclose(resident.params.covariances, listed.params.covariances,
                               atol=1e-12)


def test_bad_sources_and_options_fail_before_any_work(tmp_path):
    X = _blobs().astype(np.float32)
    with pytest.raises(ValueError, match="batch 1 contains"):
        fit_batches(0, [X[:100], np.full((5, 3), np.nan, np.float32)], 2)
    with pytest.raises(ValueError, match="batch 1 has 2 features, but batch 0 has 3"):
        fit_batches(0, [X[:100], X[:10, :2]], 2)
    with pytest.raises(ValueError, match="no data"):
        fit_batches(0, [], 2)
    with pytest.raises(TypeError, match="one-shot iterator"):
        fit_batches(0, (b for b in [X]), 2)
    with pytest.raises(ValueError, match="cannot read the data file"):
        fit_batches(0, [str(tmp_path / "missing.npy")], 2)
    (tmp_path / "x.csv").write_text("1,2\n3,4\n")
    with pytest.raises(ValueError, match="is not a .npy file"):
        fit_batches(0, str(tmp_path / "x.csv"), 2)
    np.save(tmp_path / "flat.npy", np.arange(10.0))
    with pytest.raises(ValueError, match="must be 2-D"):
        fit_batches(0, tmp_path / "flat.npy", 2)
    np.save(tmp_path / "short.npy", X)
    with open(tmp_path / "short.npy", "r+b") as f:
        f.truncate(os.path.getsize(tmp_path / "short.npy") - 8)
    with pytest.raises(ValueError, match="truncated"):
        fit_batches(0, tmp_path / "short.npy", 2)
    with pytest.raises(ValueError, match="batch_size"):
        fit_batches(0, X, 2, batch_size=0)
    with pytest.raises(ValueError, match="does not exist"):
        fit_batches(0, X, 2, checkpoint=tmp_path / "nowhere" / "ck.npz")
    with pytest.raises(ValueError, match="must name a file"):
        fit_batches(0, X, 2, checkpoint=tmp_path)
    with pytest.raises(TypeError, match="callback"):
        fit_batches(0, X, 2, callback=3)
    with pytest.raises(ValueError, match="init_params.weights has shape"):
        fit_batches(0, X, 2, init_params=_start(X))
    with pytest.raises(ValueError, match="fewer than n_components"):
        fit_batches(0, [X[:2]], 3)


# ------------------------------------------------------------------------- checkpoints
# The child fits from .npy files with a checkpoint and kills itself with SIGKILL from the
# callback after iteration KILL_AT (after that iteration's checkpoint is written): a
# deterministic crash point. faulthandler bounds it if it ever hangs.
KILL_AT = 4
CHILD_LIMIT_S = 60
CHILD = textwrap.dedent(
    """
    import faulthandler, json, os, signal, sys
    faulthandler.dump_traceback_later(float(sys.argv[1]), exit=True)
    import numpy as np
    from gmm_jax.streaming import fit_batches

    files, path, kill_at, kw = json.loads(sys.argv[2])

    def crash(iteration, lower_bound, change, fast):
        if iteration == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    fit_batches(0, files, 3, checkpoint=path, callback=crash, **kw)
    print("NOT KILLED")
    """
)


def _resume_problem(tmp_path):
    X = (_blobs(n=900) * 0.4).astype(np.float32)
    files = []
    for i in range(3):
        files.append(str(tmp_path / f"rows{i}.npy"))
        np.save(files[-1], X[i * 300:(i + 1) * 300])
    kw = dict(tol=1e-7, max_iter=60, batch_size=256)
    return X, files, kw


def test_fit_batches_resumes_a_killed_fit_exactly(tmp_path):
    X, files, kw = _resume_problem(tmp_path)
    path = str(tmp_path / "em.ckpt.npz")
    try:
        child = subprocess.run(
            [sys.executable, "-c", CHILD, str(CHILD_LIMIT_S), json.dumps([files, path, KILL_AT,
                                                                          kw])],
            capture_output=True, text=True, timeout=CHILD_LIMIT_S + 10)
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"the checkpointing child did not end within {CHILD_LIMIT_S + 10} s (and "
                    f"did not dump its stacks):\n{err.stdout}\n{err.stderr}")
    assert child.returncode == -signal.SIGKILL, (
        f"the child should have died by SIGKILL after iteration {KILL_AT}; exit "
        f"{child.returncode}:\n{child.stdout}\n{child.stderr[-6000:]}")
    meta = checkpoint.read_metadata(path)
    assert meta["iteration"] == KILL_AT and not meta["finished"]
    assert [f for f in os.listdir(tmp_path) if ".tmp" in f] == []  # no temporary file left

    seen = []
    resumed = fit_batches(0, files, 3, checkpoint=path,
                          callback=lambda it, lb, ch, fast: seen.append(it), **kw)
    assert seen[0] == KILL_AT + 1, seen  # continued, did not start over
    uninterrupted = fit_batches(0, files, 3, **kw)
    assert int(uninterrupted.n_iter) > KILL_AT + 3
    assert seen[-1] == int(uninterrupted.n_iter)
    _assert_same_result(resumed, uninterrupted)
    # a finished checkpoint gives the result at once (no E-step)
    seen.clear()
    again = fit_batches(0, files, 3, checkpoint=path,
                        callback=lambda it, lb, ch, fast: seen.append(it), **kw)
    assert seen == []
    _assert_same_result(again, uninterrupted)
    assert checkpoint.read_metadata(path)["finished"]


def test_checkpoint_of_another_fit_is_refused(tmp_path):
    X, files, kw = _resume_problem(tmp_path)
    kw = dict(kw, max_iter=2)
    path = str(tmp_path / "em.ckpt.npz")
    fit_batches(0, files, 3, checkpoint=path, **kw)
    X2 = np.load(files[1])
    X2[7, 1] += 1e-3
    other = str(tmp_path / "other.npy")
    np.save(other, X2)
    cases = [
        (dict(batches=[files[0], other, files[2]]), "the data differ"),
        (dict(tol=1e-6), "tol is 1e-07 in the checkpoint but 1e-06"),
        (dict(n_components=2), "n_components is 3 in the checkpoint but 2"),
        (dict(covariance_type="diag"), "covariance_type is 'full' in the checkpoint but 'diag'"),
        (dict(batch_size=128), "batch_rows is 256"),
        (dict(reg_covar=1e-4), "reg_covar"),
        (dict(key=1), "key is"),
        (dict(batches=files[:2]), "n_samples is 900 in the checkpoint but 600"),
    ]
    for change, message in cases:
        args = dict(dict(key=0, batches=files, n_components=3, checkpoint=path, **kw), **change)
        with pytest.raises(ValueError, match=message) as err:
            fit_batches(args.pop("key"), args.pop("batches"), args.pop("n_components"), **args)
        assert "Delete it" in str(err.value)

    def write(name, **arrays):
        p = str(tmp_path / name)
        with open(p, "wb") as f:
            np.savez(f, **arrays)
        return p

    with np.load(path) as z:
        good = {k: z[k] for k in z.files}
    (tmp_path / "garbage.npz").write_bytes(b"PK\x03\x04 not really a zip file")
    meta = json.loads(str(good["metadata"]))
    bad_meta = dict(meta, fingerprint=dict(meta["fingerprint"], kind="something else"))
    broken = [
        (str(tmp_path / "garbage.npz"), "not a readable .npz"),
        (write("foreign.npz", a=np.zeros(3)), "not a gmm_jax EM checkpoint"),
        (write("pickled.npz", metadata=good["metadata"],
               history=np.array([object()], dtype=object)), "pickled objects"),
        (write("short_history.npz", **dict(good, history=good["history"][:1])), "corrupt"),
        (write("nan_means.npz", **dict(good, means=good["means"] * np.nan)), "corrupt"),
        (write("kind.npz", **dict(good, metadata=np.asarray(json.dumps(bad_meta)))),
         "kind is 'something else'"),
    ]
    for p, message in broken:
        with pytest.raises(ValueError, match=message):
            fit_batches(0, files, 3, checkpoint=p, **kw)


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    """A write that fails half-way leaves the previous checkpoint intact and no temporary
    file."""
    X = _blobs()
    state = checkpoint.fresh_state(_start(X), 5, np.float64)
    fp = dict(kind="t", n_components=3, n_features=3, covariance_type="full", dtype="float64",
              max_iter=5)
    path = str(tmp_path / "ck.npz")
    checkpoint.save(path, state, fp)
    before = open(path, "rb").read()

    def failing_savez(f, **arrays):
        f.write(b"PK\x03\x04 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.np, "savez", failing_savez)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save(path, state._replace(iteration=1), fp)
    assert open(path, "rb").read() == before
    assert os.listdir(tmp_path) == ["ck.npz"]
    monkeypatch.undo()
    assert checkpoint.load(path, fp).iteration == 0


def test_online_em_approaches_batch_solution(x64):
    X = _blobs(n=3000)
    batch = gmm_jax.fit(0, X, 3, tol=1e-8, max_iter=200)
    start = gmm_jax.fit(0, X[:300], 3, max_iter=1, tol=0.0).params
    rng = np.random.default_rng(0)
    stream = (X[rng.choice(len(X), 100, replace=False)] for _ in range(300))
    online = online_em(start, stream, n_samples=len(X), kappa=0.6)
    ll_batch = float(np.mean(gmm_jax.log_likelihood(batch.params, X)))
    ll_online = float(np.mean(gmm_jax.log_likelihood(online, X)))
    assert ll_online > ll_batch - 0.02
    with pytest.raises(ValueError, match="kappa"):
        online_em(start, [X[:10]], n_samples=10, kappa=0.3)
