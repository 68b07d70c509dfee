"""Data that stays on disk and EM across processes: peak memory and multi-process scaling.

Two measurements, each in fresh subprocesses (so every peak resident set is the process's own):

``--memory``: ``gmm_jax.fit_batches`` on an (N, D) float32 ``.npy`` file of N=10M, D=32 rows
(1.28 GB, written once to ``--data-dir`` a block at a time, never held whole), K=64, full
covariances, from fixed initial parameters, ``--iters`` EM iterations (``tol=0``), with
``checkpoint=PATH`` (so the data checksum pass and the per-iteration atomic write are included).
Sources: the path (positioned reads, ``batch_size`` rows at a time) and, with ``--mmap``, the
same file as ``np.load(path, mmap_mode="r")`` (a memory map: the pages it touches count in the
resident set while the kernel keeps them). Reports the peak resident set (``VmHWM`` of the
worker's own address space), the resident set before the fit (interpreter, JAX, imports), and
seconds per iteration.

``--scaling``: ``gmm_jax.multihost.fit_multiprocess`` with 1, 2 and 4 local processes
(``jax.distributed`` on 127.0.0.1, gloo CPU collectives), each memory-mapping its slice of one
``.npy`` file; the same data, start and iteration count for every process count. Reports the
median seconds per iteration (compile excluded: the median of the per-iteration times, which
the callback timestamps), the wall time of the whole fit, and each process's peak memory. On a
machine with C cores, P processes share them: XLA already uses every core in one process, so
more processes than hosts adds collective work without adding compute.

Usage::

    nice -n 10 python -m benchmarks.bench_multihost --memory            # N=10M, D=32, K=64
    nice -n 10 python -m benchmarks.bench_multihost --scaling           # 1, 2, 4 processes
    nice -n 10 python -m benchmarks.bench_multihost --memory --n 1000000 --iters 1  # smaller

Writes ``benchmarks/results/bench_multihost_{memory,scaling}.json`` and a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import _common as C  # noqa: E402

MODULE = "benchmarks.bench_multihost"


# ---------------------------------------------------------------------------------- data
def write_data(path: str, n: int, d: int, k: int, seed: int = 0, block: int = 1 << 18) -> None:
    """(n, d) float32 mixture rows written block by block into a ``.npy`` file."""
    if os.path.exists(path):
        a = np.load(path, mmap_mode="r")
        if a.shape == (n, d) and a.dtype == np.float32:
            return
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * 3.0
    scales = rng.uniform(0.5, 1.5, size=(k, d))
    tmp = path + ".part"
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, d))
    for s in range(0, n, block):
        m = min(block, n - s)
        lab = rng.integers(0, k, size=m)
        out[s:s + m] = centres[lab] + rng.standard_normal((m, d)) * scales[lab]
        out.flush()
    del out
    os.replace(tmp, path)


def start_params(path: str, k: int, covariance_type: str = "full", seed: int = 0):
    """Fixed initial parameters from the first 100k rows: k random rows as means, the sample
    covariance for every component, equal weights (numpy; no initialisation compile)."""
    import gmm_jax
    from gmm_jax import covariance as cov

    X = np.asarray(np.load(path, mmap_mode="r")[:100_000], np.float64)
    rng = np.random.default_rng(seed)
    means = X[rng.choice(len(X), k, replace=False)]
    c = np.cov(X.T)
    shape = cov.covariance_shape(covariance_type, k, X.shape[1])
    if covariance_type == "full":
        covs = np.broadcast_to(c, shape).copy()
    else:
        raise ValueError("the benchmark uses full covariances")
    p = gmm_jax.params_from_covariances(np.full(k, 1.0 / k), means, covs, covariance_type)
    return type(p)(*(np.asarray(getattr(p, f), np.float32) for f in
                     ("weights", "means", "covariances", "precisions_cholesky")),
                   covariance_type=covariance_type)


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _rss_mb() -> float:
    return _status_mb("VmRSS")


def peak_mb() -> float:
    """Peak resident set of this process's own address space (``VmHWM``).

    Not ``ru_maxrss``: Linux carries the parent's high-water mark into a child across
    fork/vfork + exec, so a child of a large parent (here: the driver, which wrote the data
    file through a memory map) would report the parent's peak.
    """
    return _status_mb("VmHWM")


# ------------------------------------------------------------------------------ workers
def _memory_worker(spec: dict) -> dict:
    import jax

    import gmm_jax

    jax.devices()
    p0 = start_params(spec["data"], spec["k"])
    rss_before = _rss_mb()
    source = spec["data"] if spec["source"] == "path" else np.load(spec["data"], mmap_mode="r")
    stamps = []
    ckpt = spec["checkpoint"]
    if os.path.exists(ckpt):
        os.remove(ckpt)
    t0 = time.perf_counter()
    res = gmm_jax.fit_batches(0, source, spec["k"], max_iter=spec["iters"], tol=0.0,
                              init_params=p0, checkpoint=ckpt,
                              callback=lambda *a: stamps.append(time.perf_counter()))
    res.params.means.block_until_ready()
    total = time.perf_counter() - t0
    it = np.diff([t0] + stamps)
    return {"source": spec["source"], "n": spec["n"], "d": spec["d"], "k": spec["k"],
            "iters": int(res.n_iter), "total_s": total, "iter_s": it.tolist(),
            "rss_before_fit_mb": rss_before, "peak_rss_mb": peak_mb(),
            "ru_maxrss_mb": C.peak_rss_mb(),
            "lower_bound": float(res.log_likelihood),
            "file_mb": os.path.getsize(spec["data"]) / 2**20,
            "batch_size": 65_536, "loadavg": list(os.getloadavg())}


def _scaling_worker(spec: dict) -> None:
    from gmm_jax import multihost

    multihost.initialize(spec["coordinator"], spec["processes"], spec["process_id"])
    import jax

    X = np.load(spec["data"], mmap_mode="r")
    n, p, me = X.shape[0], spec["processes"], spec["process_id"]
    bounds = np.linspace(0, n, p + 1).round().astype(int)
    local = X[bounds[me]:bounds[me + 1]]
    p0 = start_params(spec["data"], spec["k"])
    stamps = []
    t0 = time.perf_counter()
    res = multihost.fit_multiprocess(0, local, spec["k"], max_iter=spec["iters"], tol=0.0,
                                     init_params=p0,
                                     callback=lambda *a: stamps.append(time.perf_counter()))
    total = time.perf_counter() - t0
    it = np.diff([t0] + stamps)
    out = {"process_id": me, "processes": p, "rows": int(local.shape[0]),
           "iters": int(res.n_iter), "total_s": total, "iter_s": it.tolist(),
           "peak_rss_mb": peak_mb(), "lower_bound": float(res.log_likelihood),
           "devices": jax.local_device_count(), "loadavg": list(os.getloadavg())}
    print(json.dumps(out), flush=True)


# ------------------------------------------------------------------------------ drivers
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = C.ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_scaling(args, info) -> dict:
    path = os.path.join(args.data_dir, f"scaling_n{args.scaling_n}_d{args.d}.npy")
    write_data(path, args.scaling_n, args.d, args.k)
    rows = []
    for p in args.processes:
        coord = f"127.0.0.1:{_free_port()}"
        procs = []
        for i in range(p):
            spec = dict(data=path, k=args.k, iters=args.scaling_iters, processes=p,
                        process_id=i, coordinator=coord)
            procs.append(subprocess.Popen(
                [sys.executable, "-m", MODULE, "--scaling-worker", json.dumps(spec)],
                cwd=C.ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True))
        t0 = time.perf_counter()
        outs = []
        for pr in procs:
            try:
                so, se = pr.communicate(timeout=args.timeout)
            except subprocess.TimeoutExpired:
                for q in procs:
                    q.kill()
                raise SystemExit(f"{p} processes: timed out after {args.timeout} s") from None
            if pr.returncode:
                for q in procs:
                    q.kill()
                raise SystemExit(f"{p} processes: a worker failed:\n{se[-4000:]}")
            outs.append(json.loads(so.strip().splitlines()[-1]))
        wall = time.perf_counter() - t0
        lbs = {o["lower_bound"] for o in outs}
        med = float(np.median(outs[0]["iter_s"]))
        rows.append({"processes": p, "rows_per_process": [o["rows"] for o in outs],
                     "median_iter_s": med, "first_iter_s": outs[0]["iter_s"][0],
                     "fit_total_s": outs[0]["total_s"], "launch_wall_s": wall,
                     "peak_rss_mb": [round(o["peak_rss_mb"], 1) for o in outs],
                     "same_lower_bound_on_all": len(lbs) == 1,
                     "lower_bound": outs[0]["lower_bound"], "loadavg_end": outs[0]["loadavg"]})
        print(json.dumps(rows[-1]), flush=True)
    base = rows[0]["median_iter_s"]
    for r in rows:
        r["speedup_vs_1"] = base / r["median_iter_s"]
    return {"info": info, "n": args.scaling_n, "d": args.d, "k": args.k,
            "covariance_type": "full", "dtype": "float32", "iters": args.scaling_iters,
            "rows": rows}


def run_memory(args, info) -> dict:
    path = os.path.join(args.data_dir, f"memory_n{args.n}_d{args.d}.npy")
    t0 = time.perf_counter()
    write_data(path, args.n, args.d, args.k)
    write_s = time.perf_counter() - t0
    rows = []
    for source in ["path"] + (["mmap"] if args.mmap else []):
        spec = dict(data=path, n=args.n, d=args.d, k=args.k, iters=args.iters, source=source,
                    checkpoint=os.path.join(args.data_dir, "memory_ckpt.npz"))
        r = C.run_worker(MODULE, {"memory": spec}, timeout=args.timeout)
        print(json.dumps(r), flush=True)
        rows.append(r)
    return {"info": info, "data_file": path, "write_s": write_s, "rows": rows}


def _markdown_memory(res) -> str:
    i = res["info"]
    lines = [f"Machine: {i['cpu']} ({i['cpu_count']} cores), JAX {i['jax']} ({i['jax_backend']}),"
             f" {i['date']}, load average at start {i['loadavg_start'][0]:.1f}.", "",
             "| source | N | D | K | iters | s per iteration (first includes the scan pass and "
             "compile) | peak RSS MB | RSS before fit MB | file MB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        if "error" in r:
            lines.append(f"| error | {r['error'][:200]} |")
            continue
        lines.append(f"| {r['source']} | {r['n']} | {r['d']} | {r['k']} | {r['iters']} | "
                     f"{', '.join(f'{t:.0f}' for t in r['iter_s'])} | {r['peak_rss_mb']:.0f} | "
                     f"{r['rss_before_fit_mb']:.0f} | {r['file_mb']:.0f} |")
    return "\n".join(lines) + "\n"


def _markdown_scaling(res) -> str:
    i = res["info"]
    lines = [f"Machine: {i['cpu']} ({i['cpu_count']} cores), JAX {i['jax']} ({i['jax_backend']}),"
             f" {i['date']}, load average at start {i['loadavg_start'][0]:.1f}. N={res['n']}, "
             f"D={res['d']}, K={res['k']}, full, float32, {res['iters']} iterations.", "",
             "| processes | median s/iter | speed-up vs 1 | first iter s (compile) | fit s | "
             "peak RSS MB per process | same result on all |", "|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        lines.append(f"| {r['processes']} | {r['median_iter_s']:.2f} | "
                     f"{r['speedup_vs_1']:.2f}x | {r['first_iter_s']:.1f} | "
                     f"{r['fit_total_s']:.1f} | {', '.join(f'{m:.0f}' for m in r['peak_rss_mb'])}"
                     f" | {r['same_lower_bound_on_all']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--memory", action="store_true")
    ap.add_argument("--mmap", action="store_true", help="also measure the memory-map source")
    ap.add_argument("--scaling", action="store_true")
    ap.add_argument("--n", type=int, default=10_000_000)
    ap.add_argument("--d", type=int, default=32)
    ap.add_argument("--k", type=int, default=64)
    ap.add_argument("--iters", type=int, default=2)
    ap.add_argument("--scaling-n", type=int, default=400_000)
    ap.add_argument("--scaling-iters", type=int, default=6)
    ap.add_argument("--processes", type=lambda s: [int(v) for v in s.split(",")],
                    default=[1, 2, 4])
    ap.add_argument("--data-dir", default=os.path.join("/tmp", "gmm_jax_bench"))
    ap.add_argument("--timeout", type=float, default=3000)
    ap.add_argument("--markdown-only", action="store_true",
                    help="rewrite the Markdown tables from the JSON results")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--scaling-worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        spec = json.loads(args.worker)
        print(json.dumps(_memory_worker(spec["memory"])), flush=True)
        return 0
    if args.scaling_worker:
        _scaling_worker(json.loads(args.scaling_worker))
        return 0
    os.makedirs(args.data_dir, exist_ok=True)
    os.environ["JAX_PLATFORMS"] = "cpu"
    info = C.machine_info()
    if args.markdown_only:
        for what, fmt in (("memory", _markdown_memory), ("scaling", _markdown_scaling)):
            path = os.path.join(C.RESULTS, f"bench_multihost_{what}.json")
            if os.path.exists(path):
                with open(path) as f:
                    md = fmt(json.load(f))
                with open(path[:-4] + "md", "w") as f:
                    f.write(md)
                print(md)
        return 0
    if args.scaling:
        res = run_scaling(args, info)
        with open(os.path.join(C.RESULTS, "bench_multihost_scaling.json"), "w") as f:
            json.dump(res, f, indent=1)
        md = _markdown_scaling(res)
        with open(os.path.join(C.RESULTS, "bench_multihost_scaling.md"), "w") as f:
            f.write(md)
        print(md)
    if args.memory:
        res = run_memory(args, info)
        with open(os.path.join(C.RESULTS, "bench_multihost_memory.json"), "w") as f:
            json.dump(res, f, indent=1)
        md = _markdown_memory(res)
        with open(os.path.join(C.RESULTS, "bench_multihost_memory.md"), "w") as f:
            f.write(md)
        print(md)
    if not (args.memory or args.scaling):
        ap.error("pass --memory and/or --scaling")
    return 0


if __name__ == "__main__":
    sys.exit(main())
