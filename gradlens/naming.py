"""Wrapper-free names: the same network has the same parameter and module names however it is wrapped.

``torch.compile`` adds ``_orig_mod.``, DDP and ``nn.DataParallel`` add ``module.``, FSDP adds
``_fsdp_wrapped_module.`` and activation checkpointing adds ``_checkpoint_wrapped_module.``. gradlens labels
parameters, layers and spec entries with :func:`strip_wrappers` applied, so runs of one network line up.

Rule: the components ``_orig_mod``, ``_fsdp_wrapped_module`` and ``_checkpoint_wrapped_module`` are dropped
wherever they appear (PyTorch reserves these names); ``module`` is dropped only at the start of the name (the
DDP/DataParallel wrapper), so a user's own submodule called ``module`` deeper in the tree keeps its name.
"""

from __future__ import annotations

from torch import nn

INTERNAL_WRAPPERS = frozenset({"_orig_mod", "_fsdp_wrapped_module", "_checkpoint_wrapped_module"})
LEADING_WRAPPERS = frozenset({"module", *INTERNAL_WRAPPERS})


def strip_wrappers(name: str) -> str:
    """``name`` without wrapper components, e.g. ``module._orig_mod.encoder.0.weight`` -> ``encoder.0.weight``.

    The wrapper's own name (``module``, ``_orig_mod``) becomes ``""``, the name of the root.
    """
    parts = name.split(".") if name else []
    start = 0
    while start < len(parts) and parts[start] in LEADING_WRAPPERS:
        start += 1
    return ".".join(p for p in parts[start:] if p not in INTERNAL_WRAPPERS)


def module_table(model: nn.Module) -> dict[str, nn.Module]:
    """Every module of ``model`` by its own dotted name and by its wrapper-free name.

    A wrapper-free name that two different modules would share (a user's module named like a wrapper) is
    left out, so a lookup never returns the wrong module; the raw names always work.
    """
    raw = dict(model.named_modules())
    stripped: dict[str, nn.Module] = {}
    clashes: set[str] = set()
    for name, module in raw.items():
        short = strip_wrappers(name)
        if short in stripped and stripped[short] is not module:
            clashes.add(short)
        stripped.setdefault(short, module)
    table = {name: module for name, module in stripped.items() if name not in clashes}
    table.update(raw)
    return table


def parameter_labels(model: nn.Module) -> dict[str, str]:
    """Raw qualified parameter name -> wrapper-free label, for each distinct parameter of ``model``.

    A shared (tied) parameter appears once, under its first name. When stripping would give two parameters
    the same label, every label keeps its raw name (unambiguous beats pretty).
    """
    raw = [name for name, _ in model.named_parameters()]
    labels = {name: strip_wrappers(name) for name in raw}
    if len(set(labels.values())) < len(labels):
        return {name: name for name in raw}
    return labels


def uncompiled(model: nn.Module) -> nn.Module:
    """The module a ``torch.compile`` wrapper (``OptimizedModule``) runs, or ``model`` itself.

    Probe-batch evaluations run this eager module: hooks added after compilation would not fire inside a
    compiled graph.
    """
    while hasattr(model, "_orig_mod") and type(model).__name__ == "OptimizedModule":
        model = model._orig_mod
    return model
