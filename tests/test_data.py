"""Tests of gradlens.data: real MNIST files when present, and small IDX/pickle files written here."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import struct
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from gradlens import data
from gradlens.data import cifar, download, load_dataset, make_loader, mnist_family, read_cifar_batch, read_idx

MNIST_10K = Path(__file__).resolve().parents[2] / "shared/data/mnist-10k"
MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_IDX_CODES = {"uint8": 0x08, "int8": 0x09, "int16": 0x0B, "int32": 0x0C, "float32": 0x0D, "float64": 0x0E}


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX encoding written independently of the reader: magic, big-endian dims, big-endian values."""
    header = bytes([0, 0, _IDX_CODES[array.dtype.name], array.ndim])
    header += b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, array: np.ndarray, gz: bool) -> Path:
    payload = idx_bytes(array)
    path = path.with_name(path.name + ".gz") if gz else path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(payload) if gz else payload)
    return path


def fake_images(rng: np.random.Generator, n: int, kind: str) -> np.ndarray:
    """``n`` uint8 images of one kind.

    ``digits``: 28×28, the ink inside a box of at most 20×20 placed anywhere in the frame (MNIST's
    construction). ``clothing``: 28×28, a silhouette whose longest side is 28 pixels, the other 10..28, centred
    (Fashion-MNIST's construction) — a synthetic stand-in, no Fashion-MNIST copy is available here.
    ``noise``: 4×6 random bytes (for EMNIST, whose content is not checked).
    """
    if kind == "noise":
        return rng.integers(0, 256, size=(n, 4, 6), dtype=np.uint8)
    images = np.zeros((n, 28, 28), dtype=np.uint8)
    for image in images:
        if kind == "digits":
            h, w = int(rng.integers(8, 21)), int(rng.integers(4, 21))
            top, left = int(rng.integers(0, 29 - h)), int(rng.integers(0, 29 - w))
        else:
            h, w = (28, int(rng.integers(10, 29))) if rng.random() < 0.5 else (int(rng.integers(10, 29)), 28)
            top, left = (28 - h) // 2, (28 - w) // 2
        image[top : top + h, left : left + w] = rng.integers(1, 256, size=(h, w), dtype=np.uint8)
    return images


def fake_mnist(
    directory: Path,
    *,
    prefix: str = "",
    test: str = "t10k",
    transpose: bool = False,
    label_offset: int = 0,
    gz: tuple[bool, bool, bool, bool] = (True, False, False, True),
    num_classes: int = 10,
    kind: str = "digits",
) -> dict[str, np.ndarray]:
    """Write 7 train and 3 test images of ``kind`` (see :func:`fake_images`) with labels; returns them."""
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": fake_images(rng, 7, kind),
        "y_train": rng.integers(0, num_classes, size=7).astype(np.uint8),
        "x_test": fake_images(rng, 3, kind),
        "y_test": rng.integers(0, num_classes, size=3).astype(np.uint8),
    }
    names = (
        f"{prefix}train-images-idx3-ubyte",
        f"{prefix}train-labels-idx1-ubyte",
        f"{prefix}{test}-images-idx3-ubyte",
        f"{prefix}{test}-labels-idx1-ubyte",
    )
    for (key, array), name, compress in zip(arrays.items(), names, gz, strict=True):
        stored = array.transpose(0, 2, 1).copy() if transpose and key.startswith("x") else array
        stored = stored + label_offset if key.startswith("y") else stored
        write_idx(directory / name, stored.astype(np.uint8), compress)
    return arrays


# ---------------------------------------------------------------------------------------------------------
# real MNIST subset


@pytest.fixture(scope="module")
def mnist10k() -> data.Dataset:
    if not (MNIST_10K / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"the shared MNIST subset is not on this machine (looked for {MNIST_10K})")
    return load_dataset("mnist", MNIST_10K)


