"""The ``gmm-jax`` command: fit, apply and compare Gaussian mixtures on data files.

Subcommands:

* ``gmm-jax fit DATA -k K -o MODEL.npz [--plot FIG.png]``: EM fit with a report (convergence,
  lower bound, BIC/AIC, weights, time) and a model that ``gmm_jax.GaussianMixture.load`` reads;
  ``--plot`` draws the clusters in the first two principal components with each component's
  2-sigma ellipse, and the log-likelihood trace of every restart.
* ``gmm-jax predict MODEL.npz DATA -o LABELS.npy [--proba P.npy] [--score S.npy]``.
* ``gmm-jax sweep DATA -k 1:20 [--criterion bic|aic|heldout] [--plot FIG.png] [--json OUT]``:
  every K (and restart, and fold) in one compiled program (``gmm_jax.select_n_components``).
* ``gmm-jax bench [--quick] [ARGS...]``: runs ``python -m benchmarks.bench_em [--quick]
  [ARGS...]`` (the EM speed comparison) from the repository checkout and streams its output;
  ``--callback-overhead`` instead measures what the progress bar costs.
* ``gmm-jax train-vae --model vae|m2|gmvae --data digits|fashion|PATH -o DIR``: trains a deep
  model with checkpoints (re-running resumes), writes a sample grid per cluster and metrics.
* ``gmm-jax demo``: k-means and a GMM of each covariance type on scikit-learn's 8x8 digits
  (``--covariance-types diag,full`` for fewer).

Data files: ``.npy``, ``.npz`` (``--key``), ``.csv``/``.tsv``/``.txt`` (optional header line),
IDX (MNIST format, optionally gzipped); see :mod:`gmm_jax.datafiles`. A bad file or argument ends
with a one-line ``gmm-jax CMD: error: ...`` on stderr and exit status 1 (2 for usage errors), never
a traceback (set ``GMM_JAX_TRACEBACK=1`` to see one).

JAX's persistent compilation cache is on (``gmm_jax.enable_compilation_cache``; folder
``--cache-dir``, ``$GMM_JAX_CACHE_DIR`` or ``~/.cache/gmm_jax/jax``; ``--no-cache`` turns it off),
so a second run with the same shapes loads its programs instead of compiling them. A fit that
shows a progress bar calls back into Python from the compiled loop, and JAX never caches such
programs: ``--progress auto`` (the default) shows the bar only for fits big enough that the
compile is small beside the EM itself.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def _timed(fn, *args, **kwargs):
    import jax

    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args, **kwargs))
    return out, time.perf_counter() - t0


def run_demo(*, n_components: int = 10, n_init: int = 1, seed: int = 0,
             reg_covar: float = 1e-3, max_iter: int = 200, covariance_types=None,
             file=None) -> list[dict]:
    """Runs the digits demo and prints its table; returns the rows.

    Args:
        n_components: clusters / mixture components.
        n_init: restarts (run under vmap).
        seed: PRNG seed.
        reg_covar: covariance regulariser (digits has constant border pixels).
        max_iter: EM iteration cap.
        covariance_types: the GMMs to fit (default: every type in ``COVARIANCE_TYPES``).
        file: stream to print to (stdout by default).
    """
    import jax
    from sklearn.datasets import load_digits

    import gmm_jax
    from gmm_jax.metrics import clustering_accuracy

    out = file or sys.stdout
    digits = load_digits()
    X = digits.data.astype(np.float32)
    y = digits.target
    n, d = X.shape
    key = jax.random.key(seed)
    rows = []

    km, t_first = _timed(gmm_jax.kmeans, key, X, n_components, n_init=n_init)
    _, t_warm = _timed(gmm_jax.kmeans, key, X, n_components, n_init=n_init)
    rows.append(dict(model="k-means", acc=clustering_accuracy(y, np.asarray(km.labels)),
                     loglik=float("nan"), bic=float("nan"), n_iter=int(km.n_iter),
                     t_first=t_first, t_warm=t_warm, converged=True))
    for ct in covariance_types or gmm_jax.COVARIANCE_TYPES:
        kwargs = dict(covariance_type=ct, n_init=n_init, reg_covar=reg_covar, max_iter=max_iter)
        res, t_first = _timed(gmm_jax.fit, key, X, n_components, **kwargs)
        _, t_warm = _timed(gmm_jax.fit, key, X, n_components, **kwargs)
        labels = np.asarray(gmm_jax.predict(res.params, X))
        ll = float(np.mean(np.asarray(gmm_jax.log_likelihood(res.params, X))))
        p = gmm_jax.n_parameters(n_components, d, ct)
        rows.append(dict(model=f"GMM {ct}", acc=clustering_accuracy(y, labels), loglik=ll,
                         bic=-2.0 * n * ll + p * np.log(n), n_iter=int(res.n_iter),
                         t_first=t_first, t_warm=t_warm, converged=bool(res.converged)))

    dev = jax.devices()[0]
    print(f"gmm-jax demo: sklearn digits, N={n}, D={d}, K={n_components}, n_init={n_init}, "
          f"reg_covar={reg_covar:g}, seed={seed}", file=out)
    print(f"jax {jax.__version__} on {dev.platform} ({dev.device_kind}), "
          f"{platform.processor() or platform.machine()}, python {platform.python_version()}",
          file=out)
    w = max(14, 2 + max(len(r["model"]) for r in rows))
    header = (f"{'model':<{w}}{'accuracy':>10}{'loglik/N':>11}{'BIC':>12}{'iters':>7}"
              f"{'conv':>6}{'first s':>9}{'warm s':>9}")
    print(header, file=out)
    print("-" * len(header), file=out)
    for r in rows:
        ll = "-" if np.isnan(r["loglik"]) else f"{r['loglik']:.2f}"
        bic = "-" if np.isnan(r["bic"]) else f"{r['bic']:.0f}"
        print(f"{r['model']:<{w}}{r['acc']:>10.3f}{ll:>11}{bic:>12}{r['n_iter']:>7}"
              f"{'yes' if r['converged'] else 'no':>6}{r['t_first']:>9.2f}{r['t_warm']:>9.3f}",
              file=out)
    return rows


# ------------------------------------------------------------------------------ shared pieces
#: Literal copies (the parser is built before any library module is used); a test checks they
#: match the library.
COVARIANCE_TYPES = ("full", "tied", "diag", "spherical", "tied_diag", "tied_spherical")
INIT_METHODS = ("kmeans", "k-means++", "random", "random_from_data", "lbg")
CRITERIA = ("bic", "aic", "heldout")

#: ``--progress auto`` shows the bar when N * K * D^2 * max_iter * n_init (D instead of D^2 for
#: diagonal and spherical types) exceeds this: EM then does roughly 2e11 floating-point
#: operations or more (tens of seconds at most on a CPU), beside which the extra compile of a
#: program with a callback (JAX does not cache those) is small.
AUTO_PROGRESS_WORK = 5e10

TRACEBACK_ENV = "GMM_JAX_TRACEBACK"


class CLIError(Exception):
    """A user error: printed as one line, exit status 1."""


def _say(*parts, file=None):
    print(*parts, file=file or sys.stdout, flush=True)


def _fmt_path(path) -> str:
    return os.fspath(path)


def _output_path(path, what: str) -> Path:
    """Checks that ``path`` can be written (creating its folder) before any work is done."""
    p = Path(path)
    if p.is_dir():
        raise CLIError(f"{what} {str(p)!r} is a directory; give a file name.")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CLIError(f"cannot create the folder of {what} {str(p)!r}: {err.strerror}.") from err
    if not os.access(p.parent, os.W_OK):
        raise CLIError(f"cannot write {what} {str(p)!r}: its folder is not writable.")
    return p


def _png_path(path) -> Path:
    if not str(path).lower().endswith(".png"):
        raise CLIError(f"--plot {str(path)!r}: figures are PNG files; use a name ending in .png.")
    return _output_path(path, "figure")


def _save_npy(path: Path, array) -> None:
    with open(path, "wb") as f:  # exactly this name (np.save would append .npy)
        np.save(f, np.asarray(array))


def _setup_cache(args) -> str:
    """Turns the persistent compilation cache on (or off); returns a phrase for the report."""
    from gmm_jax import compilation_cache as cc

    if getattr(args, "no_cache", False):
        cc.disable_compilation_cache()
        return "off"
    try:
        folder = cc.enable_compilation_cache(getattr(args, "cache_dir", None))
    except ValueError as err:
        raise CLIError(f"{err} Use --cache-dir DIR or --no-cache.") from err
    return str(folder)


def _load_data(path, *, key=None, dtype="float32"):
    from gmm_jax.datafiles import read_data

    return read_data(path, key=key, dtype=np.dtype(dtype))


def _describe_data(path, data) -> str:
    n, d = data.X.shape
    extra = ""
    if data.header:
        names = ", ".join(data.header[:6]) + (", ..." if len(data.header) > 6 else "")
        extra = f" (header: {names})"
    elif data.image_shape:
        extra = f" ({data.image_shape[0]}x{data.image_shape[1]} images, flattened)"
    return f"{_fmt_path(path)}{extra}, N={n}, D={d}, {data.X.dtype}"


def _precision(dtype):
    """``jax.enable_x64(True)`` for float64 work, else a no-op context."""
    import contextlib

    import jax

    return jax.enable_x64(True) if np.dtype(dtype) == np.float64 else contextlib.nullcontext()


def _parse_candidates(spec: str) -> list[int]:
    """``"1:20"`` (inclusive), ``"2:20:2"``, ``"2,3,5"``, ``"4"`` or a mix: ``"1:5,8,16"``."""
    out: list[int] = []
    bad = CLIError(f"-k {spec!r}: expected K, A:B or A:B:STEP (inclusive ranges), or a "
                   "comma-separated list of them, e.g. 1:20 or 2,4,8.")
    for part in spec.split(","):
        part = part.strip()
        if not part:
            raise bad
        try:
            bits = [int(b) for b in part.split(":")]
        except ValueError:
            raise bad from None
        if len(bits) == 1:
            out.append(bits[0])
        elif len(bits) in (2, 3):
            a, b = bits[0], bits[1]
            step = bits[2] if len(bits) == 3 else 1
            if step < 1 or b < a:
                raise bad
            out.extend(range(a, b + 1, step))
        else:
            raise bad
    if any(k < 1 for k in out):
        raise CLIError(f"-k {spec!r}: numbers of components must be >= 1.")
    return sorted(set(out))


def _work(n: int, d: int, k: int, covariance_type: str, max_iter: int, n_init: int) -> float:
    per_row = k * (d * d if covariance_type in ("full", "tied") else d)
    return float(n) * per_row * max_iter * n_init


def _estimator_from_fit(res, *, n_features: int, covariance_type: str, tol: float,
                        reg_covar: float, max_iter: int, n_init: int, init: str, seed: int):
    """A fitted ``gmm_jax.GaussianMixture`` holding ``res`` (a ``FitResult``)."""
    from gmm_jax import GaussianMixture
    from gmm_jax.covariance import precisions_from_cholesky

    p = res.params
    k = int(np.asarray(p.weights).shape[0])
    gm = GaussianMixture(k, covariance_type=covariance_type, tol=tol, reg_covar=reg_covar,
                         max_iter=max_iter, n_init=n_init, init_params=init, random_state=seed)
    n_iter = int(res.n_iter)
    gm.weights_ = np.asarray(p.weights)
    gm.means_ = np.asarray(p.means)
    gm.covariances_ = np.asarray(p.covariances)
    gm.precisions_cholesky_ = np.asarray(p.precisions_cholesky)
    gm.precisions_ = np.asarray(precisions_from_cholesky(p.precisions_cholesky, covariance_type))
    gm.converged_ = bool(res.converged)
    gm.n_iter_ = n_iter
    gm.lower_bound_ = float(res.log_likelihood)
    gm.lower_bounds_ = [float(v) for v in np.asarray(res.history)[:n_iter]]
    gm.n_features_in_ = int(n_features)
    gm.n_repaired_ = int(res.n_repaired)
    return gm


def _finite_params(params) -> bool:
    import jax

    return all(np.all(np.isfinite(np.asarray(a))) for a in jax.tree.leaves(params))


def _weights_text(w, limit: int = 16) -> str:
    w = np.asarray(w, np.float64)
    text = " ".join(f"{v:.3f}" for v in w[:limit])
    return text + (f" ... ({w.size} in all)" if w.size > limit else "")


def _write_json(path: Path, obj) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=1, default=_json_default)
        f.write("\n")


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


def _check_positive(value, name):
    if value < 1:
        raise CLIError(f"{name} must be >= 1, got {value}.")


# ------------------------------------------------------------------------------------ demo
def cmd_demo(args) -> int:
    """``gmm-jax demo``: :func:`run_demo` with the command's options."""
    types = None
    if args.covariance_types is not None:
        types = [t.strip() for t in args.covariance_types.split(",") if t.strip()]
        bad = [t for t in types if t not in COVARIANCE_TYPES]
        if bad or not types:
            raise CLIError(f"--covariance-types {args.covariance_types!r}: expected a "
                           f"comma-separated list of {', '.join(COVARIANCE_TYPES)}.")
    for value, name in ((args.n_components, "--n-components"), (args.n_init, "--n-init"),
                        (args.max_iter, "--max-iter")):
        _check_positive(value, name)
    _setup_cache(args)
    run_demo(n_components=args.n_components, n_init=args.n_init, seed=args.seed,
             reg_covar=args.reg_covar, max_iter=args.max_iter, covariance_types=types)
    return 0


