"""Shared pytest configuration: slow tests are opt-in, x64 is enabled per test where needed."""

import os
from pathlib import Path

# Most of the suite's time is XLA compilation of the same few programs (in the test process and in
# subprocesses). JAX's persistent compilation cache lets them reuse compiled executables; it lives
# in the (git-ignored) repository folder .jax_cache, one folder per xdist worker (JAX writes
# entries in place, without a lock). On clean-clone CI runs with jax 0.10.2, a worker process
# has crashed now and then inside the cache's own code (a segfault serialising or deserialising
# an executable, once an abort while compiling), also with separate folders: see the rerun hook.
_CACHE = Path(__file__).resolve().parents[1] / ".jax_cache"
_OURS = "_GMM_JAX_TESTS_CACHE"  # marks a folder chosen here, not by the user
_USER_CACHE = "JAX_COMPILATION_CACHE_DIR" in os.environ and _OURS not in os.environ

import pytest  # noqa: E402


def pytest_configure(config):
    # xdist's workers inherit the controller's environment and learn their names only after this
    # file is imported; JAX reads these variables when the test modules first import it, after
    # this hook. Subprocesses started by a test inherit the worker's folder.
    if _USER_CACHE:
        return
    worker = getattr(config, "workerinput", {}).get("workerid", "main")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = str(_CACHE / worker)
    os.environ[_OURS] = "1"
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.3")


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False,
                     help="run slow accuracy tests and benchmarks")


def pytest_collection_modifyitems(config, items):
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


# A test whose worker process dies (see the cache note above; any other crash of XLA's CPU
# compiler likewise) is run once more on a fresh xdist worker; a second crash fails it. Only
# crashes are retried: assertion failures and errors never are, and a retried test shows as
# "rerun" in the summary so it is not hidden.
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
