"""Every analysis trains on ``--device`` (issue 24.1): the device reaches each run and its file, is not part of the
run's key, a missing GPU is a one-line error, the Ray executor asks for a GPU only for runs that will use one, and
no analysis leaves a tensor on the CPU while its model trains elsewhere.

No GPU here: the runs below train on ``cpu`` (the same code paths), CUDA machines are faked where only torch.cuda's
answers matter, and the last test trains every analysis on ``meta`` (tensors without data: a CPU tensor meeting a
meta one raises "is not on the expected device", as it would meet a CUDA one).
"""

from __future__ import annotations

import re
import tempfile
import warnings
from pathlib import Path

import pytest
import torch

from analyses.executors import LocalExecutor, RayExecutor, make_executor
from analyses.run_spec import RunSpec, analysis_module, execute_run, known_analyses, uses_device
from analyses.runner import plan, run_all
from figures import cli
from gradlens.loader import load
from gradlens.train import cpu_model, load_checkpoint

META_READ = ("cannot be called on meta tensors", "Cannot copy out of meta tensor")
MISMATCH = ("is not on the expected device", "Expected all tensors to be on the same device")
NO_CUDA = r"device 'cuda' is not available: torch sees no CUDA device \(torch .*\); use --device auto or cpu"


def sc_fcn_run() -> RunSpec:
    return plan("sc_fcn", "smoke")[0]


def test_the_run_file_names_the_device_and_the_key_does_not_hold_it(tmp_path):
    spec = sc_fcn_run()
    assert "device" not in spec.params
    execute_run(spec, str(tmp_path), None, None, "auto")  # auto: the CPU on this machine
    meta = load(spec.path(tmp_path)).meta["config"]
    assert meta["device"] == "cpu" and meta["train"]["device"] == "cpu" and meta["device_name"] == cpu_model()
    assert RunSpec("sc_fcn", dict(spec.params)).key == spec.key  # the key is of the spec's params alone


def test_a_seed_gives_the_same_run_on_the_device_twice(tmp_path):
    spec = sc_fcn_run()
    for root in ("a", "b"):
        execute_run(spec, str(tmp_path / root), None, None, "cpu")
    first, second = (load_checkpoint(spec.path(tmp_path / r).with_suffix(".ckpt.pt")).model for r in ("a", "b"))
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_computed_results_get_no_device():
    assert not uses_device("phi_curve") and not uses_device("trivial_case") and not uses_device("schematics")
    assert uses_device("sc_fcn") and uses_device("concat_cnn_timing") and uses_device("van_thin_fashion")


def test_a_gpu_asked_for_where_there_is_none_fails_the_run_with_one_line_naming_the_fix(tmp_path):
    outcome = run_all([sc_fcn_run()], tmp_path, executor=LocalExecutor(device="cuda"), progress=False)
    (error,) = outcome.failures.values()
    assert error.startswith("ValueError: ") and "\n" not in error
    assert re.search(NO_CUDA, error), error


