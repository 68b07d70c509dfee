"""Shared pytest configuration: slow tests are opt-in, x64 is enabled per test where needed."""

import os
from pathlib import Path

# Most of the suite's time is XLA compilation of the same few programs in both xdist workers (and
# in subprocesses). JAX's persistent compilation cache lets them share compiled executables; it
# lives in the (git-ignored) repository folder .jax_cache, so a second local run is faster still.
_CACHE = Path(__file__).resolve().parents[1] / ".jax_cache"
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(_CACHE))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.3")

import pytest  # noqa: E402


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