# ------------------------------------------------------------------------------------- fit
def cmd_fit(args) -> int:
    """``gmm-jax fit``: fits, reports, saves the estimator, optionally draws the figure."""
    for value, name in ((args.n_components, "-k"), (args.n_init, "--n-init"),
                        (args.max_iter, "--max-iter")):
        _check_positive(value, name)
    out = _output_path(args.output, "model file")
    fig = _png_path(args.plot) if args.plot else None
    data = _load_data(args.data, key=args.key, dtype=args.dtype)
    X = data.X
    n, d = X.shape
    if args.n_components > n:
        raise CLIError(f"-k {args.n_components} is more components than the {n} samples in "
                       f"{args.data!r}.")
    cache = _setup_cache(args)
    work = _work(n, d, args.n_components, args.covariance_type, args.max_iter, args.n_init)
    show_bar = args.progress == "on" or (args.progress == "auto" and work >= AUTO_PROGRESS_WORK)
    need_traces = fig is not None and args.n_init > 1

    import jax

    import gmm_jax
    from gmm_jax.compilation_cache import CompileStats
    from gmm_jax.progress import EMProgress

    progress = None
    if show_bar or need_traces:
        progress = EMProgress(bar=show_bar, record=need_traces, desc="EM")
        progress.begin(args.max_iter, args.n_init)
    t0 = time.perf_counter()
    with _precision(args.dtype), CompileStats() as stats:
        res = gmm_jax.fit(jax.random.key(args.seed), X, args.n_components,
                          covariance_type=args.covariance_type, max_iter=args.max_iter,
                          tol=args.tol, n_init=args.n_init, init=args.init,
                          reg_covar=args.reg_covar, callback=progress)
        res = jax.block_until_ready(res)
        if progress is not None:
            progress.end(int(res.n_iter))
        elapsed = time.perf_counter() - t0
        if not _finite_params(res.params):
            raise CLIError("EM produced non-finite parameters (a covariance lost positive "
                           "definiteness); try --dtype float64 or a larger --reg-covar.")
        bic = gmm_jax.bic(res.params, X)
        aic = gmm_jax.aic(res.params, X)
        gm = _estimator_from_fit(res, n_features=d, covariance_type=args.covariance_type,
                                 tol=args.tol, reg_covar=args.reg_covar, max_iter=args.max_iter,
                                 n_init=args.n_init, init=args.init, seed=args.seed)
        gm.save(out)
    n_iter = int(res.n_iter)
    restarts = np.asarray(res.restart_log_likelihoods, np.float64)
    best = int(np.argmax(np.where(np.isfinite(restarts), restarts, -np.inf)))
    _say(f"gmm-jax fit: {_describe_data(args.data, data)}")
    rows = [
        ("model", f"K={args.n_components}, covariance {args.covariance_type}, n_init "
                  f"{args.n_init}, init {args.init}, reg_covar {args.reg_covar:g}, tol "
                  f"{args.tol:g}, max_iter {args.max_iter}, seed {args.seed}"),
        ("converged", f"{'yes' if bool(res.converged) else 'NO'}, after {n_iter} EM "
                      f"iteration{'s' if n_iter != 1 else ''}"),
        ("lower bound", f"{float(res.log_likelihood):.6g} (mean log-likelihood per sample)"),
    ]
    if args.n_init > 1:
        rows.append(("restarts", " ".join(f"{v:.6g}" for v in restarts[:12])
                     + (" ..." if restarts.size > 12 else "") + f" (kept: {best})"))
    rows += [
        ("BIC", f"{bic:.1f}"),
        ("AIC", f"{aic:.1f}"),
        ("weights", _weights_text(res.params.weights)),
    ]
    if int(res.n_repaired):
        rows.append(("repaired", f"{int(res.n_repaired)} collapsed component(s) re-seeded"))
    rows.append(("time", f"{elapsed:.2f} s ({stats.summary()}; cache: {cache})"))
    rows.append(("saved", f"{out} (gmm_jax.GaussianMixture.load)"))
    if fig is not None:
        from gmm_jax.plotting import plot_fit

        if need_traces:
            traces = progress.restart_traces()
        else:
            traces = [np.asarray(res.history, np.float64)[:n_iter]]
            best = 0
        labels = gm.predict(X)
        plot_fit(fig, X, gm.weights_, gm.means_, gm.covariances_, args.covariance_type,
                 labels=labels, traces=traces, best=best,
                 title=f"{os.path.basename(args.data)}: K={args.n_components} "
                       f"{args.covariance_type}, n_init={args.n_init}, BIC {bic:.1f}")
        rows.append(("figure", str(fig)))
    width = max(len(r[0]) for r in rows)
    for name, text in rows:
        _say(f"  {name:<{width}}  {text}")
    if not bool(res.converged):
        _say(f"gmm-jax fit: warning: EM did not converge in {args.max_iter} iterations; raise "
             "--max-iter or --tol.", file=sys.stderr)
    return 0


