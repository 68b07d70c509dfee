"""Benchmark of the reference VAE: training steps/s and test negative ELBO.

Reference model: MLP encoder D-500-(20, 20) and decoder 20-500-D, ReLU, Bernoulli likelihood,
Adam(1e-3), batch 128, dynamic binarisation of the training data (the test set is binarised once
with a fixed key). Data: Fashion-MNIST (784-dim, from /usr/share/datasets/fashion-mnist, Debian
package ``dataset-fashion-mnist``) and scikit-learn's 8x8 digits (64-dim).

Reported per data set: steps/s (median over epochs after the first, which includes compilation),
the wall time, the final train loss, the test negative ELBO (single-sample ELBO averaged over the
test set) and the importance-weighted estimate of the test negative log-likelihood (k samples).
Writes ``bench_vae.json``, ``bench_vae.md`` and ``bench_vae_<dataset>_samples.png`` to --out.

Usage:
    python benchmarks/bench_vae.py --datasets digits fashion --epochs-fashion 10 \
        --epochs-digits 200 --out benchmarks/results
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import vae_jax  # noqa: E402
from vae_jax import data, plots  # noqa: E402


def machine_info() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jax_backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "date_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S"),
        "loadavg_start": list(os.getloadavg()),
    }


def run_one(name: str, ds: data.Dataset, *, epochs: int, seed: int, iw_k: int, out: Path,
            batch_size: int = 128, hidden: int = 500, latent: int = 20, lr: float = 1e-3,
            progress: bool = True) -> dict:
    key = jax.random.key(seed)
    k_init, k_train, k_test_bin, k_eval, k_iw, k_samp = jax.random.split(key, 6)
    d = ds.X_train.shape[1]
    model = vae_jax.VAE(d, latent, hidden=(hidden,), likelihood="bernoulli",
                        rngs=nnx.Rngs(int(jax.random.randint(k_init, (), 0, 2**31 - 1))))
    X_test = data.binarize(jnp.asarray(ds.X_test), key=k_test_bin)
    t0 = time.perf_counter()
    model, hist = vae_jax.train(model, ds.X_train, epochs=epochs, batch_size=batch_size,
                                learning_rate=lr, key=k_train, binarize=True, progress=progress)
    wall = time.perf_counter() - t0
    sps = hist["steps_per_s"][1:] or hist["steps_per_s"]
    t1 = time.perf_counter()
    test_elbo = vae_jax.evaluate_elbo(model, X_test, k_eval, batch_size=1000)
    iw = vae_jax.evaluate(model, X_test, k_iw, method="log_marginal", batch_size=100, k=iw_k)
    eval_s = time.perf_counter() - t1
    png = out / f"bench_vae_{name}_samples.png"
    plots.sample_grid(np.asarray(model.sample(k_samp, 64)), png, ncols=8,
                      image_shape=ds.image_shape, title=f"VAE samples ({name}, {epochs} epochs)")
    return {
        "dataset": name,
        "n_train": int(ds.X_train.shape[0]),
        "n_test": int(ds.X_test.shape[0]),
        "dim": int(d),
        "architecture": f"{d}-{hidden}-{latent} encoder, {latent}-{hidden}-{d} decoder, ReLU",
        "likelihood": "bernoulli (dynamic binarisation; test set binarised once)",
        "optimizer": f"adam lr={lr}",
        "batch_size": batch_size,
        "epochs": epochs,
        "steps_per_epoch": int(ds.X_train.shape[0] // batch_size),
        "steps_per_s_median": float(statistics.median(sps)),
        "first_epoch_s_incl_compile": float(hist["epoch_time_s"][0]),
        "train_wall_s": float(wall),
        "final_train_neg_elbo": float(hist["loss"][-1]),
        "test_neg_elbo": float(-test_elbo),
        f"test_neg_log_likelihood_iw{iw_k}": float(-jnp.mean(iw)),
        "iw_k": iw_k,
        "eval_s": float(eval_s),
        "sample_grid": png.name,
        "seed": seed,
    }


def write_markdown(path: Path, info: dict, rows: list[dict]) -> None:
    lines = [
        "# bench_vae: reference VAE (Bernoulli, Adam 1e-3, batch 128)",
        "",
        f"- date (UTC): {info['date_utc']}",
        f"- machine: {info['cpu']} ({info['cpu_count']} logical CPUs visible), "
        + info["platform"],
        f"- load average (1 min): {info['loadavg_start'][0]:.2f} at start, "
        f"{info['loadavg_end'][0]:.2f} at the end (other jobs on the machine slow steps/s)",
        f"- JAX {info['jax']} on {info['jax_backend']} ({', '.join(info['devices'])})",
        f"- command: `{info['command']}`",
        "",
        "| data set | D | epochs | steps/epoch | steps/s | train wall s | final train -ELBO "
        "| test -ELBO | test -log p(x) (IW k) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        k = r["iw_k"]
        lines.append(
            f"| {r['dataset']} | {r['dim']} | {r['epochs']} | {r['steps_per_epoch']} | "
            f"{r['steps_per_s_median']:.1f} | {r['train_wall_s']:.1f} | "
            f"{r['final_train_neg_elbo']:.2f} | {r['test_neg_elbo']:.2f} | "
            f"{r[f'test_neg_log_likelihood_iw{k}']:.2f} (k={k}) |")
    lines += ["", "Samples: " + ", ".join(f"`{r['sample_grid']}`" for r in rows), "",
              "steps/s is the median over epochs 2..E (epoch 1 includes compilation). Negative "
              "ELBO and -log p(x) are in nats per image on the binarised test set.", ""]
    path.write_text("\n".join(lines))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["digits", "fashion"],
                   choices=["digits", "fashion"])
    p.add_argument("--epochs-fashion", type=int, default=10)
    p.add_argument("--epochs-digits", type=int, default=200)
    p.add_argument("--iw-k", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fashion-dir", default=None)
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    info = machine_info()
    info["command"] = "python benchmarks/bench_vae.py " + " ".join(argv or sys.argv[1:])
    rows = []
    for name in args.datasets:
        if name == "digits":
            ds, epochs = data.load_digits(), args.epochs_digits
        else:
            ds, epochs = data.load_fashion_mnist(args.fashion_dir), args.epochs_fashion
        row = run_one(name, ds, epochs=epochs, seed=args.seed, iw_k=args.iw_k, out=out,
                      progress=not args.no_progress)
        print(json.dumps(row), flush=True)
        rows.append(row)
    info["loadavg_end"] = list(os.getloadavg())
    (out / "bench_vae.json").write_text(json.dumps({"machine": info, "results": rows}, indent=2))
    write_markdown(out / "bench_vae.md", info, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
