"""Whole workflows as a user runs them: fresh process (compile included), then warm, against
scikit-learn in the same run (issue 9).

Workflows:

* ``sweep_full`` / ``sweep_diag``: ``select_n_components(key, digits, range(1, 21), ...)`` on
  sklearn's 1797 8x8 digits (raw pixels 0..16, float32), against scikit-learn's loop
  ``GaussianMixture(K).fit(X).bic(X)`` for K = 1..20 (float64, its only fast type).
* ``classifier``: ``GMMClassifier(K, "full", reg_covar=1e-4)`` for K = 1, 2, 4, 8 on Fashion-MNIST
  PCA-50 (8000 training images drawn with seed 0, tested on the 10000 test images), against one
  scikit-learn ``GaussianMixture`` per class and K; test error of both.
* ``classifier_shared``: the same with ``max_components=8``: the four classifiers share one
  compiled program (masked slots are computed, so the warm time grows), the same fits.
* ``classifier_sweep``: the same four classifiers from one
  ``gmm_jax.classifier.fit_classifier_sweep(key, Z, y, [1, 2, 4, 8], ...)`` call: one program,
  each K's E-step over its own components only.

Every contender runs in its own fresh subprocess: the first call is what a user pays in a new
session (imports excluded, XLA compilation included); the second call in the same process is
the warm time. Both wall and process CPU seconds are recorded (CPU seconds are less sensitive to
other jobs on a shared machine). The persistent compilation cache is off here unless
``--compilation-cache DIR`` is given (then a second fresh process reuses the compiled programs).

Usage::

    python benchmarks/bench_workflows.py                       # all five (Fashion-MNIST needed)
    python benchmarks/bench_workflows.py --workflows sweep_full sweep_diag

Results: ``benchmarks/results/bench_workflows.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import _common as C  # noqa: E402

MODULE = "benchmarks.bench_workflows"
CLASSIFIER_KS = (1, 2, 4, 8)
WORKFLOWS = ("sweep_full", "sweep_diag", "classifier", "classifier_shared", "classifier_sweep")


# ------------------------------------------------------------------------------------ data
def digits() -> np.ndarray:
    from sklearn.datasets import load_digits

    return load_digits().data


def fashion_pca50(n_train: int = 8000):
    """(Z_train, y_train, Z_test, y_test): PCA-50 of Fashion-MNIST pixels in [0, 1]."""
    from sklearn.decomposition import PCA

    import vae_jax

    ds = vae_jax.data.load_fashion_mnist()
    idx = np.random.default_rng(0).choice(len(ds.X_train), n_train, replace=False)
    X_tr, y_tr = np.asarray(ds.X_train[idx], np.float64), np.asarray(ds.y_train[idx])
    p = PCA(50, svd_solver="full", random_state=0).fit(X_tr)
    return p.transform(X_tr), y_tr, p.transform(np.asarray(ds.X_test, np.float64)), np.asarray(
        ds.y_test)


# ------------------------------------------------------------------------------------ workers
def _timed(f):
    t, c = time.perf_counter(), time.process_time()
    out = f()
    return out, time.perf_counter() - t, time.process_time() - c


def _gmm_jax(workflow: str, cache: str | None) -> dict:
    import jax

    import gmm_jax

    if cache:
        gmm_jax.enable_compilation_cache(cache)
    if workflow.startswith("sweep"):
        X = digits().astype(np.float32)
        ct = workflow.split("_")[1]

        def run():
            sel = gmm_jax.select_n_components(jax.random.key(0), X, range(1, 21),
                                              covariance_type=ct)
            jax.block_until_ready(sel.best_fit.params.means)
            return {"best_k": int(sel.best_n_components)}
    else:
        Z_tr, y_tr, Z_te, y_te = fashion_pca50()
        Z_tr, Z_te = Z_tr.astype(np.float32), Z_te.astype(np.float32)
        shared = {"max_components": max(CLASSIFIER_KS)} if workflow == "classifier_shared" \
            else {}

        def run():
            errs = {}
            if workflow == "classifier_sweep":
                from gmm_jax.classifier import fit_classifier_sweep, predict_classes

                key = gmm_jax.validation.key_from_random_state(0)  # GMMClassifier's key
                models = fit_classifier_sweep(key, Z_tr, y_tr, list(CLASSIFIER_KS),
                                              covariance_type="full", reg_covar=1e-4)
                for k, m in zip(CLASSIFIER_KS, models, strict=True):
                    pred = np.asarray(predict_classes(m, Z_te))
                    errs[k] = 100.0 * float(np.mean(pred != y_te))
                return {"test_error": errs}
            for k in CLASSIFIER_KS:
                clf = gmm_jax.GMMClassifier(k, covariance_type="full", reg_covar=1e-4,
                                            random_state=0, **shared).fit(Z_tr, y_tr)
                errs[k] = 100.0 * float(np.mean(clf.predict(Z_te) != y_te))
            return {"test_error": errs}

    first, wall1, cpu1 = _timed(run)
    second, wall2, cpu2 = _timed(run)
    return {"fresh_s": wall1, "fresh_cpu_s": cpu1, "warm_s": wall2, "warm_cpu_s": cpu2,
            **first, "repeat_equal": first == second}


def _sklearn(workflow: str) -> dict:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    warnings.simplefilter("ignore", ConvergenceWarning)
    if workflow.startswith("sweep"):
        X = digits()
        ct = workflow.split("_")[1]

        def run():
            bic = [GaussianMixture(k, covariance_type=ct, random_state=0).fit(X).bic(X)
                   for k in range(1, 21)]
            return {"best_k": int(np.argmin(bic)) + 1}
    else:
        Z_tr, y_tr, Z_te, y_te = fashion_pca50()
        classes = np.unique(y_tr)

        def run():
            errs = {}
            for k in CLASSIFIER_KS:
                s = np.empty((len(Z_te), len(classes)))
                for i, c in enumerate(classes):
                    rows = Z_tr[y_tr == c]
                    gm = GaussianMixture(k, covariance_type="full", reg_covar=1e-4,
                                         random_state=0).fit(rows)
                    s[:, i] = gm.score_samples(Z_te) + np.log(len(rows) / len(Z_tr))
                errs[k] = 100.0 * float(np.mean(classes[np.argmax(s, axis=1)] != y_te))
            return {"test_error": errs}

    first, wall1, cpu1 = _timed(run)
    return {"fresh_s": wall1, "fresh_cpu_s": cpu1, "warm_s": wall1, "warm_cpu_s": cpu1, **first}


def _worker(spec: dict) -> dict:
    if spec["contender"] == "gmm_jax":
        return _gmm_jax(spec["workflow"], spec.get("cache"))
    return _sklearn(spec["workflow"])


# ------------------------------------------------------------------------------------ parent
def markdown(report: dict) -> str:
    lines = [f"Command: `{report['command']}`  ", f"Machine: {C.footer(report['machine'])}; "
             f"load at the end {report['loadavg_end'][0]:.1f}.", "",
             "| workflow | gmm_jax fresh s (CPU s) | gmm_jax warm s (CPU s) | scikit-learn s "
             "(CPU s) | fresh: sklearn / gmm_jax | warm: sklearn / gmm_jax | result |",
             "|---|---|---|---|---|---|---|"]
    for wf, r in report["workflows"].items():
        g, s = r["gmm_jax"], r["sklearn"]
        if "fresh_s" not in g or "fresh_s" not in s:
            lines.append(f"| {wf} | {g.get('error', '')[:60]} | | {s.get('error', '')[:60]} "
                         "| | | |")
            continue
        if "best_k" in g:
            res = f"chosen K: gmm_jax {g['best_k']}, sklearn {s['best_k']}"
        else:
            res = "test error % (K=" + ",".join(map(str, CLASSIFIER_KS)) + "): gmm_jax " + \
                "/".join(f"{g['test_error'][str(k)]:.1f}" for k in CLASSIFIER_KS) + \
                ", sklearn " + "/".join(f"{s['test_error'][str(k)]:.1f}" for k in CLASSIFIER_KS)
        lines.append(
            f"| {wf} | {g['fresh_s']:.2f} ({g['fresh_cpu_s']:.1f}) | {g['warm_s']:.2f} "
            f"({g['warm_cpu_s']:.1f}) | {s['fresh_s']:.2f} ({s['fresh_cpu_s']:.1f}) | "
            f"{s['fresh_s'] / g['fresh_s']:.2f}x | {s['fresh_s'] / g['warm_s']:.2f}x | {res} |")
    lines += ["", "Fresh: first call in a new process (XLA compilation included, imports and data "
              "loading excluded). Warm: the same call again in that process. Ratios > 1: "
              "gmm_jax is faster. scikit-learn is run once per process (it has no compile "
              "step)."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--workflows", nargs="+", default=list(WORKFLOWS), choices=WORKFLOWS)
    ap.add_argument("--compilation-cache", default=None,
                    help="directory of JAX's persistent compilation cache for gmm_jax")
    ap.add_argument("--blas-threads", type=int, default=None,
                    help="OpenBLAS threads for scikit-learn (1 on a shared machine)")
    ap.add_argument("--out", default=os.path.join(C.RESULTS, "bench_workflows"))
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(json.loads(args.worker))))
        return 0
    info = C.machine_info()
    print(C.footer(info), flush=True)
    report = {"machine": info, "command": "python benchmarks/bench_workflows.py " + " ".join(
        argv if argv is not None else sys.argv[1:]), "workflows": {}}
    for wf in args.workflows:
        row = {}
        for name in ("gmm_jax", "sklearn"):
            spec = {"workflow": wf, "contender": name, "cache": args.compilation_cache}
            row[name] = C.run_worker(MODULE, spec, timeout=3600,
                                     blas_threads=args.blas_threads if name == "sklearn"
                                     else None)
            print(f"  {wf:11s} {name:8s} {json.dumps(row[name])[:300]}", flush=True)
        report["workflows"][wf] = row
    report["loadavg_end"] = list(os.getloadavg())
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out + ".json", "w") as f:
        json.dump(report, f, indent=1)
    text = markdown(report)
    with open(args.out + ".md", "w") as f:
        f.write(text)
    print(text)
    print(f"wrote {args.out}.json and .md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
