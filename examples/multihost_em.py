"""Multi-process EM on jax.distributed, checked against a single-process fit.

    python examples/multihost_em.py --num-processes 2

launches that many local processes on the loopback address (the coordinator, process 0, on
127.0.0.1 at a free port; CPU collectives over gloo). The launcher writes a synthetic data set
made from ``--seed`` to a temporary ``.npy`` file; each process memory-maps it and fits its own
slice of rows with ``gmm_jax.multihost.fit_multiprocess`` (E-step moments summed across the
processes by one ``psum`` per iteration), in float64. Process 0 then fits all rows in one process
with ``gmm_jax.fit`` from the same initial parameters and prints, as its last line,

    max abs difference to single-process fit: <float>

(the largest absolute difference of weights, means and covariances). The launcher relays process
0's output, stops every process as soon as one fails, and bounds the whole run by ``--timeout``;
a process that makes no progress for ``--stall-timeout`` seconds prints its stacks and exits.

Resumable fits: ``--checkpoint PATH`` makes process 0 write the EM state after every iteration;
``--crash-after-iteration J`` then kills process 0 with SIGKILL after iteration J (a simulated
crash; the launcher stops the others); running the same command again without that flag resumes
from the checkpoint, then runs the fit again without it and prints whether the two results are
identical bit for bit.

On a cluster, skip the launcher: run ``--process-id``/``--coordinator`` yourself, or call
``gmm_jax.multihost.initialize()`` in your own script under ``srun`` (SLURM is detected).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np

RESULT_PREFIX = "max abs difference to single-process fit:"
CRASH_EXIT = 3


def make_data(seed: int, n: int, d: int, k: int) -> np.ndarray:
    """(n, d) float64 rows from k overlapping anisotropic Gaussians, shuffled (EM needs a few
    dozen iterations on them)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * 2.0
    scales = rng.uniform(0.5, 1.5, size=(k, d))
    labels = rng.integers(0, k, size=n)
    X = centres[labels] + rng.standard_normal((n, d)) * scales[labels]
    return X[rng.permutation(n)]


