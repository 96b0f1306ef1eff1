"""Where files are looked for: several data folders (a list, or os.pathsep-separated like ``$GRADLENS_DATA``),
each dataset from whichever folder holds it, the operating system's dataset folders last."""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path

import pytest
import torch
from datafiles import MNIST_FILES, fake_mnist, serve, sha256

from gradlens.data import (
    DatasetIdentityError,
    data_dirs,
    default_data_dir,
    download,
    load_dataset,
    locate,
    mnist_family,
)


def test_data_dirs_splits_lists_and_appends_the_installed_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b, system = tmp_path / "a", tmp_path / "b", tmp_path / "system"
    monkeypatch.setattr(locate, "INSTALLED_DATA_DIRS", (system,))
    assert data_dirs(a) == [a, system]
    assert data_dirs(f"{a}{os.pathsep}{b}") == [a, b, system]
    assert data_dirs([a, str(b)]) == [a, b, system]
    assert data_dirs(f"{a}{os.pathsep}{os.pathsep}{a}{os.pathsep}") == [a, system]  # empty parts and repeats dropped
    assert data_dirs("~/x")[0] == Path("~/x").expanduser()
    # Without data_dir: $GRADLENS_DATA in the same form, else the cache folder.
    monkeypatch.setenv("GRADLENS_DATA", f"{b}{os.pathsep}{a}")
    assert data_dirs(None) == [b, a, system] and default_data_dir() == b
    assert data_dirs(tmp_path / "given") == [tmp_path / "given", system]  # data_dir wins over the variable
    monkeypatch.delenv("GRADLENS_DATA")
    assert data_dirs(None) == [default_data_dir(), system]
    assert default_data_dir().parts[-2:] == ("gradlens", "data")
    with pytest.raises(ValueError, match=r"data_dir='' names no folder; pass a folder, several separated by"):
        data_dirs("")


def test_each_dataset_comes_from_the_folder_that_holds_it(tmp_path: Path) -> None:
    """One --data-dir could not name both an MNIST and a Fashion-MNIST folder; several folders can."""
    digits, clothing = tmp_path / "one" / "mnist", tmp_path / "two" / "fashion_mnist"
    written = fake_mnist(digits, kind="digits")
    fake_mnist(clothing, kind="clothing")
    both = f"{digits}{os.pathsep}{clothing}"
    mnist = load_dataset("mnist", both)
    assert mnist.source.startswith(f"MNIST: IDX files in {digits}: ")
    assert torch.equal(mnist.x_train[:, 0], torch.from_numpy(written["x_train"]).float() / 255)
    fashion = load_dataset("fashion_mnist", both)
    assert fashion.source.startswith(f"Fashion-MNIST: IDX files in {clothing}: ")
    # The MNIST folder came first and was refused as Fashion-MNIST: the dataset says so.
    assert fashion.passed_over == (
        f"{digits}: its images are not Fashion-MNIST's (train: digits, 100.0% of images fit a 20×20 box, "
        "test: digits, 100.0% of images fit a 20×20 box; they look like MNIST digits)",
    )
    assert mnist.passed_over == ()
    # The same from a list of folders, in either order: the first folder that holds a dataset wins.
    assert load_dataset("fashion_mnist", [clothing, digits]).passed_over == ()
    with pytest.raises(DatasetIdentityError, match=rf"fashion_mnist: refused {digits}: its images are not"):
        load_dataset("fashion_mnist", [digits])


def test_the_installed_folder_comes_last(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    system = tmp_path / "usr-share-datasets"
    fake_mnist(system / "fashion-mnist", kind="clothing")  # Debian's layout: /usr/share/datasets/fashion-mnist
    monkeypatch.setattr(locate, "INSTALLED_DATA_DIRS", (system,))
    empty = tmp_path / "empty"
    empty.mkdir()
    found = load_dataset("fashion_mnist", empty)
    assert found.source.startswith(f"Fashion-MNIST: IDX files in {system / 'fashion-mnist'}: ")
    mine = tmp_path / "mine" / "fashion_mnist"
    fake_mnist(mine, kind="clothing")
    assert load_dataset("fashion_mnist", mine).source.startswith(f"Fashion-MNIST: IDX files in {mine}: ")


def test_missing_everywhere_names_every_folder_and_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    system = tmp_path / "system"
    monkeypatch.setattr(locate, "INSTALLED_DATA_DIRS", (system,))
    a, b = tmp_path / "a", tmp_path / "b"
    with pytest.raises(FileNotFoundError) as info:
        load_dataset("fashion_mnist", [a, b])
    message = str(info.value)
    assert "\n" not in message
    assert f"looked in {a}, {a / 'fashion_mnist'}, {a / 'fashion-mnist'}, {a / 'FashionMNIST/raw'}, {b}," in message
    assert f"{system / 'fashion-mnist'}" in message
    assert f"put the files in {a} or pass data_dir= (CLI: --data-dir) or set $GRADLENS_DATA" in message
    assert "or install Debian's package dataset-fashion-mnist (apt-get install dataset-fashion-mnist)" in message
    with pytest.raises(FileNotFoundError) as info:
        load_dataset("mnist", [a, b])
    assert "dataset-fashion-mnist" not in str(info.value)  # no package is named where there is none


def test_download_goes_to_the_first_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "served"
    fake_mnist(source, gz=(True, True, True, True))
    files = {f"https://example.invalid/{n}.gz": (source / f"{n}.gz").read_bytes() for n in MNIST_FILES}
    spec = mnist_family.IDX_SPECS["mnist"]
    remote = tuple(download.Remote(url, sha256(payload)) for url, payload in files.items())
    monkeypatch.setitem(
        mnist_family.IDX_SPECS, "mnist", mnist_family.IdxSpec(spec.title, spec.files, 10, spec.subdirs, remote=remote)
    )
    monkeypatch.setattr(urllib.request, "urlopen", serve(files))
    first, second = tmp_path / "first", tmp_path / "second"
    ds = load_dataset("mnist", [first, second], download=True)
    assert ds.source.startswith(f"MNIST: IDX files in {first / 'mnist'}: ")
    assert not second.exists()
