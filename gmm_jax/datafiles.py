"""Reading a data matrix from a file: ``.npy``, ``.npz``, ``.csv``/``.tsv``/``.txt``, IDX.

:func:`read_matrix` returns an (N, D) floating array, one row per sample, or raises
:class:`DataFileError` (a ``ValueError``) with one sentence that names the file and what is
wrong with it: missing or unreadable, an unknown format, a cell that is not a number (with its
row and column), rows of different lengths, no rows, the wrong number of dimensions, NaN or
infinite values. The ``gmm-jax`` command prints that sentence and exits; nothing is traced
before the data have passed.

Formats (chosen by the file name; a trailing ``.gz`` is decompressed):

* ``.npy``: a 2-D numeric array (read with ``allow_pickle=False``);
* ``.npz``: the array named by ``key``, or the only array in the file;
* ``.csv`` (commas), ``.tsv``/``.tab`` (tabs), ``.txt``/``.dat`` (any whitespace): numeric text
  with one sample per line, optionally a header line (a first line with a cell that is not a
  number); blank lines and lines starting with ``#`` are skipped;
* IDX (MNIST's format: names like ``train-images-idx3-ubyte``, ``x.idx``, ``x.idx2``, optionally
  ``.gz``): a 2-D array as stored, or an (N, H, W) image stack flattened to (N, H*W) (the image
  shape is returned by :func:`read_data`).

Example:
    >>> import os, tempfile, numpy as np
    >>> from gmm_jax.datafiles import read_matrix
    >>> path = os.path.join(tempfile.mkdtemp(), "x.csv")
    >>> _ = open(path, "w").write("a,b\\n1,2\\n3,4.5\\n")
    >>> read_matrix(path).tolist()
    [[1.0, 2.0], [3.0, 4.5]]
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import re
import struct
import warnings
import zipfile
from typing import NamedTuple, NoReturn

import numpy as np

__all__ = ["DataFileError", "FORMATS", "LoadedData", "file_format", "read_data", "read_labels",
           "read_matrix"]

#: The formats and the file names that select them.
FORMATS = {
    "npy": (".npy",),
    "npz": (".npz",),
    "csv": (".csv",),
    "tsv": (".tsv", ".tab"),
    "txt": (".txt", ".dat"),
    "idx": (".idx", ".idx1", ".idx2", ".idx3", "-idx1-ubyte", "-idx2-ubyte", "-idx3-ubyte"),
}
_DELIMITERS = {"csv": ",", "tsv": "\t", "txt": None}
_IDX_NAME = re.compile(r"([.-]idx\d*(-ubyte)?|\.idx\d*)$", re.IGNORECASE)
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class DataFileError(ValueError):
    """A data file that cannot be used; the message names the file and the problem."""


class LoadedData(NamedTuple):
    """What :func:`read_data` found.

    Attributes:
        X: (N, D) floating array (float64 unless ``dtype`` asked otherwise).
        image_shape: (H, W) when the file held an (N, H, W) image stack (IDX), else None.
        raw_dtype: dtype stored in the file (``uint8`` for MNIST images).
        header: column names of a text file with a header line, else None.
        format: the format read (a key of :data:`FORMATS`).
    """

    X: np.ndarray
    image_shape: tuple[int, int] | None
    raw_dtype: np.dtype
    header: list[str] | None
    format: str


def file_format(path) -> str:
    """The format of ``path`` from its name (a key of :data:`FORMATS`).

    Raises:
        DataFileError: a name that matches no format.
    """
    name = os.path.basename(os.fspath(path)).lower()
    if name.endswith(".gz"):
        name = name[:-3]
    if _IDX_NAME.search(name):
        return "idx"
    for fmt, suffixes in FORMATS.items():
        if fmt != "idx" and name.endswith(suffixes):
            return fmt
    known = ", ".join(s for fmt, sfx in FORMATS.items() if fmt != "idx" for s in sfx)
    raise DataFileError(f"{_q(path)}: unknown data format (expected {known}, or an IDX file "
                        "such as train-images-idx3-ubyte; .gz allowed).")


def _q(path) -> str:
    return repr(os.fspath(path))


def read_matrix(path, *, key: str | None = None, dtype=None) -> np.ndarray:
    """Reads an (N, D) data matrix (see the module docstring for the formats).

    Args:
        path: the file.
        key: ``.npz`` only: the name of the array to read (not needed when there is one).
        dtype: floating dtype of the result (default float64).

    Returns:
        (N, D) finite floating array, N >= 1, D >= 1.

    Raises:
        DataFileError: the file is missing, unreadable, of an unknown format, or holds something
            other than a finite numeric 2-D array.
    """
    return read_data(path, key=key, dtype=dtype).X


def read_data(path, *, key: str | None = None, dtype=None) -> LoadedData:
    """Reads a data matrix and what the file says about it (:class:`LoadedData`).

    Args:
        path: the file.
        key: ``.npz`` only: the name of the array to read.
        dtype: floating dtype of ``X`` (default float64).

    Raises:
        DataFileError: as :func:`read_matrix`.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataFileError(f"{_q(path)}: no such file.")
    if os.path.isdir(path):
        raise DataFileError(f"{_q(path)}: is a directory, not a data file.")
    fmt = file_format(path)
    if key is not None and fmt != "npz":
        raise DataFileError(f"{_q(path)}: --key/key= selects an array of an .npz file; this is "
                            f"a {fmt} file.")
    header = None
    image_shape = None
    try:
        if fmt == "npy":
            arr = _read_npy(path)
        elif fmt == "npz":
            arr = _read_npz(path, key)
        elif fmt == "idx":
            arr = _read_idx(path)
            if arr.ndim == 3:
                image_shape = (int(arr.shape[1]), int(arr.shape[2]))
                arr = arr.reshape(arr.shape[0], -1)
        else:
            arr, header = _read_text(path, _DELIMITERS[fmt])
    except OSError as err:
        raise DataFileError(f"{_q(path)}: cannot read the file ({err.strerror or err}).") \
            from err
    raw_dtype = np.dtype(arr.dtype)
    X = _check_matrix(path, arr, fmt, dtype)
    return LoadedData(X, image_shape, raw_dtype, header, fmt)


