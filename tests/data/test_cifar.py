"""CIFAR python pickles: read exactly, fine labels, a pickle that would run code or is cut is refused."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from datafiles import cifar_pickle, fake_cifar10

from gradlens import data
from gradlens.data import load_dataset, read_cifar_batch


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

