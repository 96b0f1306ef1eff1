"""``analyses.estimate`` against the runs it estimates: the estimate of a real run is compared with that run's
measured time on the same machine, in the same test (a generous factor, not a speed assertion)."""

from __future__ import annotations

import time

import pytest
import torch

from analyses import estimate, van_thin
from analyses.estimate import Estimator
from analyses.run_spec import RunSpec, execute_run


@pytest.mark.slow
def test_the_estimate_of_a_run_is_within_a_factor_of_two_of_its_measured_cpu_time(tmp_path):
    """One van_thin run (a thin 10-layer MLP on the 8×8 digits, 10 epochs of batch 16: 900 steps, GradStats and
    DominantFlow recorded, evaluated every epoch) is estimated, then run; both in CPU seconds of this process at
    one torch thread, so a busy machine (which stretches the wall clock) changes neither much. A first short run
    takes the process's one-time costs (imports, the probe kernel's build), which a worker pays once for all its
    runs, not per run."""
    params = {**van_thin.runs(van_thin.Config.smoke())[0], "model": "thin_mlp_plain_10", "depth": 10,
              "n_train": None, "n_test": None, "epochs": 10, "batch_size": 16, "grad_every": 8, "probe_batch": 16}
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        cost = Estimator(tmp_path / "cache", threads=1).cost(params)
        assert cost.steps == 10 * -(-1437 // 16) and cost.basis == "data"
        execute_run(RunSpec("van_thin", {**params, "epochs": 1}), str(tmp_path / "warm"), None, 1, "cpu")
        start = time.process_time()
        execute_run(RunSpec("van_thin", params), str(tmp_path / "runs"), None, 1, "cpu")
        measured = time.process_time() - start
    finally:
        torch.set_num_threads(before)
    assert 0.5 <= measured / cost.seconds <= 2.0, (measured, cost)


def test_a_step_is_timed_at_the_runs_own_batch_and_cached_under_it(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(estimate, "_time_model", lambda *a: seen.append(a[-1]) or 0.001 * a[-1])
    estimator = Estimator(tmp_path)
    for batch in (8, 128, 8):
        assert estimator.seconds_per_step({"model": "thin_mlp_plain_3", "dataset": "digits",
                                           "batch_size": batch}) == pytest.approx(0.001 * batch)
    assert seen == [8, 128]  # the second batch-8 run is read from the cache
    assert set(estimator.timings) == {"thin_mlp_plain_3|1x8x8|float32|b8", "thin_mlp_plain_3|1x8x8|float32|b128"}


def test_the_least_step_is_the_smallest_of_the_repeats_after_the_warm_up():
    times = iter([9.0, 8.0, 3.0, 1.5, 2.5] + [4.0] * 30)  # two warm-up calls, then at least three timed ones
    assert estimate._least_step(lambda: next(times)) == 1.5


def test_the_evaluation_and_the_data_loading_are_added_to_the_steps(tmp_path):
    estimator = Estimator(tmp_path, measure=False)
    params = {"model": "thin_mlp_plain_3", "dataset": "digits", "batch_size": 32, "epochs": 2, "n_test": 300}
    steps, _ = estimator.steps(params)
    assert steps == 2 * -(-1437 // 32)
    # every epoch a forward of the 300 test images, at a third of a training step per sample
    assert estimator.evaluation(params, steps) == pytest.approx(2 * 300 / (3 * steps * 32))
    estimator.timings["thin_mlp_plain_3|1x8x8|float32|b32"] = 0.004
    cost = estimator.cost(params)
    assert cost.load_seconds > 0  # the digits were read here: what each run pays once
    assert cost.seconds == pytest.approx(steps * 0.004 * (1 + cost.evaluation) + cost.load_seconds)