def row_range(n: int, n_processes: int, process_id: int) -> tuple[int, int]:
    """Rows [lo, hi) of process ``process_id`` in an even split of n rows."""
    bounds = np.linspace(0, n, n_processes + 1).round().astype(int)
    return int(bounds[process_id]), int(bounds[process_id + 1])


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------------- worker
def worker(args) -> None:
    import faulthandler

    # Watchdog: a process that makes no progress (a stage, or an EM iteration) for
    # --stall-timeout seconds, or is still running 2 s before the launcher's --timeout (a hang,
    # e.g. waiting in a collective for a process that died), prints every thread's stack and
    # exits. alive() re-arms it.
    end = time.monotonic() + args.timeout - 2.0

    def alive():
        faulthandler.dump_traceback_later(
            max(0.5, min(args.stall_timeout, end - time.monotonic())), exit=True)

    alive()
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # the launcher asks at its deadline
    import jax

    jax.config.update("jax_enable_x64", True)
    from gmm_jax import multihost

    multihost.initialize(args.coordinator, args.num_processes, args.process_id)
    alive()
    import hashlib

    import gmm_jax
    from gmm_jax import covariance as cov

    me, n_proc = jax.process_index(), jax.process_count()
    X_all = np.load(args.data, mmap_mode="r")
    lo, hi = row_range(X_all.shape[0], n_proc, me)
    X_local = X_all[lo:hi]  # this process's rows, still on disk (memory-mapped)
    key = jax.random.key(args.seed)
    k, ct = args.n_components, args.covariance_type
    opts = dict(covariance_type=ct, dtype=np.float64)
    start = multihost.initial_params(key, X_local, k, **opts)
    alive()
    seen = []

    def progress(iteration, lower_bound, change, fast):
        alive()
        seen.append(iteration)
        if args.crash_after_iteration is not None and iteration == args.crash_after_iteration \
                and me == 0:
            print(f"process 0: simulated crash after iteration {iteration}", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

    t0 = time.perf_counter()
    res = multihost.fit_multiprocess(key, X_local, k, init_params=start, tol=args.tol,
                                     max_iter=args.max_iter, checkpoint=args.checkpoint,
                                     callback=progress, **opts)
    t_multi = time.perf_counter() - t0
    resumed_check = None
    if seen and seen[0] > 1:  # resumed: run the whole fit again without the checkpoint
        again = multihost.fit_multiprocess(key, X_local, k, init_params=start, tol=args.tol,
                                           max_iter=args.max_iter, **opts)
        resumed_check = all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(
            jax.tree.leaves(res), jax.tree.leaves(again), strict=True))
    alive()
    if me != 0:
        return
    digest = hashlib.blake2b(digest_size=16)
    for name in ("weights", "means", "covariances"):
        digest.update(np.asarray(getattr(res.params, name), np.float64).tobytes())
    prec = cov.precisions_from_cholesky(start.precisions_cholesky, ct)
    t0 = time.perf_counter()
    ref = gmm_jax.fit(key, np.asarray(X_all), k, tol=args.tol, max_iter=args.max_iter,
                      weights_init=start.weights, means_init=start.means,
                      precisions_init=np.asarray(prec), covariance_type=ct)
    t_single = time.perf_counter() - t0
    diff = max(float(np.max(np.abs(np.asarray(getattr(res.params, n))
                                   - np.asarray(getattr(ref.params, n)))))
               for n in ("weights", "means", "covariances"))
    print(f"jax {jax.__version__}, {n_proc} processes x {jax.local_device_count()} "
          f"{jax.default_backend()} device(s), collectives over the global mesh "
          f"{dict(zip(('processes', 'local'), (n_proc, jax.local_device_count()), strict=True))}")
    print(f"data: N={X_all.shape[0]}, D={X_all.shape[1]}, K={k}, {ct}, float64, seed "
          f"{args.seed}; process 0 holds rows {lo}:{hi}")
    if seen and seen[0] > 1:
        print(f"resumed from the checkpoint at iteration {seen[0] - 1} ({args.checkpoint})")
    if resumed_check is not None:
        print(f"resumed fit equals an uninterrupted fit bit for bit: {resumed_check}")
    print(f"multi-process fit: {int(res.n_iter)} iterations, converged {bool(res.converged)}, "
          f"lower bound {float(res.log_likelihood):.12f} ({t_multi:.2f} s, compile included)")
    print(f"single-process fit: {int(ref.n_iter)} iterations, converged "
          f"{bool(ref.converged)}, lower bound {float(ref.log_likelihood):.12f} "
          f"({t_single:.2f} s, compile included)")
    print("all processes hold identical parameters (checked by fit_multiprocess)")
    print(f"parameters checksum: {digest.hexdigest()}")
    print(f"{RESULT_PREFIX} {diff:.6e}", flush=True)


