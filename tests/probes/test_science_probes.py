"""LayerCushion, InterlayerCushion, DominantFlow, FinalGradHist: recorded values equal the metrics computed
directly, and attaching them leaves training bit-identical."""

from __future__ import annotations

import copy
import re
import warnings

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
    session = None
    # reported by attach() (Probe.validate) or at the latest when the probes are set up
    with pytest.raises((ValueError, KeyError), match="'nope'"):
        session = gradlens.attach(
            model, optimizer, tmp_path / "b.h5", probes=[DominantFlow(activations=["nope"])], probe_batch=batch
        )
        _ = session.context
    if session is not None:
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


@pytest.mark.parametrize(
    ("probe", "match"),
    [
        (DominantFlow(activations=["stem_relu", "nope"]), "'nope' in activations"),
        (DominantFlow(final="nope"), "'nope' in final"),
        (DominantFlow(feature_dims={"nope": -1}), "'nope' in feature_dims"),
        (LayerCushion(layers=["nope"]), "'nope' in layers"),
        (LayerCushion(layers=["bn"]), "no handler for layer 'bn'"),
        (InterlayerCushion(blocks=["block1", "nope"]), "'nope' in blocks"),
        (FinalGradHist(final="nope"), "'nope' in final"),
    ],
)
def test_validate_reports_configuration_mistakes(probe, match):
    model = TinyResNet()
    with pytest.raises(ValueError, match=match):
        probe.validate(model, model.gradlens_spec())
    DominantFlow().validate(model, model.gradlens_spec())  # the declared spec fits
    with pytest.raises(ValueError, match="declares none"):
        InterlayerCushion().validate(model, ModelSpec(layers=(LayerSpec("stem"),)))
    with pytest.raises(ValueError, match="declares none"):
        DominantFlow().validate(model, None)


def _brute_force_layer_cushion(model, name, x_in):
    """μ of a (residual) block conv from the explicit matrix of x ↦ shortcut(x) + A x (float64)."""
    block = model.get_submodule(name.rsplit(".", 1)[0])
    conv = block.conv

    def block_map(t):
        shortcut = block.shortcut(t) if hasattr(block, "shortcut") else 0
        return shortcut + conv(t) - conv.bias.reshape(-1, 1, 1)

    def linear_part(t):
        return conv(t) - conv.bias.reshape(-1, 1, 1)

    out = []
    for sample in x_in:
        m = torch.autograd.functional.jacobian(lambda t: block_map(t[None])[0], sample, vectorize=True)
        m = m.reshape(-1, sample.numel())
        a = torch.autograd.functional.jacobian(lambda t: linear_part(t[None])[0], sample, vectorize=True)
        a = a.reshape(m.shape)
        out.append((m @ sample.flatten()).norm() / (a.norm() * sample.norm()))
    return torch.stack(out)


def test_layer_cushion_measures_every_layer_of_a_simplified_resnet(tmp_path):
    """Issue 14.1: default layers on simplified_resnet_5 include the two channel-doubling block convolutions."""
    from gradlens.models import create_model

    torch.manual_seed(0)
    model = create_model("simplified_resnet_5", in_channels=1, image_size=8, num_classes=3).double()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    batch = (x, torch.tensor([0, 1, 2]))
    with gradlens.attach(model, optimizer, tmp_path / "run.h5", probes=[LayerCushion()], probe_batch=batch):
        nn.functional.cross_entropy(model(x), batch[1]).backward()
        optimizer.step()
    _, mu, _, labels = gradlens.load(tmp_path / "run.h5").array("layer_cushion", "mu")
    assert labels["layer"] == ["conv", "group0.0.conv", "group1.0.conv", "group2.0.conv", "fc"]
    assert np.isfinite(mu).all()
    _, inputs, _ = _captures(model, x)
    for row, name in ((2, "group1.0.conv"), (3, "group2.0.conv")):  # 16 -> 32 and 32 -> 64, stride 2
        expected = _brute_force_layer_cushion(model, name, inputs[name].detach())
        np.testing.assert_allclose(mu[0, row], expected.numpy(), rtol=1e-11)


