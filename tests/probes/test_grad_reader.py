"""The one-call C++ reader of gradient addresses (gradlens.probes.grad_reader): its checks, its cache, its fallback,
and GradStats' records with and without it."""

from __future__ import annotations

import array
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest
import torch
from torch import nn
from torch.testing._internal.two_tensor import TwoTensor

from gradlens.loader import load
from gradlens.probes import GradStats, grad_kernel, grad_reader
from gradlens.session import attach


@pytest.fixture(scope="module")
def reader():
    # a hang guard, not a timing: another process's build (nice 10) may hold the lock for long on a busy machine
    function = grad_reader.wait_until_built(timeout=1800)
    assert function is not None, "the C++ reader did not build here (needs a C++ compiler and Python's headers)"
    return function


def _call(function, parameters, numels, dtypes):
    out = array.array("q", [0] * len(numels))
    numels, dtypes = array.array("q", numels), array.array("q", dtypes)
    found = function(parameters, len(numels), numels.buffer_info()[0], dtypes.buffer_info()[0], out.buffer_info()[0])
    return found, list(out)


class ToDouble(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.double()


def _trained_mlp() -> nn.Module:
    """A float32 layer, then a float64 one; gradients from one backward."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), ToDouble(), nn.Linear(5, 3, dtype=torch.float64))
    model(torch.randn(4, 6)).sum().backward()
    return model


def test_the_reader_returns_every_gradients_address(reader):
    parameters = list(_trained_mlp().parameters())
    codes = [grad_kernel.DTYPES[p.dtype] for p in parameters]
    found, addresses = _call(reader, parameters, [p.numel() for p in parameters], codes)
    assert found == len(parameters)
    assert addresses == [p.grad.data_ptr() for p in parameters]


def test_the_reader_names_the_first_gradient_that_does_not_fit(reader):
    """A missing gradient, another dtype, a non-contiguous layout, another size, a tensor subclass with its own
    dispatch (a DTensor is one), a lazily negated view (its memory holds -g): the index of the first such
    parameter, never its address."""
    numels, codes = [3, 4], [0, 0]
    first = torch.zeros(3, requires_grad=True)
    first.grad = torch.ones(3)

    def second(grad):
        parameter = torch.zeros(2, 2, requires_grad=True)
        parameter.grad_dtype = None  # let a gradient of another dtype be assigned
        parameter.grad = grad
        return parameter

    assert _call(reader, [first, second(torch.ones(2, 2))], numels, codes)[0] == 2
    misfits = {
        "missing": torch.zeros(2, 2, requires_grad=True),
        "dtype": second(torch.ones(2, 2, dtype=torch.float64)),
        "layout": second(torch.ones(2, 2).t()),
        "subclass": second(TwoTensor(torch.ones(2, 2), torch.ones(2, 2))),
        "negative view": second(torch._neg_view(torch.ones(2, 2))),
    }
    for what, parameter in misfits.items():
        assert _call(reader, [first, parameter], numels, codes)[0] == 1, what
    assert _call(reader, [first, second(torch.ones(2, 2))], [3, 5], codes)[0] == 1  # size
    assert _call(reader, [first], numels, codes)[0] == -1  # a list of another length
    assert _call(reader, (first, first), numels, codes)[0] == -1  # not a list


def test_the_reader_takes_a_parameter_the_plan_holds_no_gradient_for(reader):
    """dtype code -1: the plan expects no gradient there (an unused layer); address 0, and a gradient that appears
    there is a misfit (the plan is rebuilt)."""
    first = torch.zeros(3, requires_grad=True)
    first.grad = torch.ones(3)
    unused = torch.zeros(2, 2, requires_grad=True)
    assert _call(reader, [first, unused], [3, 0], [0, -1]) == (2, [first.grad.data_ptr(), 0])
    unused.grad = torch.ones(2, 2)
    assert _call(reader, [first, unused], [3, 0], [0, -1])[0] == 1


QUANTITIES = ("mean", "mean_abs", "norm", "max_abs", "nonfinite")


def _run(path, model, steps=4, **probe):
    """Train ``model`` ``steps`` SGD steps with GradStats; (the recorded arrays per quantity, the float64 norms of
    every ``p.grad`` at each step, taken in the loop)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    generator = torch.Generator().manual_seed(1)
    x, y = torch.randn(16, 6, generator=generator), torch.randint(0, 3, (16,), generator=generator)
    norms = []
    with attach(model, optimizer, path, probes=[GradStats(**probe)]):
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x).float(), y).backward()
            norms.append([float(p.grad.double().norm()) for p in model.parameters()])
            optimizer.step()
    names = QUANTITIES + (("hist", "hist_below", "hist_above") if probe else ())
    run = load(path)
    return {name: run.array("grad_stats", name)[1] for name in names}, norms


