"""The README's vae_jax snippet and examples/vae_digits.py run as written (tiny budgets).

Both build the same models on the same data, so they run in one test, in this process: the
example compiles the training, EM and prediction programs and the snippet reuses them (as a
subprocess of its own, the example took 17 s, mostly compiling the same programs again).
"""

import runpy
import sys
from pathlib import Path

import numpy as np

import vae_jax
from vae_jax.gmvae import fit_gmvae

ROOT = Path(__file__).resolve().parents[2]


def _readme_snippet() -> str:
    readme = (ROOT / "README.md").read_text()
    blocks = [b.split("\n", 1)[1] for b in readme.split("```")[1::2]
              if b.startswith("python") and "fit_gmvae" in b]
    assert len(blocks) == 1, "expected one python snippet with fit_gmvae in README.md"
    return blocks[0]


def test_vae_digits_example_then_readme_snippet(monkeypatch, tmp_path, capsys):
    """examples/vae_digits.py --quick runs end to end (``python examples/vae_digits.py --quick``
    as a script, run by runpy) and prints every part.

    Then the README snippet, executed as written: VAE training, GMVAE with the recipe's defaults,
    fit_gmvae (README call: no arguments besides the key), cluster, conditional generation,
    save/load. Only fit_gmvae's budget defaults are shrunk (1 epoch per phase, 1 run, 2 EM
    starts), through fit_gmvae's own defaults, so the call in the snippet is the one that runs.
    """
    monkeypatch.setattr(sys, "argv", ["vae_digits.py", "--quick"])
    runpy.run_path(str(ROOT / "examples/vae_digits.py"), run_name="__main__")
    printed = capsys.readouterr().out
    for text in ("VAE test ELBO after 2 epochs", "GMVAE clusters: test Hungarian accuracy",
                 "generated: (5, 64)", "same clusters True"):
        assert text in printed, printed

    for name, value in dict(pretrain_steps=6, steps=4, n_init=2, n_restarts=1).items():
        monkeypatch.setitem(fit_gmvae.__kwdefaults__, name, value)
    monkeypatch.chdir(tmp_path)
    calls = []
    real_fit = vae_jax.fit_gmvae

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(vae_jax, "fit_gmvae", spy)
    env: dict = {}
    exec(compile(_readme_snippet(), "README snippet", "exec"), env)
    assert len(calls) == 1 and set(calls[0]) == {"key"}
    hist, ds = env["hist"], env["ds"]
    assert len(hist["restarts"]) == 1 and hist["chosen"] == 0
    assert len(hist["pretrain"]["loss"]) == 1 and len(hist["elbo"]["loss"]) == 1
    n_test = ds.X_test.shape[0]
    assert env["labels"].shape == (n_test,) and env["probs"].shape == (n_test, 10)
    assert env["x"].shape == (5, 64)
    assert isinstance(env["gmvae"], vae_jax.GMVAE) and (tmp_path / "gmvae.npz").exists()
    np.testing.assert_array_equal(env["gmvae"].predict(ds.X_test), env["labels"])

