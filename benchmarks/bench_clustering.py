"""Clustering benchmark: k-means, GMM-EM, the GMVAE recipe, M2 (unsupervised, semi-supervised).

Every method is trained on the training split without labels (except M2 semi-supervised, which
sees ``labels_per_class`` labels per class of the training split) and evaluated on the held-out
test split: Hungarian clustering accuracy, NMI, test ELBO (deep models), wall time. Labels are
read only to score the test split (and to order the rows of the sample grids).

``gmvae`` is the library's one recipe, built and trained with the defaults of ``vae_jax.GMVAE``
and ``vae_jax.fit_gmvae`` (``vae_jax.gmvae.RECIPE``): nothing here overrides them unless
``--set name=value`` is given, and such runs are written under their own ``--tag`` with the
overrides recorded, so the ablations of the recipe are rerunnable commands too.
``gmvae_paper`` is the paper form (Dilokthanakul et al.) trained with the same schedule.

Data: digits (sklearn's 1797 8x8 images, 80/20 split with seed 0) and Fashion-MNIST (the full
60 000 / 10 000 split by default; ``--fashion-train/--fashion-test`` take a fixed subsample).

Usage::

    python benchmarks/bench_clustering.py --dataset digits --seeds 5
    python benchmarks/bench_clustering.py --dataset fashion --seeds 3 --methods kmeans,gmvae
    python benchmarks/bench_clustering.py --dataset digits --methods gmvae --seeds 5 \\
        --set prior_covariance=diag --tag _diag_prior           # an ablation of the recipe
    python benchmarks/bench_clustering.py --quick                # smoke run, tiny budgets
"""

from __future__ import annotations

import argparse
import ast
import inspect
import json
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_vae import machine_info  # noqa: E402

import gmm_jax  # noqa: E402
import vae_jax  # noqa: E402
from vae_jax import data as vdata  # noqa: E402
from vae_jax.gmvae import GMVAE, RECIPE, fit_gmvae, training_elbo  # noqa: E402
from vae_jax.inference import cluster, cluster_grid  # noqa: E402
from vae_jax.m2 import M2, default_alpha  # noqa: E402
from vae_jax.metrics import clustering_accuracy, normalized_mutual_info  # noqa: E402

METHODS = (
    "kmeans", "gmm_full_raw", "gmm_diag_raw", "gmm_full_pca50", "gmm_diag_pca50",
    "gmvae", "gmvae_paper", "m2_unsup", "m2_semi",
)
DEFAULT_METHODS = {
    "digits": METHODS,
    # On 60k images and 2 CPU cores: full 784x784 covariances take ~20 min per seed, the paper
    # form and M2 (which decodes every image once per class) several times the recipe's time.
    "fashion": ("kmeans", "gmm_diag_raw", "gmm_full_pca50", "gmm_diag_pca50", "gmvae"),
}

# Settings of the methods that are not the GMVAE recipe (fixed; no model selection on labels).
CONFIG = {
    "digits": dict(m2_hidden=(256, 256), m2_latent=8, m2_epochs=100, m2_batch_size=64,
                   m2_lr=1e-3, labels_per_class=10),
    "fashion": dict(m2_hidden=(256, 256), m2_latent=16, m2_epochs=10, m2_batch_size=128,
                    m2_lr=1e-3, labels_per_class=100),
}

_MODEL_KEYS = set(inspect.signature(GMVAE.__init__).parameters) - {"self", "rngs"}
_FIT_KEYS = set(inspect.signature(fit_gmvae).parameters) - {"model", "X", "key"}


def parse_overrides(items: list[str]) -> tuple[dict, dict]:
    """``name=value`` pairs (values as Python literals) split into GMVAE and fit_gmvae kwargs."""
    model_kw, fit_kw = {}, {}
    for item in items:
        name, _, text = item.partition("=")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        if name in _MODEL_KEYS:
            model_kw[name] = value
        elif name in _FIT_KEYS:
            fit_kw[name] = value
        else:
            raise SystemExit(f"--set {name}: not an argument of GMVAE or fit_gmvae")
    return model_kw, fit_kw


