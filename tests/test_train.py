"""gradlens.train on a device: names, placement of model and data, sums kept on the device, and the settings that
make a CUDA run repeat (issue 24.1). No GPU here: CUDA's plumbing is tested with ``torch.device("cuda", 0)``
objects (which need no GPU to exist), a patched ``torch.cuda``, and the ``meta`` device (tensors without data:
any tensor left on the CPU meets a meta one and raises, so a run on ``meta`` goes as far as its first read of
a value)."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from gradlens.data import load_dataset, make_loader
from gradlens.train import (
    CUBLAS_DETERMINISTIC,
    TrainConfig,
    cpu_model,
    data_on,
    device_name,
    evaluate,
    reproducible,
    resolve_device,
    train,
)

META_READ = ("cannot be called on meta tensors", "Cannot copy out of meta tensor")
MISMATCH = ("is not on the expected device", "Expected all tensors to be on the same device")


def small_data():
    return load_dataset("digits").subset(96, 64, seed=0)


def small_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))


@pytest.fixture
def two_gpus(monkeypatch):
    """torch.cuda as a machine with two GPUs would answer (nothing is run on them)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: f"Fake GPU {torch.device(device).index}")


def test_device_names_resolve_here_to_the_cpu_and_cuda_is_refused_with_what_torch_sees():
    assert resolve_device("auto") == torch.device("cpu")  # no CUDA device on this machine
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("meta")) == torch.device("meta")
    for name in ("cuda", "cuda:0"):
        with pytest.raises(ValueError, match=rf"device '{name}' is not available: torch sees no CUDA device .*"
                                             r"use --device auto or cpu"):
            resolve_device(name)
    for bad in ("gpu", "cuda:x", "CPU", "cuda:0 "):
        with pytest.raises(ValueError, match=rf"device {bad!r} is not supported; use auto, cpu, cuda or cuda:K"):
            resolve_device(bad)


def test_device_names_on_a_machine_with_two_gpus(two_gpus):
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("cuda") == torch.device("cuda", 0)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ValueError, match=r"'cuda:2' is not available: torch sees 2 CUDA devices \(cuda:0..cuda:1\)"):
        resolve_device("cuda:2")
    assert device_name("cuda:1") == "Fake GPU 1"


def test_device_name_of_the_cpu_is_its_model():
    assert device_name("cpu") == cpu_model() != ""
    with open("/proc/cpuinfo") as info:
        models = {line.split(":", 1)[1].strip() for line in info if line.startswith("model name")}
    assert cpu_model() in models


def test_train_config_refuses_an_unknown_device_and_defaults_to_where_the_model_is():
    with pytest.raises(ValueError, match="device 'gpu' is not supported"):
        TrainConfig(device="gpu")
    assert TrainConfig().device is None and TrainConfig(device="cuda:1").device == "cuda:1"


def test_data_on_moves_every_tensor_once_and_copies_nothing_already_there():
    data = small_data()
    assert data_on(data, "cpu") is data
    moved = data_on(data, torch.device("meta"))
    for name in ("x_train", "y_train", "x_test", "y_test"):
        tensor = getattr(moved, name)
        assert tensor.device.type == "meta" and tensor.shape == getattr(data, name).shape
        assert tensor.dtype == getattr(data, name).dtype
    assert (moved.source, moved.num_classes) == (data.source, data.num_classes)


def test_the_epoch_sums_on_the_device_equal_the_per_step_python_sums():
    """History's running mean = Σ loss.item()·|batch| / N in Python floats, as before the sums moved to the device."""
    data, config = small_data(), TrainConfig(epochs=2, batch_size=32, lr=0.05, seed=3, device="cpu")
    history = train(small_model(), data, config, progress=False)
    model = small_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loader = make_loader(data.x_train, data.y_train, 32, shuffle=True, seed=3)
    for epoch in range(2):
        loader.set_epoch(epoch)
        loss_sum, correct = 0.0, 0
        for xb, yb in loader:
            optimizer.zero_grad(set_to_none=True)
            out = model(xb)
            loss = nn.functional.cross_entropy(out, yb)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(yb)
            correct += int((out.argmax(1) == yb).sum())
        assert history.train_loss[epoch] == loss_sum / data.n_train
        assert history.train_acc[epoch] == correct / data.n_train
    test_loss, test_acc = evaluate(model, data.x_test, data.y_test)
    assert (history.test_loss[-1], history.test_acc[-1]) == (test_loss, test_acc)
    with torch.no_grad():
        out = model(data.x_test)
    assert test_loss == pytest.approx(float(nn.functional.cross_entropy(out, data.y_test)), rel=1e-6)
    assert test_acc == float((out.argmax(1) == data.y_test).double().mean())


def test_device_cpu_and_no_device_give_the_same_run_bit_for_bit():
    data = small_data()
    weights = []
    for device in (None, "cpu", "auto"):
        model = small_model()
        train(model, data, TrainConfig(epochs=1, batch_size=16, device=device), progress=False)
        weights.append([p.detach().clone() for p in model.parameters()])
    for other in weights[1:]:
        assert all(torch.equal(a, b) for a, b in zip(weights[0], other, strict=True))


def test_a_run_on_meta_goes_through_every_step_with_no_tensor_left_on_the_cpu():
    """Model, data, batch order and the epoch's sums all go to the device: the first error is the epoch's one read."""
    steps = []
    model = small_model().to("meta")  # device None: the run goes where the model is
    with pytest.raises(RuntimeError) as error:
        train(model, small_data(), TrainConfig(epochs=1, batch_size=16, log_every=0), progress=False,
              after_step=lambda: steps.append(1))
    assert any(text in str(error.value) for text in META_READ), error.value
    assert len(steps) == 6  # every step of the epoch ran (96 images / 16) before the epoch's read


def test_evaluate_takes_batches_to_the_models_device():
    model = small_model().to("meta")
    data = small_data()
    with pytest.raises(RuntimeError) as error:
        evaluate(model, data.x_test, data.y_test, batch_size=16)
    assert any(text in str(error.value) for text in META_READ), error.value
    assert not any(text in str(error.value) for text in MISMATCH)


def test_reproducible_holds_the_cuda_settings_for_the_block_only(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    backends = torch.backends
    def settings() -> tuple:
        return (torch.are_deterministic_algorithms_enabled(), backends.cudnn.deterministic, backends.cudnn.benchmark,
                backends.cuda.matmul.fp32_precision, backends.cudnn.conv.fp32_precision,
                backends.cudnn.rnn.fp32_precision)

    before = settings()
    with reproducible(torch.device("cuda", 0)):
        assert torch.are_deterministic_algorithms_enabled()
        assert not torch.is_deterministic_algorithms_warn_only_enabled()
        assert backends.cudnn.deterministic and not backends.cudnn.benchmark
        assert backends.cuda.matmul.fp32_precision == "ieee"
        assert backends.cudnn.conv.fp32_precision == backends.cudnn.rnn.fp32_precision == "ieee"
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == CUBLAS_DETERMINISTIC == ":4096:8"
    assert settings() == before and "CUBLAS_WORKSPACE_CONFIG" not in os.environ


def test_reproducible_restores_on_error_keeps_a_users_cublas_setting_and_leaves_the_cpu_alone(monkeypatch):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    with pytest.raises(KeyError), reproducible(torch.device("cuda", 1)):
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"
        raise KeyError("inside")
    assert not torch.are_deterministic_algorithms_enabled() and os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"
    with reproducible("cpu"):
        assert not torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.conv.fp32_precision != "ieee"
