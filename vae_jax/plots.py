"""PNG figures for the deep models: sample grids, reconstructions, latent scatter plots.

Figures are built with ``matplotlib.figure.Figure`` and the Agg canvas directly, never through
``pyplot``, so nothing depends on (or changes) a global backend and no window is opened.
Every function returns the path it wrote.

Image grids are drawn at a readable size: each image is scaled up (nearest neighbour) so its
longer side is at least ``min_cell_px`` screen pixels (default 64, so an 8x8 digit is drawn at
8 px per pixel and a 28x28 image at 3), at ``DEFAULT_DPI``. A grid of 64 digits (8 columns) is
then about 580 px wide instead of the 174 px it was before.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DEFAULT_DPI = 150
"""Resolution of every PNG written here (dots per inch)."""

MIN_CELL_PX = 64
"""Default smallest drawn size (pixels) of one image's longer side in a grid."""


def _save(fig: Figure, path: str | os.PathLike, dpi: int) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, format="png", dpi=dpi, bbox_inches="tight", pad_inches=0.05)
    return path


def _image_figure(tiled: np.ndarray, cell_side: int, *, dpi: int, min_cell_px: int,
                  title: str | None) -> Figure:
    """A figure that shows ``tiled`` scaled by a whole factor so one cell is >= min_cell_px."""
    if dpi < 10 or min_cell_px < 1:
        raise ValueError(f"dpi must be >= 10 and min_cell_px >= 1, got {dpi}, {min_cell_px}")
    scale = max(1, math.ceil(min_cell_px / max(1, cell_side)))
    h, w = tiled.shape[0] * scale, tiled.shape[1] * scale
    title_px = int(round(0.3 * dpi)) if title else 0
    fig = Figure(figsize=(w / dpi, (h + title_px) / dpi), dpi=dpi)
    ax = fig.add_axes((0.0, 0.0, 1.0, h / (h + title_px)))
    ax.imshow(tiled, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest", aspect="auto")
    ax.set_axis_off()
    if title:
        fig.text(0.5, 1.0 - 0.5 * title_px / (h + title_px), title, ha="center", va="center",
                 fontsize=9)
    return fig


def _as_images(x, image_shape: tuple[int, int] | None) -> np.ndarray:
    x = np.asarray(x, np.float32)
    if x.ndim == 3:
        return x
    if x.ndim != 2:
        raise ValueError(f"expected (N, D) or (N, H, W) images, got shape {x.shape}")
    if image_shape is None:
        side = int(round(math.sqrt(x.shape[1])))
        if side * side != x.shape[1]:
            raise ValueError(f"cannot infer a square image from D={x.shape[1]}; "
                             "pass image_shape")
        image_shape = (side, side)
    return x.reshape(x.shape[0], *image_shape)


def tile_images(images, *, ncols: int | None = None, image_shape=None, pad: int = 1) -> np.ndarray:
    """Tiles N images into one (rows*(H+pad)-pad, cols*(W+pad)-pad) array (padding is 1.0).

    Args:
        images: (N, D) flattened or (N, H, W) images in [0, 1].
        ncols: images per row (default ``ceil(sqrt(N))``).
        image_shape: (H, W) for flattened input (default: square).
        pad: pixels between tiles.
    """
    ims = _as_images(images, image_shape)
    n, h, w = ims.shape
    ncols = int(ncols or math.ceil(math.sqrt(n)))
    nrows = math.ceil(n / ncols)
    out = np.ones((nrows * (h + pad) - pad, ncols * (w + pad) - pad), np.float32)
    for i in range(n):
        r, c = divmod(i, ncols)
        out[r * (h + pad): r * (h + pad) + h, c * (w + pad): c * (w + pad) + w] = ims[i]
    return out


def sample_grid(images, path, *, ncols: int | None = None, image_shape=None, title=None,
                dpi: int = DEFAULT_DPI, min_cell_px: int = MIN_CELL_PX) -> Path:
    """Writes a grid of images (e.g. decoder means of prior samples) as a PNG.

    Args:
        images: (N, D) or (N, H, W) values in [0, 1].
        path: output ``.png`` path.
        ncols: images per row.
        image_shape: (H, W) of flattened images (default square).
        title: optional figure title.
        dpi: resolution.
        min_cell_px: smallest drawn size of one image's longer side, in pixels.

    Returns:
        The written path.
    """
    ims = _as_images(images, image_shape)
    tiled = tile_images(ims, ncols=ncols)
    fig = _image_figure(tiled, max(ims.shape[1:]), dpi=dpi, min_cell_px=min_cell_px,
                        title=title)
    return _save(fig, path, dpi)


def reconstruction_grid(inputs, reconstructions, path, *, image_shape=None, n: int = 10,
                        title=None, dpi: int = DEFAULT_DPI,
                        min_cell_px: int = MIN_CELL_PX) -> Path:
    """Writes inputs (top row) above their reconstructions (bottom row) as a PNG.

    Args:
        inputs: (N, D) or (N, H, W) inputs in [0, 1].
        reconstructions: same shape, e.g. ``model.reconstruct(inputs)``.
        path: output path.
        image_shape: (H, W) of flattened images.
        n: number of pairs shown (the first n).
        title: optional title.
        dpi: resolution.
        min_cell_px: smallest drawn size of one image's longer side, in pixels.
    """
    a = _as_images(inputs, image_shape)[:n]
    b = _as_images(reconstructions, image_shape)[:n]
    if a.shape != b.shape:
        raise ValueError(f"inputs {a.shape} and reconstructions {b.shape} differ")
    tiled = tile_images(np.concatenate([a, b], 0), ncols=a.shape[0])
    fig = _image_figure(tiled, max(a.shape[1:]), dpi=dpi, min_cell_px=min_cell_px,
                        title=title or "inputs (top) / reconstructions (bottom)")
    return _save(fig, path, dpi)


def latent_scatter(z, labels, path, *, title=None, dpi: int = DEFAULT_DPI,
                   s: float = 4.0) -> Path:
    """Scatter plot of 2-D latents coloured by label (first two dimensions if Z > 2).

    Args:
        z: (N, Z) latents, Z >= 2.
        labels: (N,) int labels (classes or cluster ids); None draws one colour.
        path: output path.
        title: optional title.
        dpi: resolution.
        s: marker size.
    """
    z = np.asarray(z, np.float32)
    if z.ndim != 2 or z.shape[1] < 2:
        raise ValueError(f"latent_scatter needs (N, Z>=2) latents, got {z.shape}")
    fig = Figure(figsize=(5, 5))
    ax = fig.add_subplot(1, 1, 1)
    if labels is None:
        ax.scatter(z[:, 0], z[:, 1], s=s)
    else:
        labels = np.asarray(labels).reshape(-1)
        for lab in np.unique(labels):
            m = labels == lab
            ax.scatter(z[m, 0], z[m, 1], s=s, label=str(lab))
        ax.legend(markerscale=3, fontsize="small", loc="best")
    ax.set_xlabel("z[0]")
    ax.set_ylabel("z[1]")
    if title:
        ax.set_title(title)
    return _save(fig, path, dpi)