def load(name: str, args):
    if name == "digits":
        ds = vdata.load_digits(test_fraction=0.2, seed=0)
        return ds.X_train, ds.y_train, ds.X_test, ds.y_test, ds.image_shape, "all 1797 (80/20)"
    ds = vdata.load_fashion_mnist()
    X_tr, y_tr, X_te, y_te = ds.X_train, ds.y_train, ds.X_test, ds.y_test
    note = f"full {X_tr.shape[0]} train / {X_te.shape[0]} test"
    if args.fashion_train or args.fashion_test:
        rng = np.random.default_rng(0)
        tr = rng.choice(X_tr.shape[0], args.fashion_train or X_tr.shape[0], replace=False)
        te = rng.choice(X_te.shape[0], args.fashion_test or X_te.shape[0], replace=False)
        X_tr, y_tr, X_te, y_te = X_tr[tr], y_tr[tr], X_te[te], y_te[te]
        note = f"subsample {len(tr)} train / {len(te)} test (seed 0)"
    return X_tr, y_tr, X_te, y_te, ds.image_shape, note


def pca(X_tr, X_te, k=50):
    mean = X_tr.mean(0)
    _, _, vt = np.linalg.svd(X_tr - mean, full_matrices=False)
    V = vt[:k].T
    return (X_tr - mean) @ V, (X_te - mean) @ V


def scores(y, pred):
    return dict(acc=float(clustering_accuracy(y, pred)), nmi=float(normalized_mutual_info(y, pred)),
                test_pred=np.asarray(pred).astype(int).tolist())


AGREEMENT_SUBSET = 5000


def train_subset(n: int) -> np.ndarray:
    """Fixed training rows (seed 123) on which the seeds' partitions are compared."""
    return np.sort(np.random.default_rng(123).permutation(n)[:AGREEMENT_SUBSET])


def stability(runs) -> float:
    """Mean pairwise NMI between the partitions that different seeds give the same training rows
    (:func:`train_subset`). Label-free, it measures how reproducible the clustering is; with the
    ELBO it is the criterion the recipe was chosen by."""
    preds = [r["train_subset_pred"] for r in runs if "train_subset_pred" in r]
    pairs = [normalized_mutual_info(a, b) for i, a in enumerate(preds) for b in preds[i + 1:]]
    return float(np.mean(pairs)) if pairs else float("nan")


def run_kmeans(d, seed, cfg, args):
    X_tr, _, X_te, y_te = d[:4]
    res = gmm_jax.kmeans(jax.random.key(seed), X_tr, 10, n_init=10)
    C = np.asarray(res.centers)
    def assign(X):
        return np.argmin(((X[:, None, :] - C[None]) ** 2).sum(-1), axis=1)

    sub = d[0][train_subset(d[0].shape[0])]
    return dict(**scores(y_te, assign(X_te)), test_elbo=float("nan"),
                train_subset_pred=assign(sub).tolist())


def run_gmm(d, seed, cfg, args, cov, use_pca):
    X_tr, _, X_te, y_te = d[:4]
    if use_pca:
        X_tr, X_te = pca(X_tr, X_te)
    reg = 1e-2 if not use_pca else 1e-3
    res = gmm_jax.fit(jax.random.key(seed), jnp.asarray(X_tr), 10, covariance_type=cov,
                      n_init=1 if cov == "full" and not use_pca and X_tr.shape[1] > 100 else 3,
                      max_iter=100 if X_tr.shape[1] <= 100 else 20, reg_covar=reg)
    pred = np.asarray(gmm_jax.predict(res.params, jnp.asarray(X_te)))
    ll = float(jnp.mean(gmm_jax.log_likelihood(res.params, jnp.asarray(X_te))))
    sub = X_tr[train_subset(X_tr.shape[0])]
    return dict(**scores(y_te, pred), test_elbo=float("nan"), test_loglik_features=ll,
                train_subset_pred=np.asarray(gmm_jax.predict(res.params, jnp.asarray(sub)))
                .tolist())


