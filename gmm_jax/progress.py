"""Progress of a long EM fit: a tqdm bar driven from inside the compiled loop.

``gmm_jax.fit(..., callback=fn)`` calls ``fn(iteration, lower_bounds, changes, fast)`` on the host
after every pass of the compiled EM loop (``jax.debug.callback``). :class:`EMProgress` is such a
callback: it moves a tqdm bar, shows the best lower bound and the largest change among the
restarts, and records every restart's lower bound per pass (the traces ``gmm-jax fit --plot``
draws).

Two costs come with a callback, both measured by :func:`callback_overhead`
(``gmm-jax bench --callback-overhead``): one host round trip per EM iteration, and a program
that JAX does not write to its persistent compilation cache (JAX never caches programs with host
callbacks), so it is compiled in every new process. The callback is a static argument of the
compiled program: reuse one :class:`EMProgress` object (call :meth:`EMProgress.begin` before each
fit) so that repeated fits in one process share one compiled program.

Example:
    >>> import jax, numpy as np, gmm_jax
    >>> from gmm_jax.progress import EMProgress
    >>> X = np.random.default_rng(0).normal(size=(300, 2)).astype(np.float32)
    >>> progress = EMProgress(bar=False)
    >>> progress.begin(max_iter=50, n_init=2)
    >>> res = gmm_jax.fit(jax.random.key(0), X, 2, n_init=2, max_iter=50, callback=progress)
    >>> progress.end()
    >>> traces = progress.restart_traces()
    >>> len(traces), bool(np.isclose(max(t[-1] for t in traces), float(res.log_likelihood)))
    (2, True)
"""

from __future__ import annotations

import os
import platform
import threading
import time

import numpy as np

__all__ = ["EMProgress", "callback_overhead", "machine_summary", "per_callback_seconds"]


class EMProgress:
    """Callback for :func:`gmm_jax.fit`: a progress bar and the lower-bound trace of each restart.

    Args:
        bar: show a tqdm bar (on ``file``, stderr by default).
        record: keep every pass's lower bounds (for :meth:`restart_traces`).
        desc: the bar's label.
        file: stream of the bar.
        mininterval: seconds between redraws of the bar.

    The object is hashable by identity, as ``fit`` needs for a static argument.
    """

    def __init__(self, *, bar: bool = True, record: bool = True, desc: str = "EM", file=None,
                 mininterval: float = 0.1):
        self.bar = bar
        self.record = record
        self.desc = desc
        self.file = file
        self.mininterval = mininterval
        self._lock = threading.Lock()
        self._tqdm = None
        self._rows: list[tuple[int, np.ndarray]] = []
        self._change = None
        self._drawn = -np.inf
        self.max_iter = None
        self.n_init = None
        self.calls = 0
        self.seconds_inside = 0.0

    def begin(self, max_iter: int, n_init: int = 1) -> None:
        """Starts a fit: clears the record; the bar of ``max_iter`` EM iterations opens at the
        first pass (so its clock and rate leave out compilation)."""
        self.end()
        with self._lock:
            self._rows = []
            self.calls = 0
            self.seconds_inside = 0.0
            self.max_iter = int(max_iter)
            self.n_init = int(n_init)
            self._change = None
            self._drawn = -np.inf

    def _open_bar(self):
        from tqdm.auto import tqdm

        return tqdm(total=self.max_iter, desc=self.desc, unit="it", file=self.file,
                    mininterval=self.mininterval, leave=True, dynamic_ncols=True)

    def __call__(self, iteration, lower_bounds, changes, fast) -> None:
        t0 = time.perf_counter()
        try:
            self._update(iteration, lower_bounds, changes)
        finally:
            self.seconds_inside += time.perf_counter() - t0

    def _update(self, iteration, lower_bounds, changes) -> None:
        it = int(iteration)
        lb = np.array(lower_bounds, dtype=np.float64, copy=True).reshape(-1)
        with self._lock:
            self.calls += 1
            if self.record:
                self._rows.append((it, lb))
            if not self.bar:
                return
            if self._tqdm is None:
                if self.max_iter is None:
                    self.max_iter = 0
                self._tqdm = self._open_bar()
            bar = self._tqdm
            target = min(it, bar.total) if bar.total else it
            now = time.perf_counter()
            if now - self._drawn >= self.mininterval or target >= (bar.total or target + 1):
                # the postfix text is only built when the bar may redraw (tqdm's mininterval)
                self._drawn = now
                ch = np.abs(np.asarray(changes, dtype=np.float64).reshape(-1))
                ch = ch[np.isfinite(ch) & (ch > 0)]
                if ch.size:  # the last pass (M-step only) reports no change: keep the last one
                    self._change = float(ch.max())
                finite_lb = lb[np.isfinite(lb)]
                text = [f"ll={finite_lb.max():.6g}"] if finite_lb.size else []
                if self._change is not None:
                    text.append(f"change={self._change:.2e}")
                bar.set_postfix_str(" ".join(text), refresh=False)
            if target > bar.n:
                bar.update(target - bar.n)

    def end(self, n_iter: int | None = None) -> None:
        """Waits for the fit's pending callbacks and closes the bar at ``n_iter`` iterations."""
        import jax

        jax.effects_barrier()
        if self._tqdm is None:
            return
        with self._lock:
            bar, self._tqdm = self._tqdm, None
            if n_iter is not None:
                bar.total = int(n_iter)
                if bar.n != bar.total:
                    bar.n = bar.total
            bar.refresh()
            bar.close()

    def traces(self) -> np.ndarray:
        """(passes, n_init) lower bound of every restart after every pass, in pass order."""
        with self._lock:
            rows = sorted(self._rows, key=lambda r: r[0])
        if not rows:
            return np.zeros((0, 0))
        return np.stack([lb for _, lb in rows])

    def restart_traces(self) -> list[np.ndarray]:
        """Per restart, the lower bound after each of its EM iterations (while it ran).

        A restart stops changing once it has converged; its trace ends at the first of those
        repeated values. Passes before its first finite value are dropped.
        """
        t = self.traces()
        out = []
        for r in range(t.shape[1] if t.ndim == 2 else 0):
            col = t[:, r]
            col = col[np.argmax(np.isfinite(col)):] if np.isfinite(col).any() else col[:0]
            end = len(col)
            while end > 1 and col[end - 1] == col[end - 2]:
                end -= 1
            out.append(col[:end])
        return out


