"""Dataset identity: the same four file names never make MNIST serve as Fashion-MNIST (official checksums,
folder names, and the content check)."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest
from datafiles import (
    MNIST_10K,
    MNIST_FILES,
    fake_images,
    fake_mnist,
    gunzip_idx,
    idx_bytes,
    need_mnist_10k,
    sha256,
    write_idx,
)

from gradlens import data
from gradlens.data import identity, load_dataset


def test_mnist_files_are_refused_as_fashion_mnist(tmp_path: Path) -> None:
    need_mnist_10k()
    with pytest.raises(data.DatasetIdentityError) as info:  # what `--data-dir .../mnist-10k` did for van-fig1
        load_dataset("fashion_mnist", MNIST_10K)
    message = str(info.value)
    assert "\n" not in message and isinstance(info.value, ValueError)
    assert message.startswith(f"fashion_mnist: refused {MNIST_10K}: its images are not Fashion-MNIST's")
    assert "train: digits, 100.0% of images fit a 20×20 box" in message and "look like MNIST digits" in message
    assert f"put Fashion-MNIST files in {MNIST_10K / 'fashion_mnist'}" in message and "--data-dir" in message
    assert message.endswith("or install Debian's package dataset-fashion-mnist (apt-get install dataset-fashion-mnist)")
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
    need_mnist_10k()
    for name, n in (("train-images-idx3-ubyte", 8000), ("t10k-images-idx3-ubyte", 2000)):
        images = gunzip_idx(MNIST_10K, name, 16).reshape(n, 28, 28)
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
        official[f"{n}.gz"] = (hashlib.md5(payload).hexdigest(), sha256(payload))
    monkeypatch.setitem(data.OFFICIAL_CHECKSUMS, "mnist", official)
    assert load_dataset("mnist", folder).identity == "official MNIST files (SHA-256 of all four files checked)"
    with pytest.raises(
        data.DatasetIdentityError,
        match=rf"fashion_mnist: refused {folder}: train-images-idx3-ubyte.gz is the official MNIST file",
    ):
        load_dataset("fashion_mnist", folder)




def _official_payloads(folder: Path) -> dict[str, tuple[str | None, str | None]]:
    """Checksum entries ``{raw name: (MD5, SHA-256)}`` of the decompressed files in ``folder`` (all ``.gz``)."""
    entries = {}
    for n in MNIST_FILES:
        payload = gzip.decompress((folder / f"{n}.gz").read_bytes())
        entries[n] = (hashlib.md5(payload).hexdigest(), sha256(payload))
    return entries


def test_payload_digests_identify_a_recompressed_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As Debian's dataset-fashion-mnist: the .gz files differ from the distributed ones, their contents do not."""
    release = tmp_path / "release"
    fake_mnist(release, gz=(True, True, True, True))
    distributed = {f"{n}.gz": (None, sha256((release / f"{n}.gz").read_bytes())) for n in MNIST_FILES}
    monkeypatch.setitem(data.OFFICIAL_CHECKSUMS, "mnist", distributed | _official_payloads(release))
    copy = tmp_path / "anything"  # a folder name that says nothing
    copy.mkdir()
    for n in MNIST_FILES:
        payload = gzip.decompress((release / f"{n}.gz").read_bytes())
        (copy / f"{n}.gz").write_bytes(gzip.compress(payload, compresslevel=1, mtime=1))  # recompressed
        assert (copy / f"{n}.gz").read_bytes() != (release / f"{n}.gz").read_bytes()
    ds = load_dataset("mnist", copy)
    assert ds.identity == (
        "official MNIST images and labels (SHA-256 of all four decompressed IDX payloads checked; "
        "the files as stored differ from the distributed ones, e.g. recompressed)"
    )
    with pytest.raises(
        data.DatasetIdentityError,
        match=rf"fashion_mnist: refused {copy}: train-images-idx3-ubyte.gz holds the official MNIST "
        r"train-images-idx3-ubyte \(SHA-256 of its decompressed payload\), not Fashion-MNIST",
    ):
        load_dataset("fashion_mnist", copy)
    # Decompressed files are the payloads themselves.
    raw = tmp_path / "raw"
    raw.mkdir()
    for n in MNIST_FILES:
        (raw / n).write_bytes(gzip.decompress((release / f"{n}.gz").read_bytes()))
    assert load_dataset("mnist", raw).identity == "official MNIST files (SHA-256 of all four files checked)"


def test_the_release_size_with_other_content_is_refused_but_a_subset_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy as large as the original release (here 7 train / 3 test images) that holds other content is
    damaged or altered; a smaller set (a subset, like the shared mnist-10k) goes by folder name and content."""
    release = tmp_path / "release"
    written = fake_mnist(release, gz=(True, True, True, True))
    monkeypatch.setitem(data.OFFICIAL_CHECKSUMS, "mnist", _official_payloads(release))
    monkeypatch.setitem(identity.RELEASE_SIZES, "mnist", (7, 3))
    altered = tmp_path / "altered" / "mnist"
    fake_mnist(altered, gz=(True, True, True, True))
    images = written["x_test"].copy()
    images[1, 5, 5] ^= 0xFF
    write_idx(altered / "t10k-images-idx3-ubyte", images, gz=True)
    with pytest.raises(data.DatasetIdentityError) as info:
        load_dataset("mnist", altered)
    message = str(info.value)
    assert "\n" not in message
    changed = sha256(idx_bytes(images))
    assert message.startswith(
        f"mnist: refused {altered}: t10k-images-idx3-ubyte.gz holds 3 images like the original MNIST release but "
        f"not its content (SHA-256 of the decompressed payload {changed[:16]}…, the original's "
        f"{data.OFFICIAL_CHECKSUMS['mnist']['t10k-images-idx3-ubyte'][1][:16]}…): a damaged or altered copy; "
        "restore the original file"
    )
    subset = tmp_path / "subset" / "mnist"
    fake_mnist(subset, gz=(True, True, True, True))
    write_idx(subset / "t10k-images-idx3-ubyte", images[:2], gz=True)
    write_idx(subset / "t10k-labels-idx1-ubyte", written["y_test"][:2], gz=True)
    assert load_dataset("mnist", subset).identity.startswith("folder name 'mnist' and content (train: digits")
