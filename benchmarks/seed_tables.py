"""The seeds' tables, reproduced with gmm_jax (issue 11), with scikit-learn beside them.

Three parts (``--part a b c``; all by default):

a. Seed 003's 1-D table: samples from the mixture with weights .25/.45/.30, means 0/4/-3 and
   variances 1/2.25/.64; soft EM (``assignment="soft"``) and hard-assignment (classification)
   EM (``assignment="hard"``) from the same k-means initialisation, beside the seed's figures.
b. The per-class GMM classifier table on PCA-50 features (seed 003, "MNIST - GMM (PCA 50)"):
   one mixture per class grown by LBG with an eigenvalue floor (``fit_classifier_lbg``, every
   class and every size in one compiled program), full K = 1..16 and diagonal K = 1..256, test
   error per K; scikit-learn's ``GaussianMixture`` per class and per K (k-means init,
   ``reg_covar`` = the floor, its closest counterpart) in the same table, with run times.
c. Open-set Fashion-MNIST: classes 0-6 known, 7-8 background (labelled -1 in training, a GMM of
   its own), 9 never seen; accuracy on known classes, rejection of the unseen class and of the
   background, AUROC of the novelty score, before and after calibrating the background offset
   on a held-out part of the training split.

Usage::

    python benchmarks/seed_tables.py                      # everything (Fashion-MNIST needed)
    python benchmarks/seed_tables.py --part a b --dataset digits    # no download needed
    python benchmarks/seed_tables.py --quick              # small sizes, a few minutes

Results: ``benchmarks/results/seed_tables.json`` and ``seed_tables.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._common import RESULTS, footer, machine_info  # noqa: E402

SEED_1D = {  # seed 003, "Sampling parameters and estimated values"
    "pdf": {"w": [0.25, 0.45, 0.30], "mu": [0.00, 4.00, -3.00], "var": [1.00, 2.25, 0.64]},
    "hard": {"w": [0.27, 0.41, 0.32], "mu": [0.30, 4.25, -2.95], "var": [0.89, 1.27, 0.82]},
    "soft": {"w": [0.25, 0.45, 0.30], "mu": [-0.07, 3.98, -3.03], "var": [0.99, 2.23, 0.63]},
}
SEED_PCA50 = {  # seed 003, "MNIST - GMM (PCA 50)", test error %
    "full": {1: 3.6, 2: 3.4, 4: 2.8, 8: 2.3, 16: 2.2, 32: 2.3},
    "diag": {1: 12.3, 2: 10.1, 4: 8.9, 8: 7.6, 16: 6.2, 32: 5.1, 64: 4.3, 128: 4.3, 256: 4.3},
}


# ------------------------------------------------------------------------------------ part a
def part_a(n: int, seed: int) -> dict:
    """Soft and hard EM on seed 003's 1-D mixture, matched to the generating components."""
    import jax

    jax.config.update("jax_enable_x64", True)
    import gmm_jax

    pdf = SEED_1D["pdf"]
    rng = np.random.default_rng(seed)
    comp = rng.choice(3, size=n, p=pdf["w"])
    x = rng.normal(np.asarray(pdf["mu"])[comp], np.sqrt(pdf["var"])[comp])[:, None]
    out = {"n": n, "seed": seed}
    for name in ("soft", "hard"):
        t = time.perf_counter()
        res = gmm_jax.fit(jax.random.key(seed), x, 3, covariance_type="full", assignment=name,
                          init="kmeans", tol=1e-10, max_iter=1000)
        mu = np.asarray(res.params.means)[:, 0]
        order = [int(np.argmin(np.abs(mu - m))) for m in pdf["mu"]]  # match to the pdf's
        out[name] = {
            "w": np.asarray(res.params.weights)[order].tolist(),
            "mu": mu[order].tolist(),
            "var": np.asarray(res.params.covariances)[order, 0, 0].tolist(),
            "n_iter": int(res.n_iter),
            "seconds": time.perf_counter() - t,
        }
    out["numpy_hard_from_pdf"] = numpy_classification_em(x[:, 0], pdf)
    return out


def numpy_classification_em(x, start: dict, iters: int = 500) -> dict:
    """Brute-force reference: classification EM in numpy (assign each sample to its most
    likely component, w_k N(x | mu_k, var_k), then per-cluster ML estimates) from ``start``."""
    w, mu, var = (np.asarray(start[p], np.float64) for p in ("w", "mu", "var"))
    for _ in range(iters):
        logp = np.log(w) - 0.5 * np.log(2 * np.pi * var) - 0.5 * (x[:, None] - mu) ** 2 / var
        a = np.argmax(logp, axis=1)
        new = (np.array([np.mean(a == k) for k in range(3)]),
               np.array([x[a == k].mean() for k in range(3)]),
               np.array([x[a == k].var() for k in range(3)]))
        if all(np.array_equal(u, v) for u, v in zip(new, (w, mu, var), strict=True)):
            break
        w, mu, var = new
    return {"w": w.tolist(), "mu": mu.tolist(), "var": var.tolist()}


