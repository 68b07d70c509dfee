"""Shared pytest configuration: slow tests are opt-in, x64 is enabled per test where needed."""

import os
import subprocess
import sys
from pathlib import Path

# Most of the suite's time is XLA compiling small programs that then run for milliseconds, so the
# tests compile at a lower cost: LLVM optimisation level 0 and XLA's classic CPU fusion emitters
# instead of the newer MLIR ones (measured on the GMVAE and io tests: 181 s -> 86 s; the fit
# programs compile 2-3x faster, with the same results to the last digit printed). gmm_jax
# programs default to level 1, and to the classic emitters below a size (gmm_jax/_jit.py), but
# leave an option set in XLA_FLAGS alone; a user's own XLA_FLAGS entries for either option win
# here too. Run-time speed is measured by benchmarks/, not here.
# XLA also splits each program's LLVM code generation over several threads by default; with two
# xdist workers on two cores that only adds work: one part per program
# (--xla_cpu_parallel_codegen_split_count=1) took the whole suite from 5:12 wall / 601 CPU s to
# 4:33 / 522 side by side at the same load (the em/estep/fitting tests alone: 131 -> 122 and
# 148 -> 119 CPU s in two pairs), same tests, same results.
_FAST_COMPILE = ("--xla_backend_optimization_level=0", "--xla_cpu_use_fusion_emitters=false",
                 "--xla_cpu_parallel_codegen_split_count=1")
_FLAGS_SET = "_GMM_JAX_TESTS_XLA_FLAGS"  # the controller chose them; workers inherit the result

# JAX's persistent compilation cache is not used by the tests: within one process it saved
# nothing measurable (181 s with it, 185 s without, same tests), and with jax 0.10.2 a worker
# now and then crashed inside the cache's own code (see the rerun hook below). The gmm-jax
# command, which turns the cache on by default, writes to a per-worker folder in the
# (git-ignored) repository folder .jax_cache instead of the user's ~/.cache.
_CACHE = Path(__file__).resolve().parents[1] / ".jax_cache"
_OURS = "_GMM_JAX_TESTS_CACHE"  # marks a folder chosen here, not by the user
_USER_CACHE = "GMM_JAX_CACHE_DIR" in os.environ and _OURS not in os.environ

import pytest  # noqa: E402


def _fast_compile_flags(flags: str) -> list[str]:
    """The entries of ``_FAST_COMPILE`` to add to ``flags``: none unless JAX's default backend
    is the CPU, and only those this jaxlib knows (XLA aborts the process on an unknown flag; on
    a GPU machine with jax 0.11.2 every test worker died at its first compile). One probe
    subprocess, about a second, in the controller only."""
    extra = [f for f in _FAST_COMPILE if f.split("=")[0] + "=" not in flags]
    code = "import jax; print(jax.default_backend())"

    def cpu_accepts(fl):
        env = dict(os.environ, XLA_FLAGS=" ".join([flags, *fl]).strip())
        try:
            r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                               text=True, timeout=300)
        except subprocess.TimeoutExpired:
            return False
        return r.returncode == 0 and r.stdout.split()[-1:] == ["cpu"]

    if not extra or cpu_accepts(extra):
        return extra
    return [f for f in extra if cpu_accepts([f])] if len(extra) > 1 else []


def pytest_configure(config):
    # xdist's workers inherit the controller's environment and learn their names only after this
    # file is imported; XLA reads its flags when the first backend is created, after this hook.
    # Subprocesses started by a test inherit both settings.
    if _FLAGS_SET not in os.environ:
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = " ".join([flags, *_fast_compile_flags(flags)]).strip()
        os.environ[_FLAGS_SET] = "1"
    if not _USER_CACHE:
        worker = getattr(config, "workerinput", {}).get("workerid", "main")
        os.environ["GMM_JAX_CACHE_DIR"] = str(_CACHE / worker)
        os.environ[_OURS] = "1"


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False,
                     help="run slow accuracy tests and benchmarks")


# Modules whose tests start Python subprocesses (the command line, the examples, multi-device
# and multi-process runs): 5-20 s each. They run first, so that the two xdist workers
# (``--dist worksteal`` in pyproject.toml) end together on the many short tests instead of one
# waiting for the other's last long test.
_FIRST = ("test_distributed.py", "test_multihost.py", "test_cli.py", "test_examples.py",
          "test_streaming.py")


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: item.path.name not in _FIRST)  # stable: file order otherwise
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def x64():
    """Runs the test with 64-bit JAX types (``jax.enable_x64`` context)."""
    import jax

    with jax.enable_x64(True):
        yield


# A test whose worker process dies (with the persistent cache on, jax 0.10.2 segfaulted now and
# then while reading or writing an entry, and once while compiling) is run once more on a fresh
# xdist worker; a second crash fails it. Only crashes are retried: assertion failures and errors
# never are, and a retried test shows as "rerun" in the summary so it is not hidden.
_CRASH_RERUNS: dict = {}


@pytest.hookimpl(optionalhook=True)
def pytest_handlecrashitem(crashitem, report, sched):
    if _CRASH_RERUNS.get(crashitem, 0) >= 1 or not hasattr(sched, "mark_test_pending"):
        return None
    _CRASH_RERUNS[crashitem] = 1
    sched.mark_test_pending(crashitem)
    report.outcome = "rerun"
    return True


def pytest_report_teststatus(report, config):
    if report.outcome == "rerun":
        return "rerun", "R", ("RERUN", {"yellow": True})
    return None
