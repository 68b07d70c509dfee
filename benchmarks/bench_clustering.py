"""Clustering benchmark: k-means, GMM-EM, GMVAE (both forms), M2 (unsupervised, semi-supervised).

Every method is trained on the training split without labels (except M2 semi-supervised, which
sees ``labels_per_class`` labels per class of the training split) and evaluated on the held-out
test split: Hungarian clustering accuracy, NMI, test ELBO (deep models; for GMM-EM the mean test
log-likelihood of the features it was fitted on, which is not comparable to an ELBO over pixels),
wall time. Hyper-parameters are fixed in ``CONFIG`` (no model selection on labels). Results are
the mean and std over seeds.

Fashion-MNIST (70k, 784 pixels) is expensive on a CPU: by default a fixed random subsample of
``--fashion-train`` training and ``--fashion-test`` test images is used (seed 0, stated in the
results).

Usage::

    python benchmarks/bench_clustering.py --dataset digits --seeds 3
    python benchmarks/bench_clustering.py --dataset fashion --methods kmeans,gmvae_marginal
    python benchmarks/bench_clustering.py --quick          # smoke run, tiny epochs
"""

from __future__ import annotations

import argparse
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

import gmm_jax  # noqa: E402
import vae_jax  # noqa: E402
from vae_jax import data as vdata  # noqa: E402
from vae_jax.gmvae import GMVAE, fit_gmvae  # noqa: E402
from vae_jax.inference import cluster, cluster_grid  # noqa: E402
from vae_jax.m2 import M2, default_alpha  # noqa: E402
from vae_jax.metrics import clustering_accuracy, normalized_mutual_info  # noqa: E402

METHODS = (
    "kmeans", "gmm_full_raw", "gmm_diag_raw", "gmm_full_pca50", "gmm_diag_pca50",
    "gmvae_marginal", "gmvae_paper", "m2_unsup", "m2_semi",
)

# Fixed hyper-parameters per data set (chosen before looking at test labels; see README note).
CONFIG = {
    "digits": dict(hidden=(256, 256), latent_dim=5, w_dim=5, batch_size=64, lr=1e-3,
                   pretrain_epochs=100, epochs=100, pretrain_noise=0.1, m2_epochs=100,
                   m2_latent=8, labels_per_class=10, balance=0.0),
    "fashion": dict(hidden=(256, 256), latent_dim=10, w_dim=10, batch_size=128, lr=1e-3,
                    pretrain_epochs=20, epochs=20, pretrain_noise=0.1, m2_epochs=10,
                    m2_latent=16, labels_per_class=100, balance=0.0),
}


def load(name: str, args):
    if name == "digits":
        ds = vdata.load_digits(test_fraction=0.2, seed=0)
        return ds.X_train, ds.y_train, ds.X_test, ds.y_test, ds.image_shape, "all 1797 (80/20)"
    ds = vdata.load_fashion_mnist()
    rng = np.random.default_rng(0)
    tr = rng.choice(ds.X_train.shape[0], args.fashion_train, replace=False)
    te = rng.choice(ds.X_test.shape[0], args.fashion_test, replace=False)
    note = f"subsample {args.fashion_train} train / {args.fashion_test} test (seed 0)"
    return (ds.X_train[tr], ds.y_train[tr], ds.X_test[te], ds.y_test[te], ds.image_shape, note)


def pca(X_tr, X_te, k=50):
    mean = X_tr.mean(0)
    _, _, vt = np.linalg.svd(X_tr - mean, full_matrices=False)
    V = vt[:k].T
    return (X_tr - mean) @ V, (X_te - mean) @ V


def scores(y, pred):
    return dict(acc=float(clustering_accuracy(y, pred)), nmi=float(normalized_mutual_info(y, pred)))


def run_kmeans(d, seed, cfg, args):
    X_tr, _, X_te, y_te = d[:4]
    res = gmm_jax.kmeans(jax.random.key(seed), X_tr, 10, n_init=10)
    C = np.asarray(res.centers)
    pred = np.argmin(((X_te[:, None, :] - C[None]) ** 2).sum(-1), axis=1)
    return dict(**scores(y_te, pred), test_elbo=float("nan"))


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
    return dict(**scores(y_te, pred), test_elbo=float("nan"), test_loglik_features=ll)


def _deep_eval(model, d, seed):
    _, _, X_te, y_te = d[:4]
    pred, _ = cluster(model, X_te)
    elbo = vae_jax.evaluate_elbo(model, X_te, jax.random.key(seed + 1000))
    return dict(**scores(y_te, pred), test_elbo=float(elbo))


def run_gmvae(d, seed, cfg, args, form):
    X_tr = d[0]
    m = GMVAE(X_tr.shape[1], 10, latent_dim=cfg["latent_dim"], w_dim=cfg["w_dim"],
              hidden=cfg["hidden"], form=form, n_samples=1,
              free_bits=0.0, balance=cfg["balance"], rngs=nnx.Rngs(seed))
    fit_gmvae(m, X_tr, key=jax.random.key(seed), pretrain_epochs=cfg["pretrain_epochs"],
              epochs=cfg["epochs"], batch_size=cfg["batch_size"], learning_rate=cfg["lr"],
              pretrain_noise=cfg["pretrain_noise"], progress=args.progress)
    return m, _deep_eval(m, d, seed)


