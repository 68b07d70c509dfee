"""EM speed, side by side: gmm_jax vs the numpy baseline, scikit-learn and gmmx.

Every contender starts from the same initial parameters (weights, means, precisions) and runs a
fixed number of iterations (``tol=0``); each runs in its own subprocess, which reports wall time,
iteration count (checked) and peak resident memory. The parent measures the machine's float32
matmul peak with JAX in the same run and writes JSON, a Markdown table and a PNG plot to
``benchmarks/results/``.

Usage (the defaults are the issue's target sizes)::

    python -m benchmarks.bench_em                                  # full/diag/spherical/tied
    python -m benchmarks.bench_em --cov full --n 20000 --iters 5   # quick
    python -m benchmarks.bench_em --memory                         # N=1M, D=32, K=64 RSS probe
    python -m benchmarks.bench_em --quick                          # under a minute (gmm-jax bench)

For a float32 run, gmm_jax is also run once in float64 from the same initial parameters, and
every contender's final lower bound is compared with it (the "f32 vs f64" column: relative
error, or absolute where the bound is below 1 in magnitude).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import _common as C  # noqa: E402

CONTENDERS = ("gmm_jax", "numpy", "sklearn", "gmmx")
MODULE = "benchmarks.bench_em"


# ----------------------------------------------------------------------------- workers


def _worker(spec: dict) -> dict:
    n, d, k, ct = spec["n"], spec["d"], spec["k"], spec["cov"]
    iters, repeats, name = spec["iters"], spec["repeats"], spec["contender"]
    X, w0, m0, p0 = C.make_problem(n, d, k, ct, spec["dtype"], spec.get("seed", 0))
    if spec["dtype"] == "float64":
        import jax

        jax.config.update("jax_enable_x64", True)
    dt = X.dtype
    w0, m0, p0 = w0.astype(dt), m0.astype(dt), p0.astype(dt)
    out = {"contender": name, "rss_before_mb": C.current_rss_mb()}
    cpu0 = time.process_time()
    run = {"gmm_jax": _run_gmm_jax, "numpy": _run_numpy, "sklearn": _run_sklearn,
           "gmmx": _run_gmmx}[name]
    out.update(run(X, w0, m0, p0, ct, k, iters, repeats, spec))
    out["peak_rss_mb"] = C.peak_rss_mb()
    out["process_cpu_s"] = time.process_time() - cpu0
    out["loadavg"] = list(os.getloadavg())
    return out


def _timed(f, repeats):
    times, res = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        res = f()
        times.append(time.perf_counter() - t)
    return times, res


def _run_gmm_jax(X, w0, m0, p0, ct, k, iters, repeats, spec):
    import jax

    import gmm_jax

    def call():
        r = gmm_jax.fit(0, X, k, covariance_type=ct, max_iter=iters, tol=0.0, loop="scan",
                        weights_init=w0, means_init=m0, precisions_init=p0,
                        chunk_size=spec.get("chunk_size"))
        return jax.block_until_ready(r)

    t = time.perf_counter()
    r = call()
    first = time.perf_counter() - t
    times, r = _timed(call, repeats)
    return {"first_s": first, "warm_s": min(times), "warm_all_s": times,
            "n_iter": int(r.n_iter), "lower_bound": float(r.log_likelihood),
            "device": str(jax.devices()[0])}


def _run_numpy(X, w0, m0, p0, ct, k, iters, repeats, spec):
    from benchmarks import numpy_em

    times, r = _timed(lambda: numpy_em.fit(X, k, covariance_type=ct, max_iter=iters, tol=0.0,
                                           weights_init=w0, means_init=m0, precisions_init=p0),
                      max(1, repeats // 3))
    return {"warm_s": min(times), "warm_all_s": times, "n_iter": int(r.n_iter),
            "lower_bound": float(r.log_likelihood)}


def _run_sklearn(X, w0, m0, p0, ct, k, iters, repeats, spec):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    def call():
        gm = GaussianMixture(k, covariance_type=ct, tol=0.0, max_iter=iters, reg_covar=1e-6,
                             weights_init=w0, means_init=m0, precisions_init=p0,
                             random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return gm.fit(X)

    times, gm = _timed(call, max(1, repeats // 3))
    return {"warm_s": min(times), "warm_all_s": times, "n_iter": int(gm.n_iter_),
            "lower_bound": float(gm.lower_bound_),
            "note": "sklearn's fit adds one final E-step after the loop (for labels)"}


def _run_gmmx(X, w0, m0, p0, ct, k, iters, repeats, spec):
    try:
        import jax
        from gmmx import EMFitter, GaussianMixtureModelJax
    except ImportError:
        return {"skipped": "gmmx not installed (pip install gmmx)"}
    if ct not in ("full", "diag"):
        return {"skipped": f"gmmx has no {ct!r} covariance"}
    covs = np.linalg.inv(p0) if ct == "full" else 1.0 / p0
    gmm = GaussianMixtureModelJax.from_squeezed(means=m0, covariances=covs.astype(X.dtype),
                                                weights=w0, covariance_type=ct)
    fitter = EMFitter(max_iter=iters, tol=0.0, reg_covar=1e-6)
    Xj = jax.device_put(X)

    def call():
        return jax.block_until_ready(fitter.fit(x=Xj, gmm=gmm))

    t = time.perf_counter()
    call()
    first = time.perf_counter() - t
    times, r = _timed(call, repeats)
    return {"first_s": first, "warm_s": min(times), "warm_all_s": times,
            "n_iter": int(r.n_iter), "lower_bound": float(r.log_likelihood)}


def _peak_worker(spec: dict) -> dict:
    return {"matmul_gflops": C.matmul_peak_gflops(spec.get("size", 2048))}


# ----------------------------------------------------------------------------- parent


def run_config(n, d, k, ct, dtype, iters, repeats, contenders, peak, chunk_size=None,
               blas_threads=None):
    """Runs every contender on one problem; returns a dict with per-contender rows and ratios."""
    flops = C.flops_per_iter(ct, n, d, k)
    rows = {}
    for name in contenders:
        spec = dict(n=n, d=d, k=k, cov=ct, dtype=dtype, iters=iters, repeats=repeats,
                    contender=name, chunk_size=chunk_size)
        t = time.perf_counter()
        r = C.run_worker(MODULE, spec,
                         blas_threads=blas_threads if name in ("numpy", "sklearn") else None)
        r["subprocess_s"] = time.perf_counter() - t
        if "warm_s" in r:
            r["ms_per_iter"] = 1e3 * r["warm_s"] / iters
            r["gflops"] = flops * iters / r["warm_s"] / 1e9
            r["peak_fraction"] = r["gflops"] / peak
            if r.get("first_s") is not None:
                r["compile_s"] = max(0.0, r["first_s"] - r["warm_s"])
            r["iters_ok"] = r["n_iter"] == iters
        rows[name] = r
        print(f"  {ct:9s} {name:8s} " + (
            f"{r['ms_per_iter']:9.1f} ms/iter  {r['gflops']:7.1f} GFLOP/s  "
            f"RSS {r['peak_rss_mb']:7.0f} MB  n_iter={r['n_iter']}" if "warm_s" in r
            else str(r.get("skipped") or r.get("error"))[:300]), flush=True)
    base = rows.get("gmm_jax", {}).get("ms_per_iter")
    speedups = {}
    if base:
        for name, r in rows.items():
            if name != "gmm_jax" and "ms_per_iter" in r:
                speedups[name] = r["ms_per_iter"] / base
    if dtype == "float32" and "gmm_jax" in rows and "lower_bound" in rows["gmm_jax"]:
        spec = dict(n=n, d=d, k=k, cov=ct, dtype="float64", iters=iters, repeats=1,
                    contender="gmm_jax", chunk_size=chunk_size)
        ref = C.run_worker(MODULE, spec)
        if "lower_bound" in ref:
            lb64 = ref["lower_bound"]
            for r in rows.values():
                if "lower_bound" in r:
                    r["f64_lower_bound"] = lb64
                    r["f32_vs_f64_error"] = abs(r["lower_bound"] - lb64) / max(1.0, abs(lb64))
            print(f"  {ct:9s} float64 reference lower bound {lb64:.8f}; gmm_jax float32 error "
                  f"{rows['gmm_jax']['f32_vs_f64_error']:.2e}", flush=True)
    return {"n": n, "d": d, "k": k, "covariance_type": ct, "dtype": dtype, "iters": iters,
            "flops_per_iter": flops, "contenders": rows, "speedup_of_gmm_jax": speedups,
            "loadavg_after": list(os.getloadavg())}


def markdown(report: dict) -> str:
    info = report["machine"]
    lines = [
        f"Machine: {info['cpu']} ({info['cpu_count']} cores), JAX {info['jax']} "
        f"({info['jax_backend']}), numpy {info['numpy']}, scikit-learn {info['sklearn']}, "
        f"gmmx {info['gmmx']}; {info['date']}; load average at start "
        f"{', '.join(f'{x:.1f}' for x in info['loadavg_start'])}.",
        f"Matmul peak (float32 jnp {report['peak_size']}^2 GEMM, best of 10, same run): "
        f"{report['matmul_peak_gflops']:.1f} GFLOP/s. BLAS threads for numpy/sklearn: "
        f"{report.get('blas_threads_numpy_sklearn') or 'library default'}.",
        "",
        "| N | D | K | cov | dtype | contender | ms/iter | gmm_jax speed-up | first call s "
        "| compile s | GFLOP/s | % of peak | peak RSS MB | iters | f32 vs f64 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for cfg in report["configs"]:
        for name, r in cfg["contenders"].items():
            if "ms_per_iter" not in r:
                lines.append(f"| {cfg['n']} | {cfg['d']} | {cfg['k']} | {cfg['covariance_type']} "
                             f"| {cfg['dtype']} | {name} | - | - | - | - | - | - | - | "
                             f"{(r.get('skipped') or 'error')[:40]} | - |")
                continue
            sp = cfg["speedup_of_gmm_jax"].get(name)
            fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
            lines.append(
                f"| {cfg['n']} | {cfg['d']} | {cfg['k']} | {cfg['covariance_type']} "
                f"| {cfg['dtype']} | {name} | {r['ms_per_iter']:.1f} "
                f"| {'(ref)' if name == 'gmm_jax' else fmt(sp, '.1f') + 'x'} "
                f"| {fmt(r.get('first_s'), '.2f')} | {fmt(r.get('compile_s'), '.2f')} "
                f"| {r['gflops']:.1f} | {100 * r['peak_fraction']:.0f}% "
                f"| {r['peak_rss_mb']:.0f} | {r['n_iter']} "
                f"| {fmt(r.get('f32_vs_f64_error'), '.1e')} |")
    lines += ["", "ms/iter: best warm run / iterations. Speed-up: contender ms/iter divided by "
              "gmm_jax ms/iter. Compile s: first call minus warm call. Peak RSS: ru_maxrss of the "
              "contender's own subprocess (interpreter, imports and data included; "
              "`rss_before_mb` in the JSON is the level before fitting). FLOPs counted per "
              "iteration: full 4NKD^2, tied 4ND^2+4NKD, diag 8NKD, spherical 6NKD. f32 vs f64: "
              "|final lower bound - gmm_jax's float64 lower bound| / max(1, |float64 bound|), "
              "same initial parameters and iterations (scikit-learn adds a final E-step, so its "
              "bound is one half-step further)."]
    return "\n".join(lines) + "\n"


def plot(report: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfgs = [c for c in report["configs"] if len(c["contenders"]) > 1]
    if not cfgs:
        return
    names = [n for n in CONTENDERS if any("ms_per_iter" in c["contenders"].get(n, {})
                                          for c in cfgs)]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        vals = [c["contenders"].get(name, {}).get("ms_per_iter", np.nan) for c in cfgs]
        bars = ax.bar(np.arange(len(cfgs)) + i * width, vals, width, label=name)
        for b, v in zip(bars, vals, strict=False):
            if np.isfinite(v):
                ax.text(b.get_x() + b.get_width() / 2, v, f"{v:.0f}" if v >= 10 else f"{v:.1f}",
                        ha="center", va="bottom", fontsize=7)
    ax.set_xticks(np.arange(len(cfgs)) + width * (len(names) - 1) / 2)
    ax.set_xticklabels([f"{c['covariance_type']}\nN={c['n']} D={c['d']} K={c['k']}"
                        for c in cfgs], fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("ms per EM iteration (log scale, lower is better)")
    ax.set_title(f"EM iteration time, {cfgs[0]['dtype']}, {cfgs[0]['iters']} fixed iterations")
    ax.legend(fontsize=8)
    fig.text(0.01, 0.01, C.footer(report["machine"]), fontsize=7, color="gray")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--peak-worker", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--d", type=int, default=32)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--cov", default="full,diag,spherical,tied",
                    help="comma-separated covariance types")
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3, help="warm repeats (best is reported)")
    ap.add_argument("--contenders", default=",".join(CONTENDERS))
    ap.add_argument("--chunk-size", type=int, default=None)
    ap.add_argument("--memory", action="store_true",
                    help="memory probe: gmm_jax only at N=1M, D=32, K=64 (overrides sizes)")
    ap.add_argument("--peak-size", type=int, default=2048)
    ap.add_argument("--blas-threads", type=int, default=None,
                    help="OpenBLAS/OMP threads for the numpy and sklearn workers (default: "
                         "library default; use 1 on a machine shared with other jobs)")
    ap.add_argument("--tag", default=None, help="results file stem (default from the sizes)")
    ap.add_argument("--out", default=C.RESULTS)
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--quick", action="store_true",
                    help="small sizes for a check in under a minute: N=20000, D=16, K=8, full "
                         "and diag, 10 iterations, gmm_jax/numpy/sklearn")
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.d, args.k, args.iters, args.repeats = 20_000, 16, 8, 10, 2
        args.cov, args.contenders, args.peak_size = "full,diag", "gmm_jax,numpy,sklearn", 1024
        args.tag = args.tag or "em_quick"
        args.no_plot = True
    if args.worker:
        print(json.dumps(_worker(json.loads(args.worker))))
        return {}
    if args.peak_worker:
        print(json.dumps(_peak_worker(json.loads(args.peak_worker))))
        return {}
    if args.memory:
        args.n, args.d, args.k = 1_000_000, 32, 64
        args.contenders, args.cov = "gmm_jax", "full"
        args.iters, args.repeats = min(args.iters, 5), 1
    contenders = [c.strip() for c in args.contenders.split(",") if c.strip()]
    covs = [c.strip() for c in args.cov.split(",") if c.strip()]
    info = C.machine_info()
    print(C.footer(info), flush=True)
    peak0 = _peak_subprocess(args.peak_size)
    print(f"  matmul peak (before): {peak0:.1f} GFLOP/s", flush=True)
    configs = [run_config(args.n, args.d, args.k, ct, args.dtype, args.iters, args.repeats,
                          contenders, peak0, args.chunk_size, args.blas_threads)
               for ct in covs]
    peak1 = _peak_subprocess(args.peak_size)
    print(f"  matmul peak (after): {peak1:.1f} GFLOP/s", flush=True)
    peak = max(peak0, peak1)
    for cfg in configs:  # fractions against the best peak seen in this run
        for r in cfg["contenders"].values():
            if "gflops" in r:
                r["peak_fraction"] = r["gflops"] / peak
    report = {"machine": info, "command": "python -m benchmarks.bench_em " + " ".join(
        a for a in (argv if argv is not None else sys.argv[1:])),
        "matmul_peak_gflops": peak, "matmul_peak_runs_gflops": [peak0, peak1],
        "peak_size": args.peak_size, "blas_threads_numpy_sklearn": args.blas_threads,
        "configs": configs,
        "loadavg_end": list(os.getloadavg())}
    os.makedirs(args.out, exist_ok=True)
    tag = args.tag or ("memory" if args.memory else
                       f"em_n{args.n}_d{args.d}_k{args.k}_{args.dtype}")
    stem = os.path.join(args.out, f"bench_{tag}")
    with open(stem + ".json", "w") as f:
        json.dump(report, f, indent=1)
    with open(stem + ".md", "w") as f:
        f.write(markdown(report))
    if not args.no_plot:
        plot(report, stem + ".png")
    print(markdown(report))
    print(f"wrote {stem}.json/.md/.png", flush=True)
    return report


def _peak_subprocess(size: int) -> float:
    """Float32 matmul GFLOP/s measured in a fresh subprocess (same device as the contenders)."""
    import subprocess

    env = dict(os.environ)
    env["PYTHONPATH"] = C.ROOT + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-m", MODULE, "--peak-worker",
                          json.dumps({"size": size})], cwd=C.ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    for line in reversed(out.stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)["matmul_gflops"]
    raise RuntimeError(out.stderr[-2000:])


if __name__ == "__main__":
    main()