def _gunzip_idx(name: str, offset: int) -> np.ndarray:
    with gzip.open(MNIST_10K / f"{name}.gz", "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=offset)


def test_mnist_10k_matches_an_independent_read(mnist10k: data.Dataset) -> None:
    ds = mnist10k
    assert (ds.n_train, ds.n_test, ds.num_classes, ds.input_shape) == (8000, 2000, 10, (1, 28, 28))
    assert ds.x_train.shape == (8000, 1, 28, 28) and ds.x_test.shape == (2000, 1, 28, 28)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    x_train = _gunzip_idx("train-images-idx3-ubyte", 16).reshape(8000, 28, 28)
    y_train = _gunzip_idx("train-labels-idx1-ubyte", 8)
    x_test = _gunzip_idx("t10k-images-idx3-ubyte", 16).reshape(2000, 28, 28)
    y_test = _gunzip_idx("t10k-labels-idx1-ubyte", 8)
    assert torch.equal(ds.x_train[:, 0], torch.from_numpy(x_train.copy()).float() / 255)
    assert torch.equal(ds.x_test[:, 0], torch.from_numpy(x_test.copy()).float() / 255)
    assert torch.equal(ds.y_train, torch.from_numpy(y_train.astype(np.int64)))
    assert torch.equal(ds.y_test, torch.from_numpy(y_test.astype(np.int64)))
    # A few values written down from the files (first train labels, one row of the first image).
    assert ds.y_train[:10].tolist() == [3, 8, 1, 0, 4, 0, 9, 3, 4, 9]
    assert (ds.x_train[0, 0, 14, 10:14] * 255).round().tolist() == [0, 132, 224, 85]
    assert ds.y_train.min() == 0 and ds.y_train.max() == 9
    assert torch.bincount(ds.y_train).tolist() == [784, 882, 805, 828, 789, 679, 811, 882, 755, 785]
    assert float(ds.x_train.min()) == 0.0 and float(ds.x_train.max()) == 1.0
    assert str(MNIST_10K) in ds.source and "t10k-labels-idx1-ubyte.gz" in ds.source


def test_mnist_10k_found_from_parent_dir_and_env(
    mnist10k: data.Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    from_parent = load_dataset("mnist", MNIST_10K.parent)
    assert torch.equal(from_parent.y_test, mnist10k.y_test)
    monkeypatch.setenv("GRADLENS_DATA", str(MNIST_10K))
    from_env = load_dataset("mnist")
    assert torch.equal(from_env.x_test, mnist10k.x_test)


# ---------------------------------------------------------------------------------------------------------
# dataset identity: the same four file names never make MNIST serve as Fashion-MNIST


def test_mnist_files_are_refused_as_fashion_mnist(tmp_path: Path) -> None:
    if not (MNIST_10K / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"the shared MNIST subset is not on this machine (looked for {MNIST_10K})")
    with pytest.raises(data.DatasetIdentityError) as info:  # what `--data-dir .../mnist-10k` did for van-fig1
        load_dataset("fashion_mnist", MNIST_10K)
    message = str(info.value)
    assert "\n" not in message and isinstance(info.value, ValueError)
    assert message.startswith(f"fashion_mnist: refused {MNIST_10K}: its images are not Fashion-MNIST's")
    assert "train: digits, 100.0% of images fit a 20×20 box" in message and "look like MNIST digits" in message
    assert f"put Fashion-MNIST files in {MNIST_10K / 'fashion_mnist'}" in message and "--data-dir" in message
    # Renaming the folder does not help: the content check still sees digits.
    renamed = tmp_path / "fashion_mnist"
    renamed.mkdir()
    for name in MNIST_FILES:
        (renamed / f"{name}.gz").write_bytes((MNIST_10K / f"{name}.gz").read_bytes())
    with pytest.raises(data.DatasetIdentityError, match=rf"refused {renamed}: its images are not Fashion-MNIST"):
        load_dataset("fashion_mnist", tmp_path)
    # The same files are MNIST, identified by folder name and content (they are not the official files).
    ds = load_dataset("mnist", MNIST_10K)
    assert ds.identity.startswith("folder name 'mnist-10k' and content (train: digits, 100.0% of images")
    assert ds.identity.endswith("not the official files") and "[identified by folder name" in ds.source


def test_content_statistic_on_real_mnist_and_a_clothing_stand_in() -> None:
    if not (MNIST_10K / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"the shared MNIST subset is not on this machine (looked for {MNIST_10K})")
    for name, n in (("train-images-idx3-ubyte", 8000), ("t10k-images-idx3-ubyte", 2000)):
        images = _gunzip_idx(name, 16).reshape(n, 28, 28)
        # brute force: every digit's bounding box, one image at a time
        sides = []
        for image in images:
            rows, cols = np.nonzero(image)
            sides.append(max(rows.max() - rows.min() + 1, cols.max() - cols.min() + 1))
        assert max(sides) == 20 and min(sides) >= 18
        assert data.idx_content_kind(images) == ("digits", 1.0)
    # Synthetic stand-in for Fashion-MNIST (none is available here): longest side 28 by construction.
    clothing = fake_images(np.random.default_rng(1), 500, "clothing")
    assert data.idx_content_kind(clothing) == ("clothing", 0.0)
    assert data.idx_content_kind(np.zeros((3, 4, 6), np.uint8))[0] == "neither"


def test_folder_and_content_rules(tmp_path: Path) -> None:
    fake_mnist(tmp_path / "FashionMNIST" / "raw", kind="clothing")  # torchvision's layout
    ds = load_dataset("fashion_mnist", tmp_path)
    assert ds.identity.startswith("folder name 'raw' and content (train: clothing, 0.0% of images")
    with pytest.raises(data.DatasetIdentityError, match=r"its images are not MNIST's .*look like Fashion-MNIST"):
        load_dataset("mnist", tmp_path / "FashionMNIST" / "raw")
    unnamed = tmp_path / "data"
    fake_mnist(unnamed, kind="clothing")
    with pytest.raises(
        data.DatasetIdentityError,
        match=rf"refused {unnamed}: the files are not the official ones and the folder name does not say 'fashion'",
    ):
        load_dataset("fashion_mnist", unnamed)
    tiny = tmp_path / "tiny" / "mnist"
    fake_mnist(tiny, kind="noise")
    with pytest.raises(data.DatasetIdentityError, match=r"train: neither, nan% .*they are not 28×28 images"):
        load_dataset("mnist", tmp_path / "tiny")
    # A directory that is refused does not hide a later one that passes.
    fake_mnist(tmp_path / "both", kind="digits")
    fake_mnist(tmp_path / "both" / "fashion_mnist", kind="clothing")
    assert load_dataset("fashion_mnist", tmp_path / "both").source.startswith(
        f"Fashion-MNIST: IDX files in {tmp_path / 'both' / 'fashion_mnist'}"
    )


def test_official_checksums_identify_and_refuse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The recorded values have the right form and cover the four files of each dataset.
    for dataset, files in data.OFFICIAL_CHECKSUMS.items():
        for md5, sha in files.values():
            assert md5 is None or (len(md5) == 32 and int(md5, 16) >= 0), dataset
            assert sha is None or (len(sha) == 64 and int(sha, 16) >= 0), dataset
    for dataset in ("mnist", "fashion_mnist"):
        assert {f"{n}.gz" for n in MNIST_FILES} <= set(data.OFFICIAL_CHECKSUMS[dataset])
    assert data.OFFICIAL_CHECKSUMS["mnist"]["t10k-labels-idx1-ubyte.gz"][0] == "ec29112dd5afa0611ce80d1b7f02629c"
    assert data.OFFICIAL_CHECKSUMS["fashion_mnist"]["train-images-idx3-ubyte.gz"][0] == (
        "8d4fb7e6c68d591d4c3dfef9ec88bf0d"
    )
    # Files whose digests are the official MNIST ones are MNIST in any folder, and never Fashion-MNIST.
    folder = tmp_path / "anything"
    fake_mnist(folder, gz=(True, True, True, True))
    official = {}
    for n in MNIST_FILES:
        payload = (folder / f"{n}.gz").read_bytes()
        official[f"{n}.gz"] = (hashlib.md5(payload).hexdigest(), _sha(payload))
    monkeypatch.setitem(data.OFFICIAL_CHECKSUMS, "mnist", official)
    assert load_dataset("mnist", folder).identity == "official MNIST files (SHA-256 of all four files checked)"
    with pytest.raises(
        data.DatasetIdentityError,
        match=rf"fashion_mnist: refused {folder}: train-images-idx3-ubyte.gz is the official MNIST file",
    ):
        load_dataset("fashion_mnist", folder)


# ---------------------------------------------------------------------------------------------------------
# embedded digits


def test_digits_is_sklearn_digits_with_a_fixed_split() -> None:
    from sklearn.datasets import load_digits

    rng_state = torch.get_rng_state()
    ds = load_dataset("digits", data_dir="/nonexistent")  # data_dir is ignored
    assert torch.equal(torch.get_rng_state(), rng_state)
    assert (ds.n_train, ds.n_test, ds.num_classes, ds.input_shape) == (1437, 360, 10, (1, 8, 8))
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert "scikit-learn digits (embedded)" in ds.source
    bunch = load_digits()
    reference = torch.from_numpy(bunch.images).float() / 16
    # Train and test are a partition of the 1797 images: match every row to its source index.
    x = torch.cat([ds.x_train, ds.x_test])[:, 0].reshape(1797, 64)
    y = torch.cat([ds.y_train, ds.y_test])
    flat = reference.reshape(1797, 64)
    seen = [tuple(row.tolist()) + (int(t),) for row, t in zip(x, y, strict=True)]
    assert sorted(seen) == sorted(
        tuple(r.tolist()) + (int(t),) for r, t in zip(flat, bunch.target, strict=True)
    )
    assert ds.y_train[:10].tolist() == [6, 5, 5, 7, 9, 9, 8, 4, 6, 8]  # the fixed split, seed 0
    again = load_dataset("digits")
    assert torch.equal(again.x_train, ds.x_train) and torch.equal(again.y_test, ds.y_test)
    assert float(ds.x_train.max()) == 1.0 and float(ds.x_train.min()) == 0.0


def test_digits_float64_flatten_and_normalisation() -> None:
    plain = load_dataset("digits", dtype=torch.float64)
    flat = load_dataset("digits", dtype=torch.float64, flatten=True)
    assert flat.input_shape == (64,) and torch.equal(flat.x_train, plain.x_train.reshape(-1, 64))
    norm = load_dataset("digits", dtype=torch.float64, normalize=True)
    mean, std = plain.x_train.mean().item(), plain.x_train.std(correction=0).item()
    assert norm.mean == pytest.approx((mean,), rel=1e-12) and norm.std == pytest.approx((std,), rel=1e-12)
    assert norm.x_train.mean().item() == pytest.approx(0.0, abs=1e-12)
    assert norm.x_train.std(correction=0).item() == pytest.approx(1.0, rel=1e-12)
    torch.testing.assert_close(norm.x_test * std + mean, plain.x_test, rtol=0, atol=1e-12)
    given = load_dataset("digits", dtype=torch.float64, normalize=([0.5], [0.25]))
    torch.testing.assert_close(given.x_train, (plain.x_train - 0.5) / 0.25, rtol=0, atol=0)
    assert "normalised" in given.preprocessing and "(0.5)" in given.preprocessing
    with pytest.raises(ValueError, match="needs 1 values each"):
        load_dataset("digits", normalize=([0.5, 0.5], [1.0, 1.0]))
    with pytest.raises(ValueError, match="not a floating dtype"):
        load_dataset("digits", dtype=torch.int64)


def test_unknown_name_lists_known_names() -> None:
    with pytest.raises(ValueError, match="unknown dataset 'mnsit'; known: .*digits.*mnist"):
        load_dataset("mnsit")
    assert {"digits", "mnist", "fashion_mnist", "emnist_letters", "cifar10", "cifar100"} <= set(
        data.list_datasets()
    )


# ---------------------------------------------------------------------------------------------------------
# IDX


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


@pytest.mark.parametrize(("name", "kind"), [("mnist", "digits"), ("fashion_mnist", "clothing")])
def test_mnist_layout_from_small_files(tmp_path: Path, name: str, kind: str) -> None:
    arrays = fake_mnist(tmp_path / name, kind=kind)  # found in <root>/<name>, mixed .gz and raw files
    ds = load_dataset(name, tmp_path)
    assert ds.input_shape == (1, 28, 28) and (ds.n_train, ds.n_test) == (7, 3)
    assert torch.equal(ds.x_train[:, 0], torch.from_numpy(arrays["x_train"]).float() / 255)
    assert torch.equal(ds.x_test[:, 0], torch.from_numpy(arrays["x_test"]).float() / 255)
    assert (
        ds.y_train.tolist() == arrays["y_train"].tolist() and ds.y_test.tolist() == arrays["y_test"].tolist()
    )
    assert f"{tmp_path / name}" in ds.source and "train-images-idx3-ubyte.gz" in ds.source
    assert "t10k-images-idx3-ubyte," in ds.source  # the raw file, not a .gz


def test_emnist_letters_transposed_and_shifted(tmp_path: Path) -> None:
    arrays = fake_mnist(
        tmp_path / "gzip",
        prefix="emnist-letters-",
        test="test",
        transpose=True,
        label_offset=1,
        num_classes=26,
        kind="noise",
    )
    ds = load_dataset("emnist_letters", tmp_path)
    assert ds.num_classes == 26 and ds.input_shape == (1, 4, 6)
    assert torch.equal(ds.x_train[:, 0], torch.from_numpy(arrays["x_train"]).float() / 255)
    assert ds.x_train.is_contiguous()
    assert ds.y_train.tolist() == arrays["y_train"].tolist()  # stored 1..26, returned 0..25
    assert "transposed" in ds.source and "shifted by -1" in ds.source


def test_emnist_letters_label_zero_is_rejected(tmp_path: Path) -> None:
    fake_mnist(
        tmp_path, prefix="emnist-letters-", test="test", transpose=True, label_offset=1, num_classes=26, kind="noise"
    )
    write_idx(
        tmp_path / "emnist-letters-test-labels-idx1-ubyte", np.array([0, 5, 26], dtype=np.uint8), gz=False
    )
    with pytest.raises(
        ValueError, match=r"emnist-letters-test-labels-idx1-ubyte: test labels span 0\.\.26, expected 1\.\.26"
    ):
        load_dataset("emnist_letters", tmp_path)


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


def test_image_label_count_mismatch(tmp_path: Path) -> None:
    fake_mnist(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(2, dtype=np.uint8), gz=True)
    with pytest.raises(
        ValueError, match=r"t10k-labels-idx1-ubyte.gz: 2 labels but t10k-images-idx3-ubyte holds 3"
    ):
        load_dataset("mnist", tmp_path)


def test_missing_files_name_directories_files_and_how_to_fix(tmp_path: Path) -> None:
    fake_mnist(tmp_path / "mnist")
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError) as info:
        load_dataset("mnist", tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert f"looked in {tmp_path}, {tmp_path / 'mnist'}" in message
    assert f"{tmp_path / 'mnist'} lacks t10k-labels-idx1-ubyte" in message
    assert "train-images-idx3-ubyte, train-labels-idx1-ubyte" in message
    assert "--data-dir" in message and "$GRADLENS_DATA" in message
    with pytest.raises(FileNotFoundError, match=r"no such file"):
        read_idx(tmp_path / "nothing-here")


# ---------------------------------------------------------------------------------------------------------
# CIFAR


def cifar_pickle(
    data_array: np.ndarray, labels: dict[str, list[int]], numpy_core_name: bool = False
) -> bytes:
    """A batch as the original files hold it: bytes keys, a uint8 array and int lists (protocol 2)."""
    batch = {b"batch_label": b"test", b"data": data_array, **{k.encode(): v for k, v in labels.items()}}
    raw = pickle.dumps(batch, protocol=2)
    if numpy_core_name:  # the original Python 2 files name numpy.core.multiarray
        raw = raw.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    return raw


def fake_cifar10(directory: Path) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, size=(12, 3072), dtype=np.uint8)
    y = rng.integers(0, 10, size=12)
    directory.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for i, name in enumerate(names):
        chunk = slice(2 * i, 2 * i + 2)
        (directory / name).write_bytes(
            cifar_pickle(x[chunk], {"labels": y[chunk].tolist()}, numpy_core_name=i % 2 == 0)
        )
    return x, y


def test_cifar10_pickles_read_exactly(tmp_path: Path) -> None:
    x, y = fake_cifar10(tmp_path / "cifar-10-batches-py")
    ds = load_dataset("cifar10", tmp_path)
    assert ds.x_train.shape == (10, 3, 32, 32) and ds.x_test.shape == (2, 3, 32, 32)
    assert ds.input_shape == (3, 32, 32) and ds.num_classes == 10
    expected = torch.from_numpy(x).float().reshape(12, 3, 32, 32) / 255
    assert torch.equal(ds.x_train, expected[:10]) and torch.equal(ds.x_test, expected[10:])
    # Channel layout: the first 1024 values of a row are the red 32×32 image, row-major.
    assert ds.x_train[0, 0, 1, 0] * 255 == float(x[0, 32]) and ds.x_train[0, 2, 0, 0] * 255 == float(
        x[0, 2048]
    )
    assert ds.y_train.tolist() == y[:10].tolist() and ds.y_test.tolist() == y[10:].tolist()
    assert "cifar-10-batches-py" in ds.source and "data_batch_5" in ds.source
    assert ds.identity == (
        "file names; not the official CIFAR-10 batches (MD5 differs for data_batch_1, data_batch_2, "
        "data_batch_3, data_batch_4, data_batch_5, test_batch)"
    )
    assert data.OFFICIAL_CHECKSUMS["cifar10"]["test_batch"] == ("40351d587109b95175f43aff81a1287e", None)


def test_cifar100_fine_labels_and_str_keys(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, size=(5, 3072), dtype=np.uint8)
    fine, coarse = [99, 0, 42, 7, 63], [19, 0, 3, 4, 5]
    folder = tmp_path / "cifar100" / "cifar-100-python"
    folder.mkdir(parents=True)
    (folder / "train").write_bytes(
        cifar_pickle(x[:3], {"fine_labels": fine[:3], "coarse_labels": coarse[:3]})
    )
    (folder / "test").write_bytes(
        pickle.dumps(
            {"data": x[3:], "fine_labels": fine[3:], "coarse_labels": coarse[3:]}
        )  # default protocol
    )
    ds = load_dataset("cifar100", tmp_path, flatten=True)
    assert ds.num_classes == 100 and ds.input_shape == (3072,)
    assert torch.equal(ds.x_train, torch.from_numpy(x[:3]).float() / 255)
    assert ds.y_train.tolist() == fine[:3] and ds.y_test.tolist() == fine[3:]
    assert "fine labels" in ds.source
    images, labels = read_cifar_batch(folder / "train", "coarse_labels")
    assert labels.tolist() == coarse[:3] and images.shape == (3, 3, 32, 32)


class _Evil:
    def __reduce__(self) -> tuple:
        return (os.getcwd, ())


def test_cifar_bad_files(tmp_path: Path) -> None:
    evil = tmp_path / "evil"
    evil.write_bytes(pickle.dumps({b"data": _Evil(), b"labels": []}))
    with pytest.raises(ValueError, match=r"evil: refusing to unpickle \w+\.getcwd"):
        read_cifar_batch(evil)
    good = cifar_pickle(np.zeros((2, 3072), dtype=np.uint8), {"labels": [1, 2]})
    cut = tmp_path / "data_batch_1"
    cut.write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match=r"data_batch_1: not a CIFAR python pickle batch .*truncated"):
        read_cifar_batch(cut)
    text = tmp_path / "text"
    text.write_text("hello")
    with pytest.raises(ValueError, match=r"text: not a CIFAR python pickle batch"):
        read_cifar_batch(text)
    wrong = tmp_path / "wrong"
    wrong.write_bytes(cifar_pickle(np.zeros((2, 3072), dtype=np.uint8), {"fine_labels": [1, 2]}))
    with pytest.raises(
        ValueError, match=r"wrong: expected keys 'data' and 'labels', found \['batch_label', 'data'"
    ):
        read_cifar_batch(wrong)
    shape = tmp_path / "shape"
    shape.write_bytes(cifar_pickle(np.zeros((2, 1024), dtype=np.uint8), {"labels": [1, 2]}))
    with pytest.raises(
        ValueError, match=r"shape: expected 'data' uint8 \[N, 3072\], found uint8 \[2, 1024\]"
    ):
        read_cifar_batch(shape)