def read_labels(path, *, key: str | None = None, n_samples: int | None = None) -> np.ndarray:
    """Reads a vector of integer labels (one per sample), e.g. an IDX ``labels-idx1-ubyte``.

    Accepts a 1-D array or a one-column 2-D array in any format of :data:`FORMATS`.

    Args:
        path: the file.
        key: ``.npz`` only: the array to read.
        n_samples: if given, the number of labels required.

    Returns:
        (N,) int64 labels.

    Raises:
        DataFileError: unreadable file, more than one column, non-integer values, or the wrong
            number of labels.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataFileError(f"{_q(path)}: no such file.")
    fmt = file_format(path)
    try:
        if fmt == "npy":
            arr = _read_npy(path)
        elif fmt == "npz":
            arr = _read_npz(path, key)
        elif fmt == "idx":
            arr = _read_idx(path)
        else:
            arr = _read_text(path, _DELIMITERS[fmt])[0]
    except OSError as err:
        raise DataFileError(f"{_q(path)}: cannot read the file ({err.strerror or err}).") \
            from err
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise DataFileError(f"{_q(path)}: labels must be one value per sample (a 1-D array or "
                            f"one column), got shape {arr.shape}.")
    if not (np.issubdtype(arr.dtype, np.integer) or (
            np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr))
            and np.all(arr == np.round(arr)))):
        raise DataFileError(f"{_q(path)}: labels must be integers, got {arr.dtype} values.")
    if n_samples is not None and arr.shape[0] != n_samples:
        raise DataFileError(f"{_q(path)}: has {arr.shape[0]} labels for {n_samples} samples.")
    return arr.astype(np.int64)


# ------------------------------------------------------------------------------ binary formats
def _open(path):
    with open(path, "rb") as f:
        magic = f.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")


def _read_npy(path) -> np.ndarray:
    try:
        with _open(path) as f:
            data = f.read()
        return np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as err:
        if "pickle" in str(err).lower():
            raise DataFileError(f"{_q(path)}: holds Python objects (pickled), not a numeric "
                                "array; save it with a numeric dtype.") from err
        raise DataFileError(f"{_q(path)}: not a readable .npy file ({err}).") from err
    except (EOFError, gzip.BadGzipFile, zipfile.BadZipFile) as err:
        raise DataFileError(f"{_q(path)}: truncated or corrupt .npy file ({err}).") from err


def _read_npz(path, key) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as data:
            names = list(data.files)
            if key is None:
                if len(names) != 1:
                    listing = ", ".join(names) if names else "none"
                    raise DataFileError(
                        f"{_q(path)}: holds {len(names)} arrays ({listing}); pick one with "
                        "--key NAME.")
                key = names[0]
            elif key not in names:
                raise DataFileError(f"{_q(path)}: has no array {key!r} (it holds: "
                                    f"{', '.join(names) or 'none'}).")
            return data[key]
    except DataFileError:
        raise
    except ValueError as err:
        if "pickle" in str(err).lower():
            raise DataFileError(f"{_q(path)}: array {key!r} holds Python objects (pickled), not "
                                "numbers.") from err
        raise DataFileError(f"{_q(path)}: not a readable .npz file ({err}).") from err
    except (EOFError, zipfile.BadZipFile, KeyError) as err:
        raise DataFileError(f"{_q(path)}: truncated or corrupt .npz file ({err}).") from err


def _read_idx(path) -> np.ndarray:
    try:
        with _open(path) as f:
            data = f.read()
    except (EOFError, gzip.BadGzipFile) as err:
        raise DataFileError(f"{_q(path)}: corrupt gzip stream ({err}).") from err
    if len(data) < 4:
        raise DataFileError(f"{_q(path)}: not an IDX file (only {len(data)} bytes).")
    zero, code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or code not in _IDX_TYPES or ndim == 0:
        raise DataFileError(f"{_q(path)}: not an IDX file (header bytes {data[:4].hex()}).")
    head = 4 + 4 * ndim
    if len(data) < head:
        raise DataFileError(f"{_q(path)}: truncated IDX header.")
    shape = struct.unpack(">" + "I" * ndim, data[4:head])
    dt = np.dtype(_IDX_TYPES[code])
    need = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
    if len(data) - head != need:
        raise DataFileError(f"{_q(path)}: IDX data has {len(data) - head} bytes but its header "
                            f"{tuple(shape)} of {dt.name} needs {need} (truncated or corrupt).")
    return np.frombuffer(data, dt, offset=head).reshape(shape).astype(dt.newbyteorder("="))


# -------------------------------------------------------------------------------- text formats
def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _split(line: str, delimiter) -> list[str]:
    if delimiter is None:
        return line.split()
    return [c.strip() for c in next(csv.reader([line], delimiter=delimiter))]


def _text_lines(path):
    """(1-based line number, text) of the lines that hold data (not blank, not ``#``)."""
    with _open(path) as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="strict")
        try:
            for number, line in enumerate(text, start=1):
                s = line.strip()
                if s and not s.startswith("#"):
                    yield number, s
        except UnicodeDecodeError as err:
            raise DataFileError(f"{_q(path)}: not a text file (bytes that are not UTF-8).") \
                from err


