"""gmm_jax.compilation_cache: where the cache lives, refusing unusable folders, counting compiles.

That a second process loads its programs from the cache is checked end to end in
tests/gmm_jax/test_cli.py::test_predict_reuses_the_compilation_cache (a subprocess, so this
process's JAX configuration is not touched).
"""

import jax
import jax.numpy as jnp
import pytest

from gmm_jax.compilation_cache import CompileStats, default_cache_dir, enable_compilation_cache


@pytest.fixture
def jax_cache_dir():
    """Restores JAX's configured cache folder after the test."""
    before = jax.config.jax_compilation_cache_dir
    yield
    jax.config.update("jax_compilation_cache_dir", before)


def test_default_cache_dir_precedence(tmp_path, monkeypatch, jax_cache_dir):
    monkeypatch.setenv("GMM_JAX_CACHE_DIR", str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("GMM_JAX_CACHE_DIR")
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "jax_configured"))
    assert default_cache_dir() == tmp_path / "jax_configured"
    jax.config.update("jax_compilation_cache_dir", None)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "gmm_jax" / "jax"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "gmm_jax" / "jax"


def test_unusable_folder_is_refused_before_jax_is_configured(tmp_path, jax_cache_dir):
    before = jax.config.jax_compilation_cache_dir
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    for path in (blocker / "cache", blocker):  # below a file; a file
        with pytest.raises(ValueError, match="cannot use .* as the compilation cache"):
            enable_compilation_cache(path)
    assert jax.config.jax_compilation_cache_dir == before


def test_compile_stats_counts_programs():
    with CompileStats() as stats:
        jax.block_until_ready(jax.jit(lambda x: jnp.sin(x) * 3.0 + 1.25)(jnp.arange(7.0)))
    assert stats.programs >= 1 and stats.seconds > 0
    assert stats.compiled + stats.cache_hits == stats.programs
    assert f"compiling {stats.programs} program" in stats.summary()
    before = stats.programs
    jax.block_until_ready(jax.jit(lambda x: x - 2.0)(jnp.arange(5.0)))  # outside the block
    assert stats.programs == before
