"""The IDX format: every dtype round-trips, and truncated, cut, over-long or foreign files are refused."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from datafiles import fake_mnist, idx_bytes, write_idx

from gradlens.data import load_dataset, read_idx


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "float32", "float64"])
def test_read_idx_round_trip(tmp_path: Path, gz: bool, dtype: str) -> None:
    array = (
        (np.arange(2 * 3 * 5) - 7).astype(dtype).reshape(2, 3, 5)
        if dtype != "uint8"
        else (np.arange(30, dtype=np.uint8).reshape(2, 3, 5) * 8)
    )
    path = write_idx(tmp_path / "a-idx3", array, gz)
    out = read_idx(path)
    assert out.dtype == np.dtype(dtype) and out.shape == (2, 3, 5)
    np.testing.assert_array_equal(out, array)
    labels = write_idx(tmp_path / "b-idx1", np.array([3, 1, 4, 1, 5], dtype=np.uint8), gz)
    np.testing.assert_array_equal(read_idx(labels), [3, 1, 4, 1, 5])




def test_truncated_idx_names_file_and_sizes(tmp_path: Path) -> None:
    images = np.zeros((5, 4, 6), dtype=np.uint8)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(images)[:-10]))
    with pytest.raises(ValueError) as info:
        read_idx(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    assert (
        "truncated: header promises 5×4×6 unsigned byte values = 120 bytes, found 110; re-download it"
        in message
    )


def test_cut_gzip_stream_and_extra_bytes(tmp_path: Path) -> None:
    payload = gzip.compress(idx_bytes(np.arange(200, dtype=np.uint8).reshape(2, 10, 10)))
    cut = tmp_path / "cut.gz"
    cut.write_bytes(payload[: len(payload) // 2])
    with pytest.raises(ValueError, match=r"cut\.gz: broken gzip stream .*truncated or corrupt"):
        read_idx(cut)
    long = tmp_path / "long-idx1"
    long.write_bytes(idx_bytes(np.arange(4, dtype=np.uint8)) + b"\x00\x00")
    with pytest.raises(
        ValueError, match=r"long-idx1: header promises 4 unsigned byte .*found 6 \(extra bytes\)"
    ):
        read_idx(long)
    short = tmp_path / "short-idx3"
    short.write_bytes(b"\x00\x00\x08\x03\x00\x00\x00\x05")
    with pytest.raises(
        ValueError, match=r"short-idx3: truncated: header of 3 dimensions needs 16 bytes, found 8"
    ):
        read_idx(short)


def test_wrong_magic_and_wrong_kind(tmp_path: Path) -> None:
    zip_file = tmp_path / "train-images-idx3-ubyte"
    zip_file.write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(
        ValueError, match=r"train-images-idx3-ubyte: not an IDX file: magic number 0x504b0304"
    ):
        read_idx(zip_file)
    arrays = fake_mnist(tmp_path / "mnist")
    (tmp_path / "mnist" / "train-images-idx3-ubyte.gz").unlink()
    write_idx(tmp_path / "mnist" / "train-images-idx3-ubyte", arrays["y_train"], gz=False)  # labels as images
    with pytest.raises(
        ValueError, match=r"train-images-idx3-ubyte: expected an idx3 unsigned-byte images file"
    ):
        load_dataset("mnist", tmp_path)