# ----------------------------------------------------------------------------------- predict
def cmd_predict(args) -> int:
    """``gmm-jax predict``: labels (and optionally probabilities, log-densities) of DATA."""
    labels_out = _output_path(args.output, "labels file")
    proba_out = _output_path(args.proba, "--proba file") if args.proba else None
    score_out = _output_path(args.score, "--score file") if args.score else None
    if not os.path.isfile(args.model):
        raise CLIError(f"model {args.model!r}: no such file.")
    import zipfile

    if not zipfile.is_zipfile(args.model):
        raise CLIError(f"model {args.model!r} is not a model file (an .npz written by gmm-jax "
                       "fit or GaussianMixture.save).")
    data = _load_data(args.data, key=args.key, dtype=np.float64)
    cache = _setup_cache(args)
    from gmm_jax import GaussianMixture
    from gmm_jax.compilation_cache import CompileStats

    gm = GaussianMixture.load(args.model)
    X = data.X.astype(gm.means_.dtype)
    data = data._replace(X=X)
    if X.shape[1] != gm.n_features_in_:
        raise CLIError(f"{args.data!r} has {X.shape[1]} features per sample, but the model "
                       f"{args.model!r} was fitted on {gm.n_features_in_}.")
    t0 = time.perf_counter()
    with CompileStats() as stats:
        score = gm.score_samples(X)
        proba = gm.predict_proba(X) if proba_out is not None else None
        labels = gm.predict(X).astype(np.int64)
    elapsed = time.perf_counter() - t0
    _save_npy(labels_out, labels)
    if proba_out is not None:
        _save_npy(proba_out, proba)
    if score_out is not None:
        _save_npy(score_out, score)
    k = gm.weights_.shape[0]
    counts = np.bincount(labels, minlength=k)
    _say(f"gmm-jax predict: {_describe_data(args.data, data)}; model {args.model} (K={k}, "
         f"{gm.covariance_type})")
    _say(f"  counts    {' '.join(str(int(c)) for c in counts[:24])}"
         f"{' ...' if k > 24 else ''} (samples per component)")
    _say(f"  loglik/N  {float(np.mean(score)):.6g} (mean log-density per sample)")
    _say(f"  time      {elapsed:.2f} s ({stats.summary()}; cache: {cache})")
    written = [str(labels_out)] + [str(p) for p in (proba_out, score_out) if p is not None]
    _say(f"  wrote     {', '.join(written)}")
    return 0


