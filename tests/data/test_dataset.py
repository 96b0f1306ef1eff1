"""The Dataset and load_dataset's tensor preparation: embedded digits, normalisation, subsets, downsampling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from datafiles import fake_mnist

from gradlens import data
from gradlens.data import load_dataset


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