def test_an_unknown_device_is_refused_before_anything_runs(tmp_path, capsys):
    with pytest.raises(ValueError, match="device 'gpu' is not supported; use auto, cpu, cuda or cuda:K"):
        LocalExecutor(device="gpu")
    with pytest.raises(SystemExit) as stop:
        cli.main(["--only", "sc-fig5", "--scale", "smoke", "--device", "gpu", "--out", str(tmp_path)])
    assert stop.value.code == 2 and "device 'gpu' is not supported" in capsys.readouterr().err
    assert cli.main(["--only", "sc-fig5", "--scale", "smoke", "--device", "cuda", "--out", str(tmp_path)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("gradlens figures: error: ") and re.search(NO_CUDA, error), error
    assert not list(tmp_path.rglob("*.h5"))  # refused before any run started


def test_figures_device_reaches_the_local_executor_and_the_runs():
    args = cli.build_parser().parse_args(["--device", "cpu", "--jobs", "2"])
    executor = cli._executor(args)
    assert isinstance(executor, LocalExecutor) and (executor.device, executor.jobs) == ("cpu", 2)
    assert cli.build_parser().parse_args([]).device == "auto"
    assert make_executor("local", device="cuda:1").device == "cuda:1"


def test_ray_asks_for_a_gpu_only_for_runs_that_will_use_one():
    # the cluster's answer is cached in _gpus; set it instead of starting Ray
    cpu = RayExecutor(device="cpu")
    assert cpu.resources_for("sc_fcn") == {"num_cpus": 1.0}  # --device cpu: never a GPU, Ray not even asked
    auto = RayExecutor(device="auto")
    auto._gpus = True
    assert auto.resources_for("sc_fcn") == {"num_gpus": 1.0} and auto.device_for({"num_gpus": 1.0}) == "cuda"
    assert auto.resources_for("phi_curve") == {"num_cpus": 1.0} and auto.device_for({"num_cpus": 1.0}) == "cpu"
    auto._gpus = False
    assert auto.resources_for("sc_fcn") == {"num_cpus": 1.0}  # auto on a CPU cluster: the CPU
    cuda = RayExecutor(device="cuda")
    cuda._gpus = False
    with pytest.raises(ValueError, match="--device cuda, but the Ray cluster has no GPU; start its nodes with "
                                         "--num-gpus N, or use --device auto or cpu"):
        cuda.resources_for("sc_fcn")
    assert cuda.resources_for("phi_curve") == {"num_cpus": 1.0}  # a computed result never needs one
    cuda.resources = {"sc_fcn": {"num_gpus": 0.25}}
    cuda._gpus = True
    assert cuda.resources_for("sc_fcn") == {"num_gpus": 0.25}  # packed four to a GPU by --resources
    with pytest.raises(ValueError, match="--device cuda:1 picks a GPU, but Ray gives each task its own; use --device "
                                         "cuda"):
        RayExecutor(device="cuda:1")


def test_a_ray_task_trains_on_the_device_it_is_given(tmp_path):
    from analyses.executors import _ray_task

    spec = sc_fcn_run()
    _ray_task("sc_fcn", spec.params, str(tmp_path), None, 1, True, "token", {}, "cpu")
    assert load(spec.path(tmp_path)).meta["config"]["device"] == "cpu"


@pytest.mark.slow
@pytest.mark.parametrize("analysis", [a for a in known_analyses() if uses_device(a)])
def test_no_analysis_leaves_a_tensor_on_the_cpu_while_it_trains_on_the_device(analysis):
    """Each analysis's first smoke run on ``meta``: it must get as far as its first read of a value (the loss it
    logs, an evaluation, or the end of the run), meeting no CPU tensor on the way, in its own code or in a probe."""
    spec = plan(analysis, "smoke")[0]
    path = Path(tempfile.mkdtemp()) / "run.h5"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            analysis_module(spec.analysis).execute({**spec.params, "device": "meta"}, path, data_dir=None,
                                                   resume=False, progress=False)
            error = None
        except (RuntimeError, NotImplementedError) as raised:
            error = str(raised)
    assert error is None or any(text in error for text in META_READ), error
    for message in [error or "", *(str(w.message) for w in caught)]:
        assert not any(text in message for text in MISMATCH), message


CUDA_ONLY = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here: run this on a GPU machine "
                               "(issue 24.1; benchmarks/gpu_check.sh times the figures there)")


@CUDA_ONLY
@pytest.mark.parametrize("analysis", ["sc_fcn", "van_preact"])
def test_a_seed_gives_the_same_run_on_cuda_twice(tmp_path, analysis):
    spec = plan(analysis, "smoke")[0]
    for root in ("a", "b"):
        execute_run(spec, str(tmp_path / root), None, None, "cuda")
    first, second = (load_checkpoint(spec.path(tmp_path / r).with_suffix(".ckpt.pt")).model for r in ("a", "b"))
    assert all(torch.equal(first[k], second[k]) for k in first)
    run = load(spec.path(tmp_path / "a"))
    assert run.meta["config"]["device"] == f"cuda:{torch.cuda.current_device()}"
    assert run.meta["config"]["device_name"] == torch.cuda.get_device_name()
    assert run.events().empty or not (run.events()["kind"] == "probe_error").any()  # every probe ran on the GPU
    execute_run(spec, str(tmp_path / "cpu"), None, None, "cpu")
    gpu, cpu = (load(spec.path(tmp_path / r)).scalars() for r in ("a", "cpu"))
    losses = [frame.loc[frame["name"] == "epoch_train_loss", "value"].to_numpy() for frame in (gpu, cpu)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-2)  # float32 on both: other kernels, nearly the same run