# --------------------------------------------------------------------------------- launcher
def launch(args) -> int:
    tmp = tempfile.mkdtemp(prefix="gmm_jax_multihost_")
    procs, logs = [], []
    try:
        data = os.path.join(tmp, "data.npy")
        np.save(data, make_data(args.seed, args.n_samples, args.n_features, args.n_components))
        coordinator = f"127.0.0.1:{free_port()}"
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if args.platform:
            env["JAX_PLATFORMS"] = args.platform
        base = [sys.executable, os.path.abspath(__file__), "--num-processes",
                str(args.num_processes), "--coordinator", coordinator, "--data", data,
                "--seed", str(args.seed), "--n-components", str(args.n_components),
                "--covariance-type", args.covariance_type, "--max-iter", str(args.max_iter),
                "--tol", repr(args.tol), "--timeout", repr(args.timeout),
                "--stall-timeout", repr(args.stall_timeout)]
        if args.checkpoint:
            base += ["--checkpoint", os.path.abspath(args.checkpoint)]
        if args.crash_after_iteration is not None:
            base += ["--crash-after-iteration", str(args.crash_after_iteration)]
        for i in range(args.num_processes):
            out = open(os.path.join(tmp, f"out{i}.txt"), "w+")
            err = open(os.path.join(tmp, f"err{i}.txt"), "w+")
            logs.append((out, err))
            procs.append(subprocess.Popen(base + ["--process-id", str(i)], stdout=out,
                                          stderr=err, env=env))
        deadline = time.monotonic() + args.timeout
        failed = None
        while True:
            codes = [p.poll() for p in procs]
            failed = next((i for i, c in enumerate(codes) if c not in (None, 0)), None)
            if failed is not None or all(c == 0 for c in codes):
                break
            if time.monotonic() > deadline:
                running = [i for i, c in enumerate(codes) if c is None]
                for i in running:  # ask for their stacks (faulthandler on SIGUSR1)
                    procs[i].send_signal(signal.SIGUSR1)
                time.sleep(1.0)
                print(f"multihost_em: the {args.num_processes} processes did not finish within "
                      f"--timeout {args.timeout:.0f} s (still running: {running}); stopped "
                      "them. Their output and stacks:", file=sys.stderr)
                _dump(logs, file=sys.stderr)
                return 1
            time.sleep(0.05)
        if failed is not None:
            code = procs[failed].returncode
            if args.crash_after_iteration is not None and code == -signal.SIGKILL:
                print(f"multihost_em: process {failed} was killed (SIGKILL) after iteration "
                      f"{args.crash_after_iteration} as asked; run the same command without "
                      f"--crash-after-iteration to resume from {args.checkpoint}.")
                return CRASH_EXIT
            err = logs[failed][1]
            err.seek(0)
            if "Timeout (" in err.read():  # its watchdog fired: it was stuck
                print(f"multihost_em: process {failed} did not finish within --timeout "
                      f"{args.timeout:.0f} s or made no progress for --stall-timeout "
                      f"{args.stall_timeout:.0f} s; stopped the others. Its stacks:",
                      file=sys.stderr)
            else:
                print(f"multihost_em: process {failed} failed with exit code {code}; stopped the "
                      "others. Its output:", file=sys.stderr)
            _dump([logs[failed]], file=sys.stderr)
            return 1
        logs[0][0].seek(0)
        sys.stdout.write(logs[0][0].read())
        sys.stdout.flush()
        return 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for out, err in logs:
            out.close()
            err.close()
        shutil.rmtree(tmp, ignore_errors=True)


def _dump(logs, file) -> None:
    for out, err in logs:
        for f in (out, err):
            f.seek(0)
            text = f.read()
            if len(text) > 12000:  # keep the head (what fired, which thread) and the tail
                text = f"{text[:6000]}\n[... {len(text) - 12000} characters ...]\n{text[-6000:]}"
            if text:
                print(text, file=file)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--num-processes", type=int, default=2)
    ap.add_argument("--n-samples", type=int, default=20_000)
    ap.add_argument("--n-features", type=int, default=4)
    ap.add_argument("--n-components", type=int, default=4)
    ap.add_argument("--covariance-type", default="full")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-iter", type=int, default=100)
    ap.add_argument("--tol", type=float, default=1e-8)
    ap.add_argument("--checkpoint", default=None, help="EM checkpoint file (resumable fit)")
    ap.add_argument("--crash-after-iteration", type=int, default=None,
                    help="process 0 kills itself (SIGKILL) after this iteration")
    ap.add_argument("--timeout", type=float, default=300.0,
                    help="seconds the launcher waits for all processes")
    ap.add_argument("--stall-timeout", type=float, default=120.0,
                    help="a process that makes no progress (a stage or an EM iteration) for this "
                         "many seconds prints its stacks and exits")
    ap.add_argument("--platform", default="cpu",
                    help="JAX_PLATFORMS for the local processes ('' keeps the default)")
    ap.add_argument("--process-id", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--coordinator", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--data", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.num_processes < 1:
        ap.error("--num-processes must be >= 1")
    if args.crash_after_iteration is not None and not args.checkpoint:
        ap.error("--crash-after-iteration needs --checkpoint (to resume from)")
    if args.process_id is not None:
        worker(args)
        return 0
    return launch(args)


if __name__ == "__main__":
    sys.exit(main())
