"""The shared test over every registered model of the zoo (issue 4, "Registry").

Every name of ``list_models()`` is built and checked: forward on ``example_input(4)``, logits
``[4, num_classes]``, a finite gradient on every parameter, a valid ``gradlens_spec()`` whose layers,
activations, final activation and blocks all run in the forward pass (layers in the declared order),
float64 support, and no global-RNG use by ``example_input`` or the forward pass.
"""

import importlib
import pkgutil
import sys

import pytest
import torch
import torch.nn.functional as F

import gradlens.models
from gradlens.models import create_model, families, list_models


@pytest.fixture(autouse=True)
def one_thread():
    # Small models on a shared 2-core machine run fastest without intra-op threads.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_package_imports_every_zoo_module() -> None:
    # A module that registers families but is not imported by gradlens/models/__init__.py would leave its
    # models out of create_model and of this test. Modules without families (e.g. drawing) may stay out.
    modules = {f"gradlens.models.{m.name}" for m in pkgutil.iter_modules(gradlens.models.__path__)}
    not_imported = {m for m in modules if m not in sys.modules}
    for name in sorted(not_imported):
        importlib.import_module(name)
    unregistered = sorted({f.template for f in families() if f.builder.__module__ in not_imported})
    assert not unregistered, f"families {unregistered} are registered by modules the package does not import"
    assert list_models() and all(family.examples for family in families())


@pytest.mark.parametrize("name", list_models())
def test_registered_model(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name)
    assert isinstance(model.input_shape, tuple) and all(isinstance(s, int) for s in model.input_shape)
    assert isinstance(model.num_classes, int) and model.num_classes >= 1

    rng_state = torch.random.get_rng_state()
    x = model.example_input(4, torch.Generator().manual_seed(3))
    assert x.shape == (4, *model.input_shape)
    assert torch.equal(x, model.example_input(4, torch.Generator().manual_seed(3)))
    assert torch.equal(torch.random.get_rng_state(), rng_state), "example_input used the global RNG"

    spec = model.gradlens_spec()
    spec.validate(model)
    assert spec.layers and spec.activations and spec.final_activation is not None
    declared = {*spec.layer_names(), *spec.activations, *spec.blocks, spec.final_activation}
    fired: list[str] = []
    handles = [
        model.get_submodule(n).register_forward_hook(lambda m, i, o, n=n: fired.append(n)) for n in declared
    ]
    out = model(x)
    for handle in handles:
        handle.remove()
    assert torch.equal(torch.random.get_rng_state(), rng_state), "the forward pass used the global RNG"
    assert out.shape == (4, model.num_classes)
    assert torch.isfinite(out).all()
    not_run = sorted(declared - set(fired))
    assert not not_run, f"declared in the spec but not executed in forward: {not_run}"
    layer_order = [n for n in dict.fromkeys(fired) if n in set(spec.layer_names())]
    assert layer_order == spec.layer_names(), "spec.layers is not in forward order"

    targets = torch.arange(4) % model.num_classes
    F.cross_entropy(out, targets).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{pname} gets no gradient"
        assert torch.isfinite(p.grad).all(), f"{pname} has a non-finite gradient"

    model.double()
    out64 = model(model.example_input(2, torch.Generator().manual_seed(0)))
    assert out64.dtype == torch.float64 and out64.shape == (2, model.num_classes)


@pytest.mark.parametrize(
    ("name", "close"),
    [("resnet_v1_2O", "resnet_v1_20"), ("simplified_resnt_20", "simplified_resnet_20"), ("no_such_net", "")],
)
def test_unknown_name_lists_close_matches(name: str, close: str) -> None:
    with pytest.raises(KeyError, match=f"unknown model '{name}'") as info:
        create_model(name)
    assert close in str(info.value)


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("resnet_v1_21", "8, 14, 20, 26"),
        ("plain_v1_4", "8, 14, 20, 26"),
        ("simplified_plain_21", "5, 8, 11, 14"),
        ("simplified_resnet_3", "5, 8, 11, 14"),
        ("simplified_dominant_22", "5, 8, 11, 14"),
        ("preact_resnet_12", "10, 18, 26, 34"),
    ],
)
def test_bad_depth_names_the_valid_depths(name: str, valid: str) -> None:
    with pytest.raises(ValueError, match=f"valid: {valid}"):
        create_model(name)
