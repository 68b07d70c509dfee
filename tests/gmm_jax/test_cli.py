"""The ``gmm-jax`` command end to end: every subcommand in a subprocess on tiny files.

The subprocesses share the suite's persistent compilation cache (``.jax_cache``, set up in
tests/conftest.py), so a second run of this file loads most programs instead of compiling them;
``test_predict_reuses_the_compilation_cache`` uses a fresh folder of its own to check exactly
that. Bad files and arguments must end with a short ``gmm-jax CMD: error: ...`` and a non-zero
status, never a traceback.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from gmm_jax import cli

ROOT = Path(__file__).resolve().parents[2]
_SCRIPT = Path(sys.executable).with_name("gmm-jax")
#: The installed console script when there is one (the command users type), else the module.
COMMAND = [str(_SCRIPT)] if _SCRIPT.is_file() else [sys.executable, "-m", "gmm_jax.cli"]


def _env(cache_dir=None) -> dict:
    env = dict(os.environ)
    env.pop("GMM_JAX_TRACEBACK", None)
    env["GMM_JAX_CACHE_DIR"] = str(cache_dir or os.environ.get(
        "JAX_COMPILATION_CACHE_DIR", ROOT / ".jax_cache"))
    env.setdefault("JAX_PLATFORMS", "cpu")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run(*args, cache_dir=None, cwd=None, timeout=240) -> subprocess.CompletedProcess:
    """``gmm-jax ARGS...`` in a subprocess; stdout and stderr captured as text."""
    return subprocess.run(COMMAND + [str(a) for a in args], capture_output=True, text=True,
                          env=_env(cache_dir), cwd=cwd, timeout=timeout)


def _ok(proc) -> str:
    assert proc.returncode == 0, f"status {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.stdout


def _blobs(n_per=100, seed=0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = np.array([[-4.0, 0.0], [4.0, 0.0], [0.0, 6.0]])
    y = np.repeat(np.arange(3), n_per)
    X = centres[y] + rng.normal(size=(3 * n_per, 2))
    return X.astype(np.float32), y


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Tiny data files: three 2-D blobs as .npy and as .csv with a header."""
    d = tmp_path_factory.mktemp("cli")
    X, y = _blobs()
    np.save(d / "blobs.npy", X)
    np.savetxt(d / "blobs.csv", X, delimiter=",", header="x,y", comments="", fmt="%.7g")
    np.save(d / "labels.npy", y)
    return d


@pytest.fixture(scope="module")
def fitted(files):
    """One ``gmm-jax fit`` run (progress bar, two restarts, figure, no cache), reused below."""
    proc = run("fit", files / "blobs.npy", "-k", 3, "--covariance-type", "diag", "--n-init", 2,
               "--progress", "on", "--no-cache", "-o", files / "model.npz",
               "--plot", files / "fit.png")
    return proc


# ------------------------------------------------------------------------------------- fit
def test_fit_reports_saves_and_plots(files, fitted):
    out = _ok(fitted)
    assert "gmm-jax fit: " in out and "N=300, D=2" in out
    assert re.search(r"converged\s+yes, after \d+ EM iterations", out), out
    assert re.search(r"BIC\s+\d", out) and re.search(r"AIC\s+\d", out), out
    assert "cache: off" in out, out  # --no-cache
    # the progress bar, fed by the callback from inside the compiled loop, on stderr
    assert re.search(r"EM: 100%.*ll=-3\.\d+", fitted.stderr), fitted.stderr
    from gmm_jax import GaussianMixture

    gm = GaussianMixture.load(files / "model.npz")
    X, y = _blobs()
    assert gm.covariance_type == "diag" and gm.weights_.shape == (3,)
    assert gm.converged_ and gm.n_features_in_ == 2
    assert f"lower bound  {gm.lower_bound_:.6g}" in out, out
    # the three blobs are found: each true cluster maps to one component
    from gmm_jax.metrics import clustering_accuracy

    assert clustering_accuracy(y, gm.predict(X)) > 0.97
    weights = " ".join(f"{w:.3f}" for w in gm.weights_)
    assert weights in out, out
    png = files / "fit.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000


