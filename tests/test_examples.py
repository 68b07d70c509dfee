"""The README's examples run as a user runs them (subprocess, fresh interpreter) and print what
the README shows (issue 14: README commands as smoke tests)."""

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(script: str, timeout: float = 240) -> str:
    env = dict(os.environ, PYTHONPATH=ROOT)
    out = subprocess.run([sys.executable, os.path.join(ROOT, "examples", script)], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_quickstart_prints_the_readme_output():
    text = _run("quickstart.py")
    readme = open(os.path.join(ROOT, "README.md")).read()
    block = readme.split("prints (`python examples/quickstart.py`):")[1].split("```")[1]
    # the printed figures are the README's (the fit is deterministic for a given key)
    assert text.strip() == block.strip(), (text, block)


def test_grad_through_em_finds_the_outliers_and_matches_finite_differences():
    text = _run("grad_through_em.py")
    ad, fd = map(float, re.search(r"autodiff (\S+), finite difference (\S+)", text).groups())
    assert abs(ad - fd) <= 1e-6 * abs(fd), text
    worst = eval(re.search(r"hurts most: (\[.*?\])", text).group(1))  # noqa: S307
    assert len(set(worst) & {0, 1, 2, 3, 4}) >= 3, text
    before = float(re.search(r"log-likelihood: (\S+)", text).group(1))
    after = float(re.search(r"without them: (\S+)", text).group(1))
    assert after > before + 0.1, text