def table_a(a: dict) -> str:
    rows = ["| | " + " | ".join(f"{p}{i}" for p in ("w", "mu", "var") for i in (1, 2, 3))
            + " |", "|---" * 10 + "|"]
    for label, src in (("P.d.f.", SEED_1D["pdf"]), ("seed: hard", SEED_1D["hard"]),
                       ("gmm_jax: hard", a["hard"]),
                       ("numpy classification EM from the p.d.f.", a["numpy_hard_from_pdf"]),
                       ("seed: EM", SEED_1D["soft"]),
                       ("gmm_jax: EM (soft)", a["soft"])):
        vals = [src[p][i] for p in ("w", "mu", "var") for i in range(3)]
        rows.append(f"| {label} | " + " | ".join(f"{v:.2f}" for v in vals) + " |")
    return "\n".join(rows)


# ------------------------------------------------------------------------------------ part b
def load(dataset: str, quick: bool):
    """(X_train, y_train, X_test, y_test) with pixels in [0, 1]."""
    import vae_jax

    if dataset == "digits":
        ds = vae_jax.data.load_digits(test_fraction=0.2, seed=0)
    else:
        ds = vae_jax.data.load_fashion_mnist()
    X_tr, y_tr, X_te, y_te = ds.X_train, ds.y_train, ds.X_test, ds.y_test
    if quick and dataset != "digits":
        rng = np.random.default_rng(0)
        tr = rng.choice(len(X_tr), 6000, replace=False)
        te = rng.choice(len(X_te), 2000, replace=False)
        X_tr, y_tr, X_te, y_te = X_tr[tr], y_tr[tr], X_te[te], y_te[te]
    return (np.asarray(X_tr, np.float64), np.asarray(y_tr), np.asarray(X_te, np.float64),
            np.asarray(y_te))


def pca(X_tr, X_te, n_components: int):
    from sklearn.decomposition import PCA

    p = PCA(n_components=n_components, svd_solver="full", random_state=0).fit(X_tr)
    return p.transform(X_tr), p.transform(X_te)


def sklearn_classifier_error(Z_tr, y_tr, Z_te, y_te, k, covariance_type, reg, seed) -> float:
    """Test error (%) of one sklearn GaussianMixture per class (equal-prior-free: class
    frequencies as priors, as gmm_jax's classifier)."""
    from sklearn.mixture import GaussianMixture

    classes = np.unique(y_tr)
    scores = np.empty((len(Z_te), len(classes)))
    for i, c in enumerate(classes):
        rows = Z_tr[y_tr == c]
        gm = GaussianMixture(k, covariance_type=covariance_type, reg_covar=reg, max_iter=100,
                             tol=1e-3, random_state=seed).fit(rows)
        scores[:, i] = gm.score_samples(Z_te) + np.log(len(rows) / len(Z_tr))
    return 100.0 * float(np.mean(classes[np.argmax(scores, axis=1)] != y_te))


