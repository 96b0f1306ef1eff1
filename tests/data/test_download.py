"""Downloads (the real network is never touched: ``urlopen`` is replaced): offline fails at once with the fix,
a transfer is checked by SHA-256 before it is kept, a CIFAR archive is extracted."""

from __future__ import annotations

import io
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch
from datafiles import MNIST_FILES, fake_cifar10, fake_mnist, serve, sha256

from gradlens.data import cifar, download, load_dataset, mnist_family


def test_download_offline_fails_at_once_with_a_clear_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, float | None]] = []

    def offline(url: str, timeout: float | None = None) -> None:
        calls.append((url, timeout))
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(ConnectionError) as info:
        load_dataset("mnist", tmp_path, download=True)
    # Fails at the first file, without retrying, and every request is bounded by a timeout (a dead network
    # cannot hang it): the behaviour, not a wall-clock bound that a busy machine can miss.
    assert calls == [("https://ossci-datasets.s3.amazonaws.com/mnist/train-images-idx3-ubyte.gz", 30.0)]
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("could not download https://") and "train-images-idx3-ubyte.gz" in message
    assert "Temporary failure in name resolution" in message and "no network?" in message
    assert "--data-dir" in message
    assert not list(tmp_path.rglob("*.part"))
    with pytest.raises(ValueError, match="emnist_letters has no download source"):
        load_dataset("emnist_letters", tmp_path, download=True)


def test_download_checks_sha256_and_then_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "served"
    arrays = fake_mnist(source, gz=(True, True, True, True))
    files = {f"https://example.invalid/{n}.gz": (source / f"{n}.gz").read_bytes() for n in MNIST_FILES}
    remote = tuple(download.Remote(url, sha256(payload)) for url, payload in files.items())
    spec = mnist_family.IDX_SPECS["mnist"]
    monkeypatch.setitem(
        mnist_family.IDX_SPECS, "mnist", mnist_family.IdxSpec(spec.title, spec.files, 10, spec.subdirs, remote=remote)
    )
    monkeypatch.setattr(urllib.request, "urlopen", serve(files))
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
            download.Remote(url, sha256(buffer.getvalue())),
        ),
    )
    monkeypatch.setattr(urllib.request, "urlopen", serve({url: buffer.getvalue()}))
    ds = load_dataset("cifar10", tmp_path / "root", download=True)
    assert ds.y_test.tolist() == y[10:].tolist()
    assert torch.equal(ds.x_train.reshape(10, -1), torch.from_numpy(x[:10]).float() / 255)
    assert f"{tmp_path / 'root' / 'cifar10' / 'cifar-10-batches-py'}" in ds.source

