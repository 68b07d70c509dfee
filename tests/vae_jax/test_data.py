"""Data: IDX round trips on tiny files written here, corrupt files, digits, splits, binarisation."""

import gzip

import jax
import numpy as np
import pytest

from vae_jax import data


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trip(tmp_path, dtype, compress):
    a = (np.arange(2 * 3 * 4).reshape(2, 3, 4) - 5).astype(dtype)
    p = tmp_path / ("a.idx" + (".gz" if compress else ""))
    data.write_idx(p, a)
    assert (p.read_bytes()[:2] == b"\x1f\x8b") == compress
    b = data.read_idx(p)
    assert b.dtype == np.dtype(dtype) and b.shape == a.shape
    np.testing.assert_array_equal(a, b)


def _write_split(d, n=5, compress=True, seed=0):
    rng = np.random.default_rng(seed)
    imgs = rng.integers(0, 256, (n, 4, 4), dtype=np.uint8)
    labs = rng.integers(0, 10, n).astype(np.uint8)
    ext = ".gz" if compress else ""
    data.write_idx(d / f"train-images-idx3-ubyte{ext}", imgs)
    data.write_idx(d / f"train-labels-idx1-ubyte{ext}", labs)
    data.write_idx(d / "t10k-images-idx3-ubyte", imgs[:2])  # raw and gzip side by side
    data.write_idx(d / "t10k-labels-idx1-ubyte", labs[:2])
    return imgs, labs


def test_load_split_and_fashion_path(tmp_path):
    imgs, labs = _write_split(tmp_path)
    ds = data.load_fashion_mnist(tmp_path)
    assert ds.X_train.shape == (5, 16) and ds.X_train.dtype == np.float32
    np.testing.assert_allclose(ds.X_train, imgs.reshape(5, 16) / 255.0)
    np.testing.assert_array_equal(ds.y_train, labs)
    assert ds.X_test.shape == (2, 16) and ds.image_shape == (4, 4)
    assert data.fashion_mnist_available(tmp_path)
    assert not data.fashion_mnist_available(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        data.load_fashion_mnist(tmp_path / "nope")


def test_corrupt_idx_raises_value_error(tmp_path):
    good = tmp_path / "good"
    data.write_idx(good, np.zeros((3, 2, 2), np.uint8))
    raw = good.read_bytes()
    cases = {
        "truncated": raw[:-1],
        "padded": raw + b"\x00",
        "magic": b"\x01\x00" + raw[2:],
        "typecode": raw[:2] + b"\x07" + raw[3:],
        "short": raw[:3],
        "header": raw[:6],
        "gzip": gzip.compress(raw)[:-6],
    }
    for name, blob in cases.items():
        p = tmp_path / name
        p.write_bytes(blob)
        with pytest.raises(ValueError):
            data.read_idx(p)
    # images and labels that disagree
    d = tmp_path / "split"
    d.mkdir()
    _write_split(d)
    data.write_idx(d / "train-labels-idx1-ubyte.gz", np.zeros(4, np.uint8))
    with pytest.raises(ValueError, match="split"):
        data.load_idx_split(d, "train")
    with pytest.raises(ValueError, match="split must be"):
        data.load_idx_split(d, "valid")
    with pytest.raises(ValueError, match="cannot store"):
        data.write_idx(tmp_path / "c", np.zeros(3, np.complex64))


def test_load_digits_and_split():
    ds = data.load_digits(test_fraction=0.25, seed=1)
    assert ds.X_train.shape[1] == 64 and ds.image_shape == (8, 8)
    assert ds.X_train.shape[0] + ds.X_test.shape[0] == 1797
    assert ds.X_train.dtype == np.float32 and 0.0 <= ds.X_train.min() and ds.X_train.max() <= 1.0
    assert set(np.unique(ds.y_train)) == set(range(10))
    X = np.arange(20.0).reshape(10, 2)
    a, _, b, _ = data.train_test_split(X, test_fraction=0.3, seed=0)
    assert a.shape == (7, 2) and b.shape == (3, 2)
    assert sorted(np.concatenate([a, b])[:, 0].tolist()) == X[:, 0].tolist()
    with pytest.raises(ValueError):
        data.train_test_split(X, test_fraction=1.5)


def test_binarize():
    X = np.array([[0.0, 0.2, 0.7, 1.0]], np.float32)
    np.testing.assert_array_equal(data.binarize(X), [[0, 0, 1, 1]])
    Xb = np.asarray(data.binarize(np.full((2000, 1), 0.3, np.float32), key=jax.random.key(0)))
    assert set(np.unique(Xb)) <= {0.0, 1.0} and abs(Xb.mean() - 0.3) < 0.05


@pytest.mark.skipif(not data.fashion_mnist_available(),
                    reason="dataset-fashion-mnist not installed")
def test_fashion_mnist_found_automatically():
    ds = data.load_fashion_mnist()
    assert ds.X_train.shape == (60000, 784) and ds.X_test.shape == (10000, 784)
    assert ds.image_shape == (28, 28) and set(np.unique(ds.y_test)) == set(range(10))


def test_fashion_mnist_default_folder_reads_real_layout_files(tmp_path, monkeypatch):
    """Without a path the loader finds the four gzip IDX files of the Debian package's layout
    (28x28 uint8 images, uint8 labels) through FASHION_MNIST_DIR, and scales pixels to [0, 1]:
    the same code path as the installed data set, without the 30 MB download."""
    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 256, (12, 28, 28), dtype=np.uint8)
    labs = (np.arange(12) % 10).astype(np.uint8)
    for split, n in (("train", 12), ("t10k", 10)):
        data.write_idx(tmp_path / f"{split}-images-idx3-ubyte.gz", imgs[:n], compress=True)
        data.write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", labs[:n], compress=True)
    assert (tmp_path / "train-images-idx3-ubyte.gz").read_bytes()[:2] == b"\x1f\x8b"
    monkeypatch.setenv("FASHION_MNIST_DIR", str(tmp_path))
    assert data.fashion_mnist_available()
    ds = data.load_fashion_mnist()
    assert ds.X_train.shape == (12, 784) and ds.X_test.shape == (10, 784)
    assert ds.image_shape == (28, 28) and ds.y_test.dtype == np.int32
    np.testing.assert_allclose(ds.X_train[3], imgs[3].reshape(-1) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(ds.y_train, labs)
    monkeypatch.setenv("FASHION_MNIST_DIR", str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="FASHION_MNIST_DIR"):
        data.load_fashion_mnist()
