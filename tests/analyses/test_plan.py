"""``gradlens figures --plan``: the runs each item needs, to do and to reuse, and their estimated cost."""

from __future__ import annotations

import json
import re

import pytest
import torch
from torch import nn

from analyses import estimate
from analyses.estimate import Estimator
from analyses.runner import plan
from figures import cli


def rows(lines: list[str]) -> dict[tuple[str, str], list[str]]:
    """(item, analysis) -> the row's columns runs, reuse, resume, do, steps, CPU time, CUDA time (each time is two
    words, "1.2 s")."""
    out = {}
    for line in lines:
        parts = line.split()
        if len(parts) >= 8 and parts[2].isdigit():
            out[parts[0], parts[1]] = parts[2:]
    return out


def test_paper_plan_lists_the_documents_run_counts(tmp_path):
    lines = cli.plan_lines(["yt", "van"], "paper", tmp_path, measure=False)
    table = rows(lines)
    # document 004, Figure 9: "10 randomly initialized networks ... for each network type": 3 kinds × 3 depths
    assert table["yt-tab1", "simplified_training"][:4] == ["90", "0", "0", "90"]
    # Figure 2: "training 13 plain networks and 13 residual networks" of depth 20 "for 1200 epochs": runs of their
    # own, not the Table-1 runs (which yt-tab1 & co. keep seeing alone)
    assert table["yt-fig2", "simplified_curves"][0] == "26"
    assert table["yt-fig2", "simplified_curves"][4] == f"{26 * 1200 * 391:,}"
    assert table["yt-tab2", "equivalence"][0] == "6"  # Table 2: one equivalent pair per depth 20/32/44
    # Figure 3: the four simplified nets of depths 20 and 32 are Table-1 runs; the fully-fledged pair is its own
    assert table["yt-fig3", "simplified_noise"][0] == "4"
    assert table["yt-tab-icushion", "noise_stability"][0] == "2"
    # document 002: "10 independent training sessions" × 6 architectures × depths 1..30, MNIST and Fashion-MNIST
    assert table["van-fig1", "van_thin"][0] == "1800" and table["van-fig1", "van_thin_fashion"][0] == "1800"
    # "five independent training sessions" × 4 architectures × (8 CIFAR-10 + 4 CIFAR-100 depths)
    assert table["van-fig2", "van_preact"][0] == "240"
    # steps: 200 epochs × ⌈50 000 / 128⌉ for every simplified run (CIFAR-10's nominal size: no data here)
    assert table["yt-tab1", "simplified_training"][4] == f"{90 * 200 * 391:,}"
    assert any(line.startswith("distinct runs: ") for line in lines)
    assert not list(tmp_path.rglob("*.h5"))  # nothing ran