# --------------------------------------------------------------------------------- predict
def test_predict_reuses_the_compilation_cache(files, fitted, tmp_path):
    """predict writes labels/probabilities/scores; a second process loads every program."""
    _ok(fitted)
    cache = tmp_path / "jax_cache"
    out_files = [tmp_path / f for f in ("labels.npy", "proba.npy", "score.npy")]
    first = _ok(run("predict", files / "model.npz", files / "blobs.csv", "-o", out_files[0],
                    "--proba", out_files[1], "--score", out_files[2], cache_dir=cache))
    assert "(header: x, y), N=300, D=2" in first, first
    from gmm_jax import GaussianMixture

    gm = GaussianMixture.load(files / "model.npz")
    X, _ = _blobs()
    labels, proba, score = (np.load(p) for p in out_files)
    np.testing.assert_array_equal(labels, gm.predict(X))
    np.testing.assert_allclose(proba, gm.predict_proba(X), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(score, gm.score_samples(X), rtol=1e-5)
    counts = " ".join(str(c) for c in np.bincount(labels, minlength=3))
    assert f"counts    {counts}" in first, first

    def programs(text):
        m = re.search(r"compiling (\d+) programs? \((\d+) from the compilation cache\)", text)
        assert m, text
        return int(m.group(1)), int(m.group(2))

    n1, hits1 = programs(first)
    assert n1 >= 1 and hits1 < n1 and any(cache.iterdir())
    second = _ok(run("predict", files / "model.npz", files / "blobs.csv", "-o", out_files[0],
                     cache_dir=cache))
    n2, hits2 = programs(second)
    assert n2 >= 1 and hits2 == n2, second  # nothing compiled the second time


# ----------------------------------------------------------------------------------- sweep
def test_sweep_table_choice_plot_json(files, tmp_path):
    fig, js, model = tmp_path / "sweep.png", tmp_path / "sweep.json", tmp_path / "best.npz"
    out = _ok(run("sweep", files / "blobs.csv", "-k", "1:4", "--covariance-type", "diag",
                  "--plot", fig, "--json", js, "-o", model))
    assert "chosen K = 3 (lowest BIC)" in out, out
    rows = [ln.split() for ln in out.splitlines() if re.match(r"\s+\d+\s+-?\d+\.\d{4}\s", ln)]
    assert [int(r[0]) for r in rows] == [1, 2, 3, 4], out
    bics = [float(r[3]) for r in rows]
    assert int(np.argmin(bics)) == 2 and rows[2][-1] == "<", out
    result = json.loads(js.read_text())
    assert result["best_n_components"] == 3 and result["candidates"] == [1, 2, 3, 4]
    np.testing.assert_allclose(result["table"]["bic"], bics, atol=0.051)  # printed to 0.1
    assert fig.read_bytes()[:4] == b"\x89PNG"
    from gmm_jax import GaussianMixture

    assert GaussianMixture.load(model).weights_.shape == (3,)


# ----------------------------------------------------------------------------------- bench
def test_bench_passes_quick_through_and_streams_its_output():
    """``gmm-jax bench --quick -- --help``: bench_em's own help, after the command line."""
    out = _ok(run("bench", "--quick", "--", "--help", cwd=ROOT))
    head = "gmm-jax bench: running python -m benchmarks.bench_em --quick --help"
    assert head in out, out
    assert "usage:" in out and "--n-" not in out.split(head)[0], out
    assert out.index(head) < out.index("usage:"), out  # ours first, then the benchmark's


@pytest.mark.slow
def test_bench_quick_runs_the_benchmark(tmp_path):
    proc = run("bench", "--quick", "--out", tmp_path, cwd=ROOT, timeout=300)
    out = _ok(proc)
    assert "gmm_jax" in out and "ms/iter" in out, out
    assert list(tmp_path.glob("*.json")), "bench_em wrote no results into --out"


@pytest.mark.slow
def test_bench_callback_overhead_small(tmp_path):
    out = _ok(run("bench", "--callback-overhead", "--n", 3000, "--iters", 5, "--repeats", 2,
                  "--out", tmp_path))
    assert re.search(r"one callback\s+\d+ us round trip", out), out
    r = json.loads((tmp_path / "callback_overhead.json").read_text())
    assert r["n"] == 3000 and r["callback_calls"] >= 5 and r["us_per_callback"] > 0


# ------------------------------------------------------------------------------- train-vae
def test_train_vae_writes_run_folder_and_resumes(tmp_path):
    rng = np.random.default_rng(0)
    protos = rng.random((3, 16)) > 0.5
    y = rng.integers(0, 3, 90)
    X = np.where(rng.random((90, 16)) < 0.1, ~protos[y], protos[y]).astype(np.float32)
    np.save(tmp_path / "img.npy", X)
    np.save(tmp_path / "lab.npy", y)
    args = ("train-vae", "--model", "vae", "--data", tmp_path / "img.npy", "--labels",
            tmp_path / "lab.npy", "-o", tmp_path / "run", "--hidden", 8, "--latent-dim", 2,
            "-k", 3, "--em-restarts", 2, "--samples-per-cluster", 2, "--batch-size", 24)
    first = run(*args, "--epochs", 1)
    out = _ok(first)
    assert re.search(r"train: 100%.*elbo=", first.stderr), first.stderr  # the progress bar
    folder = tmp_path / "run"
    for name in ("model.npz", "samples.png", "metrics.json", "history.json", "checkpoint.npz",
                 "run.json", "latent_gmm.npz"):
        assert (folder / name).is_file(), (name, out)
    metrics = json.loads((folder / "metrics.json").read_text())
    assert 0.0 <= metrics["accuracy_test"] <= 1.0 and np.isfinite(metrics["test_elbo"])
    assert sum(metrics["cluster_sizes_test"]) == metrics["n_test"] == 18
    hist1 = json.loads((folder / "history.json").read_text())["train"]
    # a longer --epochs resumes (another setting is refused: test_bad_files_and_arguments...)
    out2 = _ok(run(*args, "--epochs", 2))
    assert "(resuming from" in out2, out2
    hist2 = json.loads((folder / "history.json").read_text())["train"]
    assert len(hist2["elbo"]) == 2 and hist2["elbo"][0] == hist1["elbo"][0], (hist1, hist2)
    # epoch 1 came from the checkpoint, not from training it again (its timing is not re-measured)
    assert hist2["epoch_time_s"][0] == hist1["epoch_time_s"][0], (hist1, hist2)


# ------------------------------------------------------------------------------------ demo
def test_demo_smoke():
    """The README's ``gmm-jax demo``, on fewer models (the full one is the slow test below)."""
    out = _ok(run("demo", "--covariance-types", "spherical", "--n-components", 4,
                  "--max-iter", 30))
    assert "sklearn digits, N=1797, D=64, K=4" in out, out
    rows = {ln.split()[1] if ln.startswith("GMM") else ln.split()[0]: ln.split()
            for ln in out.splitlines() if ln.startswith(("k-means", "GMM"))}
    assert set(rows) == {"k-means", "spherical"}, out
    assert 0.3 < float(rows["spherical"][2]) <= 1.0, out  # clustering accuracy


@pytest.mark.slow
def test_demo_as_in_the_readme():
    out = _ok(run("demo"))
    for ct in cli.COVARIANCE_TYPES:
        assert re.search(rf"^GMM {ct}\s+0\.\d+", out, re.M), out


# ------------------------------------------------------------------------------- bad input
def _one_line_error(proc, command: str, pattern: str, status: int = 1) -> None:
    err = proc.stderr.strip()
    assert proc.returncode == status, (proc.returncode, proc.stdout, err)
    assert "Traceback" not in err, err
    assert len(err.splitlines()) <= 2, err
    assert err.startswith(f"gmm-jax {command}: error: "), err
    assert re.search(pattern, err), (pattern, err)


def _bad_cases(d: Path, model: Path) -> list[tuple[list, str, str]]:
    X, _ = _blobs(10)
    (d / "nonnum.csv").write_text("a,b\n1,2\n3,abc\n")
    (d / "ragged.csv").write_text("1,2,3\n4,5\n")
    (d / "empty.csv").write_text("")
    np.save(d / "rank3.npy", np.ones((2, 2, 2)))
    np.save(d / "nan.npy", np.array([[1.0, np.nan], [2.0, 3.0]]))
    np.savez(d / "two.npz", a=X, b=X)
    np.save(d / "d3.npy", np.ones((5, 3), np.float32))
    np.save(d / "ok.npy", X)
    (d / "ragged.tsv").write_text("1\t2\n3\n")
    (d / "other_run").mkdir()
    (d / "other_run" / "run.json").write_text(json.dumps({"model": "m2"}))
    o = ["-o", d / "out.npz"]
    return [
        (["fit", d / "missing.npy", "-k", 2, *o], "fit", "no such file"),
        (["fit", d / "nonnum.csv", "-k", 2, *o], "fit", "line 3, column 2 is 'abc'"),
        (["fit", d / "ragged.csv", "-k", 2, *o], "fit", "line 2 has 2 value"),
        (["fit", d / "empty.csv", "-k", 2, *o], "fit", "empty"),
        (["fit", d / "rank3.npy", "-k", 2, *o], "fit", "3-D array"),
        (["fit", d / "nan.npy", "-k", 2, *o], "fit", "NaN"),
        (["fit", d / "two.npz", "-k", 2, *o], "fit", "pick one with --key"),
        (["fit", d / "two.npz", "--key", "c", "-k", 2, *o], "fit", "has no array 'c'"),
        (["fit", d / "ok.npy", "-k", 99, *o], "fit", "more components than the 30 samples"),
        (["fit", d / "ok.npy", "-k", 2, *o, "--plot", d / "f.jpg"], "fit", "PNG"),
        (["predict", d / "ok.npy", d / "ok.npy", "-o", d / "l.npy"], "predict",
         "is not a model file"),
        (["predict", model, d / "d3.npy", "-o", d / "l.npy"], "predict",
         "has 3 features per sample, but the model"),
        (["predict", model, d / "nonnum.csv", "-o", d / "l.npy"], "predict", "not a number"),
        (["sweep", d / "ok.npy", "-k", "5:2"], "sweep", "expected K, A:B"),
        (["sweep", d / "ragged.csv", "-k", "1:3"], "sweep", "line 2 has 2 value"),
        (["train-vae", "--model", "vae", "--data", d / "nan.npy", "-o", d / "run"],
         "train-vae", "NaN"),
        (["train-vae", "--model", "vae", "--data", d / "ok.npy", "-o", d / "other_run"],
         "train-vae", r"holds a run with other settings \(model: 'm2' there, 'vae' now\)"),
        (["fit", d / "ragged.tsv", "-k", 2, *o], "fit", r"ragged\.tsv.*line 2 has 1 value"),
        (["demo", "--covariance-types", "full,bogus"], "demo", "--covariance-types"),
        (["bench", "--callback-overhead", "--n", 0], "bench", "--n must be >= 1"),
        (["fit", d / "ok.npy", "-k", 2, *o, "--bogus"], "", "unrecognized arguments: --bogus"),
    ]


_DRIVER = textwrap.dedent("""
    import contextlib, io, json, sys, traceback
    from gmm_jax.cli import main
    results = []
    for argv in json.loads(sys.argv[1]):
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                status = main(argv)
            except SystemExit as stop:  # argparse's usage errors
                status = stop.code
            except BaseException:  # an escaped exception is a failure of the command
                status, _ = None, err.write(traceback.format_exc())
        results.append([status, err.getvalue()])
    print(json.dumps(results))
""")


def test_bad_files_and_arguments_end_with_one_line(files, fitted, tmp_path):
    """Every case runs ``gmm_jax.cli.main`` in one subprocess (one JAX import for all)."""
    _ok(fitted)
    cases = _bad_cases(tmp_path, files / "model.npz")
    argvs = [[str(a) for a in argv] for argv, _, _ in cases]
    proc = subprocess.run([sys.executable, "-c", _DRIVER, json.dumps(argvs)],
                          capture_output=True, text=True, env=_env(), timeout=240)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for (argv, command, pattern), (status, err) in zip(cases, results, strict=True):
        if not command:  # argparse: usage line(s), then "gmm-jax: error: ...", status 2
            assert status == 2 and "Traceback" not in err and re.search(pattern, err), err
            continue
        fake = subprocess.CompletedProcess(argv, status, "", err)
        _one_line_error(fake, command, pattern)
    assert not (tmp_path / "out.npz").exists()  # nothing written by a failed fit


# --------------------------------------------------------------------------- in-process bits
def test_literal_choices_match_the_library():
    import gmm_jax
    from gmm_jax.init import INIT_METHODS
    from gmm_jax.selection import CRITERIA

    assert cli.COVARIANCE_TYPES == tuple(gmm_jax.COVARIANCE_TYPES)
    assert cli.INIT_METHODS == INIT_METHODS and cli.CRITERIA == CRITERIA


@pytest.mark.parametrize("spec, expected", [
    ("4", [4]), ("1:5", [1, 2, 3, 4, 5]), ("2:9:3", [2, 5, 8]), ("1:3,8,2", [1, 2, 3, 8]),
])
def test_candidate_specs(spec, expected):
    assert cli._parse_candidates(spec) == expected


@pytest.mark.parametrize("spec", ["", "0:3", "5:2", "1:2:0", "a", "1:2:3:4", "3,,4"])
def test_bad_candidate_specs(spec):
    with pytest.raises(cli.CLIError, match="-k"):
        cli._parse_candidates(spec)
