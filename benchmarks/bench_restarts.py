"""Restarts: ``n_init`` fits under ``vmap`` in one program vs a Python loop of fits vs sklearn.

For each ``n_init`` in the sweep, three ways to run ``n_init`` independent EM fits of a fixed
number of iterations (``tol=0``) from ``random_from_data`` initialisations:

* ``vmap``: ``gmm_jax.fit(..., n_init=r)``, all restarts batched in one compiled program;
* ``loop``: ``r`` warm calls of ``gmm_jax.fit(..., n_init=1)`` with different keys;
* ``sklearn``: ``GaussianMixture(n_init=r, init_params="random_from_data")``.

Reports warm wall time, the cost relative to one restart, compile time for the vmap program,
and writes JSON, Markdown and a PNG to ``benchmarks/results/``.

Usage::

    python -m benchmarks.bench_restarts                       # N=20k, D=8, K=8, n_init 1,4,16,64
    python -m benchmarks.bench_restarts --n-init 1,16 --no-sklearn
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import _common as C  # noqa: E402


def _best(f, repeats):
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - t)
    return best


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--d", type=int, default=8)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--cov", default="full")
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--n-init", default="1,4,16,64")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-sklearn", action="store_true")
    ap.add_argument("--sklearn-max-init", type=int, default=64,
                    help="skip sklearn for larger n_init (it runs restarts sequentially)")
    ap.add_argument("--no-loop", action="store_true")
    ap.add_argument("--out", default=C.RESULTS)
    ap.add_argument("--no-plot", action="store_true")
    args = ap.parse_args(argv)
    if args.dtype == "float64":
        import jax

        jax.config.update("jax_enable_x64", True)
    import jax

    import gmm_jax

    info = C.machine_info()
    print(C.footer(info), flush=True)
    X = C.make_problem(args.n, args.d, args.k, args.cov, args.dtype)[0]
    inits = [int(s) for s in args.n_init.split(",")]
    rows = []
    for r in inits:
        def vm(r=r):
            return jax.block_until_ready(gmm_jax.fit(
                0, X, args.k, covariance_type=args.cov, max_iter=args.iters, tol=0.0,
                loop="scan", n_init=r, init="random_from_data"))

        t = time.perf_counter()
        res = vm()
        first = time.perf_counter() - t
        row = {"n_init": r, "vmap_first_s": first, "vmap_s": _best(vm, args.repeats),
               "vmap_n_iter": int(res.n_iter)}
        row["vmap_compile_s"] = max(0.0, first - row["vmap_s"])
        if not args.no_loop:
            def one(seed):
                return jax.block_until_ready(gmm_jax.fit(
                    seed, X, args.k, covariance_type=args.cov, max_iter=args.iters, tol=0.0,
                    loop="scan", n_init=1, init="random_from_data"))

            one(0)  # compiled once; every later call is warm
            row["loop_s"] = _best(lambda r=r: [one(s) for s in range(r)],
                                  max(1, args.repeats - 1))
        if not args.no_sklearn and r <= args.sklearn_max_init:
            from sklearn.exceptions import ConvergenceWarning
            from sklearn.mixture import GaussianMixture

            def sk(r=r):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    return GaussianMixture(args.k, covariance_type=args.cov, tol=0.0,
                                           max_iter=args.iters, n_init=r,
                                           init_params="random_from_data",
                                           random_state=0).fit(X)

            row["sklearn_s"] = _best(sk, 1)
        row["loadavg"] = list(os.getloadavg())
        rows.append(row)
        print("  " + "  ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                               for k, v in row.items() if k != "loadavg"), flush=True)
    one_restart = rows[0]["vmap_s"] if inits[0] == 1 else None
    for row in rows:
        if one_restart:
            row["vmap_cost_vs_one"] = row["vmap_s"] / one_restart
        if "loop_s" in row:
            row["loop_over_vmap"] = row["loop_s"] / row["vmap_s"]
        if "sklearn_s" in row:
            row["sklearn_over_vmap"] = row["sklearn_s"] / row["vmap_s"]
    report = {"machine": info, "command": "python -m benchmarks.bench_restarts " + " ".join(
        argv if argv is not None else sys.argv[1:]), "n": args.n, "d": args.d, "k": args.k,
        "covariance_type": args.cov, "dtype": args.dtype, "iters": args.iters, "rows": rows,
        "loadavg_end": list(os.getloadavg())}
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"bench_restarts_n{args.n}_d{args.d}_k{args.k}_{args.cov}")
    with open(stem + ".json", "w") as f:
        json.dump(report, f, indent=1)
    md = markdown(report)
    with open(stem + ".md", "w") as f:
        f.write(md)
    if not args.no_plot:
        plot(report, stem + ".png")
    print(md)
    return report


def markdown(report: dict) -> str:
    info = report["machine"]
    f = lambda row, k, fmt: format(row[k], fmt) if k in row else "-"  # noqa: E731
    lines = [
        f"Restarts, N={report['n']} D={report['d']} K={report['k']} {report['covariance_type']} "
        f"{report['dtype']}, {report['iters']} fixed iterations. {C.footer(info)}.",
        "",
        "| n_init | vmap s | vmap cost / 1 restart | vmap compile s | Python loop s "
        "| loop / vmap | sklearn n_init s | sklearn / vmap |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        lines.append(f"| {r['n_init']} | {r['vmap_s']:.3f} | {f(r, 'vmap_cost_vs_one', '.2f')}x "
                     f"| {r['vmap_compile_s']:.2f} | {f(r, 'loop_s', '.3f')} "
                     f"| {f(r, 'loop_over_vmap', '.1f')}x | {f(r, 'sklearn_s', '.3f')} "
                     f"| {f(r, 'sklearn_over_vmap', '.1f')}x |")
    return "\n".join(lines) + "\n"


def plot(report: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    [r["n_init"] for r in rows]
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for key, label in (("vmap_s", "gmm_jax vmap (one program)"),
                       ("loop_s", "gmm_jax Python loop"), ("sklearn_s", "sklearn n_init")):
        pts = [(r["n_init"], r[key]) for r in rows if key in r]
        if pts:
            ax.plot(*zip(*pts, strict=False), "o-", label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("n_init (restarts)")
    ax.set_ylabel("wall time, s (warm)")
    ax.set_title(f"Restarts: N={report['n']} D={report['d']} K={report['k']} "
                 f"{report['covariance_type']}, {report['iters']} iterations")
    ax.legend(fontsize=8)
    fig.text(0.01, 0.01, C.footer(report["machine"]), fontsize=6, color="gray")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
