"""gmm_jax.datafiles: every format reads back the stored matrix; bad files get clear errors."""

import gzip
import struct

import numpy as np
import pytest

from gmm_jax.datafiles import DataFileError, file_format, read_data, read_labels, read_matrix

M = np.array([[1.5, -2.0, 3.0], [4.0, 5.25, -6.0], [7.0, 8.0, 9.5e3]])


def _idx_bytes(a: np.ndarray) -> bytes:
    code = {np.dtype(np.uint8): 0x08, np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}[a.dtype]
    head = struct.pack(">HBB", 0, code, a.ndim) + struct.pack(">" + "I" * a.ndim, *a.shape)
    return head + a.tobytes()


def _write(tmp_path, name, content):
    p = tmp_path / name
    if isinstance(content, bytes):
        p.write_bytes(content)
    else:
        p.write_text(content)
    return p


GOOD = {
    "header.csv": "a,b,c\n1.5,-2,3\n4,5.25,-6\n7,8,9.5e3\n",
    "noheader.csv": "# made by hand\n\n1.5,-2,3\n4,5.25,-6\n7,8,9500\n",
    "quoted.csv": '"a","b","c"\n"1.5","-2","3"\n4,5.25,-6\n7,8,9500\n',
    "tabs.tsv": "1.5\t-2\t3\n4\t5.25\t-6\n7\t8\t9500\n",
    "spaces.txt": "1.5 -2   3\n 4 5.25 -6\n7 8 9500\n",
    "crlf.csv": "x,y,z\r\n1.5,-2,3\r\n4,5.25,-6\r\n7,8,9500\r\n",
}


@pytest.mark.parametrize("name", sorted(GOOD))
def test_text_formats_read_the_matrix(tmp_path, name):
    data = read_data(_write(tmp_path, name, GOOD[name]))
    np.testing.assert_array_equal(data.X, M)
    assert data.X.dtype == np.float64
    has_header = name in ("header.csv", "quoted.csv", "crlf.csv")
    assert (data.header is not None) == has_header


def test_binary_formats_read_the_matrix(tmp_path):
    np.save(tmp_path / "m.npy", M)
    np.savez(tmp_path / "one.npz", only=M)
    np.savez(tmp_path / "two.npz", a=M, b=np.zeros((2, 1)))
    _write(tmp_path, "m.idx", _idx_bytes(M.astype(">f8")))
    _write(tmp_path, "m.idx2.gz", gzip.compress(_idx_bytes(M.astype(">f4"))))
    with gzip.open(tmp_path / "m.csv.gz", "wt") as f:
        f.write(GOOD["header.csv"])
    for name in ("m.npy", "one.npz", "m.idx", "m.idx2.gz", "m.csv.gz"):
        np.testing.assert_allclose(read_matrix(tmp_path / name), M, rtol=1e-6, err_msg=name)
    np.testing.assert_array_equal(read_matrix(tmp_path / "two.npz", key="a"), M)
    assert read_matrix(tmp_path / "m.npy", dtype=np.float32).dtype == np.float32