def test_cifar_missing_batch(tmp_path: Path) -> None:
    fake_cifar10(tmp_path / "cifar-10-batches-py")
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match=r"cifar-10-batches-py lacks data_batch_3; .*--data-dir"):
        load_dataset("cifar10", tmp_path)


# ---------------------------------------------------------------------------------------------------------
# download (the real network is never touched: urlopen is replaced)


def _offline(*args: object, **kwargs: object) -> None:
    raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")


def test_download_offline_fails_fast_with_a_clear_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(urllib.request, "urlopen", _offline)
    start = time.perf_counter()
    with pytest.raises(ConnectionError) as info:
        load_dataset("mnist", tmp_path, download=True)
    assert time.perf_counter() - start < 2.0
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("could not download https://") and "train-images-idx3-ubyte.gz" in message
    assert "Temporary failure in name resolution" in message and "no network?" in message
    assert "--data-dir" in message
    assert not list(tmp_path.rglob("*.part"))
    with pytest.raises(ValueError, match="emnist_letters has no download source"):
        load_dataset("emnist_letters", tmp_path, download=True)


class _FakeResponse(io.BytesIO):
    def __enter__(self) -> _FakeResponse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _serve(files: dict[str, bytes]) -> Callable[..., _FakeResponse]:
    def urlopen(url: str, timeout: float | None = None) -> _FakeResponse:
        return _FakeResponse(files[url])

    return urlopen