def machine_summary() -> str:
    """One line: CPU model and cores, load average, Python, JAX version and device."""
    import jax

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        load = "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    except OSError:
        load = "load average unknown"
    dev = jax.devices()[0]
    return (f"{cpu}, {os.cpu_count()} cores, {load}; python {platform.python_version()}, "
            f"jax {jax.__version__} on {dev.platform} ({dev.device_kind})")


def per_callback_seconds(callback=None, *, loops: int = 2000, repeats: int = 7) -> dict:
    """Seconds one host round trip of ``fit``'s callback costs, measured on a loop doing no work.

    Runs a compiled ``lax.while_loop`` of ``loops`` trivial iterations with and without a
    ``jax.debug.callback`` that passes what the EM loop passes (iteration, lower bounds,
    changes, flag) to ``callback`` (an :class:`EMProgress` drawing to ``os.devnull`` by
    default). With thousands of calls per run the difference is the callback's cost alone,
    which a short EM fit cannot separate from the machine's noise.

    Returns:
        dict with ``seconds`` (fastest runs' difference per call), ``median_seconds`` (the
        same from the median runs), ``loops``, ``repeats``.
    """
    import jax
    import jax.numpy as jnp
    from jax import lax

    sink = None
    if callback is None:
        sink = open(os.devnull, "w")  # noqa: SIM115 (closed below)
        callback = EMProgress(file=sink)

    def program(cb):
        def body(carry):
            i, x = carry
            x = x * 0.999 + 1.0
            if cb is not None:
                jax.debug.callback(cb, i + 1, x[:1], x[1:2], True)
            return i + 1, x

        return jax.jit(lambda x: lax.while_loop(lambda c: c[0] < loops, body, (0, x)))

    fns = {"plain": program(None), "callback": program(callback)}
    x = jnp.ones(4, jnp.float32)
    times: dict[str, list[float]] = {"plain": [], "callback": []}
    try:
        for rep in range(repeats + 1):
            for name, fn in fns.items():
                if isinstance(callback, EMProgress):
                    callback.begin(loops, 1)
                t0 = time.perf_counter()
                jax.block_until_ready(fn(x))
                jax.effects_barrier()
                if rep:  # the first round compiles
                    times[name].append(time.perf_counter() - t0)
                if isinstance(callback, EMProgress):
                    callback.end(loops)
    finally:
        if sink is not None:
            sink.close()
    return dict(seconds=(min(times["callback"]) - min(times["plain"])) / loops,
                median_seconds=(float(np.median(times["callback"]))
                                - float(np.median(times["plain"]))) / loops,
                loops=loops, repeats=repeats)