def test_idx_image_stack_is_flattened(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = _write(tmp_path, "train-images-idx3-ubyte.gz", gzip.compress(_idx_bytes(images)))
    data = read_data(path)
    assert data.image_shape == (3, 4)
    assert data.raw_dtype == np.uint8
    np.testing.assert_array_equal(data.X, images.reshape(2, 12).astype(np.float64))
    assert file_format("t10k-labels-idx1-ubyte") == "idx"


def test_labels(tmp_path):
    np.save(tmp_path / "y.npy", np.array([0, 2, 1]))
    _write(tmp_path, "y.csv", "label\n0\n2\n1\n")
    _write(tmp_path, "y-idx1-ubyte", _idx_bytes(np.array([0, 2, 1], np.uint8)))
    for name in ("y.npy", "y.csv", "y-idx1-ubyte"):
        np.testing.assert_array_equal(read_labels(tmp_path / name, n_samples=3), [0, 2, 1])
    with pytest.raises(DataFileError, match="3 labels for 4 samples"):
        read_labels(tmp_path / "y.npy", n_samples=4)
    np.save(tmp_path / "f.npy", np.array([0.5, 1.0]))
    with pytest.raises(DataFileError, match="must be integers"):
        read_labels(tmp_path / "f.npy")


def _bad_files(tmp_path):
    np.save(tmp_path / "r1.npy", np.ones(3))
    np.save(tmp_path / "r3.npy", np.ones((2, 2, 2)))
    np.save(tmp_path / "s.npy", np.array(["a", "b"]))
    np.save(tmp_path / "obj.npy", np.array([1, "a"], dtype=object), allow_pickle=True)
    np.save(tmp_path / "nan.npy", np.array([[1.0, np.nan], [2.0, 3.0]]))
    np.save(tmp_path / "empty.npy", np.zeros((0, 3)))
    np.savez(tmp_path / "two.npz", a=M, b=M)
    _write(tmp_path, "trunc.npy", (tmp_path / "r1.npy").read_bytes()[:-5])
    return {
        "missing.csv": "no such file",
        "nonnum.csv": ("a,b\n1,2\n3,abc\n", "line 3, column 2 is 'abc', not a number"),
        "ragged.csv": ("1,2,3\n4,5\n", r"line 2 has 2 value\(s\), but the first row has 3"),
        "hole.csv": ("1,2\n3,\n", "line 2, column 2 is empty"),
        "empty.csv": ("", "empty"),
        "blank.csv": ("\n\n# only a comment\n", "empty"),
        "headonly.csv": ("a,b\n", "header line but no data rows"),
        "nan.csv": ("1,2\nnan,3\n", "NaN or infinite value.*data row 2, column 1"),
        "inf.tsv": ("1\t2\n3\tinf\n", "infinite"),
        "binary.csv": (b"\xff\xfe\x00\x81junk", "not a text file"),
        "r1.npy": "1-D array of shape \\(3,\\).*shape \\(N, 1\\)",
        "r3.npy": "3-D array of shape \\(2, 2, 2\\)",
        "s.npy": "not numbers",
        "obj.npy": "pickled",
        "nan.npy": "NaN",
        "empty.npy": "empty array of shape \\(0, 3\\)",
        "two.npz": "holds 2 arrays \\(a, b\\); pick one with --key",
        "trunc.npy": "not a readable .npy|truncated or corrupt",
        "bad-idx3-ubyte": (b"\x00\x00\x08\x03\x00\x00\x00\x02\x00\x00\x00\x02",
                           "truncated IDX header"),
        "short.idx": (_idx_bytes(np.ones((2, 2), ">f4"))[:-3], "needs 16"),
        "magic.idx": (b"PK\x03\x04rest", "not an IDX file"),
        "data.xlsx": ("1,2\n", "unknown data format"),
    }


def test_bad_files_raise_one_clear_sentence(tmp_path):
    cases = _bad_files(tmp_path)
    for name, case in cases.items():
        if isinstance(case, tuple):
            content, pattern = case
            _write(tmp_path, name, content)
        else:
            pattern = case
        with pytest.raises(DataFileError, match=pattern) as err:
            read_matrix(tmp_path / name)
        msg = str(err.value)
        assert repr(str(tmp_path / name)) in msg, (name, msg)
        assert "\n" not in msg, (name, msg)


def test_key_errors(tmp_path):
    np.savez(tmp_path / "two.npz", a=M, b=M)
    with pytest.raises(DataFileError, match="has no array 'c' \\(it holds: a, b\\)"):
        read_matrix(tmp_path / "two.npz", key="c")
    np.save(tmp_path / "m.npy", M)
    with pytest.raises(DataFileError, match="selects an array of an .npz"):
        read_matrix(tmp_path / "m.npy", key="a")
    with pytest.raises(DataFileError, match="is a directory"):
        read_matrix(tmp_path)
