"""The two exact E-step kernels side by side, per shape: where ``estep.exact_kernel`` should pick
each on this backend.

``whitened`` forms the residuals ``(y - m_k) L_k`` of every active component (work ~ A N D^2 in
the data's dtype); ``expanded64`` forms the float64 features ``phi(y)`` once per row (F ~ D^2 / 2
columns for full covariances) and runs two GEMMs against all A components (work ~ N F + A N F in
float64). Each kernel is timed on one jitted ``estep.bank_moments`` call (one E-step of one bank
of A = K components on shared rows, warm, median of ``--repeats``), and the table marks the kernel
that ``estep.exact_kernel(type, K, D)`` chose for that shape (``*``).

Usage::

    python -m benchmarks.bench_exact_kernels                  # full, D = 8, 16, 32, 64
    python -m benchmarks.bench_exact_kernels --cov full,diag --n 16384

Results: ``benchmarks/results/bench_exact_kernels.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import _common as C  # noqa: E402

KS = (1, 2, 4, 8, 16, 32, 64)
DS = (8, 16, 32, 64)


def _params(rng, covariance_type: str, k: int, d: int):
    import jax
    import jax.numpy as jnp

    import gmm_jax

    means = rng.normal(size=(k, d))
    if covariance_type == "full":
        a = rng.normal(size=(k, d, d)) / np.sqrt(d)
        cov = a @ np.swapaxes(a, 1, 2) + 0.5 * np.eye(d)
    elif covariance_type == "diag":
        cov = rng.uniform(0.5, 2.0, (k, d))
    else:
        cov = rng.uniform(0.5, 2.0, (k,))
    p = gmm_jax.params_from_covariances(np.full(k, 1.0 / k), means, cov, covariance_type)
    return jax.tree.map(lambda x: jnp.asarray(x, jnp.float32)[None], p)  # a bank of one model


def time_kernel(covariance_type: str, n: int, d: int, k: int, kernel: str, repeats: int) -> float:
    """Median seconds of one warm E-step of the ``kernel`` on (n, d) rows, K = ``k``."""
    import jax
    import jax.numpy as jnp

    from gmm_jax import estep
    from gmm_jax.em import auto_chunk

    rng = np.random.default_rng(0)
    p = _params(rng, covariance_type, k, d)
    Y = jnp.asarray(rng.normal(size=(n, d)), jnp.float32)
    w = jnp.ones((n,), jnp.float32)
    f = jax.jit(lambda p, Y, w: estep.bank_moments(
        p, Y, w, None, form=kernel, assignment="soft", chunk_size=auto_chunk(n, k, d)))
    jax.block_until_ready(f(p, Y, w))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(f(p, Y, w))
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def markdown(report: dict) -> str:
    lines = [f"Command: `{report['command']}`  ",
             f"Machine: {C.footer(report['machine'])}; load at the end "
             f"{report['loadavg_end'][0]:.1f}.", "",
             "| type | D | K | whitened ms | expanded64 ms | whitened / expanded64 | chosen |",
             "|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        lines.append(f"| {r['type']} | {r['d']} | {r['k']} | {1e3 * r['whitened']:.2f} | "
                     f"{1e3 * r['expanded64']:.2f} | {r['whitened'] / r['expanded64']:.2f} | "
                     f"{r['chosen']}{' *' if r['chosen'] == r['faster'] else ''} |")
    lines += ["", f"One E-step of one model on {report['n']} shared float32 rows, warm, median of "
              f"{report['repeats']}. `*`: the chosen kernel was the faster one in this run."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cov", default="full", help="comma-separated types with features")
    ap.add_argument("--n", type=int, default=16384)
    ap.add_argument("--d", default=",".join(map(str, DS)))
    ap.add_argument("--k", default=",".join(map(str, KS)))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=C.RESULTS)
    args = ap.parse_args(argv)

    import jax

    from gmm_jax import estep

    info = C.machine_info()
    print(C.footer(info), flush=True)
    rows = []
    for ct in args.cov.split(","):
        for d in map(int, args.d.split(",")):
            for k in map(int, args.k.split(",")):
                t = {kern: time_kernel(ct, args.n, d, k, kern, args.repeats)
                     for kern in ("whitened", "expanded64")}
                row = {"type": ct, "d": d, "k": k, **t,
                       "faster": min(t, key=t.get),
                       "chosen": estep.exact_kernel(ct, k, d)}
                rows.append(row)
                print(f"{ct:9s} D={d:3d} K={k:3d}  whitened {1e3 * t['whitened']:8.2f} ms  "
                      f"expanded64 {1e3 * t['expanded64']:8.2f} ms  chosen {row['chosen']}",
                      flush=True)
    report = {"machine": info, "backend": jax.default_backend(), "n": args.n,
              "repeats": args.repeats, "rows": rows, "loadavg_end": list(os.getloadavg()),
              "command": "python -m benchmarks.bench_exact_kernels " + " ".join(
                  argv if argv is not None else sys.argv[1:])}
    os.makedirs(args.out, exist_ok=True)
    base = os.path.join(args.out, "bench_exact_kernels")
    with open(base + ".json", "w") as f:
        json.dump(report, f, indent=1)
    with open(base + ".md", "w") as f:
        f.write(markdown(report))
    agree = sum(r["chosen"] == r["faster"] for r in rows)
    print(f"chosen kernel was the faster one in {agree} of {len(rows)} shapes; table: {base}.md")
    return report


if __name__ == "__main__":
    main()