@pytest.mark.parametrize("probe", [{}, {"bins": 8}], ids=["stats", "stats+hist"])
def test_gradstats_records_the_same_values_with_and_without_the_reader(reader, tmp_path, monkeypatch, probe):
    """After the first firing (which builds the plan from ``p.grad``) the reader gives every address; the records
    are bit-identical to the Python route's and the norms equal float64 ones taken in the loop."""
    calls = []
    original = grad_kernel.Plan.pointers
    monkeypatch.setattr(grad_kernel.Plan, "pointers", lambda self, grads: calls.append(1) or original(self, grads))
    with_reader, norms = _run(tmp_path / "reader.h5", _trained_mlp(), **probe)
    assert len(calls) == 1  # the plan's first firing only; the three later ones were read in C++
    monkeypatch.setattr(grad_reader, "_function", None)
    without, _ = _run(tmp_path / "python.h5", _trained_mlp(), **probe)
    assert len(calls) == 1 + 4
    for quantity, values in with_reader.items():
        assert values.tobytes() == without[quantity].tobytes(), quantity
    # GradStats stores its float64-accumulated statistics as float32 (schema 3): relative 6e-8
    np.testing.assert_allclose(with_reader["norm"], norms, rtol=1e-7)


def test_a_cached_reader_is_loaded_without_compiling(reader, monkeypatch):
    monkeypatch.setattr(grad_reader, "_function", None)
    monkeypatch.setattr(grad_reader, "_thread", None)
    monkeypatch.setattr(grad_reader, "_compile", lambda compiler, target: pytest.fail("compiled again"))
    grad_reader.start(wait=True)
    assert grad_reader.loaded() is not None


def test_a_reader_that_cannot_be_built_leaves_the_python_route(tmp_path, monkeypatch):
    monkeypatch.setattr(grad_reader, "_function", None)
    monkeypatch.setattr(grad_reader, "_thread", None)
    monkeypatch.setenv("GRADLENS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CXX", "/bin/false")
    grad_reader.start(wait=True)
    assert grad_reader.loaded() is None
    assert not any(name.endswith(".so") for name in os.listdir(tmp_path / "cache"))
    records, norms = _run(tmp_path / "run.h5", _trained_mlp())  # exact values through p.grad
    # GradStats stores its float64-accumulated statistics as float32 (schema 3): relative 6e-8
    np.testing.assert_allclose(records["norm"], norms, rtol=1e-7)


def test_one_build_at_a_time_other_processes_keep_the_python_route(tmp_path, monkeypatch):
    """A process that finds another's build lock starts no compiler; a lock older than BUILD_LOCK_SECONDS (a killed
    build's) is taken over, and the build script removes it when it ends."""
    monkeypatch.setenv("GRADLENS_CACHE", str(tmp_path / "cache"))
    compiler = grad_reader._compiler()
    if compiler is None:
        pytest.skip("no C++ compiler here")
    target = grad_reader._target(compiler)
    lock = target + ".building"
    with open(lock, "w"):
        pass  # another process is building
    built = []
    monkeypatch.setattr(grad_reader, "_compile", lambda compiler, target: built.append(target) or False)
    for _ in range(2):
        monkeypatch.setattr(grad_reader, "_function", None)
        monkeypatch.setattr(grad_reader, "_thread", None)
        grad_reader.start(wait=True)
        assert grad_reader.loaded() is None
    assert built == [] and os.path.exists(lock)
    stale = time.time() - grad_reader.BUILD_LOCK_SECONDS - 60
    os.utime(lock, (stale, stale))
    monkeypatch.setattr(grad_reader, "_thread", None)
    grad_reader.start(wait=True)
    assert built == [target] and os.path.getmtime(lock) > stale  # taken over: a fresh lock, one build
    assert "rm -f \"$LOCK\"" in grad_reader._BUILD_SCRIPT


def test_a_caller_that_needs_the_reader_waits_for_another_process_build(tmp_path, monkeypatch):
    monkeypatch.setattr(grad_reader, "_function", None)
    monkeypatch.setattr(grad_reader, "_thread", None)
    monkeypatch.setenv("GRADLENS_CACHE", str(tmp_path / "cache"))
    target = grad_reader._target(grad_reader._compiler() or pytest.skip("no C++ compiler here"))
    lock = target + ".building"
    open(lock, "w").close()  # another process is building

    def other_build_ends(seconds):  # while this process waits, the other build renames its library in, unlocks
        open(target, "w").close()
        os.remove(lock)

    monkeypatch.setattr(grad_reader, "_compile", lambda compiler, target: pytest.fail("a second build was started"))
    monkeypatch.setattr(grad_reader, "_load", lambda path: "reader" if path == target else None)
    monkeypatch.setattr(grad_reader.time, "sleep", other_build_ends)
    assert grad_reader.wait_until_built(timeout=60) == "reader"


