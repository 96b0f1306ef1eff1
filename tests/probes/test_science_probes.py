"""LayerCushion, InterlayerCushion, DominantFlow, FinalGradHist: recorded values equal the metrics computed
directly, and attaching them leaves training bit-identical."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

import gradlens
from gradlens.metrics import dominant_flow, final_grad_histogram, interlayer_cushion, layer_cushion
from gradlens.probes import DominantFlow, FinalGradHist, GradStats, InterlayerCushion, LayerCushion
from gradlens.spec import LayerSpec, ModelSpec


class Block(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(x + self.conv(x))


class TinyResNet(nn.Module):
    """conv-BN-ReLU stem, two residual blocks, dropout, pool, fc: BN and dropout test isolation."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.stem_relu = nn.ReLU()
        self.block1 = Block(4)
        self.block2 = Block(4)
        self.drop = nn.Dropout(0.2)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = self.block2(self.block1(self.stem_relu(self.bn(self.stem(x)))))
        return self.fc(self.drop(x.mean(dim=(2, 3))))

    def gradlens_spec(self) -> ModelSpec:
        return ModelSpec(
            layers=(
                LayerSpec("stem"),
                LayerSpec("block1.conv", True),
                LayerSpec("block2.conv", True),
                LayerSpec("fc"),
            ),
            activations=("stem_relu", "block1.relu", "block2.relu"),
            final_activation="block2.relu",
            blocks=("block1", "block2"),
        )


def _probes():
    return [
        GradStats(),
        LayerCushion(every=3),
        InterlayerCushion(every=[0, 5], method="exact"),
        DominantFlow(every=3),
        FinalGradHist(every=2, bins=8),
    ]


def _train(path, probes, steps=6, dtype=torch.float64):
    torch.manual_seed(0)
    model = TinyResNet().to(dtype)
    at_step_0 = None
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    data = torch.Generator().manual_seed(3)
    probe_x = torch.randn(5, 1, 8, 8, generator=data, dtype=dtype)
    probe_y = torch.randint(0, 3, (5,), generator=data)
    session = (
        gradlens.attach(model, optimizer, path, probes=probes, probe_batch=(probe_x, probe_y))
        if path
        else None
    )
    for _ in range(steps):
        x = torch.randn(6, 1, 8, 8, generator=data, dtype=dtype)
        y = torch.randint(0, 3, (6,), generator=data)
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        # what the probes see at step 0: initial weights, BN statistics after one training forward
        at_step_0 = at_step_0 or copy.deepcopy(model)
        optimizer.step()
    if session:
        session.close()
    return model, at_step_0, (probe_x, probe_y)


def test_science_probes_leave_training_bit_identical(tmp_path):
    bare, _, _ = _train(None, [], dtype=torch.float32)
    probed, _, _ = _train(tmp_path / "run.h5", _probes(), dtype=torch.float32)
    for (name, a), (_, b) in zip(bare.state_dict().items(), probed.state_dict().items(), strict=True):
        assert torch.equal(a, b), name  # weights and BN running statistics
    for param in probed.parameters():
        assert param.grad is None or torch.isfinite(param.grad).all()


def _captures(model, x):
    """Inputs/outputs of every module of an eval-mode forward, by hand (independent of the session)."""
    inputs, outputs, handles = {}, {}, []

    def keep(name):
        def hook(module, args, output):
            inputs.setdefault(name, args[0])
            outputs.setdefault(name, output)

        return hook

    for name, module in model.named_modules():
        if name:
            handles.append(module.register_forward_hook(keep(name)))
    model.eval()
    out = model(x)
    for h in handles:
        h.remove()
    return out, inputs, outputs


