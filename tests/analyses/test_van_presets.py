"""The VAN document's quick and medium presets on Fashion-MNIST (issue 24.4/24.5): what each trains on, stated.

The thin nets' Fashion-MNIST half runs at every scale; at medium it trains on the document's data (the whole
60 000 / 10 000 set) with η·steps equal to the document's (η = 0.001 × 50 epochs × 469 steps = 23.45). The
pre-activation sweep (the document's CIFAR-10/100) trains on Fashion-MNIST at quick and medium: the MNIST stand-in
let the plain net reach the data's ceiling at every depth (98.05 → 98.00 % from 10 to 26 layers at medium), so
it could not show what VAN is for.
"""

from __future__ import annotations

import math

import pytest

from analyses import van_preact, van_thin
from analyses.runner import plan

DOCUMENT_ETA_STEPS = 0.001 * 50 * math.ceil(60000 / 128)  # document 002, 4.1: η = 0.001, 50 epochs, batch 128


def params(analysis: str, scale: str) -> list[dict]:
    return [spec.params for spec in plan(analysis, scale)]


def one(values: list[dict], key: str) -> object:
    """The one value of ``key`` over ``values`` (a list as a tuple)."""
    (value,) = {tuple(p[key]) if isinstance(p[key], list) else p[key] for p in values}
    return value


def test_thin_fashion_medium_trains_on_the_documents_data_with_its_eta_times_steps():
    medium = params("van_thin_fashion", "medium")
    assert one(medium, "dataset") == "fashion_mnist"
    assert one(medium, "n_train") is None and one(medium, "n_test") is None  # the whole 60 000 / 10 000 set
    steps = one(medium, "epochs") * math.ceil(60000 / one(medium, "batch_size"))
    assert one(medium, "lr") * steps == pytest.approx(DOCUMENT_ETA_STEPS)
    assert {p["depth"] for p in medium} == set(van_thin.Config.quick().depths)
    assert {p["variant"] for p in medium} == set(van_thin.VARIANTS)


@pytest.mark.parametrize("analysis", ["van_thin_fashion", "van_preact"])
def test_fashion_runs_below_paper_scale_run_only_when_the_data_is_there(analysis):
    """Fashion-MNIST is not shipped with the repository: without it, these runs leave not-run markers."""
    for scale in ("quick", "medium"):
        assert one(params(analysis, scale), "optional_data") is True
    assert one(params("van_thin_fashion", "smoke"), "optional_data") is True
    assert not any(p.get("optional_data") for p in params(analysis, "paper"))


@pytest.mark.parametrize("scale", ["quick", "medium"])
def test_preact_sweep_trains_on_fashion_mnist_standing_in_for_cifar(scale):
    runs = params("van_preact", scale)
    assert one(runs, "dataset") == "fashion_mnist"
    # 8 000 / 2 000 images as the MNIST subset before: only the task changed, not the budget
    assert one(runs, "n_train") == 8000 and one(runs, "n_test") == 2000 and one(runs, "downsample") == 2
    assert "fashion_mnist" in van_preact.__doc__ and "stands in" in van_preact.__doc__


def test_preact_smoke_needs_no_files():
    assert one(params("van_preact", "smoke"), "dataset") == "digits"