def test_a_failed_build_leaves_no_lock(tmp_path, monkeypatch):
    monkeypatch.setattr(grad_reader, "_function", None)
    monkeypatch.setattr(grad_reader, "_thread", None)
    monkeypatch.setenv("GRADLENS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CXX", "/bin/false")
    grad_reader.start(wait=True)
    assert os.listdir(tmp_path / "cache") == []  # no library, no build folder, no lock: the next process may try


def test_gradlens_kernel_0_starts_no_build(monkeypatch):
    monkeypatch.setattr(grad_reader, "_function", None)
    monkeypatch.setattr(grad_reader, "_thread", None)
    monkeypatch.setenv("GRADLENS_KERNEL", "0")
    grad_reader.start(wait=True)
    assert grad_reader._thread is None and grad_reader.loaded() is None


def test_a_lazily_negated_gradient_is_recorded_with_its_sign(reader, tmp_path):
    """``p.grad = torch._neg_view(g)`` stores g in memory with a negation flag: every route records -g's mean."""
    model = nn.Linear(3, 1, bias=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    with attach(model, optimizer, tmp_path / "run.h5", probes=[GradStats(bins=4)]):
        for _ in range(3):
            model(torch.ones(1, 3))
            model.weight.grad = torch._neg_view(torch.tensor([[1.0, 2.0, 3.0]]))
            optimizer.step()
    run = load(tmp_path / "run.h5")
    assert run.array("grad_stats", "mean")[1].tolist() == [[-2.0]] * 3
    # 4 bins over ±3 (the largest |g|): -3 and -2 in [-3, -1.5), -1 in [-1.5, 0)
    assert run.array("grad_stats", "hist")[1][:, 0].tolist() == [[2, 1, 0, 0]] * 3


def test_an_unwritable_cache_folder_falls_back_to_the_temporary_directory(tmp_path, monkeypatch):
    blocked = tmp_path / "file"
    blocked.write_text("")  # a file where the folder should be: it cannot be made
    monkeypatch.setenv("GRADLENS_CACHE", str(blocked / "gradlens"))
    assert os.path.dirname(grad_reader._target("c++")).startswith(tempfile.gettempdir())


# A stand-in for the C++ compiler: says it started, waits until the test says go, then writes the real library
# where ``-o`` says.
FAKE_COMPILER = """#!/bin/sh
touch "$STARTED"
while [ "$1" != "-o" ]; do shift; done
while [ ! -e "$GO" ]; do sleep 0.1; done
cp "$REAL_LIBRARY" "$2"
"""


def test_a_process_that_exits_during_the_build_still_leaves_the_library(reader, tmp_path):
    """The compiler and the rename run in one shell script: a short run (the build thread is a daemon) does not
    waste its build, the next process loads it.

    The compiler is a stand-in that finishes only when the test lets it (after the short run has exited), by
    copying the library the real compiler built for this session: nothing here depends on how long a compile
    takes (a real one at nice 10 took over 15 minutes on a machine at load 40)."""
    real_library = grad_reader._target(grad_reader._compiler())
    assert os.path.exists(real_library)
    compiler, cache, go, started = (tmp_path / name for name in ("fake-c++", "cache", "go", "started"))
    compiler.write_text(FAKE_COMPILER)
    compiler.chmod(0o755)
    environment = {**os.environ, "GRADLENS_CACHE": str(cache), "CXX": str(compiler), "GO": str(go),
                   "STARTED": str(started), "REAL_LIBRARY": real_library}
    # a short run: it exits once the build has started, while the build is still waiting for the go
    script = (
        "import os, time; from gradlens.probes import grad_reader; grad_reader.start()\n"
        "while not os.path.exists(os.environ['STARTED']): time.sleep(0.05)"
    )
    subprocess.run([sys.executable, "-c", script], env=environment, check=True, timeout=600)  # a hang guard
    assert not any(name.endswith(".so") for name in os.listdir(cache))  # the build was still running
    go.touch()
    deadline = time.monotonic() + 600  # a hang guard: the script copies one file once it has the go
    while not any(name.endswith(".so") for name in os.listdir(cache)) and time.monotonic() < deadline:
        time.sleep(0.1)
    # the script removes the build folder, then the build lock
    while any(n.startswith("gradlens-reader-") or n.endswith(".building") for n in os.listdir(cache)) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.1)
    libraries = [name for name in os.listdir(cache) if name.endswith(".so")]
    assert len(libraries) == 1 and len(os.listdir(cache)) == 1  # the library, and no build folder or lock left
    loaded = "from gradlens.probes import grad_reader as r; r.start(wait=True); print(r.loaded() is not None)"
    out = subprocess.run([sys.executable, "-c", loaded], env=environment, capture_output=True, text=True,
                         check=True, timeout=600).stdout
    assert out.strip() == "True"
