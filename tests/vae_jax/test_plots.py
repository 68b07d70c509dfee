"""PNG writers produce valid PNG files without a display."""

import numpy as np
import pytest

from vae_jax import plots

PNG = b"\x89PNG\r\n\x1a\n"


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