# ------------------------------------------------------------------------------------- sweep
def cmd_sweep(args) -> int:
    """``gmm-jax sweep``: ``select_n_components`` over K, a table, the chosen K, a plot."""
    cands = _parse_candidates(args.n_components)
    for value, name in ((args.n_init, "--n-init"), (args.max_iter, "--max-iter")):
        _check_positive(value, name)
    fig = _png_path(args.plot) if args.plot else None
    json_out = _output_path(args.json, "--json file") if args.json else None
    model_out = _output_path(args.output, "model file") if args.output else None
    data = _load_data(args.data, key=args.key, dtype=args.dtype)
    X = data.X
    n, d = X.shape
    if max(cands) > n:
        raise CLIError(f"-k up to {max(cands)} is more components than the {n} samples in "
                       f"{args.data!r}.")
    cache = _setup_cache(args)
    import jax

    import gmm_jax
    from gmm_jax.compilation_cache import CompileStats

    t0 = time.perf_counter()
    with _precision(args.dtype), CompileStats() as stats:
        sel = gmm_jax.select_n_components(
            jax.random.key(args.seed), X, cands, covariance_type=args.covariance_type,
            criterion=args.criterion, n_folds=args.n_folds, n_init=args.n_init,
            max_iter=args.max_iter, tol=args.tol, reg_covar=args.reg_covar, init=args.init)
        jax.block_until_ready(sel.best_fit)
        elapsed = time.perf_counter() - t0
        if model_out is not None:
            gm = _estimator_from_fit(sel.best_fit, n_features=d,
                                     covariance_type=args.covariance_type, tol=args.tol,
                                     reg_covar=args.reg_covar, max_iter=args.max_iter,
                                     n_init=args.n_init, init=args.init, seed=args.seed)
            gm.save(model_out)
    t = {name: np.asarray(v) for name, v in sel.table.items()}
    ll = t["log_likelihood"].astype(np.float64)
    p = t["n_parameters"].astype(np.float64)
    bic = -2.0 * n * ll + p * math.log(n)
    aic = -2.0 * n * ll + 2.0 * p
    _say(f"gmm-jax sweep: {_describe_data(args.data, data)}")
    _say(f"  covariance {args.covariance_type}, criterion {args.criterion}"
         f"{f' ({args.n_folds}-fold)' if args.criterion == 'heldout' else ''}, n_init "
         f"{args.n_init}, reg_covar {args.reg_covar:g}, seed {args.seed}, "
         f"{len(cands)} candidates in one compiled program")
    cols = f"  {'K':>4} {'loglik/N':>11} {'params':>8} {'BIC':>13} {'AIC':>13}"
    if args.criterion == "heldout":
        cols += f" {'heldout/N':>11}"
    cols += f" {'iters':>6} {'conv':>5}"
    _say(cols)
    _say("  " + "-" * (len(cols) - 2))
    for i, k in enumerate(t["n_components"]):
        row = f"  {int(k):>4} {ll[i]:>11.4f} {int(p[i]):>8} {bic[i]:>13.1f} {aic[i]:>13.1f}"
        if args.criterion == "heldout":
            row += f" {float(t['criterion'][i]):>11.4f}"
        row += f" {int(t['n_iter'][i]):>6} {'yes' if t['converged'][i] else 'NO':>5}"
        if int(k) == sel.best_n_components:
            row += "  <"
        _say(row)
    how = {"bic": "lowest BIC", "aic": "lowest AIC",
           "heldout": "highest held-out log-likelihood"}[args.criterion]
    _say(f"  chosen K = {sel.best_n_components} ({how})")
    _say(f"  time {elapsed:.2f} s ({stats.summary()}; cache: {cache})")
    if model_out is not None:
        _say(f"  saved {model_out} (the chosen model; gmm_jax.GaussianMixture.load)")
    if fig is not None:
        from gmm_jax.plotting import plot_criterion

        other = {"bic": (aic, "AIC"), "aic": (bic, "BIC")}.get(args.criterion, (None, None))
        plot_criterion(fig, t["n_components"], t["criterion"], criterion=args.criterion,
                       best=sel.best_n_components, other=other[0], other_name=other[1],
                       title=f"{os.path.basename(args.data)}: N={n}, D={d}, "
                             f"{args.covariance_type} covariance, n_init={args.n_init}")
        _say(f"  figure {fig}")
    if json_out is not None:
        _write_json(json_out, dict(
            command="sweep", data=os.path.abspath(args.data), n_samples=n, n_features=d,
            dtype=str(X.dtype), covariance_type=args.covariance_type, criterion=args.criterion,
            n_folds=args.n_folds if args.criterion == "heldout" else None, n_init=args.n_init,
            reg_covar=args.reg_covar, tol=args.tol, max_iter=args.max_iter, init=args.init,
            seed=args.seed, candidates=cands, best_n_components=sel.best_n_components,
            table={**{name: v.tolist() for name, v in t.items()}, "bic": bic.tolist(),
                   "aic": aic.tolist()},
            seconds=elapsed, compile_seconds=stats.seconds, programs=stats.programs,
            programs_from_cache=stats.cache_hits))
        _say(f"  json {json_out}")
    return 0


# ------------------------------------------------------------------------------------- bench
#: The module ``gmm-jax bench`` runs (``python -m``, from the repository checkout).
BENCH_MODULE = "benchmarks.bench_em"


def _repository_root(package_dir=None) -> Path:
    """The checkout that holds this package and ``benchmarks/`` (editable install)."""
    if package_dir is None:
        package_dir = Path(__file__).resolve().parent
    root = Path(package_dir).resolve().parent
    if not (root / "benchmarks" / "bench_em.py").is_file():
        raise CLIError(f"gmm-jax bench runs benchmarks/bench_em.py of the repository, which is "
                       f"not next to the installed package ({root}); install from a clone with "
                       "pip install -e . and run it there.")
    return root


def cmd_bench(args) -> int:
    """``gmm-jax bench [--quick] [ARGS...]``: runs ``python -m benchmarks.bench_em``.

    ``--quick`` and every other argument go to the benchmark unchanged; its output streams to
    this terminal as it runs (no capture); if it fails, this command ends with status 1.
    """
    if args.callback_overhead:
        return _bench_callback(args)
    root = _repository_root()
    cmd = [sys.executable, "-m", BENCH_MODULE] + (["--quick"] if args.quick else [])
    cmd += list(args.bench_args)
    _say(f"gmm-jax bench: running python -m {' '.join(cmd[2:])}  (in {root})")
    env = dict(os.environ)
    env["PYTHONPATH"] = str(root) + os.pathsep + env.get("PYTHONPATH", "")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=root, env=env)
    if proc.returncode != 0:
        raise CLIError(f"{BENCH_MODULE} exited with status {proc.returncode} (its output is "
                       "above).")
    _say(f"gmm-jax bench: done in {time.perf_counter() - t0:.1f} s")
    return 0


