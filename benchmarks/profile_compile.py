"""Where a fresh process's first call goes: tracing, lowering to MLIR, XLA compilation, running.

For each workflow, a fresh subprocess runs it twice and records JAX's own compile-phase
durations (``jax.monitoring``: jaxpr tracing, jaxpr -> MLIR lowering, XLA backend compilation)
during the first call, plus the first and second call's wall and CPU time. What is left of the
first call after compilation is running time (the second call's time, roughly).

Usage::

    python benchmarks/profile_compile.py            # digits: fit full/diag K=10, sweeps 1..20
    python benchmarks/profile_compile.py --cache /tmp/gmm_cache   # then run it again: cache hits

Results: ``benchmarks/results/profile_compile.json`` and ``.md``.
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

MODULE = "benchmarks.profile_compile"
PHASES = {
    "/jax/core/compile/tracing_duration": "trace",
    "/jax/core/compile/jaxpr_trace_duration": "trace",
    "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower",
    "/jax/core/compile/backend_compile_duration": "xla_compile",
}
WORKFLOWS = ("fit_full_k10", "fit_diag_k10", "sweep_full_1_20", "sweep_diag_1_20")


def _worker(spec: dict) -> dict:
    import jax

    import gmm_jax

    if spec.get("cache"):
        gmm_jax.enable_compilation_cache(spec["cache"])
    durations: dict[str, float] = {}
    counts: dict[str, int] = {}

    def listener(event, duration, **kw):
        phase = PHASES.get(event)
        if phase:
            durations[phase] = durations.get(phase, 0.0) + duration
            counts[phase] = counts.get(phase, 0) + 1

    jax.monitoring.register_event_duration_secs_listener(listener)
    from sklearn.datasets import load_digits

    X = load_digits().data.astype(np.float32)
    wf = spec["workflow"]
    ct = "full" if "full" in wf else "diag"
    if wf.startswith("fit"):
        def run():
            r = gmm_jax.fit(jax.random.key(0), X, 10, covariance_type=ct)
            return jax.block_until_ready(r.params.means)
    else:
        def run():
            s = gmm_jax.select_n_components(jax.random.key(0), X, range(1, 21),
                                            covariance_type=ct)
            return jax.block_until_ready(s.best_fit.params.means)
    t, c = time.perf_counter(), time.process_time()
    run()
    first_wall, first_cpu = time.perf_counter() - t, time.process_time() - c
    first = dict(durations)
    t, c = time.perf_counter(), time.process_time()
    run()
    return {"workflow": wf, "first_wall_s": first_wall, "first_cpu_s": first_cpu,
            "second_wall_s": time.perf_counter() - t, "second_cpu_s": time.process_time() - c,
            "phases_s": first, "phase_counts": counts}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--workflows", nargs="+", default=list(WORKFLOWS), choices=WORKFLOWS)
    ap.add_argument("--cache", default=None, help="persistent compilation cache folder")
    ap.add_argument("--out", default=os.path.join(C.RESULTS, "profile_compile"))
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(json.loads(args.worker))))
        return 0
    info = C.machine_info()
    print(C.footer(info), flush=True)
    rows = []
    for wf in args.workflows:
        r = C.run_worker(MODULE, {"workflow": wf, "cache": args.cache}, timeout=1800)
        rows.append(r)
        print(json.dumps(r)[:400], flush=True)
    lines = [f"Command: `python benchmarks/profile_compile.py {' '.join(argv or sys.argv[1:])}`"
             f"  \nMachine: {C.footer(info)}; load at the end {os.getloadavg()[0]:.1f}.", "",
             "| workflow (digits, float32) | first call s (CPU s) | trace s | lower s | XLA "
             "compile s | second call s (CPU s) |", "|---|---|---|---|---|---|"]
    for r in rows:
        if "phases_s" not in r:
            lines.append(f"| {r.get('workflow', '?')} | error: {r.get('error', '')[:80]} "
                         "| | | | |")
            continue
        p = r["phases_s"]
        lines.append(f"| {r['workflow']} | {r['first_wall_s']:.2f} ({r['first_cpu_s']:.1f}) | "
                     f"{p.get('trace', 0):.2f} | {p.get('lower', 0):.2f} | "
                     f"{p.get('xla_compile', 0):.2f} | {r['second_wall_s']:.2f} "
                     f"({r['second_cpu_s']:.1f}) |")
    lines += ["", "Phases are JAX's own monitoring durations summed over every program the first "
              "call compiled (wall seconds). With `--cache` and a warm cache folder the XLA "
              "compile column becomes cache loads."]
    text = "\n".join(lines) + "\n"
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out + ".json", "w") as f:
        json.dump({"machine": info, "rows": rows}, f, indent=1)
    with open(args.out + ".md", "w") as f:
        f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
