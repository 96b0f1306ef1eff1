"""Names under wrappers and ``torch.compile`` (issue 11.9).

Labels carry no wrapper prefixes (``_orig_mod.``, ``module.``, ``_fsdp_wrapped_module.``,
``_checkpoint_wrapped_module.``), so runs of one network line up whether or not it was compiled or wrapped.
Attaching to the model and compiling it afterwards trains and records: the same labels as an uncompiled run,
and values equal to it within float32 rounding (rel 1e-5; inductor may fuse and reorder the float32 sums).
The inductor test compiles for real (a C++ compiler is needed; about 40 s on a shared CPU core, so it is
marked slow); the ``aot_eager`` backend traces the same forward and backward graphs without code generation
(about 20 s, most of it importing and starting dynamo).
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from torch import nn

import gradlens
from gradlens.naming import module_table, parameter_labels, strip_wrappers
from gradlens.probes import ActivationStats, GradStats, UpdateRatio

STEPS = 3


def test_strip_wrappers():
    assert strip_wrappers("_orig_mod.encoder.0.weight") == "encoder.0.weight"
    assert strip_wrappers("module.encoder.0.weight") == "encoder.0.weight"
    assert strip_wrappers("module._orig_mod.fc.bias") == "fc.bias"
    assert strip_wrappers("layers.0._fsdp_wrapped_module.attn.weight") == "layers.0.attn.weight"
    assert strip_wrappers("layers.1._checkpoint_wrapped_module.mlp.fc") == "layers.1.mlp.fc"
    assert strip_wrappers("block._orig_mod.weight") == "block.weight"  # a compiled submodule
    assert strip_wrappers("encoder.module.weight") == "encoder.module.weight"  # a user's own "module"
    assert strip_wrappers("module") == "" and strip_wrappers("") == ""


def test_data_parallel_labels_match_the_bare_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    wrapped = nn.DataParallel(model)  # on CPU it just calls the module, but its names gain "module."
    assert list(parameter_labels(wrapped).values()) == ["0.weight", "0.bias", "1.weight", "1.bias"]
    assert module_table(wrapped)["1"] is model[1] and module_table(wrapped)["module.1"] is model[1]


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 16)
        self.norm = nn.LayerNorm(16)
        self.fc2 = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.norm(self.fc1(x))))


def _train(path, compile_with: str | None, attach_to_compiled: bool = False):
    torch.manual_seed(0)
    model = Net()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    probes = [GradStats(), GradStats(params="weights", name="layer_stats"), UpdateRatio()]
    data = torch.Generator().manual_seed(1)
    if attach_to_compiled:
        run_model = torch.compile(model, backend=compile_with)
        session = gradlens.attach(run_model, optimizer, path, probes=probes)
    else:
        session = gradlens.attach(model, optimizer, path, probes=probes)  # attach first ...
        run_model = model if compile_with is None else torch.compile(model, backend=compile_with)  # ... compile
    for _ in range(STEPS):
        x, y = torch.randn(8, 6, generator=data), torch.randint(0, 3, (8,), generator=data)
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(run_model(x), y)
        loss.backward()
        optimizer.step()
        session.log(loss=loss.item())
    session.close()
    return model, gradlens.load(path)


def _same_records(compiled, eager, rel: float) -> None:
    assert list(compiled.layers["name"]) == list(eager.layers["name"]) == ["fc1", "fc2"]
    for probe in ("grad_stats", "layer_stats", "update_ratio"):
        for quantity in eager.quantities(probe):
            steps_c, values_c, _, labels_c = compiled.array(probe, quantity)
            steps_e, values_e, _, labels_e = eager.array(probe, quantity)
            assert labels_c == labels_e, (probe, quantity)
            np.testing.assert_array_equal(steps_c, steps_e)
            np.testing.assert_allclose(values_c, values_e, rtol=rel, atol=1e-7, err_msg=f"{probe}/{quantity}")
    assert compiled.array("grad_stats", "norm")[3]["layer"] == [
        "fc1.weight",
        "fc1.bias",
        "norm.weight",
        "norm.bias",
        "fc2.weight",
        "fc2.bias",
    ]
    np.testing.assert_allclose(compiled.scalars().value, eager.scalars().value, rtol=rel)


@pytest.mark.parametrize("attach_to_compiled", [False, True], ids=["attach_then_compile", "attach_compiled"])
def test_compiled_aot_eager_lines_up_with_eager(tmp_path, attach_to_compiled):
    _, eager = _train(tmp_path / "eager.h5", None)
    _, compiled = _train(tmp_path / "compiled.h5", "aot_eager", attach_to_compiled)
    _same_records(compiled, eager, rel=1e-5)
    assert compiled.meta["model"]["class"] == "Net"


@pytest.mark.slow  # about 40 s on a shared CPU core: code generation and a C++ build
@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("gcc") is None, reason="inductor needs a C++ compiler")
def test_attach_then_compile_with_inductor(tmp_path):
    _, eager = _train(tmp_path / "eager.h5", None)
    _, compiled = _train(tmp_path / "compiled.h5", "inductor")
    _same_records(compiled, eager, rel=1e-5)


def test_checkpoint_wrapped_blocks_record_under_the_bare_names(tmp_path):
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

    def run(wrap: bool, path):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
        if wrap:  # activation checkpointing: the block's names gain "_checkpoint_wrapped_module."
            model[0] = checkpoint_wrapper(model[0])
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        with gradlens.attach(model, optimizer, path, probes=[GradStats(), GradStats(params="weights", name="w")]):
            model(torch.ones(3, 4)).sum().backward()
            optimizer.step()
        return gradlens.load(path)

    bare, wrapped = run(False, tmp_path / "bare.h5"), run(True, tmp_path / "wrapped.h5")
    assert list(wrapped.layers["name"]) == list(bare.layers["name"]) == ["0", "2"]
    for probe in ("grad_stats", "w"):
        steps_w, values_w, _, labels_w = wrapped.array(probe, "norm")
        _, values_b, _, labels_b = bare.array(probe, "norm")
        assert labels_w == labels_b
        np.testing.assert_array_equal(values_w, values_b)
    assert [row["name"] for row in wrapped.meta["parameters"]] == ["0.weight", "0.bias", "2.weight", "2.bias"]


class ActNet(nn.Module):
    """Activation modules (hooked by ActivationStats), unlike ``Net``'s functional ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.act = nn.Linear(6, 16), nn.ReLU()
        self.fc2, self.tanh = nn.Linear(16, 16), nn.Tanh()
        self.fc3 = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(self.tanh(self.fc2(self.act(self.fc1(x)))))


