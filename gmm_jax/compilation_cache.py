"""JAX's persistent compilation cache, set up for gmm_jax: ``enable_compilation_cache``.

Compiling an EM program costs seconds of CPU (several per covariance type); running it on a small
data set costs milliseconds. JAX can keep every compiled executable on disk and load it in a later
process instead of compiling again. :func:`enable_compilation_cache` points JAX at a folder and
lowers JAX's thresholds (by default JAX only keeps programs that took more than one second to
compile) so that every program is kept: a second process that runs the same fit loads all of its
programs from the folder.

The ``gmm-jax`` command calls it on start (``--no-cache`` turns it off). :class:`CompileStats`
counts, through ``jax.monitoring``, how many programs a block of code compiled or loaded, which
the command prints in its reports.

Limits (JAX's, not gmm_jax's): programs that call back into Python (``gmm_jax.fit(...,
callback=...)``, a progress bar) are never written to the cache, and executables are only
reused by the same JAX/jaxlib version, backend and device kind. The cache folder is trusted code:
do not share it with users you do not trust (anyone who can write there can make your JAX
process run arbitrary code), which is why it is created readable by its owner only.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

__all__ = ["CompileStats", "default_cache_dir", "disable_compilation_cache",
           "enable_compilation_cache"]

#: Environment variable that overrides the default cache folder.
CACHE_ENV = "GMM_JAX_CACHE_DIR"


def default_cache_dir() -> Path:
    """The folder :func:`enable_compilation_cache` uses when given no path.

    In order: ``$GMM_JAX_CACHE_DIR``; the folder JAX is already configured with
    (``JAX_COMPILATION_CACHE_DIR`` or ``jax.config.jax_compilation_cache_dir``); else
    ``$XDG_CACHE_HOME/gmm_jax/jax`` (``~/.cache/gmm_jax/jax`` when ``XDG_CACHE_HOME`` is unset).
    """
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    import jax

    configured = jax.config.jax_compilation_cache_dir
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "gmm_jax" / "jax"


def enable_compilation_cache(path=None) -> Path:
    """Turns on JAX's persistent compilation cache, keeping every compiled program.

    Sets ``jax_compilation_cache_dir`` to ``path`` (created, mode 0700, if missing),
    ``jax_persistent_cache_min_compile_time_secs`` to 0 and
    ``jax_persistent_cache_min_entry_size_bytes`` to -1 (no size floor), so small programs are
    kept too, and resets JAX's cache state so the folder takes effect even if something was
    compiled earlier in this process. Call it before the work whose compilation should be saved.

    Args:
        path: cache folder (str or ``os.PathLike``); None uses :func:`default_cache_dir`.

    Returns:
        The absolute cache folder.

    Raises:
        ValueError: the folder cannot be created or is not a writable directory.

    Example:
        >>> import tempfile, gmm_jax
        >>> folder = gmm_jax.enable_compilation_cache(tempfile.mkdtemp())
        >>> folder.is_dir()
        True
        >>> gmm_jax.compilation_cache.disable_compilation_cache()
    """
    import jax
    from jax.experimental.compilation_cache import compilation_cache as jcc

    folder = Path(default_cache_dir() if path is None else os.fspath(path)).expanduser()
    folder = folder.absolute()
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"cannot use {str(folder)!r} as the compilation cache: {err.strerror}."
                         ) from err
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"cannot use {str(folder)!r} as the compilation cache: not a writable "
                         "directory.")
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    jcc.reset_cache()
    return folder


def disable_compilation_cache() -> None:
    """Turns JAX's persistent compilation cache off for this process (``gmm-jax --no-cache``)."""
    import jax
    from jax.experimental.compilation_cache import compilation_cache as jcc

    jax.config.update("jax_enable_compilation_cache", False)
    jcc.reset_cache()


_HITS = "/jax/compilation_cache/cache_hits"
_BACKEND = "/jax/core/compile/backend_compile_duration"


class CompileStats:
    """Counts XLA compilations inside a ``with`` block (listeners on ``jax.monitoring``).

    Attributes:
        programs: executables JAX needed (compiled or loaded from the persistent cache).
        cache_hits: of those, loaded from the persistent cache.
        compiled: ``programs - cache_hits``: compiled by XLA.
        seconds: wall time spent compiling or loading them.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> with CompileStats() as stats:
        ...     _ = jax.jit(lambda x: x + 1)(jnp.arange(3.0))
        >>> stats.programs >= 1
        True
    """

    _lock = threading.Lock()

    def __init__(self):
        self.programs = 0
        self.cache_hits = 0
        self.seconds = 0.0
        self._active = False

    @property
    def compiled(self) -> int:
        return max(0, self.programs - self.cache_hits)

    def _event(self, event, **kwargs):
        if not self._active:
            return
        with self._lock:
            if event == _HITS:  # a loaded program also reports a (short) compile duration
                self.cache_hits += 1

    def _duration(self, event, duration, **kwargs):
        if not self._active or event != _BACKEND:
            return
        with self._lock:
            self.programs += 1
            self.seconds += float(duration)

    def __enter__(self) -> CompileStats:
        import jax.monitoring as mon

        self._active = True
        mon.register_event_listener(self._event)
        mon.register_event_duration_secs_listener(self._duration)
        return self

    def __exit__(self, *exc) -> None:
        import jax.monitoring as mon

        self._active = False
        mon.unregister_event_listener(self._event)
        mon.unregister_event_duration_listener(self._duration)

    def summary(self) -> str:
        """One phrase: ``"3.21 s compiling 7 programs (2 from the compilation cache)"``."""
        return (f"{self.seconds:.2f} s compiling {self.programs} program"
                f"{'' if self.programs == 1 else 's'} ({self.cache_hits} from the compilation "
                "cache)")
