"""PNG writers produce valid PNG files without a display."""

import struct

import numpy as np
import pytest

from vae_jax import plots

PNG = b"\x89PNG\r\n\x1a\n"


def _png_size(path):
    """(width, height) from the PNG header."""
    return struct.unpack(">II", path.read_bytes()[16:24])


def test_default_grids_are_readable(tmp_path):
    """64 digit samples (8x8 each, 8 columns) used to come out 174x195 px; each image is now
    drawn at >= 64 px on its longer side."""
    imgs = np.random.default_rng(0).uniform(size=(64, 64)).astype(np.float32)
    w, h = _png_size(plots.sample_grid(imgs, tmp_path / "g.png", ncols=8, title="samples"))
    assert w >= 8 * 64 and h >= 8 * 64, (w, h)
    assert w <= 8 * 72 + 40, (w, h)   # scaled by a whole factor (8), not blown up
    w, h = _png_size(plots.sample_grid(np.zeros((100, 784)), tmp_path / "f.png", ncols=10))
    assert w >= 10 * 64 and h >= 10 * 64, (w, h)   # 28x28 images: x3
    w, h = _png_size(plots.reconstruction_grid(imgs, imgs, tmp_path / "r.png", n=10))
    assert w >= 10 * 64 and h >= 2 * 64, (w, h)


def test_sample_grid_reconstructions_and_scatter(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.uniform(size=(12, 64)).astype(np.float32)
    for p in (plots.sample_grid(imgs, tmp_path / "grid.png", ncols=4, title="s"),
              plots.reconstruction_grid(imgs, 1 - imgs, tmp_path / "rec.png", n=5),
              plots.latent_scatter(rng.normal(size=(50, 2)), rng.integers(0, 3, 50),
                                   tmp_path / "sub" / "z.png")):
        assert p.read_bytes()[:8] == PNG
    t = plots.tile_images(imgs, ncols=4, image_shape=(8, 8))
    assert t.shape == (3 * 9 - 1, 4 * 9 - 1)


def test_plot_input_errors(tmp_path):
    with pytest.raises(ValueError, match="image_shape"):
        plots.sample_grid(np.zeros((2, 10)), tmp_path / "x.png")
    with pytest.raises(ValueError, match="Z>=2"):
        plots.latent_scatter(np.zeros((5, 1)), None, tmp_path / "z.png")