def _train_activations(path, compile_with: str | None, attach_to_compiled: bool = False):
    torch.manual_seed(0)
    model = ActNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    probes = [ActivationStats(every=3), GradStats()]
    data = torch.Generator().manual_seed(1)
    if attach_to_compiled:
        run_model = torch.compile(model, backend=compile_with)
        session = gradlens.attach(run_model, optimizer, path, probes=probes)
    else:
        session = gradlens.attach(model, optimizer, path, probes=probes)
        run_model = model if compile_with is None else torch.compile(model, backend=compile_with)
    for _ in range(8):
        x, y = torch.randn(8, 6, generator=data), torch.randint(0, 3, (8,), generator=data)
        optimizer.zero_grad()
        nn.functional.cross_entropy(run_model(x), y).backward()
        optimizer.step()
    session.close()
    return gradlens.load(path)


@pytest.mark.parametrize("hook_guards", [True, False], ids=["dynamo_loaded_at_attach", "dynamo_loaded_after"])
@pytest.mark.parametrize("attach_to_compiled", [False, True], ids=["attach_then_compile", "attach_compiled"])
def test_activation_hooks_under_compile_record_the_eager_values_without_recompiling_each_step(
    tmp_path, monkeypatch, hook_guards, attach_to_compiled
):
    """The activation hooks come and go with the schedule (every 3 steps): a compiled graph must run them at due
    steps, whether dynamo guards on module hooks (loaded before attach) or not (its default, loaded after), and
    switch between a few cached graphs instead of recompiling at each change."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    from gradlens.session.compiled import HookGuards

    eager = _train_activations(tmp_path / "eager.h5", None)
    if not hook_guards:  # as if dynamo were first imported by torch.compile after attach
        monkeypatch.setattr(HookGuards, "acquire", classmethod(lambda cls: False))
    torch._dynamo.reset()
    counters.clear()
    compiled = _train_activations(tmp_path / "compiled.h5", "aot_eager", attach_to_compiled)
    assert counters["stats"]["unique_graphs"] <= 4  # 8 steps: first (with the producers), armed, not armed
    assert compiled.events().empty
    for quantity in ("dead_fraction", "saturated_fraction", "mean", "std", "unit_axis"):
        steps_c, values_c, _, labels_c = compiled.array("activation_stats", quantity)
        steps_e, values_e, _, labels_e = eager.array("activation_stats", quantity)
        assert labels_c == labels_e == {"layer": ["act", "tanh"]}
        np.testing.assert_array_equal(steps_c, [0, 3, 6])
        np.testing.assert_array_equal(steps_c, steps_e)
        np.testing.assert_allclose(values_c, values_e, rtol=1e-5, atol=1e-7, err_msg=quantity)