def callback_overhead(*, n: int = 100_000, d: int = 8, k: int = 8,
                      covariance_type: str = "full", iters: int = 30, repeats: int = 5,
                      n_init: int = 1, seed: int = 0, bar: bool = True) -> dict:
    """Measures what the progress callback adds to a warm EM fit, two ways.

    1. Directly: fits the same synthetic data (``k`` well-separated Gaussian blobs, float32)
       with ``tol=0`` (exactly ``iters`` iterations) with and without an :class:`EMProgress`
       callback (bar drawn to ``os.devnull``), after compiling both programs; the two are timed
       alternately ``repeats`` times and the fastest run of each is compared (the fastest is
       the least disturbed by other load on the machine). On a busy machine this difference is
       dominated by noise: runs of the same program vary by more than the callback costs.
    2. From its parts: the cost of one callback round trip (:func:`per_callback_seconds`,
       thousands of calls on an empty loop) over the time of one EM iteration (the fastest
       plain fit above). This is the figure to compare with a target such as 2%.

    Args:
        n, d, k: data size, features, components.
        covariance_type: covariance type of the fits.
        iters: EM iterations per fit.
        repeats: timed runs of each variant.
        n_init: restarts per fit.
        seed: data and key seed.
        bar: draw the bar (else only record the traces).

    Returns:
        dict with ``ms_per_iter_plain``, ``ms_per_iter_callback``, ``overhead`` (direct, fraction
        of wall time, fastest runs), ``median_overhead`` (direct, median runs), ``cpu_overhead``
        (direct, fraction of the process's CPU time, fastest runs), ``us_per_callback`` and
        ``us_per_callback_median`` (one round trip, empty loop), ``overhead_from_parts``
        (``us_per_callback`` over the plain EM iteration), ``us_inside_callback`` (median time
        spent in the Python callback per call during the fits), ``plain_s``/``callback_s`` and
        their ``_cpu_s`` (every timed run), ``callback_calls``, the settings and ``machine``
        (:func:`machine_summary`) and the load average at the start and end.
    """
    import jax

    import gmm_jax

    load_start = list(os.getloadavg())
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * 4.0
    X = (centres[rng.integers(0, k, n)] + rng.normal(size=(n, d))).astype(np.float32)
    key = jax.random.key(seed)
    kw = dict(covariance_type=covariance_type, max_iter=iters, tol=0.0, n_init=n_init)
    machine = machine_summary()
    with open(os.devnull, "w") as sink:
        progress = EMProgress(bar=bar, file=sink)

        def plain():
            return jax.block_until_ready(gmm_jax.fit(key, X, k, **kw))

        def with_callback():
            progress.begin(iters, n_init)
            res = jax.block_until_ready(gmm_jax.fit(key, X, k, callback=progress, **kw))
            progress.end(int(res.n_iter))
            return res

        r0, r1 = plain(), with_callback()  # compile both
        if int(r0.n_iter) != iters or int(r1.n_iter) != iters:
            raise RuntimeError(f"expected {iters} iterations, got {int(r0.n_iter)} and "
                               f"{int(r1.n_iter)}")
        times = {"plain": [], "callback": []}
        cpu = {"plain": [], "callback": []}
        inside = []
        for _ in range(repeats):
            for name, fn in (("plain", plain), ("callback", with_callback)):
                c0, t0 = time.process_time(), time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)
                if name == "callback":
                    inside.append(progress.seconds_inside / max(1, progress.calls))
        calls = progress.calls
        per_call = per_callback_seconds(EMProgress(bar=bar, file=sink))
    best_plain, best_cb = min(times["plain"]), min(times["callback"])
    med_plain, med_cb = float(np.median(times["plain"])), float(np.median(times["callback"]))
    cpu_plain, cpu_cb = min(cpu["plain"]), min(cpu["callback"])
    s_per_iter = best_plain / iters
    return dict(
        n=n, d=d, k=k, covariance_type=covariance_type, iters=iters, repeats=repeats,
        n_init=n_init, bar=bar, callback_calls=calls,
        ms_per_iter_plain=1e3 * s_per_iter, ms_per_iter_callback=1e3 * best_cb / iters,
        overhead=(best_cb - best_plain) / best_plain,
        median_overhead=(med_cb - med_plain) / med_plain,
        cpu_overhead=(cpu_cb - cpu_plain) / cpu_plain,
        us_per_callback=1e6 * per_call["seconds"],
        us_per_callback_median=1e6 * per_call["median_seconds"],
        overhead_from_parts=per_call["seconds"] / s_per_iter,
        us_inside_callback=1e6 * float(np.median(inside)),
        plain_s=times["plain"], callback_s=times["callback"], plain_cpu_s=cpu["plain"],
        callback_cpu_s=cpu["callback"], machine=machine, loadavg_start=load_start,
        loadavg_end=list(os.getloadavg()),
    )