def run_m2(d, seed, cfg, args, semi):
    X_tr, y_tr = d[0], d[1]
    m = M2(X_tr.shape[1], 10, latent_dim=cfg["m2_latent"], hidden=cfg["hidden"],
           balance=0.0 if semi else 1.0, rngs=nnx.Rngs(seed))
    y = None
    if semi:
        rng = np.random.default_rng(seed)
        y = np.full(y_tr.shape, -1, np.int32)
        for c in range(10):
            idx = np.flatnonzero(y_tr == c)
            y[rng.choice(idx, cfg["labels_per_class"], replace=False)] = c
        m.alpha = default_alpha(y)
    vae_jax.train(m, X_tr, y=y, epochs=cfg["m2_epochs"], batch_size=cfg["batch_size"],
                  learning_rate=cfg["lr"], key=jax.random.key(seed), progress=args.progress)
    return m, _deep_eval(m, d, seed)


def run(method, d, seed, cfg, args):
    if method == "kmeans":
        return None, run_kmeans(d, seed, cfg, args)
    if method.startswith("gmm_"):
        _, cov, feat = method.split("_")
        return None, run_gmm(d, seed, cfg, args, cov, feat == "pca50")
    if method.startswith("gmvae_"):
        return run_gmvae(d, seed, cfg, args, method.split("_")[1])
    return run_m2(d, seed, cfg, args, method == "m2_semi")


def write_results(out, name, d, seeds, cfg, args, results):
    """Writes the JSON and Markdown results of one data set (called after every method)."""
    meta = dict(dataset=name, data=d[5], n_train=int(d[0].shape[0]),
                n_test=int(d[2].shape[0]), seeds=seeds, config=cfg, quick=args.quick,
                command=" ".join(["python", "benchmarks/bench_clustering.py", *sys.argv[1:]]),
                jax=jax.__version__, backend=jax.default_backend(),
                cpu_count=os.cpu_count())
    stem = f"clustering_{name}{args.tag}"
    (out / f"{stem}.json").write_text(json.dumps(dict(meta=meta, results=results), indent=1))
    lines = [f"### {name}: {meta['data']}, {seeds} seeds, accuracy/NMI on the test split",
             "", "| method | Hungarian acc | NMI | test ELBO (nats) | wall s |",
             "|---|---|---|---|---|"]
    for method, r in results.items():
        s = r["mean_std"]
        elbo = "-" if np.isnan(s["test_elbo"][0]) else \
            f"{s['test_elbo'][0]:.2f} ± {s['test_elbo'][1]:.2f}"
        lines.append(f"| {method} | {100 * s['acc'][0]:.1f} ± {100 * s['acc'][1]:.1f} | "
                     f"{s['nmi'][0]:.3f} ± {s['nmi'][1]:.3f} | {elbo} | "
                     f"{s['wall_s'][0]:.1f} ± {s['wall_s'][1]:.1f} |")
    lines += ["", f"Command: `{meta['command']}`", ""]
    (out / f"{stem}.md").write_text("\n".join(lines))
    return lines


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="digits", choices=["digits", "fashion", "all"])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--epochs", type=int, default=None, help="override ELBO epochs")
    p.add_argument("--pretrain-epochs", type=int, default=None)
    p.add_argument("--fashion-train", type=int, default=4000)
    p.add_argument("--fashion-test", type=int, default=1000)
    p.add_argument("--quick", action="store_true", help="tiny epochs, 1 seed (smoke test)")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    p.add_argument("--tag", default="", help="suffix of the output file names")
    args = p.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    for m in methods:
        if m not in METHODS:
            p.error(f"unknown method {m}")
    datasets = ["digits", "fashion"] if args.dataset == "all" else [args.dataset]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = 1 if args.quick else args.seeds
    for name in datasets:
        cfg = dict(CONFIG[name])
        if args.epochs is not None:
            cfg["epochs"] = cfg["m2_epochs"] = args.epochs
        if args.pretrain_epochs is not None:
            cfg["pretrain_epochs"] = args.pretrain_epochs
        if args.quick:
            cfg.update(epochs=2, pretrain_epochs=2, m2_epochs=2)
        d = load(name, args)
        results = {}
        for method in methods:
            runs = []
            for seed in range(seeds):
                t0 = time.perf_counter()
                model, r = run(method, d, seed, cfg, args)
                r["wall_s"] = time.perf_counter() - t0
                r["seed"] = seed
                runs.append(r)
                print(f"{name:8s} {method:16s} seed {seed}: acc {r['acc']:.4f} nmi {r['nmi']:.4f}"
                      f" elbo {r['test_elbo']:.2f} {r['wall_s']:.1f}s", flush=True)
                if model is not None and seed == 0 and not args.quick:
                    cluster_grid(model, jax.random.key(0),
                                 out / f"grid_{name}_{method}{args.tag}.png",
                                 image_shape=d[4], n_per_cluster=10,
                                 title=f"{method} on {name}: one row per cluster")
            summary = {k: (float(np.mean([r[k] for r in runs])),
                           float(np.std([r[k] for r in runs])))
                       for k in ("acc", "nmi", "test_elbo", "wall_s")}
            results[method] = dict(runs=runs, mean_std=summary)
            lines = write_results(out, name, d, seeds, cfg, args, results)
        print("\n".join(lines))


if __name__ == "__main__":
    main()