def _first_line(path):
    lines = _text_lines(path)
    try:
        return next(lines, None)
    finally:
        lines.close()


def _read_text(path, delimiter) -> tuple[np.ndarray, list[str] | None]:
    first = _first_line(path)
    if first is None:
        raise DataFileError(f"{_q(path)}: empty (no data lines).")
    number, line = first
    cells = _split(line, delimiter)
    header = None
    skip = number - 1
    if not all(_is_number(c) for c in cells):
        header, skip = cells, number
    quote = {} if delimiter is None else {"quotechar": '"'}
    try:
        with _open(path) as raw, warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "input contained no data"
            text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="strict")
            arr = np.loadtxt(text, delimiter=delimiter, skiprows=skip, ndmin=2,
                             dtype=np.float64, comments="#", **quote)
    except (ValueError, UnicodeDecodeError):
        arr = None
    if arr is None:
        _diagnose_text(path, delimiter, header)
    if arr.size == 0:
        raise DataFileError(f"{_q(path)}: has a header line but no data rows.")
    if header is not None and len(header) != arr.shape[1]:
        raise DataFileError(f"{_q(path)}: the header line has {len(header)} columns but the rows "
                            f"have {arr.shape[1]}.")
    return arr, header


def _diagnose_text(path, delimiter, header) -> NoReturn:
    """Finds the first bad line of a text file that numpy refused, and raises about it."""
    width = None if header is None else len(header)
    seen_header = header is None
    for number, line in _text_lines(path):
        cells = _split(line, delimiter)
        if not seen_header:
            seen_header = True
            continue
        if width is None:
            width = len(cells)
        if len(cells) != width:
            raise DataFileError(f"{_q(path)}: line {number} has {len(cells)} value(s), but "
                                f"{'the header has' if header else 'the first row has'} "
                                f"{width} (ragged rows).")
        for col, cell in enumerate(cells, start=1):
            if cell == "":
                raise DataFileError(f"{_q(path)}: line {number}, column {col} is empty (a "
                                    "missing value); fill or drop it.")
            if not _is_number(cell):
                raise DataFileError(f"{_q(path)}: line {number}, column {col} is {cell[:40]!r}, "
                                    "not a number.")
    raise DataFileError(f"{_q(path)}: not a numeric table.")