def _deep_eval(model, d, seed):
    _, _, X_te, y_te = d[:4]
    pred, _ = cluster(model, X_te)
    elbo = vae_jax.evaluate_elbo(model, X_te, jax.random.key(seed + 1000))
    train_pred = cluster(model, d[0])[0]
    sizes = np.bincount(train_pred, minlength=model.n_components)
    return dict(**scores(y_te, pred), test_elbo=float(elbo), train_cluster_sizes=sizes.tolist(),
                train_subset_pred=train_pred[train_subset(d[0].shape[0])].tolist())


def run_gmvae(d, seed, cfg, args, form):
    """The recipe: ``GMVAE(D, 10)`` and ``fit_gmvae`` with their defaults (plus ``--set``)."""
    X_tr = d[0]
    model_kw = dict(args.model_kw)
    fit_kw = dict(args.fit_kw)
    if form == "paper":
        model_kw["form"] = "paper"
    if args.quick:
        fit_kw.update(pretrain_steps=50, steps=50)
    m = GMVAE(X_tr.shape[1], 10, **model_kw, rngs=nnx.Rngs(seed))

    def score_restart(r, m_r):
        # Diagnostic only (the labels of the test split are read for this report, after the
        # restart is trained; fit_gmvae keeps the restart by training ELBO, never by this).
        acc = float(clustering_accuracy(d[3], cluster(m_r, d[2])[0]))
        print(f"  seed {seed} restart {r}: test acc {acc:.4f} (diagnostic)", flush=True)
        return dict(test_acc=acc)

    _, hist = fit_gmvae(m, X_tr, key=jax.random.key(seed), progress=args.progress,
                        callback=score_restart, **fit_kw)
    r = _deep_eval(m, d, seed)
    r["train_elbo_last_epoch"] = float(hist["elbo"]["elbo"][-1])
    r["train_elbo"] = float(training_elbo(m, X_tr, jax.random.key(10_000 + seed)))
    r["restart_train_elbos"] = [x.get("train_elbo") for x in hist["restarts"]]
    r["restart_test_accs"] = [x.get("callback", {}).get("test_acc") for x in hist["restarts"]]
    r["chosen_restart"] = hist["chosen"]
    r["warm_start_cluster_sizes"] = hist["warm_start"]["cluster_sizes"]
    r["epochs"] = [len(hist["pretrain"].get("loss", [])), len(hist["elbo"]["loss"])]
    return m, r


def run_m2(d, seed, cfg, args, semi):
    X_tr, y_tr = d[0], d[1]
    m = M2(X_tr.shape[1], 10, latent_dim=cfg["m2_latent"], hidden=cfg["m2_hidden"],
           balance=0.0 if semi else 1.0, rngs=nnx.Rngs(seed))
    y = None
    if semi:
        rng = np.random.default_rng(seed)
        y = np.full(y_tr.shape, -1, np.int32)
        for c in range(10):
            idx = np.flatnonzero(y_tr == c)
            y[rng.choice(idx, cfg["labels_per_class"], replace=False)] = c
        m.alpha = default_alpha(y)
    epochs = 2 if args.quick else cfg["m2_epochs"]
    vae_jax.train(m, X_tr, y=y, epochs=epochs, batch_size=cfg["m2_batch_size"],
                  learning_rate=cfg["m2_lr"], key=jax.random.key(seed), progress=args.progress)
    return m, _deep_eval(m, d, seed)


def run(method, d, seed, cfg, args):
    if method == "kmeans":
        return None, run_kmeans(d, seed, cfg, args)
    if method.startswith("gmm_"):
        _, cov, feat = method.split("_")
        return None, run_gmm(d, seed, cfg, args, cov, feat == "pca50")
    if method == "gmvae":
        return run_gmvae(d, seed, cfg, args, "marginal")
    if method == "gmvae_paper":
        return run_gmvae(d, seed, cfg, args, "paper")
    return run_m2(d, seed, cfg, args, method == "m2_semi")


def class_order(y_true, pred, K):
    """Clusters in the order of the classes they are matched to by the Hungarian assignment
    (row ``i`` of a sample grid shows the cluster matched to class ``i``; display only)."""
    from scipy.optimize import linear_sum_assignment

    counts = np.zeros((K, K), np.int64)
    np.add.at(counts, (np.asarray(y_true), np.asarray(pred)), 1)
    rows, cols = linear_sum_assignment(-counts)
    return cols[np.argsort(rows)]