def _overhead_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gmm-jax bench --callback-overhead", allow_abbrev=False)
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--d", type=int, default=8)
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--cov", choices=COVARIANCE_TYPES, default="full")
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--out", metavar="DIR", help="also write DIR/callback_overhead.json")
    return p


def _bench_callback(args) -> int:
    parser = _overhead_parser()
    try:
        opts = parser.parse_args(args.bench_args)
    except SystemExit as stop:  # argparse printed its message (or --help)
        return int(stop.code or 0)
    from gmm_jax.progress import callback_overhead

    n, d, k, cov, iters, repeats = opts.n, opts.d, opts.k, opts.cov, opts.iters, opts.repeats
    for value, flag in ((n, "--n"), (d, "--d"), (k, "--k"), (iters, "--iters"),
                        (repeats, "--repeats")):
        _check_positive(value, flag)
    _say(f"gmm-jax bench --callback-overhead: N={n}, D={d}, K={k}, {cov}, float32, {iters} EM "
         f"iterations (tol=0), {repeats} alternating timed runs per variant, fastest kept")
    r = callback_overhead(n=n, d=d, k=k, covariance_type=cov, iters=iters, repeats=repeats)
    _say(f"  machine: {r['machine']}")
    _say(f"  without callback   {r['ms_per_iter_plain']:8.2f} ms/iteration (fastest run)")
    _say(f"  with progress bar  {r['ms_per_iter_callback']:8.2f} ms/iteration "
         f"({r['callback_calls']} callbacks per fit)")
    _say(f"  direct A/B         {100 * r['overhead']:+.2f}% wall (fastest runs), "
         f"{100 * r['median_overhead']:+.2f}% (median runs), {100 * r['cpu_overhead']:+.2f}% "
         "process CPU time (fastest runs)")
    _say(f"  one callback       {r['us_per_callback']:.0f} us round trip (median "
         f"{r['us_per_callback_median']:.0f} us; 2000 calls on an empty loop), "
         f"{r['us_inside_callback']:.0f} us of it in EMProgress during the fits")
    _say(f"  from the parts     {100 * r['overhead_from_parts']:.2f}% = one callback round trip "
         "/ one plain EM iteration")
    _say("  load average       " + " ".join(f"{v:.2f}" for v in r["loadavg_start"]) + " at the "
         "start, " + " ".join(f"{v:.2f}" for v in r["loadavg_end"]) + " at the end")
    if opts.out:
        out = _output_path(Path(opts.out) / "callback_overhead.json", "results file")
        _write_json(out, r)
        _say(f"  wrote {out}")
    return 0


# --------------------------------------------------------------------------------- train-vae
#: Architecture defaults of ``train-vae`` per model (hidden widths, latent width).
VAE_DEFAULTS = {"vae": dict(hidden=(256,), latent_dim=10),
                "m2": dict(hidden=(256, 256), latent_dim=16),
                "gmvae": dict(hidden=(256, 256), latent_dim=10)}
#: Settings that must match for a run folder to be resumed (everything but the epoch counts).
_RUN_KEYS = ("model", "data", "labels", "key", "n_components", "latent_dim", "hidden",
             "likelihood", "batch_size", "learning_rate", "seed", "n_labelled", "test_fraction",
             "pretrain_noise", "em_restarts")


def _add_train_vae(sub) -> None:
    tv = sub.add_parser(
        "train-vae", help="train a VAE, M2 or GMVAE with checkpoints; re-running resumes",
        description="Trains a deep (mixture) model from vae_jax with a progress bar and a "
        "checkpoint after every epoch in DIR, then writes DIR/model.npz (vae_jax.load), "
        "DIR/samples.png (a row of generated samples per cluster), DIR/metrics.json and "
        "DIR/history.json. Running the same command again resumes from the checkpoint; a larger "
        "--epochs trains on. A VAE has no clusters of its own: its latent means are clustered by "
        "a K-component gmm_jax mixture (saved as DIR/latent_gmm.npz) and each component is "
        "decoded for the grid.")
    tv.add_argument("--model", choices=("vae", "m2", "gmvae"), required=True)
    tv.add_argument("--data", required=True, metavar="digits|fashion|PATH",
                    help="digits (scikit-learn's 8x8, bundled), fashion (Fashion-MNIST from "
                         "$FASHION_MNIST_DIR or /usr/share/datasets/fashion-mnist), a folder of "
                         "MNIST-format IDX files, or a data file")
    tv.add_argument("--labels", metavar="PATH",
                    help="labels of a data file (for the metrics, and --n-labelled)")
    tv.add_argument("--key", metavar="NAME", help="array to read from an .npz data file")
    tv.add_argument("--epochs", type=int, default=20,
                    help="training epochs (GMVAE: of the ELBO phase); default 20")
    tv.add_argument("--pretrain-epochs", type=int, default=None,
                    help="GMVAE: autoencoder warm-up epochs before EM on the codes (default "
                         "--epochs)")
    tv.add_argument("-o", "--output", metavar="DIR", default=None,
                    help="run folder (default ./train-vae-MODEL-DATA)")
    tv.add_argument("-k", "--n-components", type=int, default=None, metavar="K",
                    help="clusters (default: the number of classes when labels are known, "
                         "else 10)")
    tv.add_argument("--latent-dim", type=int, default=None,
                    help="latent width (default vae 10, m2 16, gmvae 10)")
    tv.add_argument("--hidden", default=None, metavar="W1,W2",
                    help="hidden layer widths (default vae 256, m2 and gmvae 256,256)")
    tv.add_argument("--likelihood", choices=("auto", "bernoulli", "gaussian"), default="auto",
                    help="auto: bernoulli for data in [0, 1], else gaussian")
    tv.add_argument("--batch-size", type=int, default=64)
    tv.add_argument("--learning-rate", type=float, default=1e-3)
    tv.add_argument("--n-labelled", type=int, default=0,
                    help="M2: labelled training samples (balanced over classes); 0 trains M2 "
                         "without labels")
    tv.add_argument("--test-fraction", type=float, default=0.2,
                    help="held-out share of a data file without a test split (default 0.2)")
    tv.add_argument("--pretrain-noise", type=float, default=0.1,
                    help="GMVAE: input noise of the warm-up autoencoder")
    tv.add_argument("--em-restarts", type=int, default=20,
                    help="restarts of EM on the latent codes (GMVAE warm start, VAE clusters)")
    tv.add_argument("--samples-per-cluster", type=int, default=10)
    tv.add_argument("--seed", type=int, default=0)
    tv.add_argument("--no-progress", action="store_true", help="no progress bars")
    _cache_options(tv)


