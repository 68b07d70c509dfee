"""Data sets for the deep models: digits (bundled), IDX files (MNIST, Fashion-MNIST), splits.

Nothing here downloads. ``load_digits`` reads the 8x8 digits that ship inside scikit-learn;
``read_idx`` parses the IDX format of MNIST and Fashion-MNIST from a local path (gzip-compressed
or raw, detected from the magic bytes); ``load_fashion_mnist`` looks in
``/usr/share/datasets/fashion-mnist/`` (Debian package ``dataset-fashion-mnist``) when no path is
given. Images are returned as float32 in [0, 1], flattened to (N, H*W); labels as int32.

IDX format (big-endian): two zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16,
0x0C int32, 0x0D float32, 0x0E float64), the number of dimensions n, then n uint32 sizes,
then the data in C order.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path
from typing import NamedTuple

import numpy as np

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

_IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_CODES = {np.dtype(v).newbyteorder("="): k for k, v in _IDX_TYPES.items()}

_SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class Dataset(NamedTuple):
    """A train/test split.

    Attributes:
        X_train: (N_train, D) float32 features in [0, 1].
        y_train: (N_train,) int32 labels.
        X_test: (N_test, D) float32.
        y_test: (N_test,) int32.
        image_shape: (H, W) of one image, for plotting.
    """

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    image_shape: tuple[int, int]


# ------------------------------------------------------------------------------------ IDX I/O


def parse_idx(data: bytes, *, name: str = "<bytes>") -> np.ndarray:
    """Parses the bytes of one (uncompressed) IDX file.

    Args:
        data: file contents.
        name: used in error messages.

    Returns:
        Array of the stored shape and type (native byte order).

    Raises:
        ValueError: bad magic number, unknown type code, or a size that does not match the
            header (truncated or padded file).
    """
    if len(data) < 4:
        raise ValueError(f"{name}: not an IDX file (only {len(data)} bytes)")
    zero, code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or code not in _IDX_TYPES:
        raise ValueError(f"{name}: not an IDX file (magic bytes {data[:4].hex()})")
    if ndim == 0:
        raise ValueError(f"{name}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{name}: truncated IDX header ({len(data)} bytes, need {header})")
    shape = struct.unpack(">" + "I" * ndim, data[4:header])
    dtype = _IDX_TYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    got = len(data) - header
    if got != expected:
        raise ValueError(
            f"{name}: IDX payload has {got} bytes but header {shape} of {dtype} needs {expected}"
            " (file truncated or corrupt)"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="))


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads an IDX file, gzip-compressed or raw (detected from the content, not the name).

    Args:
        path: file path.

    Returns:
        Array with the shape and type stored in the file.

    Raises:
        FileNotFoundError: missing file.
        ValueError: corrupt gzip stream or corrupt IDX content.

    Example:
        >>> import numpy as np, tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "a-idx1-ubyte")
        >>> write_idx(p, np.arange(3, dtype=np.uint8))
        >>> read_idx(p).tolist()
        [0, 1, 2]
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, gzip.BadGzipFile) as err:  # truncated or corrupt stream
            raise ValueError(f"{path}: corrupt gzip stream ({err})") from err
    return parse_idx(raw, name=str(path))


def write_idx(path: str | os.PathLike, array: np.ndarray, *, compress: bool | None = None) -> None:
    """Writes an array as an IDX file (inverse of :func:`read_idx`).

    Args:
        path: destination; gzip-compressed if ``compress`` is True, or if it is None and the
            name ends in ``.gz``.
        array: array of a type IDX can hold (uint8, int8, int16, int32, float32, float64).

    Raises:
        ValueError: a type IDX cannot store, or more than 255 dimensions.
    """
    array = np.asarray(array)
    key = array.dtype.newbyteorder("=")
    if key not in _IDX_CODES or array.ndim == 0 or array.ndim > 255:
        raise ValueError(f"IDX cannot store an array of dtype {array.dtype} and ndim {array.ndim}")
    code = _IDX_CODES[key]
    header = struct.pack(">HBB", 0, code, array.ndim) + struct.pack(">" + "I" * array.ndim,
                                                                    *array.shape)
    payload = header + np.ascontiguousarray(array.astype(_IDX_TYPES[code])).tobytes()
    if compress is None:
        compress = str(path).endswith(".gz")
    if compress:
        payload = gzip.compress(payload, mtime=0)
    Path(path).write_bytes(payload)


def _find(directory: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx"),
                 stem.replace("-idx", ".idx") + ".gz"):
        if (directory / name).is_file():
            return directory / name
    raise FileNotFoundError(f"no {stem}[.gz] in {directory}")


def load_idx_split(directory: str | os.PathLike, split: str = "train") -> tuple[np.ndarray,
                                                                                np.ndarray]:
    """Loads images and labels of one MNIST-style split from a directory.

    Args:
        directory: folder holding ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``.
        split: ``"train"`` or ``"test"``.

    Returns:
        ``(X, y)``: (N, H*W) float32 in [0, 1] and (N,) int32.

    Raises:
        FileNotFoundError: a file is missing.
        ValueError: corrupt files, or image and label counts that differ.
    """
    if split not in _SPLIT_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    directory = Path(directory)
    img_stem, lab_stem = _SPLIT_FILES[split]
    images = read_idx(_find(directory, img_stem))
    labels = read_idx(_find(directory, lab_stem))
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{directory}: images {images.shape} and labels {labels.shape} do not form a split"
        )
    X = images.reshape(images.shape[0], -1).astype(np.float32) / 255.0
    return X, labels.astype(np.int32)


def load_idx_dataset(directory: str | os.PathLike) -> Dataset:
    """Loads the train and test splits of an MNIST-format directory (MNIST, Fashion-MNIST)."""
    X_tr, y_tr = load_idx_split(directory, "train")
    X_te, y_te = load_idx_split(directory, "test")
    side = int(round(np.sqrt(X_tr.shape[1])))
    return Dataset(X_tr, y_tr, X_te, y_te, (side, X_tr.shape[1] // side))


def load_fashion_mnist(path: str | os.PathLike | None = None) -> Dataset:
    """Fashion-MNIST (60000 train, 10000 test, 28x28) from local IDX files.

    Args:
        path: folder with the four IDX files. Defaults to ``$FASHION_MNIST_DIR`` if set, else
            ``/usr/share/datasets/fashion-mnist`` (``apt-get install dataset-fashion-mnist``).

    Raises:
        FileNotFoundError: the files are not there (the message says how to install them).
    """
    if path is None:
        path = os.environ.get("FASHION_MNIST_DIR", str(FASHION_MNIST_DIR))
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(
            f"Fashion-MNIST not found in {path}: pass path=..., set FASHION_MNIST_DIR, or "
            "install the Debian package 'dataset-fashion-mnist'"
        )
    return load_idx_dataset(path)


def load_mnist(path: str | os.PathLike) -> Dataset:
    """MNIST from a folder of the four standard IDX files (gzip or raw). Nothing is downloaded."""
    return load_idx_dataset(path)


def fashion_mnist_available(path: str | os.PathLike | None = None) -> bool:
    """Whether :func:`load_fashion_mnist` would find its files."""
    path = Path(path or os.environ.get("FASHION_MNIST_DIR", str(FASHION_MNIST_DIR)))
    try:
        for stems in _SPLIT_FILES.values():
            for stem in stems:
                _find(path, stem)
    except FileNotFoundError:
        return False
    return True


# ------------------------------------------------------------------------------------ digits


def load_digits(*, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """The 1797 8x8 handwritten digits bundled with scikit-learn, scaled to [0, 1].

    The data are read from the copy inside the scikit-learn package (no network).

    Args:
        test_fraction: fraction held out as the test split (stratified by nothing, shuffled).
        seed: shuffling seed of the split.

    Returns:
        ``Dataset`` with (N, 64) float32 features in [0, 1] and int32 labels 0..9.

    Example:
        >>> ds = load_digits()
        >>> ds.X_train.shape[1], float(ds.X_train.max()) <= 1.0
        (64, True)
    """
    from sklearn.datasets import load_digits as _sk_digits

    bunch = _sk_digits()
    X = (np.asarray(bunch.data, np.float32) / 16.0).clip(0.0, 1.0)
    y = np.asarray(bunch.target, np.int32)
    X_tr, y_tr, X_te, y_te = train_test_split(X, y, test_fraction=test_fraction, seed=seed)
    return Dataset(X_tr, y_tr, X_te, y_te, (8, 8))


# ------------------------------------------------------------------------------ transforms


def train_test_split(
    X: np.ndarray, y: np.ndarray | None = None, *, test_fraction: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray | None]:
    """Shuffled split into train and test parts.

    Args:
        X: (N, D) features.
        y: optional (N,) labels.
        test_fraction: fraction in (0, 1) placed in the test part.
        seed: numpy seed of the permutation.

    Returns:
        ``(X_train, y_train, X_test, y_test)`` (labels None when ``y`` is None).
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    n = X.shape[0]
    perm = np.random.default_rng(seed).permutation(n)
    n_test = max(1, int(round(n * test_fraction)))
    te, tr = perm[:n_test], perm[n_test:]
    if y is None:
        return X[tr], None, X[te], None
    return X[tr], y[tr], X[te], y[te]


def binarize(X, *, key=None, threshold: float = 0.5):
    """Binarises intensities in [0, 1].

    Args:
        X: (N, D) intensities (numpy or JAX).
        key: if given, stochastic binarisation ``x_b ~ Bernoulli(x)`` with this JAX key (the
            "dynamic binarisation" used for MNIST likelihoods); if None, ``x > threshold``.
        threshold: fixed threshold of the deterministic variant.

    Returns:
        Array of ``X``'s shape and floating dtype with values in {0, 1}.
    """
    if key is None:
        return (X > threshold).astype(X.dtype if np.issubdtype(X.dtype, np.floating)
                                      else np.float32)
    import jax

    return jax.random.bernoulli(key, X).astype(X.dtype)