def part_b(dataset: str, max_full: int, max_diag: int, sk_max_full: int, sk_max_diag: int,
           floor: float, dtype: str, quick: bool) -> dict:
    import jax

    if dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    from gmm_jax.classifier import fit_classifier_lbg, predict_classes
    from gmm_jax.lbg import stage_sizes

    X_tr, y_tr, X_te, y_te = load(dataset, quick)
    Z_tr, Z_te = pca(X_tr, X_te, 50)
    Z_tr, Z_te = Z_tr.astype(dtype), Z_te.astype(dtype)
    smallest = int(np.min(np.bincount(y_tr)))  # at least two rows per component in every class
    cap = 2 ** int(np.log2(max(1, smallest // 2)))
    max_full, max_diag = min(max_full, cap), min(max_diag, cap)
    out = {"dataset": dataset, "n_train": len(Z_tr), "n_test": len(Z_te), "dims": 50,
           "eigenvalue_floor": floor, "dtype": dtype, "rows": []}
    for ct, kmax, skmax in (("full", max_full, sk_max_full), ("diag", max_diag, sk_max_diag)):
        t = time.perf_counter()
        stages = fit_classifier_lbg(Z_tr, y_tr, kmax, covariance_type=ct, eigenvalue_floor=floor)
        jax.block_until_ready(stages[-1].params.means)
        fit_s = time.perf_counter() - t
        print(f"  gmm_jax LBG {ct} K=1..{kmax}: {fit_s:.1f} s (every stage, one program)",
              flush=True)
        for k, st in zip(stage_sizes(kmax), stages, strict=True):
            err = 100.0 * float(np.mean(np.asarray(predict_classes(st, Z_te)) != y_te))
            row = {"covariance_type": ct, "K": k, "gmm_jax_error": err,
                   "gmm_jax_seconds_all_stages": fit_s, "seed_mnist_error":
                   SEED_PCA50[ct].get(k)}
            if k <= skmax:
                t = time.perf_counter()
                row["sklearn_error"] = sklearn_classifier_error(
                    Z_tr.astype(np.float64), y_tr, Z_te.astype(np.float64), y_te, k, ct,
                    floor, 0)
                row["sklearn_seconds"] = time.perf_counter() - t
            out["rows"].append(row)
            print(f"    K={k:>3}: gmm_jax {err:5.2f}%   sklearn "
                  f"{row.get('sklearn_error', float('nan')):5.2f}% "
                  f"({row.get('sklearn_seconds', float('nan')):.1f} s)", flush=True)
    return out


def table_b(b: dict) -> str:
    head = (f"**{b['dataset']}**, PCA-50 ({b['n_train']} train / {b['n_test']} test, "
            f"{b['dtype']}, eigenvalue floor {b['eigenvalue_floor']})\n\n"
            "| covariance | K | gmm_jax LBG + floor: test error % | scikit-learn per K: error % "
            "| scikit-learn s (this K) | seed, MNIST % |\n|---|---|---|---|---|---|")
    lines = [head]
    for r in b["rows"]:
        sk = f"{r['sklearn_error']:.2f}" if "sklearn_error" in r else "-"
        sks = f"{r['sklearn_seconds']:.1f}" if "sklearn_seconds" in r else "-"
        seed = f"{r['seed_mnist_error']:.1f}" if r["seed_mnist_error"] is not None else "-"
        lines.append(f"| {r['covariance_type']} | {r['K']} | {r['gmm_jax_error']:.2f} | {sk} | "
                     f"{sks} | {seed} |")
    times = {r["covariance_type"]: r["gmm_jax_seconds_all_stages"] for r in b["rows"]}
    sk_tot = {}
    for r in b["rows"]:
        sk_tot[r["covariance_type"]] = sk_tot.get(r["covariance_type"], 0.0) + r.get(
            "sklearn_seconds", 0.0)
    lines.append("")
    for ct, s in times.items():
        ks = [r["K"] for r in b["rows"] if r["covariance_type"] == ct]
        sk_ks = [r["K"] for r in b["rows"] if r["covariance_type"] == ct and "sklearn_seconds"
                 in r]
        lines.append(f"- {ct}: gmm_jax grows every size K = {ks[0]}..{ks[-1]} for all classes in "
                     f"one program in {s:.1f} s (compile included); scikit-learn fits K = "
                     f"{', '.join(map(str, sk_ks))} separately in {sk_tot[ct]:.1f} s in all.")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ part c
def part_c(quick: bool, k_known: int, k_background: int, dtype: str) -> dict:
    import jax

    if dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    from sklearn.metrics import roc_auc_score

    import gmm_jax

    X_tr, y_tr, X_te, y_te = load("fashion", quick)
    seen = y_tr != 9  # class 9 (ankle boot) is never seen in training
    X_tr, y_tr = X_tr[seen], y_tr[seen]
    rng = np.random.default_rng(0)
    val = rng.random(len(X_tr)) < 0.1  # calibration rows, out of the training split
    from sklearn.decomposition import PCA

    p = PCA(n_components=50, svd_solver="full", random_state=0).fit(X_tr[~val])
    Z_fit, Z_val, Z_te = (p.transform(a).astype(dtype) for a in (X_tr[~val], X_tr[val], X_te))
    y_fit = np.where(y_tr[~val] >= 7, -1, y_tr[~val])
    y_val = np.where(y_tr[val] >= 7, -1, y_tr[val])
    ks = {c: k_known for c in range(7)}
    ks[-1] = k_background
    t = time.perf_counter()
    clf = gmm_jax.GMMClassifier(ks, covariance_type="full", reg_covar=1e-4, random_state=0)
    clf.fit(Z_fit, y_fit)
    fit_s = time.perf_counter() - t
    known, unseen, bg = y_te <= 6, y_te == 9, (y_te == 7) | (y_te == 8)

    def figures(tag):
        pred = clf.predict(Z_te)
        nov = clf.novelty_score(Z_te)
        return {
            "setting": tag,
            "background_offset": float(clf.background_offset_),
            "known_accuracy": float(np.mean(pred[known] == y_te[known])),
            "known_accuracy_among_accepted": float(np.mean(
                pred[known & (pred != -1)] == y_te[known & (pred != -1)])),
            "known_rejected": float(np.mean(pred[known] == -1)),
            "unseen_rejected": float(np.mean(pred[unseen] == -1)),
            "background_rejected": float(np.mean(pred[bg] == -1)),
            "auroc_known_vs_unseen": float(roc_auc_score(
                np.r_[np.zeros(known.sum()), np.ones(unseen.sum())],
                np.r_[nov[known], nov[unseen]])),
        }

    rows = [figures("trained (offset 0)")]
    clf.calibrate(Z_val, y_val)
    rows.append(figures("calibrated on held-out training rows"))
    return {"n_fit": len(Z_fit), "n_val": len(Z_val), "n_test": len(Z_te), "K_known": k_known,
            "K_background": k_background, "fit_seconds": fit_s, "dtype": dtype, "rows": rows}


def table_c(c: dict) -> str:
    lines = [f"Fashion-MNIST, PCA-50, full covariances (K={c['K_known']} per known class, "
             f"K={c['K_background']} background), {c['n_fit']} training rows, {c['n_val']} "
             f"calibration rows, {c['n_test']} test rows; fit {c['fit_seconds']:.1f} s.\n",
             "| | known: accuracy | known: wrongly rejected | unseen class 9: rejected | "
             "background 7-8: rejected | AUROC known vs unseen |", "|---|---|---|---|---|---|"]
    for r in c["rows"]:
        lines.append(f"| {r['setting']} (offset {r['background_offset']:.2f}) | "
                     f"{100 * r['known_accuracy']:.1f}% | {100 * r['known_rejected']:.1f}% | "
                     f"{100 * r['unseen_rejected']:.1f}% | {100 * r['background_rejected']:.1f}% "
                     f"| {r['auroc_known_vs_unseen']:.3f} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", nargs="+", default=["a", "b", "c"], choices=["a", "b", "c"])
    ap.add_argument("--dataset", nargs="+", default=["digits", "fashion"],
                    choices=["digits", "fashion"])
    ap.add_argument("--quick", action="store_true",
                    help="Fashion-MNIST subsample (6000/2000), full K<=8, diag K<=32")
    ap.add_argument("--floor", type=float, default=0.01, help="eigenvalue floor (PCA units)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--n-1d", type=int, default=10_000, help="samples of the 1-D mixture")
    ap.add_argument("--out", default=os.path.join(RESULTS, "seed_tables"))
    args = ap.parse_args(argv)
    info = machine_info()
    print(footer(info), flush=True)
    result = {"machine": info, "command": "python benchmarks/seed_tables.py " + " ".join(
        argv if argv is not None else sys.argv[1:])}
    md = [f"Command: `{result['command'].strip()}`  \nMachine: {footer(info)}\n"]
    if "a" in args.part:
        result["a"] = part_a(args.n_1d, 0)
        md += ["### Seed 003, 1-D mixture: soft vs hard EM "
               f"(N = {args.n_1d}, same k-means start)\n", table_a(result["a"]), ""]
        print(md[-2], flush=True)
    if "b" in args.part:
        result["b"] = []
        for ds in args.dataset:
            print(f"part b: {ds}", flush=True)
            mf, md_, skf, skd = (8, 32, 8, 32) if args.quick else (16, 256, 16, 256)
            b = part_b(ds, mf, md_, skf, skd, args.floor, args.dtype, args.quick)
            result["b"].append(b)
            md += [f"### Per-class GMM classifier, {ds}\n", table_b(b), ""]
            print(md[-2], flush=True)
    if "c" in args.part:
        result["c"] = part_c(args.quick, 4, 8, args.dtype)
        md += ["### Open-set Fashion-MNIST (known 0-6, background 7-8, class 9 unseen)\n",
               table_c(result["c"]), ""]
        print(md[-2], flush=True)
    result["machine"]["loadavg_end"] = list(os.getloadavg())
    md.append(f"Load average at the end: {result['machine']['loadavg_end'][0]:.1f}")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out + ".json", "w") as f:
        json.dump(result, f, indent=1)
    with open(args.out + ".md", "w") as f:
        f.write("\n".join(md) + "\n")
    print(f"wrote {args.out}.json and {args.out}.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