def _vae_dataset(args):
    """(X_train, y_train, X_test, y_test, image_shape, name) of ``--data``."""
    import vae_jax

    name = args.data
    if name == "digits":
        ds = vae_jax.data.load_digits(seed=args.seed)
        return ds.X_train, ds.y_train, ds.X_test, ds.y_test, tuple(ds.image_shape), "digits"
    if name == "fashion":
        ds = vae_jax.data.load_fashion_mnist()
        return ds.X_train, ds.y_train, ds.X_test, ds.y_test, tuple(ds.image_shape), "fashion"
    path = Path(name)
    if path.is_dir():
        if args.labels:
            raise CLIError("--labels is for a data file; a folder of IDX files has its own.")
        ds = vae_jax.data.load_idx_dataset(path)
        return (ds.X_train, ds.y_train, ds.X_test, ds.y_test, tuple(ds.image_shape),
                path.name or str(path))
    from gmm_jax.datafiles import read_data, read_labels

    data = read_data(path, key=args.key, dtype=np.float32)
    X = data.X
    if data.raw_dtype == np.uint8:
        X = X / np.float32(255.0)  # 8-bit images to [0, 1]
    y = read_labels(args.labels, n_samples=X.shape[0]) if args.labels else None
    if not 0.0 < args.test_fraction < 1.0:
        raise CLIError(f"--test-fraction must be in (0, 1), got {args.test_fraction}.")
    X_tr, y_tr, X_te, y_te = vae_jax.data.train_test_split(
        X, y, test_fraction=args.test_fraction, seed=args.seed)
    shape = data.image_shape
    if shape is None:
        side = math.isqrt(X.shape[1])
        shape = (side, side) if side * side == X.shape[1] else (1, X.shape[1])
    return X_tr, y_tr, X_te, y_te, tuple(shape), path.stem


def _run_settings(args, n_classes) -> dict:
    defaults = VAE_DEFAULTS[args.model]
    if args.hidden is None:
        hidden = list(defaults["hidden"])
    else:
        try:
            hidden = [int(h) for h in args.hidden.split(",") if h.strip()]
        except ValueError:
            raise CLIError(f"--hidden {args.hidden!r}: expected widths like 256,256.") from None
        if not hidden or min(hidden) < 1:
            raise CLIError(f"--hidden {args.hidden!r}: expected positive widths like 256,256.")
    k = args.n_components if args.n_components is not None else (n_classes or 10)
    if k < 2:
        raise CLIError(f"-k must be >= 2 for a model with clusters, got {k}.")
    for value, flag in ((args.epochs, "--epochs"), (args.batch_size, "--batch-size"),
                        (args.em_restarts, "--em-restarts"),
                        (args.samples_per_cluster, "--samples-per-cluster")):
        _check_positive(value, flag)
    if args.pretrain_epochs is not None and args.pretrain_epochs < 0:
        raise CLIError(f"--pretrain-epochs must be >= 0, got {args.pretrain_epochs}.")
    if args.n_labelled < 0:
        raise CLIError(f"--n-labelled must be >= 0, got {args.n_labelled}.")
    if args.n_labelled and args.model != "m2":
        raise CLIError("--n-labelled is for --model m2 (semi-supervised training).")
    data = args.data if args.data in ("digits", "fashion") else os.path.abspath(args.data)
    return dict(model=args.model, data=data,
                labels=os.path.abspath(args.labels) if args.labels else None, key=args.key,
                n_components=int(k),
                latent_dim=int(args.latent_dim or defaults["latent_dim"]), hidden=hidden,
                likelihood=args.likelihood, batch_size=args.batch_size,
                learning_rate=args.learning_rate, seed=args.seed, n_labelled=args.n_labelled,
                test_fraction=args.test_fraction, pretrain_noise=args.pretrain_noise,
                em_restarts=args.em_restarts, epochs=args.epochs,
                pretrain_epochs=(args.pretrain_epochs if args.pretrain_epochs is not None
                                 else args.epochs))


