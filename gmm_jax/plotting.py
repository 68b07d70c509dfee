"""PNG figures of fitted mixtures: clusters in principal components, EM traces, criterion vs K.

Figures are drawn on ``matplotlib.figure.Figure`` with the Agg canvas, never through ``pyplot``,
so no global backend is changed and no window opens. Every function returns the path it wrote.

* :func:`plot_fit`: left, the data projected on their first two principal components, coloured
  by most probable component, with each component's 2-sigma ellipse (the contour at
  Mahalanobis distance 2 of the component's marginal in that plane: the projection of
  ``N(mu_k, Sigma_k)`` is ``N(V^T mu_k, V^T Sigma_k V)``); one feature gives a histogram with the
  mixture density instead. Right, the mean log-likelihood after each EM iteration, one line per
  restart, the kept restart in black.
* :func:`plot_criterion`: a model-selection criterion against the number of components.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Ellipse

__all__ = ["ellipse_2d", "full_covariances", "plot_criterion", "plot_fit", "principal_axes"]

#: Points drawn in a scatter plot at most (a random subset of larger data).
MAX_POINTS = 5000
DPI = 120


def _save(fig: Figure, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, format="png", dpi=DPI)
    return path


def full_covariances(covariances, covariance_type: str, n_components: int,
                     n_features: int) -> np.ndarray:
    """(K, D, D) covariance matrices from scikit-learn-shaped covariances of any type."""
    c = np.asarray(covariances, np.float64)
    k, d = n_components, n_features
    eye = np.eye(d)
    if covariance_type == "full":
        return c.reshape(k, d, d)
    if covariance_type == "tied":
        return np.broadcast_to(c.reshape(d, d), (k, d, d)).copy()
    if covariance_type == "diag":
        return c.reshape(k, d)[:, :, None] * eye
    if covariance_type == "spherical":
        return c.reshape(k)[:, None, None] * eye
    if covariance_type == "tied_diag":
        return np.broadcast_to(np.diag(c.reshape(d)), (k, d, d)).copy()
    if covariance_type == "tied_spherical":
        return np.broadcast_to(float(c) * eye, (k, d, d)).copy()
    raise ValueError(f"unknown covariance_type {covariance_type!r}")


def principal_axes(X, n: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean (D,), the first ``n`` principal directions (D, n) and their variances (n,).

    From the eigendecomposition of the D x D sample covariance (memory O(D^2), any N).
    """
    X = np.asarray(X, np.float64)
    mean = X.mean(axis=0)
    Xc = X - mean
    cov = Xc.T @ Xc / max(1, X.shape[0] - 1)
    vals, vecs = np.linalg.eigh(cov)
    order = np.argsort(vals)[::-1][:n]
    vecs = vecs[:, order]
    # a fixed sign per axis (largest loading positive) so figures do not flip between runs
    signs = np.sign(vecs[np.argmax(np.abs(vecs), axis=0), np.arange(vecs.shape[1])])
    signs[signs == 0] = 1.0
    return mean, vecs * signs, vals[order]


def ellipse_2d(mean, cov, centre, V, n_sigma: float = 2.0):
    """The ``n_sigma`` ellipse of ``N(mean, cov)`` projected on the plane of ``V``'s columns.

    Args:
        mean: (D,) component mean.
        cov: (D, D) component covariance.
        centre: (D,) origin of the projection (the data mean).
        V: (D, 2) orthonormal directions (principal axes).
        n_sigma: Mahalanobis radius of the contour.

    Returns:
        ``(xy, width, height, angle)`` for ``matplotlib.patches.Ellipse``: centre (2,), full
        axis lengths (``2 n_sigma sqrt(eigenvalue)``, major first) and the major axis' angle in
        degrees.
    """
    m2 = (np.asarray(mean, np.float64) - centre) @ V
    S2 = V.T @ np.asarray(cov, np.float64) @ V
    vals, vecs = np.linalg.eigh(0.5 * (S2 + S2.T))
    vals = np.clip(vals, 0.0, None)
    angle = float(np.degrees(np.arctan2(vecs[1, 1], vecs[0, 1])))
    return m2, 2 * n_sigma * float(np.sqrt(vals[1])), 2 * n_sigma * float(np.sqrt(vals[0])), angle