class BNBasicBlock(nn.Module):
    def __init__(self, channels: int, residual: bool) -> None:
        super().__init__()
        self.residual = residual
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x):
        y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(x + y if self.residual else y)


class BNNet(nn.Module):
    def __init__(self, residual: bool) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 2, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(2)
        self.block = BNBasicBlock(2, residual)
        self.fc = nn.Linear(2, 3)

    def forward(self, x):
        return self.fc(self.block(torch.relu(self.bn(self.stem(x)))).mean(dim=(2, 3)))

    def gradlens_spec(self) -> ModelSpec:
        return ModelSpec(layers=(LayerSpec("stem"), LayerSpec("fc")), blocks=("block",))


def _stem_output(model, x):
    return torch.relu(model.bn(model.stem(x)))


@pytest.mark.parametrize("residual", [False, True])
def test_interlayer_cushion_probe_bn_readings_match_full_jacobian(tmp_path, residual):
    """bn_statistics='batch' and 'sample' recorded by the probe equal full-Jacobian brute force (float64)."""
    torch.manual_seed(1)
    model = BNNet(residual).double()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    x = torch.randn(3, 1, 4, 4, dtype=torch.float64)
    batch = (x, torch.tensor([0, 1, 2]))
    probes = [
        InterlayerCushion(method="exact", bn_statistics="batch", name="batch"),
        InterlayerCushion(method="exact", bn_statistics="sample", name="sample"),
        InterlayerCushion(method="exact", name="running"),
    ]
    before = copy.deepcopy(model.state_dict())
    with gradlens.attach(model, optimizer, tmp_path / "run.h5", probes=probes, probe_batch=batch):
        model.eval()  # lr 0 and eval mode: the probes see exactly `before`
        nn.functional.cross_entropy(model(x), batch[1]).backward()
        optimizer.step()
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    run = gradlens.load(tmp_path / "run.h5")
    model.train()  # brute force: BN with the statistics of its input
    n = 2 * 4 * 4
    with torch.no_grad():
        xb = _stem_output(model, x)  # batch statistics throughout
    full = torch.autograd.functional.jacobian(model.block, xb).reshape(3, n, 3 * n)
    jx = (full @ xb.flatten()).norm(dim=1)
    expected_batch = n**0.5 * jx / (full.pow(2).sum(dim=(1, 2)).sqrt() * xb.flatten(1).norm(dim=1))
    expected_sample = []
    for b in range(3):
        with torch.no_grad():
            xs = _stem_output(model, x[b : b + 1])[0]  # that sample's own statistics throughout
        jac = torch.autograd.functional.jacobian(lambda t: model.block(t[None])[0], xs).reshape(n, n)
        expected_sample.append(n**0.5 * (jac @ xs.flatten()).norm() / (jac.norm() * xs.norm()))
    model.load_state_dict(before)
    _, got_batch, _, _ = run.array("batch", "mu")
    _, got_sample, _, _ = run.array("sample", "mu")
    np.testing.assert_allclose(got_batch[0, 0], expected_batch.numpy(), rtol=1e-9)
    np.testing.assert_allclose(got_sample[0, 0], torch.stack(expected_sample).numpy(), rtol=1e-9)
    _, got_running, _, _ = run.array("running", "mu")
    if residual:
        assert (got_batch > 0.1).all() and (got_sample > 0.1).all()
    else:
        assert (got_batch < 1e-3).all() and (got_sample < 1e-3).all() and (got_running > 0.1).all()


