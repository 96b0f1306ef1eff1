"""The MNIST family (MNIST, Fashion-MNIST, EMNIST): the shared MNIST subset read exactly, small files in
every layout, and the errors that name the file and the fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from datafiles import MNIST_10K, fake_mnist, gunzip_idx, need_mnist_10k, write_idx

from gradlens.data import Dataset, load_dataset, read_idx


@pytest.fixture(scope="module")
def mnist10k() -> Dataset:
    need_mnist_10k()
    return load_dataset("mnist", MNIST_10K)


def test_mnist_10k_matches_an_independent_read(mnist10k: Dataset) -> None:
    ds = mnist10k
    assert (ds.n_train, ds.n_test, ds.num_classes, ds.input_shape) == (8000, 2000, 10, (1, 28, 28))
    assert ds.x_train.shape == (8000, 1, 28, 28) and ds.x_test.shape == (2000, 1, 28, 28)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    x_train = gunzip_idx(MNIST_10K, "train-images-idx3-ubyte", 16).reshape(8000, 28, 28)
    y_train = gunzip_idx(MNIST_10K, "train-labels-idx1-ubyte", 8)
    x_test = gunzip_idx(MNIST_10K, "t10k-images-idx3-ubyte", 16).reshape(2000, 28, 28)
    y_test = gunzip_idx(MNIST_10K, "t10k-labels-idx1-ubyte", 8)
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
    mnist10k: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    from_parent = load_dataset("mnist", MNIST_10K.parent)
    assert torch.equal(from_parent.y_test, mnist10k.y_test)
    monkeypatch.setenv("GRADLENS_DATA", str(MNIST_10K))
    from_env = load_dataset("mnist")
    assert torch.equal(from_env.x_test, mnist10k.x_test)


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

