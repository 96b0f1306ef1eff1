"""The local executor goes on past failed runs, retries a dead worker's run, and resumes it from its checkpoint."""

from __future__ import annotations

import json

import pytest
from runhelpers import assert_same_values, flaky_item

from analyses.executors import LocalExecutor, make_executor, parse_resources
from analyses.runner import RunsFailed, ensure_runs, plan, run_all, status
from figures import cli


def test_a_failing_run_is_named_and_the_other_items_are_drawn(tmp_path, flaky, monkeypatch):
    flaky("fail")
    items = {"test-flaky": flaky_item(), "yt-fig13": cli.figure_module("yt-fig13")}
    monkeypatch.setattr(cli, "select", lambda only: items)
    failed: dict[str, str] = {}
    outputs = cli.make_figures(None, "smoke", tmp_path, progress=False, failed=failed)
    (spec,) = plan("testing_analyses.flaky", "smoke")
    error = (f"1 of 1 runs of testing_analyses.flaky failed: {spec.key} (model linear, seed 0): "
             "RuntimeError: this run always fails (test)")
    assert list(outputs) == ["yt-fig13"] and failed == {"test-flaky": error}
    assert "yt-fig13" in (tmp_path / "summary.md").read_text()
    with pytest.raises(RunsFailed, match="1 of 2 runs failed: testing_analyses.flaky/.*RuntimeError"):
        ensure_runs([spec, *plan("phi_curve", "smoke")], tmp_path / "runs", progress=False)


def test_failed_items_are_in_the_summary_and_the_gallery(tmp_path, flaky, monkeypatch):
    flaky("fail")
    fake = flaky_item("yt-fig2")  # a catalogue ID, so the gallery lists it
    monkeypatch.setattr(cli, "select", lambda only: {"yt-fig2": fake, "yt-fig13": cli.figure_module("yt-fig13")})
    cli.make_figures(["yt-fig2", "yt-fig13"], "smoke", tmp_path, progress=False)
    summary = (tmp_path / "summary.md").read_text()
    assert "- **yt-fig2**: not drawn: 1 of 1 runs of testing_analyses.flaky failed:" in summary
    assert "RuntimeError: this run always fails (test)" in (tmp_path / "index.html").read_text()


@pytest.mark.slow
def test_a_dead_worker_is_retried_and_resumes_from_its_checkpoint(tmp_path, flaky, monkeypatch):
    markers = flaky("crash_once")
    (spec,) = plan("testing_analyses.flaky", "smoke")
    outcome = run_all([spec, *plan("phi_curve", "smoke")], tmp_path / "runs", executor=LocalExecutor(2),
                      progress=False)
    assert outcome.failures == {} and len(outcome.done) == 2
    assert (markers / f"{spec.key}.crashed").read_text() == "6"
    assert json.loads((markers / f"{spec.key}.started-2").read_text()) == {"resume": True, "checkpoint": True}
    assert status(spec.path(tmp_path / "runs")) == "finished"
    monkeypatch.setenv("GRADLENS_TEST_FLAKY", "clean")
    (clean,) = plan("testing_analyses.flaky", "smoke")
    run_all([clean], tmp_path / "clean", progress=False)
    assert assert_same_values(spec.path(tmp_path / "runs"), clean.path(tmp_path / "clean")) >= 10


@pytest.mark.slow
def test_a_worker_that_always_dies_is_given_up_after_its_retries(tmp_path, flaky, monkeypatch):
    flaky("crash_once")
    (spec,) = plan("testing_analyses.flaky", "smoke")
    monkeypatch.setattr("analyses.executors.execute_run", _crash_always)  # every attempt of the flaky run dies
    # two runs, so that two jobs mean a pool (one run would run in this process)
    outcome = run_all([spec, *plan("phi_curve", "smoke")], tmp_path, executor=LocalExecutor(2, max_retries=1),
                      progress=False)
    assert outcome.failures == {spec: "worker process died in each of 2 attempts"}
    assert outcome.done == plan("phi_curve", "smoke")  # retried alone: the run that shared its pool finished


def _crash_always(spec, root, data_dir, threads, device):  # pragma: no cover - runs in a worker
    import os

    if spec.analysis.startswith("testing_analyses"):
        os._exit(3)
    from analyses.runner import execute_run

    return execute_run(spec, root, data_dir, threads, device)


def test_executor_options_are_checked():
    assert isinstance(make_executor("local", jobs=3), LocalExecutor)
    with pytest.raises(ValueError, match="--address needs --executor ray"):
        make_executor("local", address="auto")
    with pytest.raises(ValueError, match="jobs=0 is invalid"):
        LocalExecutor(0)
    assert parse_resources(["num_cpus=2", "sc_fcn:num_gpus=0.5,num_cpus=1"]) == {
        "*": {"num_cpus": 2.0}, "sc_fcn": {"num_gpus": 0.5, "num_cpus": 1.0}}
    with pytest.raises(ValueError, match="unknown resource 'gpus'"):
        parse_resources(["gpus=1"])
    with pytest.raises(ValueError, match=r"write \[ANALYSIS:\]num_cpus=N"):
        parse_resources(["num_cpus=two"])


def test_ray_missing_is_one_line(monkeypatch, capsys):
    import builtins

    real = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    assert cli.main(["--only", "yt-fig13", "--scale", "smoke", "--executor", "ray"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("gradlens figures: error: --executor ray needs Ray, which is not installed: "
                   "pip install -c constraints.txt 'gradlens[ray]'")