def _colors(k: int):
    from matplotlib import colormaps

    cmap = colormaps["tab10" if k <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(k)]


def _subset(n: int, seed: int = 0) -> np.ndarray:
    if n <= MAX_POINTS:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, MAX_POINTS, replace=False))


def _trace_axes(ax, traces, best: int | None):
    ax.set_title("EM: mean log-likelihood per iteration")
    ax.set_xlabel("EM iteration")
    ax.set_ylabel("mean log-likelihood per sample")
    if not traces:
        ax.text(0.5, 0.5, "no trace recorded", ha="center", va="center", transform=ax.transAxes)
        return
    colors = _colors(len(traces))
    for r, t in enumerate(traces):
        t = np.asarray(t, np.float64)
        if t.size == 0:
            continue
        it = np.arange(1, t.size + 1)
        is_best = r == best
        label = f"restart {r} (kept)" if is_best else (f"restart {r}" if len(traces) <= 8
                                                       else None)
        ax.plot(it, t, color="black" if is_best else colors[r], lw=2.2 if is_best else 1.0,
                alpha=1.0 if is_best else 0.8, marker="o" if t.size < 30 else None, ms=3,
                label=label, zorder=3 if is_best else 2)
    values = [np.asarray(t, np.float64) for t in traces if len(t)]
    if values:
        hi = max(float(np.max(v)) for v in values)
        lo_all = min(float(np.min(v)) for v in values)
        rest = [v[1:] for v in values if v.size > 2]
        lo_rest = min(float(np.min(v)) for v in rest) if rest else lo_all
        # the first E-step is often far below the rest: then start the axis at the second
        lo = lo_rest if hi - lo_all > 4.0 * (hi - lo_rest) > 0 else lo_all
        pad = 0.05 * (hi - lo) if hi > lo else 1e-3 * max(1.0, abs(hi))
        ax.set_ylim(lo - pad, hi + pad)
    ax.ticklabel_format(axis="y", useOffset=False)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if len(traces) <= 8 or best is not None:
        ax.legend(fontsize=7, loc="lower right")


