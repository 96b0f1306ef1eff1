"""The real Fashion-MNIST of Debian's package ``dataset-fashion-mnist`` (its ``.gz`` files are recompressed, the
images and labels are the originals): accepted by what it holds, wherever it lies; a damaged copy is refused,
and neither dataset serves as the other."""

from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from datafiles import FASHION_PACKAGE, MNIST_10K, MNIST_FILES, need_mnist_10k

from gradlens.data import OFFICIAL_CHECKSUMS, DatasetIdentityError, load_dataset

# MD5 of the four uncompressed IDX files of the original release, as public lists give them (e.g. projects
# that check the files torchvision's FashionMNIST extracts) — an independent check of what the package holds.
PUBLISHED_PAYLOAD_MD5 = {
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}




@pytest.fixture(scope="module")
def package_payloads() -> dict[str, bytes]:
    """The decompressed files of the installed package (read here with gzip, not by the data module)."""
    if not (FASHION_PACKAGE / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(
            f"Debian's package dataset-fashion-mnist is not installed (no {FASHION_PACKAGE}); "
            "`.ci/run` installs it (apt-get install -y dataset-fashion-mnist)"
        )
    return {name: gzip.decompress((FASHION_PACKAGE / f"{name}.gz").read_bytes()) for name in MNIST_FILES}


def test_the_package_holds_the_original_release(package_payloads: dict[str, bytes]) -> None:
    for name, payload in package_payloads.items():
        assert hashlib.md5(payload).hexdigest() == PUBLISHED_PAYLOAD_MD5[name], name
        assert hashlib.sha256(payload).hexdigest() == OFFICIAL_CHECKSUMS["fashion_mnist"][name][1], name
        assert OFFICIAL_CHECKSUMS["fashion_mnist"][name][0] == PUBLISHED_PAYLOAD_MD5[name], name


def test_the_installed_copy_is_found_and_accepted(
    installed_fashion_mnist: Path, package_payloads: dict[str, bytes], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GRADLENS_DATA", str(tmp_path))  # nothing there: found in the installed folder
    ds = load_dataset("fashion_mnist")
    assert ds.source.startswith(f"Fashion-MNIST: IDX files in {installed_fashion_mnist}: train-images-idx3-ubyte.gz")
    distributed = {
        name: hashlib.md5((installed_fashion_mnist / f"{name}.gz").read_bytes()).hexdigest()
        == OFFICIAL_CHECKSUMS["fashion_mnist"][f"{name}.gz"][0]
        for name in MNIST_FILES
    }
    if all(distributed.values()):  # a package that ships the distributed .gz files themselves
        assert ds.identity == "official Fashion-MNIST files (SHA-256 of all four files checked)"
    else:  # the package as it is today: recompressed
        assert ds.identity == (
            "official Fashion-MNIST images and labels (SHA-256 of all four decompressed IDX payloads checked; "
            "the files as stored differ from the distributed ones, e.g. recompressed)"
        )
    assert (ds.n_train, ds.n_test, ds.num_classes, ds.input_shape) == (60000, 10000, 10, (1, 28, 28))
    # first labels: 9 ankle boot, 0 T-shirt/top, 3 dress, 2 pullover, 7 sneaker, 5 sandal, 1 trouser, 6 shirt, 4 coat
    assert ds.y_train[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]
    assert ds.y_test[:10].tolist() == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]
    assert torch.bincount(ds.y_train).tolist() == [6000] * 10 and torch.bincount(ds.y_test).tolist() == [1000] * 10
    first = np.frombuffer(package_payloads["train-images-idx3-ubyte"], np.uint8, 784, offset=16).reshape(28, 28)
    assert torch.equal(ds.x_train[0, 0], torch.from_numpy(first.copy()).float() / 255)
    assert ds.passed_over == ()


def test_a_copy_in_any_folder_is_accepted_by_its_payload(package_payloads: dict[str, bytes], tmp_path: Path) -> None:
    """Copied anywhere, recompressed again or decompressed: the payloads identify it, not the folder's name."""
    anywhere = tmp_path / "downloads"
    anywhere.mkdir()
    for i, (name, payload) in enumerate(package_payloads.items()):
        if i % 2:
            (anywhere / name).write_bytes(payload)
        else:
            (anywhere / f"{name}.gz").write_bytes(gzip.compress(payload, compresslevel=1))
    ds = load_dataset("fashion_mnist", anywhere)
    assert ds.source.startswith(f"Fashion-MNIST: IDX files in {anywhere}: ")
    assert ds.identity.startswith("official Fashion-MNIST images and labels (SHA-256 of all four decompressed")
    assert (ds.n_train, ds.n_test) == (60000, 10000)


def test_neither_dataset_serves_as_the_other(installed_fashion_mnist: Path) -> None:
    need_mnist_10k()
    # MNIST asked for as Fashion-MNIST: refused, and the installed Fashion-MNIST is taken instead, which the
    # dataset records.
    ds = load_dataset("fashion_mnist", MNIST_10K)
    assert ds.source.startswith(f"Fashion-MNIST: IDX files in {installed_fashion_mnist}: ")
    (passed,) = ds.passed_over
    assert passed.startswith(f"{MNIST_10K}: its images are not Fashion-MNIST's (train: digits, 100.0%")
    # The real Fashion-MNIST asked for as MNIST: refused outright by its payload digests, whatever the folder.
    with pytest.raises(
        DatasetIdentityError,
        match=rf"mnist: refused {installed_fashion_mnist}: train-images-idx3-ubyte.gz holds the official "
        r"Fashion-MNIST train-images-idx3-ubyte \(SHA-256 of its decompressed payload\), not MNIST",
    ):
        load_dataset("mnist", installed_fashion_mnist)


def _copy_with(folder: Path, source: Path, name: str, payload: bytes) -> Path:
    """``folder`` holding links to the package's files, except ``name``.gz, written with ``payload``."""
    folder.mkdir(parents=True)
    for other in MNIST_FILES:
        if other != name:
            os.symlink(source / f"{other}.gz", folder / f"{other}.gz")
    (folder / f"{name}.gz").write_bytes(payload)
    return folder


def test_a_truncated_or_altered_copy_is_refused(package_payloads: dict[str, bytes], tmp_path: Path) -> None:
    """(The installed folder stays hidden here: with it, a refused copy would be passed over for it.)"""
    images = package_payloads["train-images-idx3-ubyte"]
    # cut in the middle of the gzip stream
    packed = (FASHION_PACKAGE / "train-images-idx3-ubyte.gz").read_bytes()
    cut = _copy_with(tmp_path / "cut" / "fashion-mnist", FASHION_PACKAGE, "train-images-idx3-ubyte",
                     packed[: len(packed) // 2])
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.gz: broken gzip stream .*truncated or corrupt"):
        load_dataset("fashion_mnist", cut)
    # whole gzip stream, but the IDX data stops one image short of what its header promises
    short = _copy_with(tmp_path / "short" / "fashion-mnist", FASHION_PACKAGE, "train-images-idx3-ubyte",
                       gzip.compress(images[:-784], compresslevel=1))
    with pytest.raises(ValueError, match=r"truncated: header promises 60000×28×28 unsigned byte values"):
        load_dataset("fashion_mnist", short)
    # one pixel changed, in a folder that names the dataset and with content that looks like clothing: the full
    # release's size with other content is a damaged or altered copy, not a subset
    altered = bytearray(images)
    altered[16 + 14 * 28 + 14] ^= 0xFF
    changed = _copy_with(tmp_path / "altered" / "fashion-mnist", FASHION_PACKAGE, "train-images-idx3-ubyte",
                         gzip.compress(bytes(altered), compresslevel=1))
    with pytest.raises(DatasetIdentityError) as info:
        load_dataset("fashion_mnist", changed)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(
        f"fashion_mnist: refused {changed}: train-images-idx3-ubyte.gz holds 60000 images like the original "
        "Fashion-MNIST release but not its content (SHA-256 of the decompressed payload "
    )
    assert "a damaged or altered copy; restore the original file" in message
    # labels too
    labels = bytearray(package_payloads["train-labels-idx1-ubyte"])
    labels[8] = (labels[8] + 1) % 10
    relabelled = _copy_with(tmp_path / "relabelled" / "fashion-mnist", FASHION_PACKAGE,
                            "train-labels-idx1-ubyte", gzip.compress(bytes(labels), compresslevel=1))
    with pytest.raises(DatasetIdentityError, match=r"train-labels-idx1-ubyte.gz holds 60000 labels like the"):
        load_dataset("fashion_mnist", relabelled)