def test_plan_measures_reuses_and_caches(tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["--plan", "--scale", "smoke", "--only", "sc-fig5", "yt-fig13", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    table = rows(printed.splitlines())
    assert table["sc-fig5", "sc_fcn"][:4] == ["2", "0", "0", "2"]
    steps = 1 * -(-512 // 32)  # one epoch of 512 digits in batches of 32, per run
    assert table["sc-fig5", "sc_fcn"][4] == str(2 * steps)
    assert re.fullmatch(r"\d+\.\d s \d+\.\d s", " ".join(table["sc-fig5", "sc_fcn"][5:]))  # CPU and CUDA
    assert table["yt-fig13", "phi_curve"][4:] == ["0", "0.0", "s", "0.0", "s"]  # a computed result: no steps
    assert "on one CUDA GPU (modelled: kernels × 10 µs + FLOPs / 15 TFLOP/s, not measured)" in printed
    assert not list(out.rglob("*.h5"))
    timings = json.loads((out / "runs" / "timings.json").read_text())
    assert set(timings) == {Estimator(None).kind, "counts"}  # no GPU here: CUDA is modelled from the counts
    assert len(timings[Estimator(None).kind]) == len(timings["counts"]) == 2  # the two models of sc_fcn
    cli.make_figures(["sc-fig5"], "smoke", out, progress=False)
    table = rows(cli.plan_lines(["sc-fig5"], "smoke", out, measure=False))
    assert table["sc-fig5", "sc_fcn"][:4] == ["2", "2", "0", "0"]  # both runs now reused
    assert len(plan("sc_fcn", "smoke")) == 2


def test_fig2_adds_no_run_to_the_table_1_runs_below_paper_scale(tmp_path):
    for scale in ("smoke", "quick"):
        lines = cli.plan_lines(["yt-tab1", "yt-fig2"], scale, tmp_path, measure=False)
        training = plan("simplified_training", scale)
        assert rows(lines)["yt-fig2", "simplified_curves"][0] == "4"  # 2 seeds × plain/residual at one depth
        assert {s.key for s in plan("simplified_curves", scale)} < {s.key for s in training}
        (total,) = [line for line in lines if line.startswith("distinct runs: ")]
        assert total.startswith(f"distinct runs: {len(training)} ")


def small_mlp(*args, **kwargs) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32, bias=False), nn.ReLU(), nn.Linear(32, 10, bias=False))


def test_cuda_step_model_counts_the_steps_flops_and_kernels(monkeypatch):
    monkeypatch.setattr(estimate, "_build", small_mlp)
    kernels, flops = estimate._count_model("mlp", {"dataset": "digits"}, (1, 8, 8), 10, "float32")
    # per sample, 2·in·out per product: forward 64·32 and 32·10; backward both weight gradients and the input
    # gradient of the second layer only (the images need no gradient)
    assert flops == 2 * (64 * 32 + 32 * 10) + 2 * (64 * 32 + 32 * 10) + 2 * 32 * 10
    # at least 2 forward products, relu, log-softmax, nll, their 3 backward products and backward ops, the update
    assert 10 <= kernels <= 40


def test_cuda_estimate_is_kernels_times_tau_plus_flops_over_rate_until_measured(tmp_path, monkeypatch):
    params = {"model": "thin_mlp_plain_3", "dataset": "digits", "batch_size": 128, "epochs": 2}
    estimator = Estimator(tmp_path)
    assert estimator.cuda_kind is None and estimator.cuda_basis == estimate.MODELLED
    seconds = estimator.cuda_seconds_per_step(params)
    ((key, (kernels, per_sample)),) = estimator.counts.items()
    assert key == "thin_mlp_plain_3|1x8x8|float32"
    assert seconds == kernels * estimate.GPU_SECONDS_PER_KERNEL + 128 * per_sample / estimate.GPU_FLOPS
    cost = estimator.cost(params)
    assert cost.steps == 2 * -(-1437 // 128)
    assert cost.cuda_seconds == pytest.approx(cost.steps * seconds * (1 + cost.evaluation) + cost.load_seconds)
    # cached: a second estimator measures nothing and gives the same number
    monkeypatch.setattr(estimate, "_count_model", lambda *a: pytest.fail("counted again"))
    assert Estimator(tmp_path).cuda_seconds_per_step(params) == seconds


def test_on_a_machine_with_a_gpu_the_cuda_step_is_measured_there(tmp_path, monkeypatch):
    monkeypatch.setattr(estimate, "cuda_kind", lambda: "cuda Fake GPU")
    monkeypatch.setattr(estimate, "_time_model_cuda", lambda *a: 1e-5 * a[-1])  # a[-1]: the run's batch
    estimator = Estimator(tmp_path)
    assert estimator.cuda_basis == "measured on Fake GPU"
    params = {"model": "thin_mlp_plain_3", "dataset": "digits", "batch_size": 100}
    assert estimator.cuda_seconds_per_step(params) == pytest.approx(100 * 1e-5)
    assert json.loads((tmp_path / "timings.json").read_text())["cuda Fake GPU"] == {
        "thin_mlp_plain_3|1x8x8|float32|b100": pytest.approx(1e-3)}


def test_the_cpu_is_timed_with_the_threads_each_worker_will_have(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(estimate, "_time_model", lambda *a: seen.append(torch.get_num_threads()) or 0.001)
    before = torch.get_num_threads()
    estimator = Estimator(tmp_path, threads=1)
    assert estimator.kind.endswith("(1 threads)")
    estimator.seconds_per_step({"model": "thin_mlp_plain_3", "dataset": "digits", "batch_size": 8})
    assert seen == [1] and torch.get_num_threads() == before
