"""Probe of the H100 failure behind ``estep.AUTO_FAST_BACKENDS``: does ``e_step(method="auto")``
(the bound's choice applied by ``lax.cond``) return the form the bound chose, and how far is
each form from float64, on the device JAX finds?

Case: sklearn digits offset by 1e4, a k-means partition's M-step with reg_covar=1e-6 (K=4), full
and tied, float32. There the bound rejects the fast form, so a correct ``auto`` equals ``exact``.
On an H100 (jax 0.11.2) it returned the fast form's value (0.34 nats per sample off), and the
fast form alone was 30x over its bound. Each configuration runs in its own subprocess, once with
JAX's defaults and once with XLA's GPU command buffers off (``--xla_gpu_enable_command_buffer=``,
a lead: command-buffer conditionals have had branch-order bugs in XLA), in both orders of first
compile (auto first, exact first: on the H100 the result depended on it).

Usage: python -m benchmarks.gpu_auto_probe            (about a minute on one GPU)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

CONFIGS = [
    {"flags": "", "order": ["auto", "exact", "fast"]},
    {"flags": "", "order": ["exact", "auto", "fast"]},
    {"flags": "--xla_gpu_enable_command_buffer=", "order": ["auto", "exact", "fast"]},
]


def _worker(spec: dict) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from sklearn.cluster import KMeans
    from sklearn.datasets import load_digits

    import gmm_jax
    from gmm_jax import em, estep

    estep.AUTO_FAST_BACKENDS = (jax.default_backend(),)  # let auto use the bound here
    X = load_digits().data + 1e4
    out = {"backend": jax.default_backend(), "jax": jax.__version__}
    r = np.eye(4)[KMeans(4, n_init=1, random_state=0).fit(X).labels_]
    nk = r.sum(0)
    means = (r.T @ X) / nk[:, None]
    for ct in ("full", "tied"):
        if ct == "full":
            cov = np.stack([((X - means[j]).T * r[:, j]) @ (X - means[j]) / nk[j]
                            + 1e-6 * np.eye(64) for j in range(4)])
        else:
            cov = sum(((X - means[j]).T * r[:, j]) @ (X - means[j]) for j in range(4)) / len(X)
            cov = cov + 1e-6 * np.eye(64)
        with jax.enable_x64(True):
            p64 = gmm_jax.params_from_covariances(nk / len(X), means, cov, ct)
            p32 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), p64)
            ref = float(gmm_jax.e_step(jax.tree.map(lambda a: a.astype(jnp.float64), p32),
                                       jnp.asarray(X.astype(np.float32), jnp.float64),
                                       method="whitened")[1])
        X32 = jnp.asarray(X, jnp.float32)
        run = jax.jit(gmm_jax.e_step._fun, static_argnames=("method",))
        errs = {m: abs(float(run(p32, X32, method=m)[1]) - ref) for m in spec["order"]}
        bound = float(estep.fast_error_bound(em.centre(p32, em.default_shift(p32))))
        out[ct] = {"errors": errs, "bound": bound,
                   "auto_took": "either (the forms agree)" if errs["exact"] == errs["fast"]
                   else "exact" if errs["auto"] == errs["exact"]
                   else "fast" if errs["auto"] == errs["fast"] else "neither"}
    return out


def main() -> int:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for spec in CONFIGS:
        env = dict(os.environ)
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + spec["flags"]).strip()
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu_auto_probe", "--worker",
                               json.dumps(spec)], cwd=root, env=env, capture_output=True,
                              text=True, timeout=600)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode or not lines:
            print(f"flags={spec['flags']!r} order={spec['order']}: failed\n{proc.stderr[-2000:]}")
            continue
        res = json.loads(lines[-1])
        for ct in ("full", "tied"):
            e = res[ct]["errors"]
            print(f"{res['backend']} jax {res['jax']} flags={spec['flags']!r} "
                  f"order={','.join(spec['order'])} {ct}: auto took {res[ct]['auto_took']}; "
                  f"errors exact {e['exact']:.2e} fast {e['fast']:.2e} auto {e['auto']:.2e}; "
                  f"bound {res[ct]['bound']:.2e}", flush=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        print(json.dumps(_worker(json.loads(sys.argv[2]))))
    else:
        sys.exit(main())