def plot_fit(path, X, weights, means, covariances, covariance_type: str, *, labels=None,
             traces=None, best: int | None = None, title: str | None = None) -> Path:
    """Writes the clusters-and-traces figure of a fitted mixture (see the module docstring).

    Args:
        path: PNG file to write (parent folders are created).
        X: (N, D) data.
        weights: (K,) mixture weights (components of weight 0 are not drawn).
        means: (K, D).
        covariances: covariances in scikit-learn's shape for ``covariance_type``.
        covariance_type: any of ``gmm_jax.COVARIANCE_TYPES``.
        labels: optional (N,) component of each sample (colours); default nearest mean.
        traces: optional list (one per restart) of 1-D arrays of the mean log-likelihood after
            each EM iteration.
        best: index of the kept restart in ``traces``.
        title: figure title.

    Returns:
        The path written.
    """
    X = np.asarray(X, np.float64)
    n, d = X.shape
    w = np.asarray(weights, np.float64)
    mu = np.asarray(means, np.float64)
    k = w.shape[0]
    covs = full_covariances(covariances, covariance_type, k, d)
    active = np.flatnonzero(w > 0)
    if labels is None:
        dist = ((X[:, None, :] - mu[None, active, :]) ** 2).sum(-1)
        labels = active[np.argmin(dist, axis=1)]
    labels = np.asarray(labels)
    colors = _colors(k)
    fig = Figure(figsize=(12.0, 5.2))
    ax, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.15, 1.0]})
    idx = _subset(n)
    if d == 1:
        x = X[:, 0]
        ax.hist(x, bins=min(80, max(10, int(np.sqrt(n)))), density=True, color="0.75",
                label="data")
        grid = np.linspace(x.min() - 0.1 * np.ptp(x), x.max() + 0.1 * np.ptp(x), 400)
        sd = np.sqrt(covs[:, 0, 0])
        dens = w[:, None] * np.exp(-0.5 * ((grid[None] - mu[:, :1]) / sd[:, None]) ** 2) / (
            np.sqrt(2 * np.pi) * sd[:, None])
        for j in active:
            ax.plot(grid, dens[j], color=colors[j], lw=1.2)
            ax.axvspan(mu[j, 0] - 2 * sd[j], mu[j, 0] + 2 * sd[j], color=colors[j], alpha=0.08)
        ax.plot(grid, dens.sum(0), color="black", lw=1.8, label="mixture density")
        ax.set_xlabel("x")
        ax.set_ylabel("density")
        ax.set_title("data, components (±2 sigma bands) and mixture density")
        ax.legend(fontsize=7)
    else:
        centre, V, var = principal_axes(X, 2)
        Z = (X[idx] - centre) @ V
        ax.scatter(Z[:, 0], Z[:, 1], s=4, c=[colors[j] for j in labels[idx]], alpha=0.5,
                   linewidths=0, rasterized=True)
        for j in active:
            m2, width, height, angle = ellipse_2d(mu[j], covs[j], centre, V)
            ax.add_patch(Ellipse(m2, width, height, angle=angle, fill=False, lw=1.8,
                                 color=colors[j]))
            ax.plot(*m2, marker="x", color="black", ms=6, mew=1.5)
            ax.annotate(f"{j}", m2, textcoords="offset points", xytext=(4, 4), fontsize=8)
        total = float(np.trace(np.atleast_2d(np.cov(X.T)))) if n > 1 else 0.0
        share = var / total if total > 0 else np.zeros(2)
        ax.set_xlabel(f"PC 1 ({100 * share[0]:.1f}% of variance)")
        ax.set_ylabel(f"PC 2 ({100 * share[1]:.1f}% of variance)")
        shown = "" if idx.size == n else f", {idx.size} of {n} points shown"
        ax.set_title(f"clusters in the first two principal components (2-sigma ellipses{shown})",
                     fontsize=10)
        ax.set_aspect("equal", adjustable="datalim")
        ax.grid(alpha=0.3)
    _trace_axes(ax2, list(traces or []), best)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def plot_criterion(path, n_components, values, *, criterion: str, best: int,
                   other=None, other_name: str | None = None, title: str | None = None) -> Path:
    """Writes a criterion-against-K plot with the chosen K marked.

    Args:
        path: PNG file to write.
        n_components: (C,) candidate K values.
        values: (C,) criterion of each candidate.
        criterion: ``"bic"``, ``"aic"`` (lower is better) or ``"heldout"`` (higher is better).
        best: the chosen K.
        other: optional (C,) second curve (e.g. AIC beside BIC), drawn dashed.
        other_name: its label.
        title: figure title.

    Returns:
        The path written.
    """
    ks = np.asarray(n_components)
    v = np.asarray(values, np.float64)
    order = np.argsort(ks)
    ks, v = ks[order], v[order]
    name = {"bic": "BIC", "aic": "AIC", "heldout": "held-out log-likelihood per sample"}.get(
        criterion, criterion)
    fig = Figure(figsize=(7.0, 4.4))
    ax = fig.subplots()
    ax.plot(ks, v, marker="o", color="tab:blue", label=f"{name} ("
            f"{'higher' if criterion == 'heldout' else 'lower'} is better)")
    if other is not None:
        o = np.asarray(other, np.float64)[order]
        ax.plot(ks, o, marker=".", ls="--", color="tab:gray", label=other_name)
    j = int(np.flatnonzero(ks == best)[0]) if np.any(ks == best) else None
    if j is not None:
        ax.plot(ks[j], v[j], marker="*", ms=16, color="tab:red", ls="none",
                label=f"chosen K = {best}")
    ax.set_xlabel("number of components K")
    ax.set_ylabel(name if other is None else f"{name} / {other_name}")
    if ks.size <= 25:
        ax.set_xticks(ks)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)