def _check_run_folder(folder: Path, settings: dict) -> bool:
    """Whether ``folder`` holds a run to resume; raises if it is a different run."""
    meta = folder / "run.json"
    if not meta.is_file():
        return False
    try:
        old = json.loads(meta.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CLIError(f"{meta} is unreadable ({err}); use another -o folder.") from err
    diff = [k for k in _RUN_KEYS if old.get(k) != settings.get(k)]
    if diff:
        k = diff[0]
        raise CLIError(f"{folder} holds a run with other settings ({k}: {old.get(k)!r} there, "
                       f"{settings.get(k)!r} now); resume it with the same options or use "
                       "another -o folder.")
    return True


def _semi_labels(y, n_labelled: int, n_classes: int, seed: int):
    """Labels with all but ``n_labelled`` (spread evenly over the classes) set to -1."""
    rng = np.random.default_rng(seed)
    out = np.full_like(y, -1)
    per = [np.flatnonzero(y == c) for c in range(n_classes)]
    take = [rng.permutation(idx) for idx in per]
    counts = np.zeros(n_classes, int)
    i = 0
    while counts.sum() < n_labelled and any(counts[c] < len(take[c]) for c in range(n_classes)):
        c = i % n_classes
        if counts[c] < len(take[c]):
            out[take[c][counts[c]]] = y[take[c][counts[c]]]
            counts[c] += 1
        i += 1
    return out


def cmd_train_vae(args) -> int:
    """``gmm-jax train-vae``: a thin layer over vae_jax's public training functions."""
    if args.output is None:
        stem = args.data if args.data in ("digits", "fashion") else Path(args.data).stem
        args.output = f"train-vae-{args.model}-{stem}"
    folder = Path(args.output)
    if folder.exists() and not folder.is_dir():
        raise CLIError(f"-o {str(folder)!r} is a file; give a folder for the run.")
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    import gmm_jax
    import vae_jax
    from vae_jax import plots

    X_tr, y_tr, X_te, y_te, image_shape, data_name = _vae_dataset(args)
    n_classes = int(max(y_tr.max(), y_te.max()) + 1) if y_tr is not None else None
    settings = _run_settings(args, n_classes)
    lik = settings["likelihood"]
    if lik == "auto":
        inside = min(X_tr.min(), X_te.min()) >= 0.0 and max(X_tr.max(), X_te.max()) <= 1.0
        lik = "bernoulli" if inside else "gaussian"
    resume = _check_run_folder(folder, settings)
    cache = _setup_cache(args)
    folder.mkdir(parents=True, exist_ok=True)
    _write_json(folder / "run.json", settings)

    k = settings["n_components"]
    d = X_tr.shape[1]
    hidden = tuple(settings["hidden"])
    latent = settings["latent_dim"]
    rngs = nnx.Rngs(settings["seed"])
    if args.model == "vae":
        model = vae_jax.VAE(d, latent, hidden=hidden, likelihood=lik, rngs=rngs)
    elif args.model == "m2":
        model = vae_jax.M2(d, k, latent_dim=latent, hidden=hidden, likelihood=lik, rngs=rngs)
    else:
        model = vae_jax.GMVAE(d, k, latent_dim=latent, hidden=hidden, likelihood=lik, rngs=rngs)
    key = jax.random.key(settings["seed"])
    k_pre, k_em, k_fit = jax.random.split(key, 3)
    progress = not args.no_progress
    n = X_tr.shape[0]
    bs = min(settings["batch_size"], n)
    ckpt = folder / "checkpoint.npz"
    _say(f"gmm-jax train-vae: {args.model} on {data_name}: {n} training and {X_te.shape[0]} test "
         f"samples, D={d}, K={k}, latent {latent}, hidden {list(hidden)}, {lik} likelihood")
    _say(f"  run folder {folder}" + (f" (resuming from {ckpt})" if resume and ckpt.is_file()
                                     else ""))
    t0 = time.perf_counter()
    history: dict = {}
    if args.model == "gmvae":
        # the recipe of vae_jax.fit_gmvae (one run), phase by phase so every phase checkpoints
        if not ckpt.is_file():
            model.pretraining = True
            model.pretrain_noise = settings["pretrain_noise"]
            if settings["pretrain_epochs"] > 0:
                _, history["pretrain"] = vae_jax.train(
                    model, X_tr, epochs=settings["pretrain_epochs"], batch_size=bs,
                    learning_rate=settings["learning_rate"], key=k_pre,
                    checkpoint_dir=folder / "pretrain", checkpoint_every=1,
                    resume="if_present", progress=progress)
            model.pretraining = False
            Z = vae_jax.evaluate(model, X_tr, k_em, method="latent_mean")
            warm = vae_jax.gmvae.init_prior_from_latents(model, Z, k_em,
                                                         n_init=settings["em_restarts"])
            history["warm_start"] = dict(log_likelihood=float(warm.log_likelihood),
                                         cluster_sizes=np.asarray(warm.cluster_sizes).tolist())
        total = max(1, settings["epochs"] * (n // bs))
        schedule = optax.cosine_decay_schedule(settings["learning_rate"], total, alpha=0.1)
        _, history["elbo"] = vae_jax.train(
            model, X_tr, epochs=settings["epochs"], batch_size=bs, learning_rate=schedule,
            key=k_fit, X_val=X_te, checkpoint_dir=folder, checkpoint_every=1,
            resume="if_present", progress=progress)
    else:
        y_train = None
        if args.model == "m2" and settings["n_labelled"]:
            if y_tr is None:
                raise CLIError("--n-labelled needs labels (--labels, or a data set with them).")
            y_train = _semi_labels(y_tr, settings["n_labelled"], k, settings["seed"])
        _, history["train"] = vae_jax.train(
            model, X_tr, epochs=settings["epochs"], batch_size=bs,
            learning_rate=settings["learning_rate"], key=k_fit, y=y_train, X_val=X_te,
            checkpoint_dir=folder, checkpoint_every=1, resume="if_present", progress=progress)
    train_s = time.perf_counter() - t0
    vae_jax.save(model, folder / "model.npz")

    # clusters: the model's own (M2, GMVAE) or a gmm_jax mixture on the VAE's latent means
    k_eval = jax.random.fold_in(key, 7)
    if args.model == "vae":
        Z_tr = np.asarray(vae_jax.evaluate(model, X_tr, k_eval, method="latent_mean"))
        Z_te = np.asarray(vae_jax.evaluate(model, X_te, k_eval, method="latent_mean"))
        res = gmm_jax.fit(k_em, Z_tr, k, covariance_type="full", n_init=settings["em_restarts"],
                          reg_covar=1e-4)
        gmm_jax.save(folder / "latent_gmm.npz", res.params)
        pred_tr = np.asarray(gmm_jax.predict(res.params, Z_tr))
        pred_te = np.asarray(gmm_jax.predict(res.params, Z_te))
    else:
        pred_tr = vae_jax.cluster(model, X_tr)[0]
        pred_te = vae_jax.cluster(model, X_te)[0]
    metrics = dict(model=args.model, data=data_name, n_train=int(n),
                   n_test=int(X_te.shape[0]), n_components=k, likelihood=lik,
                   test_elbo=vae_jax.evaluate_elbo(model, X_te, k_eval),
                   train_seconds_this_run=train_s,
                   cluster_sizes_test=np.bincount(pred_te, minlength=k).tolist())
    from gmm_jax.metrics import contingency_matrix

    order = np.arange(k)
    if y_tr is not None:
        for split, y, pred in (("train", y_tr, pred_tr), ("test", y_te, pred_te)):
            metrics[f"accuracy_{split}"] = vae_jax.clustering_accuracy(y, pred)
            metrics[f"nmi_{split}"] = vae_jax.normalized_mutual_info(y, pred)
            metrics[f"purity_{split}"] = vae_jax.purity(y, pred)
        # grid rows ordered by the class each cluster holds most of (ties: cluster index)
        cont = contingency_matrix(y_te, pred_te)
        classes_present = np.unique(pred_te)
        major = np.full(k, np.inf)
        major[classes_present] = np.argmax(cont, axis=0)
        order = np.lexsort((np.arange(k), major))
    # one row of samples per cluster
    n_per = args.samples_per_cluster
    keys = jax.random.split(jax.random.fold_in(key, 11), k)
    rows = []
    for c in order:
        if args.model == "vae":
            z = gmm_jax.sample_component(keys[c], res.params, int(c), n_per)
            rows.append(np.asarray(model.decode(jnp.asarray(z, jnp.float32))))
        else:
            rows.append(vae_jax.generate(model, keys[c], int(c), n_per))
    imgs = np.concatenate(rows)
    if lik == "gaussian":  # decoder means on the data's scale: map the data range to [0, 1]
        lo, hi = float(X_tr.min()), float(X_tr.max())
        imgs = (imgs - lo) / max(hi - lo, 1e-12)
    imgs = np.clip(imgs, 0.0, 1.0)
    grid = plots.sample_grid(imgs, folder / "samples.png", ncols=n_per,
                             image_shape=image_shape,
                             title=f"{args.model} on {data_name}: one row per cluster")
    _write_json(folder / "metrics.json", metrics)
    _write_json(folder / "history.json", history)
    for name in ("accuracy", "nmi", "purity"):
        if f"{name}_test" in metrics:
            _say(f"  {name:<9} test {metrics[f'{name}_test']:.3f}   train "
                 f"{metrics[f'{name}_train']:.3f}")
    _say(f"  test ELBO {metrics['test_elbo']:.2f} nats per sample")
    _say(f"  time      {train_s:.1f} s training this run (cache: {cache})")
    _say(f"  wrote     {folder / 'model.npz'}, {grid}, {folder / 'metrics.json'}, "
         f"{folder / 'history.json'}, checkpoint {ckpt}")
    return 0


# ---------------------------------------------------------------------------------- parser
def _data_options(p) -> None:
    p.add_argument("--key", metavar="NAME", help="array to read from an .npz file with several")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="precision of the fit (default float32; float64 turns on JAX x64)")


def _cache_options(p) -> None:
    g = p.add_argument_group("compilation cache")
    g.add_argument("--no-cache", action="store_true",
                   help="do not use JAX's persistent compilation cache")
    g.add_argument("--cache-dir", metavar="DIR",
                   help="cache folder (default $GMM_JAX_CACHE_DIR, JAX's configured folder, or "
                        "~/.cache/gmm_jax/jax)")


def _em_options(p, *, max_iter=100) -> None:
    p.add_argument("--covariance-type", choices=COVARIANCE_TYPES, default="full")
    p.add_argument("--n-init", type=int, default=1, metavar="R",
                   help="restarts, run side by side in one program (default 1)")
    p.add_argument("--init", choices=INIT_METHODS, default="kmeans",
                   help="initialisation (default kmeans)")
    p.add_argument("--reg-covar", type=float, default=1e-6, metavar="X",
                   help="added to covariance diagonals (default 1e-6)")
    p.add_argument("--max-iter", type=int, default=max_iter, metavar="N")
    p.add_argument("--tol", type=float, default=1e-3,
                   help="stop when the mean log-likelihood changes by less (default 1e-3)")
    p.add_argument("--seed", type=int, default=0, help="PRNG seed (default 0)")


def build_parser() -> argparse.ArgumentParser:
    """The ``gmm-jax`` argument parser (all subcommands)."""
    parser = argparse.ArgumentParser(
        prog="gmm-jax", description="Gaussian mixtures fitted by compiled EM in JAX, from the "
        "shell.", epilog=f"Set {TRACEBACK_ENV}=1 to see tracebacks of errors.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="fit k-means and every covariance type on sklearn digits")
    demo.add_argument("--n-components", type=int, default=10)
    demo.add_argument("--n-init", type=int, default=1)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--reg-covar", type=float, default=1e-3)
    demo.add_argument("--max-iter", type=int, default=200)
    demo.add_argument("--covariance-types", default=None, metavar="T1,T2",
                      help="GMMs to fit, comma-separated (default: every covariance type)")
    _cache_options(demo)

    fit = sub.add_parser("fit", help="fit a mixture to a data file and save it",
                         description="Fits a Gaussian mixture by EM, prints a report and saves a "
                         "model that gmm_jax.GaussianMixture.load reads.")
    fit.add_argument("data", help="data file (.npy .npz .csv .tsv .txt IDX; .gz allowed)")
    fit.add_argument("-k", "--n-components", type=int, required=True, metavar="K")
    _em_options(fit)
    _data_options(fit)
    fit.add_argument("-o", "--output", required=True, metavar="MODEL.npz")
    fit.add_argument("--plot", metavar="FIG.png",
                     help="clusters in the first two principal components with 2-sigma "
                          "ellipses, and the log-likelihood trace of every restart")
    fit.add_argument("--progress", choices=("auto", "on", "off"), default="auto",
                     help="progress bar over EM iterations; auto: only for big fits (a fit "
                          "with a bar is compiled afresh every run: JAX does not cache programs "
                          "that call back into Python)")
    _cache_options(fit)

    pred = sub.add_parser("predict", help="apply a saved mixture to a data file",
                          description="Writes the most probable component of every sample.")
    pred.add_argument("model", help="a model written by gmm-jax fit or GaussianMixture.save")
    pred.add_argument("data")
    pred.add_argument("-o", "--output", required=True, metavar="LABELS.npy")
    pred.add_argument("--proba", metavar="P.npy", help="also write the (N, K) probabilities")
    pred.add_argument("--score", metavar="S.npy", help="also write the (N,) log-densities")
    pred.add_argument("--key", metavar="NAME", help="array to read from an .npz file")
    _cache_options(pred)

    sw = sub.add_parser("sweep", help="choose the number of components",
                        description="Fits every candidate K in one compiled program and picks "
                        "one by BIC, AIC or held-out log-likelihood.")
    sw.add_argument("data")
    sw.add_argument("-k", "--n-components", required=True, metavar="SPEC",
                    help="candidates: 1:20 (inclusive), 2:20:2, 2,4,8 or a mix")
    sw.add_argument("--criterion", choices=CRITERIA, default="bic")
    sw.add_argument("--n-folds", type=int, default=5, help="folds for --criterion heldout")
    _em_options(sw)
    _data_options(sw)
    sw.add_argument("--plot", metavar="FIG.png", help="the criterion against K")
    sw.add_argument("--json", metavar="OUT.json", help="the table and settings as JSON")
    sw.add_argument("-o", "--output", metavar="MODEL.npz", help="save the chosen model")
    _cache_options(sw)

    be = sub.add_parser(
        "bench", help="EM speed: gmm_jax vs numpy vs scikit-learn", allow_abbrev=False,
        description=f"Runs python -m {BENCH_MODULE} [--quick] [ARGS...] from the repository "
        "checkout (pip install -e .), streaming its table; every argument this command does "
        "not know is passed on to it (python -m benchmarks.bench_em --help lists them).")
    be.add_argument("--quick", action="store_true",
                    help="the benchmark's quick form (small sizes, under a minute)")
    be.add_argument("--callback-overhead", action="store_true",
                    help="instead: time gmm_jax.fit with and without the progress callback; "
                         "takes --n (default 100000) --d (8) --k (8) --cov (full) --iters (30) "
                         "--repeats (10) --out DIR")

    _add_train_vae(sub)
    return parser


_COMMANDS = {"fit": cmd_fit, "predict": cmd_predict, "sweep": cmd_sweep, "bench": cmd_bench}


def main(argv=None) -> int:
    """Entry point of the ``gmm-jax`` console script."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    name = args.command
    if extra and name != "bench":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if "--" in extra:  # "gmm-jax bench -- --help": what follows is the benchmark's
        extra.remove("--")
    args.bench_args = extra
    from gmm_jax.datafiles import DataFileError

    user_errors = (CLIError, DataFileError, ValueError, TypeError, OSError)
    try:
        if name == "demo":
            return cmd_demo(args)
        if name == "train-vae":
            return cmd_train_vae(args)
        return _COMMANDS[name](args)
    except KeyboardInterrupt:
        print(f"gmm-jax {name}: interrupted", file=sys.stderr, flush=True)
        return 130
    except user_errors as err:
        if os.environ.get(TRACEBACK_ENV):
            raise
        lines = [ln for ln in str(err).strip().splitlines() if ln.strip()] or [type(err).__name__]
        print(f"gmm-jax {name}: error: " + "\n  ".join(lines[:2]), file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