def _sha(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def test_download_checks_sha256_and_then_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "served"
    arrays = fake_mnist(source, gz=(True, True, True, True))
    files = {f"https://example.invalid/{n}.gz": (source / f"{n}.gz").read_bytes() for n in MNIST_FILES}
    remote = tuple(download.Remote(url, _sha(payload)) for url, payload in files.items())
    spec = mnist_family.IDX_SPECS["mnist"]
    monkeypatch.setitem(
        mnist_family.IDX_SPECS, "mnist", mnist_family.IdxSpec(spec.title, spec.files, 10, spec.subdirs, remote=remote)
    )
    monkeypatch.setattr(urllib.request, "urlopen", _serve(files))
    root = tmp_path / "root"
    ds = load_dataset("mnist", root, download=True)
    assert torch.equal(ds.x_test[:, 0], torch.from_numpy(arrays["x_test"]).float() / 255)
    assert f"{root / 'mnist'}" in ds.source
    assert sorted(p.name for p in (root / "mnist").iterdir()) == sorted(f"{n}.gz" for n in MNIST_FILES)
    # A corrupted transfer is refused and leaves nothing behind.
    bad = download.Remote("https://example.invalid/train-images-idx3-ubyte.gz", "0" * 64)
    with pytest.raises(
        ValueError, match=r"SHA-256 mismatch: expected 0{64}, got [0-9a-f]{64}; the download was"
    ):
        download.fetch(bad, tmp_path / "x" / "file.gz")
    assert not (tmp_path / "x" / "file.gz").exists() and not list((tmp_path / "x").iterdir())


def test_cifar_download_extracts_the_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = fake_cifar10(tmp_path / "build" / "cifar-10-batches-py")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(tmp_path / "build" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    url = "https://example.invalid/cifar-10-python.tar.gz"
    spec = cifar.CIFAR_SPECS["cifar10"]
    monkeypatch.setitem(
        cifar.CIFAR_SPECS,
        "cifar10",
        cifar.CifarSpec(
            spec.title,
            spec.folder,
            spec.train,
            spec.test,
            spec.label_key,
            10,
            download.Remote(url, _sha(buffer.getvalue())),
        ),
    )
    monkeypatch.setattr(urllib.request, "urlopen", _serve({url: buffer.getvalue()}))
    ds = load_dataset("cifar10", tmp_path / "root", download=True)
    assert ds.y_test.tolist() == y[10:].tolist()
    assert torch.equal(ds.x_train.reshape(10, -1), torch.from_numpy(x[:10]).float() / 255)
    assert f"{tmp_path / 'root' / 'cifar10' / 'cifar-10-batches-py'}" in ds.source


# ---------------------------------------------------------------------------------------------------------
# subset and loader


def test_subset_draws_real_rows_with_a_local_generator(tmp_path: Path) -> None:
    fake_mnist(tmp_path / "mnist")
    full = load_dataset("mnist", tmp_path)
    rng_state = torch.get_rng_state()
    sub = full.subset(4, 2, seed=3)
    assert torch.equal(torch.get_rng_state(), rng_state)
    assert (sub.n_train, sub.n_test) == (4, 2)
    rows = {tuple(r.flatten().tolist()): int(t) for r, t in zip(full.x_train, full.y_train, strict=True)}
    picked = [tuple(r.flatten().tolist()) for r in sub.x_train]
    assert len(set(picked)) == 4 and all(rows[p] == int(t) for p, t in zip(picked, sub.y_train, strict=True))
    assert torch.equal(full.subset(4, 2, seed=3).x_train, sub.x_train)
    assert "random subset 4/2 of 7/3 (seed 3)" in sub.preprocessing and sub.source == full.source
    assert full.subset(7).n_test == 3
    with pytest.raises(ValueError, match=r"n_train=8 is out of range: mnist has 7, pass 1\.\.7"):
        full.subset(8)


def test_loader_is_deterministic_covers_every_sample_and_keeps_the_last_batch() -> None:
    x = torch.arange(23, dtype=torch.float64).reshape(23, 1) * 10
    y = torch.arange(23)
    rng_state = torch.get_rng_state()
    loader = make_loader(x, y, batch_size=5, shuffle=True, seed=7)
    epochs = [list(loader) for _ in range(3)]
    assert torch.equal(torch.get_rng_state(), rng_state)
    assert len(loader) == 5
    for batches in epochs:
        assert [len(b[1]) for b in batches] == [5, 5, 5, 5, 3]
        seen = torch.cat([b[1] for b in batches])
        assert sorted(seen.tolist()) == list(range(23))
        assert all(torch.equal(bx[:, 0], by.double() * 10) for bx, by in batches)
    orders = [torch.cat([b[1] for b in batches]) for batches in epochs]
    assert not torch.equal(orders[0], orders[1])
    replay = make_loader(x, y, batch_size=5, shuffle=True, seed=7)
    replay.set_epoch(2)
    assert torch.equal(torch.cat([b[1] for b in replay]), orders[2])
    assert torch.equal(replay.order(0), orders[0])
    assert not torch.equal(make_loader(x, y, 5, seed=8).order(0), orders[0])
    in_order = make_loader(x, y, batch_size=10, shuffle=False)
    assert [b[1].tolist() for b in in_order] == [list(range(10)), list(range(10, 20)), [20, 21, 22]]
    dropped = make_loader(x, y, batch_size=10, shuffle=False, drop_last=True)
    assert len(dropped) == 2 and [len(b[1]) for b in dropped] == [10, 10]


def test_loader_bad_arguments() -> None:
    x, y = torch.zeros(4, 2), torch.zeros(3)
    with pytest.raises(ValueError, match="x has 4 samples but y has 3"):
        make_loader(x, y, 2)
    with pytest.raises(ValueError, match="batch_size=0 must be a positive integer"):
        make_loader(x, torch.zeros(4), 0)
    with pytest.raises(ValueError, match=r"drop_last=True with batch_size=5 > 4 samples"):
        make_loader(x, torch.zeros(4), 5, drop_last=True)


def test_downsample_averages_non_overlapping_windows(tmp_path: Path) -> None:
    written = fake_mnist(tmp_path / "mnist")
    full = load_dataset("mnist", tmp_path)
    small = full.downsample(2)
    # explicit 2×2 window means of the written 28×28 images, pixels / 255
    expected = written["x_train"].astype(np.float64).reshape(7, 14, 2, 14, 2).mean(axis=(2, 4)) / 255
    np.testing.assert_allclose(small.x_train[:, 0].numpy(), expected, rtol=1e-6)
    assert small.input_shape == (1, 14, 14) and small.x_test.shape == (3, 1, 14, 14)
    assert torch.equal(small.y_train, full.y_train) and small.source == full.source
    assert small.preprocessing.endswith("; 2×2 average-pooled to 14×14")
    assert full.downsample(1) is full
    with pytest.raises(ValueError, match=r"downsample factor=29 is invalid; pass an integer 1\.\.28"):
        full.downsample(29)
    with pytest.raises(ValueError, match=r"input shape \(784,\); load it without flatten"):
        load_dataset("mnist", tmp_path, flatten=True).downsample(2)


def test_refused_fashion_mnist_leaves_a_not_run_marker_with_the_reason(tmp_path: Path) -> None:
    """What `gradlens figures --data-dir .../mnist-10k` now does for van-fig1's Fashion-MNIST panel."""
    if not (MNIST_10K / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"the shared MNIST subset is not on this machine (looked for {MNIST_10K})")
    from analyses.optional_data import is_not_run, load_or_mark, not_run_reason
    from gradlens.results import load_result

    params = {"dataset": "fashion_mnist", "n_train": 100, "n_test": 50, "optional_data": True}
    path = tmp_path / "run.h5"
    assert load_or_mark(params, path, str(MNIST_10K)) is None
    marker = load_result(path)
    assert is_not_run(marker)
    assert not_run_reason(marker).startswith(f"fashion_mnist was refused (fashion_mnist: refused {MNIST_10K}: its")
    with pytest.raises(data.DatasetIdentityError):
        load_or_mark({**params, "optional_data": False}, tmp_path / "other.h5", str(MNIST_10K))
