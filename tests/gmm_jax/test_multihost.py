"""Multi-process EM over jax.distributed: 2 local processes (gloo collectives on CPU) reproduce
the single-process fit; a killed multi-process fit resumes from its checkpoint bit for bit."""

import os
import re
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from gmm_jax import checkpoint, multihost
from gmm_jax.streaming import fit_batches

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE = os.path.join(ROOT, "examples", "multihost_em.py")
# Bounds, not expectations (one run takes 15-45 s on 2 busy cores). A hang is caught by the
# workers' watchdog: a process that makes no progress (a stage or an EM iteration; each takes
# 0.1-20 s) for STALL_S seconds dumps its stacks (faulthandler) and exits, and the launcher then
# stops the others at once (no waiting for a collective that will never complete) and fails with
# the stacks. LIMIT_S bounds the whole run (a slow but progressing run on a busy machine).
STALL_S = 45
LIMIT_S = 150


def _run_example(*args, env=None):
    cmd = [sys.executable, EXAMPLE, "--num-processes", "2", "--timeout", str(LIMIT_S),
           "--stall-timeout", str(STALL_S), *map(str, args)]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=LIMIT_S + 10,
                              env=env, cwd=ROOT)
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"{' '.join(cmd)} did not return within {LIMIT_S + 10} s although its "
                    f"launcher stops at {LIMIT_S} s:\n{err.stdout}\n{err.stderr}")


def _difference(stdout: str) -> float:
    last = stdout.strip().splitlines()[-1]
    m = re.fullmatch(r"max abs difference to single-process fit: (\S+)", last)
    assert m, f"unexpected last line {last!r}:\n{stdout}"
    return float(m.group(1))


def _iterations(stdout: str, which: str) -> int:
    return int(re.search(rf"{which} fit: (\d+) iterations", stdout).group(1))


def test_example_two_processes_equals_single_process_fit():
    out = _run_example()
    assert out.returncode == 0, out.stdout + out.stderr[-8000:]
    assert _difference(out.stdout) < 1e-12, out.stdout
    n_multi = _iterations(out.stdout, "multi-process")
    assert n_multi == _iterations(out.stdout, "single-process") > 10, out.stdout
    assert "2 processes x 1 cpu device(s)" in out.stdout


@pytest.mark.parametrize("bound", [
    ["--timeout", "4"],
    ["--timeout", "60", "--stall-timeout", "1"],
], ids=["total", "stall"])
def test_launcher_bounds_a_run_that_does_not_finish(bound):
    """A job past --timeout, or a process without progress for --stall-timeout, ends within
    seconds with the stuck process's stacks (its faulthandler watchdog) and the others stopped:
    no hang, a clear message. Here the bounds (4 s in all; 1 s without progress) are shorter
    than the run's start-up and compilation, which stand in for a hang."""
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, EXAMPLE, "--num-processes", "2", *bound],
                         capture_output=True, text=True, timeout=30, cwd=ROOT)
    elapsed = time.monotonic() - t0
    assert out.returncode == 1, out.stdout + out.stderr
    assert elapsed < 20, elapsed
    assert f"did not finish within --timeout {bound[1]} s" in out.stderr, out.stderr[-3000:]
    assert "Thread 0x" in out.stderr or "Current thread" in out.stderr, out.stderr[-3000:]


@pytest.mark.slow  # two more 2-process launches (about a minute on 2 busy cores)
def test_two_process_fit_resumes_after_kill(tmp_path):
    """Process 0 dies by SIGKILL after iteration 5 (after writing its checkpoint); the launcher
    stops the other. Relaunched, the job resumes at iteration 6 and ends with the parameters of
    an uninterrupted run. Each process has 2 devices here, so the rows are also sharded over
    local devices (a (2, 2) global mesh)."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
    path = tmp_path / "multihost.ckpt.npz"
    crashed = _run_example("--checkpoint", path, "--crash-after-iteration", 5, env=env)
    assert crashed.returncode == 3, crashed.stdout + crashed.stderr[-8000:]
    assert "killed (SIGKILL) after iteration 5" in crashed.stdout
    meta = checkpoint.read_metadata(path)
    assert meta["iteration"] == 5 and not meta["finished"]
    fp = meta["fingerprint"]
    assert (fp["kind"], fp["n_processes"], fp["devices_per_process"]) == (
        "fit_multiprocess", 2, 2)
    assert fp["samples_per_process"] == [10_000, 10_000]
    resumed = _run_example("--checkpoint", path, env=env)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr[-8000:]
    assert "resumed from the checkpoint at iteration 5" in resumed.stdout
    assert "resumed fit equals an uninterrupted fit bit for bit: True" in resumed.stdout
    assert "2 processes x 2 cpu device(s)" in resumed.stdout
    assert _difference(resumed.stdout) < 1e-12
    assert checkpoint.read_metadata(path)["finished"]


def test_fit_multiprocess_in_one_process_is_fit_batches(x64):
    rng = np.random.default_rng(1)
    X = np.concatenate([rng.normal(c, 1.0, (200, 2)) for c in (-2.0, 0.0, 2.5)])
    batches = [X[:256], X[256:512], X[512:]]
    kw = dict(covariance_type="diag", tol=1e-8, dtype=np.float64, batch_size=256)
    start = multihost.initial_params(0, batches, 3, covariance_type="diag", dtype=np.float64,
                                     batch_size=256)
    a = multihost.fit_multiprocess(0, batches, 3, init_params=start, **kw)
    b = fit_batches(0, batches, 3, init_params=start, **kw)
    c = fit_batches(0, batches, 3, **kw)  # its own (identical) sampled initialisation
    assert int(a.n_iter) > 3
    for x, y, z in zip(jax.tree.leaves(a), jax.tree.leaves(b), jax.tree.leaves(c), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
        np.testing.assert_array_equal(np.asarray(x), np.asarray(z))


def test_exchange_encoding_and_initialize_checks():
    for a in (np.arange(7, dtype=np.float64) / 3, np.array([True, False, True]),
              np.arange(5, dtype=np.int64) - 2, np.float32(1.5) * np.ones((3, 1))):
        back = multihost._unwords(multihost._words(a), a)
        assert back.dtype == a.dtype and back.shape == a.shape
        np.testing.assert_array_equal(back, a)
    with pytest.raises(ValueError, match="process_id must lie in"):
        multihost.initialize("127.0.0.1:1", 2, 5)
    with pytest.raises(ValueError, match="cpu_collectives"):
        multihost.initialize("127.0.0.1:1", 2, 0, cpu_collectives="nccl")
    assert not jax.distributed.is_initialized()
