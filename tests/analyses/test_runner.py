"""Runs are keyed by their configuration, reused when finished, redone with force."""

from __future__ import annotations

from analyses.runner import RunSpec, ensure_runs, plan, status


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