def test_dominant_flow_on_a_transformer_uses_hidden_units_as_channels(tmp_path):
    """encoder_2 (tokens [B, T], blocks [B, T, d]): one r_i per hidden unit, feature_dim recorded as 2."""
    from gradlens.models import create_model

    torch.manual_seed(2)
    model = create_model("encoder_2", seq_len=6).double()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    x = model.example_input(3, torch.Generator().manual_seed(0))
    batch = (x, torch.tensor([0, 1, 0]))
    with gradlens.attach(model, optimizer, tmp_path / "run.h5", probes=[DominantFlow()], probe_batch=batch):
        nn.functional.cross_entropy(model(x), batch[1]).backward()
        optimizer.step()
    run = gradlens.load(tmp_path / "run.h5")
    _, dims, _, _ = run.array("dominant_flow", "feature_dim")
    _, r, _, _ = run.array("dominant_flow", "r")
    width = model.norm.normalized_shape[0]
    assert (dims[0] == 2).all() and r.shape[-1] == width != 6 and np.isfinite(r).all()


def test_ambiguous_feature_axis_is_refused_with_the_fix(tmp_path):
    """A conv map transposed to [B, L, C]: the producer's width is not on dim 1, so the probe refuses."""

    class Transposed(nn.Module):
        def forward(self, x):
            return x.transpose(1, 2)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv1d(2, 3, 3, padding=1)
            self.swap = Transposed()
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            return self.fc(self.swap(self.conv(x)).mean(dim=1))

    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    batch = (torch.randn(2, 2, 5), torch.tensor([0, 1]))
    spec = ModelSpec(layers=(LayerSpec("conv"), LayerSpec("fc")), activations=("swap",), final_activation="swap")
    session = gradlens.attach(model, optimizer, tmp_path / "a.h5", probes=[DominantFlow()], probe_batch=batch,
                              spec=spec)
    messages = []
    with warnings.catch_warnings(record=True) as caught:  # raised, or a probe failure reported by the session
        warnings.simplefilter("always")
        try:
            _ = session.context
        except ValueError as error:
            messages.append(str(error))
    messages += [str(w.message) for w in caught]
    pattern = r"'swap' of shape \(1, 5, 3\).*feature_dims=\{'swap': -1\}"
    assert any(re.search(pattern, m) for m in messages), messages
    session.close(status="failed")
    declared = ModelSpec(layers=spec.layers, activations=("swap",), final_activation="swap",
                         feature_dims={"swap": -1})
    with gradlens.attach(model, optimizer, tmp_path / "b.h5", probes=[DominantFlow()], probe_batch=batch,
                         spec=declared):
        nn.functional.cross_entropy(model(batch[0]), batch[1]).backward()
        optimizer.step()
    _, r, _, _ = gradlens.load(tmp_path / "b.h5").array("dominant_flow", "r")
    assert r.shape[-1] == 3


def test_feature_dim_rules():
    from gradlens.spec import feature_dim

    assert feature_dim("a", (2, 5)) == 1  # [B, C]: no choice
    assert feature_dim("a", (2, 7, 16), nn.Linear(4, 16)) == 2  # [B, T, H] from a Linear: hidden units
    assert feature_dim("a", (2, 7, 16), nn.LayerNorm(16)) == 2
    assert feature_dim("a", (2, 16, 7), nn.Conv1d(3, 16, 3)) == 1  # [B, C, L] from a convolution
    assert feature_dim("a", (2, 8, 4, 4), nn.BatchNorm2d(8)) == 1
    assert feature_dim("a", (2, 7, 16), None, declared=-1) == 2
    with pytest.raises(ValueError, match=r"'a' of shape \(2, 7, 16\).*produced by no known layer"):
        feature_dim("a", (2, 7, 16))
    with pytest.raises(ValueError, match=r"Linear \(width 16, which is not dim -1"):
        feature_dim("a", (2, 16, 7), nn.Linear(4, 16))  # features moved away from the last dim
    with pytest.raises(ValueError, match="not a non-batch dim"):
        feature_dim("a", (2, 7, 16), declared=0)
