"""Runs are keyed by their configuration, reused when finished, redone with force."""

from __future__ import annotations

import pytest

from analyses.runner import RunSpec, ensure_runs, known_analyses, plan, status


def test_runs_are_keyed_reused_and_forced(tmp_path):
    (spec,) = plan("phi_curve", "smoke")
    assert spec == RunSpec("phi_curve", dict(spec.params)) and spec.key == RunSpec("phi_curve", dict(spec.params)).key
    assert RunSpec("phi_curve", {**spec.params, "points": 5}).key != spec.key
    path = ensure_runs([spec], tmp_path, progress=False)[spec]
    assert status(path) == "finished"
    stamp = path.stat().st_mtime_ns
    ensure_runs([spec], tmp_path, progress=False)
    assert path.stat().st_mtime_ns == stamp  # reused
    ensure_runs([spec], tmp_path, force=True, progress=False)
    assert path.stat().st_mtime_ns != stamp  # redone


ANALYSES = known_analyses()
# what a quick run may read: the real MNIST subset shipped beside the repository, the embedded digits, generated
# bracket sequences, or data that is optional by design (its figure says "not run" when absent)
QUICK_DATA = {"mnist", "digits", "brackets"}


@pytest.mark.parametrize("analysis", ANALYSES)
def test_every_preset_plans_distinct_runs_and_quick_needs_only_the_shipped_data(analysis):
    for scale in ("smoke", "quick", "paper"):
        specs = plan(analysis, scale)
        assert specs and len({s.key for s in specs}) == len(specs), (analysis, scale)
    for spec in plan(analysis, "quick"):
        dataset = spec.params.get("dataset")
        assert dataset is None or dataset in QUICK_DATA or spec.params.get("optional_data"), (analysis, dataset)
