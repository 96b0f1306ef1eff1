"""The Ray executor on a local two-node cluster (``ray.cluster_utils.Cluster``, 1 CPU per node, no dashboard)."""

from __future__ import annotations

import json

import pytest
from runhelpers import HERE, assert_same_values, flaky_item

from analyses.executors import RayExecutor
from analyses.runner import plan, status
from figures import cli

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow
ITEMS = ["sc-fig5", "yt-fig13"]  # sc_fcn: two training runs; phi_curve: one computed result


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    store = 80 * 1024**2
    nodes = Cluster(initialize_head=True,
                    head_node_args={"num_cpus": 1, "include_dashboard": False, "object_store_memory": store})
    nodes.add_node(num_cpus=1, object_store_memory=store)
    yield nodes
    nodes.shutdown()


@pytest.fixture(scope="module")
def executor(cluster):
    """One executor (one Ray job) for the module; each test sets ``shared``."""
    runner = RayExecutor(cluster.address, max_retries=2,
                         runtime_env={"env_vars": {"PYTHONPATH": str(HERE)}})
    yield runner
    runner.close()


def test_two_nodes_give_the_local_values_file_by_file(tmp_path, executor):
    local, remote = tmp_path / "local", tmp_path / "ray"
    cli.make_figures(ITEMS, "smoke", local, progress=False)
    executor.shared = False  # every file comes back through the object store
    outputs = cli.make_figures(ITEMS, "smoke", remote, progress=False, executor=executor)
    assert len(ray.nodes()) == 2 and all(node["Alive"] for node in ray.nodes())
    assert sorted(outputs) == sorted(ITEMS)
    names = sorted(p.relative_to(local) for p in (local / "runs").rglob("*.h5"))
    assert names == sorted(p.relative_to(remote) for p in (remote / "runs").rglob("*.h5"))
    assert len(names) == 3  # two sc_fcn runs, one phi_curve result
    compared = sum(assert_same_values(local / name, remote / name) for name in names)
    assert compared >= 3 * 6
    # a second call reuses every run: nothing is submitted, the files stay as they are
    stamps = {name: (remote / name).stat().st_mtime_ns for name in names}
    cli.make_figures(ITEMS, "smoke", remote, progress=False, executor=executor)
    assert stamps == {name: (remote / name).stat().st_mtime_ns for name in names}


def test_probe_finds_a_shared_folder(tmp_path, executor):
    executor.shared = None
    assert executor.is_shared(str(tmp_path)) is True  # both nodes are this machine
    assert not list(tmp_path.iterdir())  # the probe file is gone


def test_killed_worker_is_retried_resumes_and_the_item_is_drawn(tmp_path, executor, flaky, monkeypatch):
    markers = flaky("crash_once")
    executor.shared = True
    modules = {"test-flaky": flaky_item(), "yt-fig13": cli.figure_module("yt-fig13")}
    monkeypatch.setattr(cli, "select", lambda only: modules)
    failed: dict[str, str] = {}
    outputs = cli.make_figures(None, "smoke", tmp_path / "out", progress=False, executor=executor, failed=failed)
    assert failed == {} and sorted(outputs) == ["test-flaky", "yt-fig13"]
    (spec,) = plan("testing_analyses.flaky", "smoke")
    assert (markers / f"{spec.key}.crashed").read_text() == "6"  # the first attempt died at step 6
    second = json.loads((markers / f"{spec.key}.started-2").read_text())
    assert second == {"resume": True, "checkpoint": True}  # the retry resumed from the epoch-1 checkpoint
    assert not (markers / f"{spec.key}.started-3").exists()
    path = spec.path(tmp_path / "out" / "runs")
    assert status(path) == "finished"
    # the resumed run holds the values of a run that never died
    monkeypatch.setenv("GRADLENS_TEST_FLAKY", "clean")
    (clean,) = plan("testing_analyses.flaky", "smoke")
    cli.run_all([clean], tmp_path / "clean", progress=False)
    assert_same_values(path, clean.path(tmp_path / "clean"))


def test_a_run_that_keeps_failing_is_named_and_the_other_items_drawn(tmp_path, executor, flaky, monkeypatch):
    flaky("fail")
    executor.shared = False
    modules = {"test-flaky": flaky_item(), "yt-fig13": cli.figure_module("yt-fig13")}
    monkeypatch.setattr(cli, "select", lambda only: modules)
    failed: dict[str, str] = {}
    outputs = cli.make_figures(None, "smoke", tmp_path, progress=False, executor=executor, failed=failed)
    assert list(outputs) == ["yt-fig13"]
    (spec,) = plan("testing_analyses.flaky", "smoke")
    assert failed["test-flaky"] == (f"1 of 1 runs of testing_analyses.flaky failed: {spec.key} (model linear, "
                                    "seed 0): RuntimeError: this run always fails (test)")
    assert "yt-fig13" in (tmp_path / "summary.md").read_text()


def test_resources_default_to_one_cpu_and_are_overridable(executor):
    executor.start()
    assert ray.cluster_resources().get("GPU", 0) == 0
    assert executor.resources_for("phi_curve") == {"num_cpus": 1.0}
    executor.resources = {"*": {"num_cpus": 2.0}, "sc_fcn": {"num_cpus": 0.5, "memory": 1e8}}
    try:
        assert executor.resources_for("phi_curve") == {"num_cpus": 2.0}
        assert executor.resources_for("sc_fcn") == {"num_cpus": 0.5, "memory": 1e8}
    finally:
        executor.resources = {}