def test_recorded_values_equal_direct_metrics_at_step_0(tmp_path):
    _, initial, (x, y) = _train(tmp_path / "run.h5", _probes())
    run = gradlens.load(tmp_path / "run.h5")
    with torch.no_grad():
        _, inputs, outputs = _captures(initial, x)
    # layer cushion
    steps, mu, _, labels = run.array("layer_cushion", "mu")
    assert list(steps) == [0, 3] and labels["layer"] == ["stem", "block1.conv", "block2.conv", "fc"]
    for row, (name, residual) in enumerate(
        [("stem", False), ("block1.conv", True), ("block2.conv", True), ("fc", False)]
    ):
        module = dict(initial.named_modules())[name]
        expected = layer_cushion(module, inputs[name], residual)
        np.testing.assert_allclose(mu[0, row], expected.numpy(), rtol=1e-12)
    frame = run.frame("layer_cushion")
    got_min = frame[(frame.step == 0) & (frame.quantity == "min")].set_index("layer")["value"]
    assert got_min["block1.conv"] == pytest.approx(mu[0, 1].min(), rel=1e-12)
    # interlayer cushion
    steps, imu, _, _ = run.array("interlayer_cushion", "mu")
    assert list(steps) == [0, 5]
    for row, name in enumerate(["block1", "block2"]):
        expected = interlayer_cushion(dict(initial.named_modules())[name], inputs[name], "exact").mu
        np.testing.assert_allclose(imu[0, row], expected.numpy(), rtol=1e-10)
    # dominant flow and final-gradient histogram, from a graph built here
    captured = {}
    handles = [
        dict(initial.named_modules())[n].register_forward_hook(lambda m, a, o, n=n: captured.update({n: o}))
        for n in ("stem_relu", "block1.relu", "block2.relu")
    ]
    initial.eval()
    loss = nn.functional.cross_entropy(initial(x), y)
    for h in handles:
        h.remove()
    expected = dominant_flow(
        captured["block2.relu"], [captured[n] for n in ("stem_relu", "block1.relu", "block2.relu")], loss=loss
    )
    steps, sigma, _, _ = run.array("dominant_flow", "sigma")
    np.testing.assert_allclose(sigma[0], expected.sigma.detach().numpy(), rtol=1e-12)
    flags = run.frame("dominant_flow")
    assert (flags[(flags.step == 0) & (flags.quantity == "nonfinite")]["value"] == 0).all()
    _, r, _, _ = run.array("dominant_flow", "r")
    np.testing.assert_allclose(r[0, 1], expected.r[1].detach().numpy(), rtol=1e-12)
    (grad,) = torch.autograd.grad(loss, captured["block2.relu"])
    _, edges, _, _ = run.array("final_grad_hist", "edges")
    hist = final_grad_histogram(grad, torch.as_tensor(edges[0]))
    _, counts, _, _ = run.array("final_grad_hist", "counts")
    np.testing.assert_array_equal(counts[0], hist.counts.numpy())
    assert np.all(edges == edges[0])  # fixed for the run
    moments = run.frame("final_grad_hist")
    assert moments[(moments.step == 0) & (moments.quantity == "mean")]["value"].item() == pytest.approx(
        float(hist.mean)
    )


def test_probe_batch_required_and_bad_names(tmp_path):
    model = TinyResNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="probe_batch"):
        gradlens.attach(model, optimizer, tmp_path / "a.h5", probes=[LayerCushion()])
    batch = (torch.randn(2, 1, 8, 8), torch.tensor([0, 1]))
    session = gradlens.attach(
        model, optimizer, tmp_path / "b.h5", probes=[DominantFlow(activations=["nope"])], probe_batch=batch
    )
    with pytest.raises(KeyError, match="'nope' does not exist"):
        _ = session.context
    session.close(status="failed")


def test_probe_batch_follows_a_model_converted_after_attach(tmp_path):
    model = TinyResNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    batch = (torch.randn(3, 1, 8, 8), torch.tensor([0, 1, 2]))
    with gradlens.attach(model, optimizer, tmp_path / "run.h5", probes=[LayerCushion()], probe_batch=batch):
        model.double()  # what gradlens.train does for dtype="float64"
        x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
        nn.functional.cross_entropy(model(x), torch.tensor([0, 1])).backward()
        optimizer.step()
    _, mu, _, _ = gradlens.load(tmp_path / "run.h5").array("layer_cushion", "mu")
    assert np.isfinite(mu).all()


def test_dominant_flow_backpropagates_through_batchnorm(tmp_path):
    """The capture restores BN buffers without invalidating the graph that saved them (eval-mode BN)."""

    class BNBlock(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 3, padding=1)
            self.bn = nn.BatchNorm2d(4)
            self.relu = nn.ReLU()

        def forward(self, x):
            return self.relu(x + self.bn(self.conv(x)))

    class Net(TinyResNet):
        def __init__(self) -> None:
            super().__init__()
            self.block1 = BNBlock()

    torch.manual_seed(0)
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    batch = (torch.randn(3, 1, 8, 8), torch.tensor([0, 1, 2]))
    with gradlens.attach(model, optimizer, tmp_path / "run.h5", probes=[DominantFlow()], probe_batch=batch):
        nn.functional.cross_entropy(model(torch.randn(2, 1, 8, 8)), torch.tensor([0, 1])).backward()
        optimizer.step()
    _, sigma, _, _ = gradlens.load(tmp_path / "run.h5").array("dominant_flow", "sigma")
    assert np.isfinite(sigma).all()
