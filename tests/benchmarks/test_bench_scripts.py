"""Smoke runs of the benchmark scripts at tiny sizes (slow: subprocesses compile JAX programs)."""

import json
import os

import pytest

from benchmarks import bench_em, bench_restarts


@pytest.mark.slow
def test_bench_em_smoke(tmp_path):
    rep = bench_em.main(["--n", "2000", "--d", "4", "--k", "3", "--cov", "full,diag",
                         "--iters", "3", "--repeats", "1", "--contenders", "gmm_jax,numpy,sklearn",
                         "--out", str(tmp_path), "--tag", "smoke", "--peak-size", "256"])
    for cfg in rep["configs"]:
        for name, row in cfg["contenders"].items():
            assert row["n_iter"] == 3, (name, row)
    assert os.path.exists(tmp_path / "bench_smoke.png")
    json.loads((tmp_path / "bench_smoke.json").read_text())


@pytest.mark.slow
def test_bench_restarts_smoke(tmp_path):
    rep = bench_restarts.main(["--n", "1000", "--d", "2", "--k", "2", "--iters", "3",
                               "--n-init", "1,2", "--repeats", "1", "--out", str(tmp_path),
                               "--no-plot"])
    assert [r["n_init"] for r in rep["rows"]] == [1, 2]


@pytest.mark.slow
def test_gpu_auto_probe_reports_which_form_auto_took(capsys):
    from benchmarks import gpu_auto_probe

    assert gpu_auto_probe.main() == 0
    out = capsys.readouterr().out.splitlines()
    full = [ln for ln in out if " full: " in ln]
    assert len(full) == len(gpu_auto_probe.CONFIGS)
    if all(ln.startswith("cpu ") for ln in full):  # on the CPU the cond applies the bound
        assert all("auto took exact" in ln for ln in full), full


@pytest.mark.slow
def test_bench_exact_kernels_smoke(tmp_path):
    from benchmarks import bench_exact_kernels

    rep = bench_exact_kernels.main(["--n", "512", "--d", "4", "--k", "1,8", "--cov", "full,diag",
                                    "--repeats", "1", "--out", str(tmp_path)])
    assert [(r["type"], r["k"]) for r in rep["rows"]] == [("full", 1), ("full", 8), ("diag", 1),
                                                          ("diag", 8)]
    assert all(r["whitened"] > 0 and r["expanded64"] > 0 for r in rep["rows"])
    assert "| full | 4 | 8 |" in (tmp_path / "bench_exact_kernels.md").read_text()


@pytest.mark.slow
def test_bench_workflows_smoke(tmp_path):
    """The diag sweep row, both contenders in their own processes (about a minute)."""
    from benchmarks import bench_workflows

    out = tmp_path / "wf"
    assert bench_workflows.main(["--workflows", "sweep_diag", "--blas-threads", "1",
                                 "--out", str(out)]) == 0
    row = json.loads((tmp_path / "wf.json").read_text())["workflows"]["sweep_diag"]
    assert row["gmm_jax"]["repeat_equal"] and row["gmm_jax"]["best_k"] >= 10
    assert "| sweep_diag |" in (tmp_path / "wf.md").read_text()