# -------------------------------------------------------------------------------------- checks
def _check_matrix(path, arr: np.ndarray, fmt: str, dtype) -> np.ndarray:
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise DataFileError(f"{_q(path)}: holds {arr.dtype} values, not numbers.")
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise DataFileError(f"{_q(path)}: holds complex numbers; a mixture needs real values.")
    if arr.ndim != 2:
        hint = {0: " (a single number)",
                1: "; a single feature must be saved as a column, shape (N, 1)"}.get(arr.ndim, "")
        images = " (IDX image stacks (N, H, W) are flattened; other formats must be 2-D)" \
            if arr.ndim >= 3 else ""
        raise DataFileError(f"{_q(path)}: holds a {arr.ndim}-D array of shape {arr.shape}, "
                            f"expected 2-D (samples x features){hint}{images}.")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataFileError(f"{_q(path)}: empty array of shape {arr.shape}.")
    target = np.dtype(np.float64 if dtype is None else dtype)
    if not np.issubdtype(target, np.floating):
        raise ValueError(f"dtype must be a floating type, got {target}.")
    if arr.dtype.kind in "fc":
        finite = np.isfinite(arr)
        if not finite.all():
            rows, cols = np.nonzero(~finite)
            kind = "NaN" if np.isnan(arr[rows[0], cols[0]]) else "infinite"
            raise DataFileError(f"{_q(path)}: {int((~finite).sum())} NaN or infinite value(s), "
                                f"the first ({kind}) in data row {rows[0] + 1}, column "
                                f"{cols[0] + 1}; remove or impute them.")
    with np.errstate(over="ignore"):
        X = arr.astype(target, copy=False)
    if arr.dtype.kind == "f" and not np.isfinite(X).all():
        raise DataFileError(f"{_q(path)}: values too large for {target.name} (use float64).")
    return X