def warm_start_study(name, d, seeds, args, info, out):
    """Which label-free rule should pick the warm start among EM restarts on the codes?

    Per seed: the recipe's autoencoder warm-up (same keys as ``fit_gmvae``), then ``n_init``
    EM fits on the codes, each refined with weights 1/K. Reported: the test accuracy of the
    restart each rule picks (free-weight likelihood, as ``gmm_jax.fit`` picks; likelihood with
    weights 1/K, the recipe's rule; most balanced clusters), their mean, and the best restart
    (an oracle that reads labels, shown only as the ceiling). No ELBO phase.
    """
    from vae_jax.gmvae import _epochs_for, _equal_weight_em
    from vae_jax.train import evaluate, train

    X_tr, _, X_te, y_te = d[:4]
    fit_kw = dict(RECIPE, **args.fit_kw)
    n_init = fit_kw["n_init"]
    if args.quick:
        fit_kw["pretrain_steps"], n_init = 50, 3
    rows = []
    for seed in seeds:
        t0 = time.perf_counter()
        m = GMVAE(X_tr.shape[1], 10, **args.model_kw, rngs=nnx.Rngs(seed))
        k_pre, k_em, _ = jax.random.split(jax.random.key(seed), 3)   # as fit_gmvae, restart 0
        m.pretraining, m.pretrain_noise = True, fit_kw["pretrain_noise"]
        train(m, X_tr, epochs=_epochs_for(fit_kw["pretrain_steps"], X_tr.shape[0],
                                          fit_kw["batch_size"]),
              batch_size=fit_kw["batch_size"], learning_rate=fit_kw["learning_rate"], key=k_pre,
              progress=args.progress)
        m.pretraining = False
        Z = evaluate(m, X_tr, k_em, method="latent_mean")
        Zt = evaluate(m, X_te, k_em, method="latent_mean")
        cov = "full" if m.prior_covariance == "full" else "diag"
        res = []
        for k in jax.random.split(k_em, n_init):
            p = gmm_jax.fit(k, Z, 10, covariance_type=cov, n_init=1, max_iter=200,
                            reg_covar=1e-4).params
            free_ll = float(jnp.mean(gmm_jax.log_likelihood(p, Z)))
            q, _ = _equal_weight_em(p, Z, 1e-4, n_iter=100)
            unif_ll = float(jnp.mean(gmm_jax.log_likelihood(q, Z)))
            frac = np.bincount(np.asarray(gmm_jax.predict(q, Z)), minlength=10) / Z.shape[0]
            kl = float(np.sum(np.where(frac > 0, frac * np.log(np.maximum(frac, 1e-300) * 10),
                                       0.0)))
            res.append(dict(free_ll=free_ll, unif_ll=unif_ll, kl=kl,
                            acc_free=scores(y_te, gmm_jax.predict(p, Zt))["acc"],
                            acc_refined=scores(y_te, gmm_jax.predict(q, Zt))["acc"]))
        pick = dict(
            free_likelihood=res[int(np.argmax([r["free_ll"] for r in res]))]["acc_free"],
            uniform_likelihood=res[int(np.argmax([r["unif_ll"] for r in res]))]["acc_refined"],
            balance=res[int(np.argmin([r["kl"] for r in res]))]["acc_refined"],
            mean_restart=float(np.mean([r["acc_free"] for r in res])),
            oracle_best=float(max(r["acc_free"] for r in res)))
        rows.append(dict(seed=seed, picks=pick, restarts=res, wall_s=time.perf_counter() - t0))
        print(f"{name} warm-start seed {seed}: " + " ".join(f"{k} {v:.3f}" for k, v in
                                                           pick.items()), flush=True)
    stem = f"clustering_{name}_warm_start{args.tag}"
    info = dict(info, loadavg_now=list(os.getloadavg()))
    meta = dict(dataset=name, data=d[5], seeds=list(seeds), n_init=n_init,
                recipe={k: list(v) if isinstance(v, tuple) else v for k, v in RECIPE.items()},
                overrides=dict(**args.model_kw, **args.fit_kw), machine=info,
                command=" ".join(["python", "benchmarks/bench_clustering.py", *args.argv]))
    (out / f"{stem}.json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))
    keys = list(rows[0]["picks"])
    lines = [f"### {name}: warm start chosen among {n_init} EM restarts on the autoencoder "
             "codes (test accuracy %, no ELBO phase)", "",
             f"{info['cpu']}, {info['cpu_count']} cores, JAX {info['jax']}, {info['date_utc']} "
             f"UTC, load {info['loadavg_start'][0]:.1f} at start, "
             f"{info['loadavg_now'][0]:.1f} at the end.", "",
             "| seed | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for r in rows:
        lines.append(f"| {r['seed']} | " + " | ".join(f"{100 * r['picks'][k]:.1f}" for k in keys)
                     + " |")
    lines.append("| mean | " + " | ".join(f"{100 * np.mean([r['picks'][k] for r in rows]):.1f}"
                                         for k in keys) + " |")
    lines += ["", "free_likelihood: the restart gmm_jax.fit would keep; uniform_likelihood: the "
              "recipe's rule (likelihood with weights 1/K after equal-weight EM); balance: "
              "smallest KL(cluster proportions || 1/K); oracle_best reads the test labels.", "",
              f"Command: `{meta['command']}`", ""]
    (out / f"{stem}.md").write_text("\n".join(lines))
    print("\n".join(lines))


def _pm(values, scale=1.0, digits=1):
    v = np.asarray(values, float) * scale
    return f"{v.mean():.{digits}f} ± {v.std():.{digits}f}"


def write_results(out, name, d, seeds, cfg, args, results, info):
    """Writes the JSON and Markdown results of one data set (called after every run)."""
    info = dict(info, loadavg_now=list(os.getloadavg()))
    meta = dict(dataset=name, data=d[5], n_train=int(d[0].shape[0]),
                n_test=int(d[2].shape[0]), seeds=seeds, config=cfg, quick=args.quick,
                recipe={k: list(v) if isinstance(v, tuple) else v for k, v in RECIPE.items()},
                overrides=dict(**args.model_kw, **args.fit_kw),
                command=" ".join(["python", "benchmarks/bench_clustering.py", *args.argv]),
                machine=info)
    stem = f"clustering_{name}{args.tag}"
    (out / f"{stem}.json").write_text(json.dumps(dict(meta=meta, results=results), indent=1))
    load = (f"load average {info['loadavg_start'][0]:.1f} at start, "
            f"{info['loadavg_now'][0]:.1f} at the last write")
    lines = [f"### {name}: {meta['data']}, accuracy/NMI on the test split (mean ± std over "
             "seeds)", "",
             f"{info['cpu']}, {info['cpu_count']} cores, JAX {info['jax']} ({info['jax_backend']}"
             f"), {info['date_utc']} UTC, {load}.", ""]
    if meta["overrides"]:
        lines += [f"Recipe overrides: `{meta['overrides']}`", ""]
    lines += ["| method | seeds | Hungarian acc % | NMI | test ELBO (nats) | seed agreement "
              "(NMI) | wall s per seed |", "|---|---|---|---|---|---|---|"]
    for method, r in results.items():
        runs = r["runs"]
        elbos = [x["test_elbo"] for x in runs]
        elbo = "-" if np.isnan(elbos).all() else _pm(elbos, digits=2)
        agree = stability(runs)
        agree = "-" if np.isnan(agree) else f"{agree:.3f}"
        lines.append(f"| {method} | {len(runs)} | {_pm([x['acc'] for x in runs], 100)} | "
                     f"{_pm([x['nmi'] for x in runs], digits=3)} | {elbo} | {agree} | "
                     f"{_pm([x['wall_s'] for x in runs], digits=0)} |")
    for method in ("gmvae", "gmvae_paper"):
        if method not in results:
            continue
        lines += ["", f"Per seed, {method} (train ELBO: of the kept restart; restarts: the "
                  "training ELBO of each restart, the kept one marked *; restart test acc: "
                  "read after training for this report only, never used to choose):", "",
                  "| seed | acc % | NMI | test ELBO | train ELBO | restarts (train ELBO) | "
                  "restart test acc % | train cluster sizes | wall s |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for x in results[method]["runs"]:
            chosen = x["chosen_restart"]
            rs = " ".join(("*" if i == chosen else "") + (f"{e:.3f}" if e is not None
                          and np.isfinite(e) else "-")
                          for i, e in enumerate(x["restart_train_elbos"]))
            ra = " ".join(("*" if i == chosen else "") + (f"{100 * a:.1f}" if a is not None
                          else "-") for i, a in enumerate(x.get("restart_test_accs", [])))
            lines.append(f"| {x['seed']} | {100 * x['acc']:.1f} | {x['nmi']:.3f} | "
                         f"{x['test_elbo']:.2f} | {x['train_elbo']:.3f} | {rs} | {ra} | "
                         f"{x['train_cluster_sizes']} | {x['wall_s']:.0f} |")
    lines += ["", f"Command: `{meta['command']}`", ""]
    (out / f"{stem}.md").write_text("\n".join(lines))
    return lines


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="digits", choices=["digits", "fashion", "all"])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--methods", default=None, help="comma-separated (default: all that fit "
                   "the data set's CPU budget)")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="NAME=VALUE", help="override a GMVAE/fit_gmvae default (ablations)")
    p.add_argument("--fashion-train", type=int, default=0, help="subsample size (0 = all)")
    p.add_argument("--fashion-test", type=int, default=0, help="subsample size (0 = all)")
    p.add_argument("--quick", action="store_true", help="tiny budgets, 1 seed (smoke test)")
    p.add_argument("--study", choices=["warm-start"], default=None,
                   help="instead of the methods: compare the warm-start selection rules")
    p.add_argument("--no-grid", action="store_true", help="skip the sample-grid PNGs")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    p.add_argument("--tag", default="", help="suffix of the output file names")
    args = p.parse_args(argv)
    args.argv = argv
    args.model_kw, args.fit_kw = parse_overrides(args.overrides)
    if (args.model_kw or args.fit_kw) and not args.tag:
        p.error("--set changes the recipe: give the run a --tag so it does not overwrite the "
                "recipe's results")
    datasets = ["digits", "fashion"] if args.dataset == "all" else [args.dataset]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = 1 if args.quick else args.seeds
    info = machine_info()
    for name in datasets:
        methods = (DEFAULT_METHODS[name] if args.methods is None
                   else [m for m in args.methods.split(",") if m])
        for m in methods:
            if m not in METHODS:
                p.error(f"unknown method {m}")
        cfg = dict(CONFIG[name])
        d = load(name, args)
        if args.study == "warm-start":
            warm_start_study(name, d, range(args.first_seed, args.first_seed + seeds), args,
                             info, out)
            continue
        results = {}
        for method in methods:
            runs = []
            for seed in range(args.first_seed, args.first_seed + seeds):
                t0 = time.perf_counter()
                model, r = run(method, d, seed, cfg, args)
                r["wall_s"] = time.perf_counter() - t0
                r["seed"] = seed
                runs.append(r)
                print(f"{name:8s} {method:14s} seed {seed}: acc {r['acc']:.4f} nmi {r['nmi']:.4f}"
                      f" elbo {r['test_elbo']:.2f} {r['wall_s']:.1f}s", flush=True)
                if (model is not None and seed == args.first_seed and not args.quick
                        and not args.no_grid):
                    order = class_order(d[3], cluster(model, d[2])[0], model.n_components)
                    cluster_grid(model, jax.random.key(0),
                                 out / f"grid_{name}_{method}{args.tag}.png",
                                 image_shape=d[4], n_per_cluster=10, order=order,
                                 title=f"{method} on {name}: one row per cluster")
                results[method] = dict(runs=runs)
                lines = write_results(out, name, d, seeds, cfg, args, results, info)
        print("\n".join(lines))


if __name__ == "__main__":
    main()
