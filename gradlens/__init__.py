"""gradlens: gradient-flow analysis and diagnostics for PyTorch.

Quick start::

    import gradlens
    from gradlens.probes import GradStats

    with gradlens.attach(model, optimizer, "run.h5", probes=[GradStats()]) as session:
        for x, y in loader:
            optimizer.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()          # probes fire here
            session.log(loss=loss.item())
    run = gradlens.load("run.h5")
"""

from importlib import import_module

__version__ = "0.1.0"

# Public names, imported on first use so that ``import gradlens.models`` stays light (no h5py/pandas).
_EXPORTS = {
    "LayerSpec": "gradlens.spec",
    "ModelSpec": "gradlens.spec",
    "Run": "gradlens.loader",
    "load": "gradlens.loader",
    "Session": "gradlens.session",
    "attach": "gradlens.session",
    "register_layer_type": "gradlens.layers",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'gradlens' has no attribute {name!r}")
