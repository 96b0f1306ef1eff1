"""DominantFlow: the fraction σ^(ℓ) of channels with a dominant gradient flow, all layers at once.

Document 004, appendix D, eqs. 5, 6, 13; see :func:`gradlens.metrics.dominant_flow`. One forward of the probe
batch captures the intermediate activations a^(ℓ) and the final activation a^(L) in the graph; one batched
vector-Jacobian product with D_L cotangents gives Θ for every layer. The network is evaluated in eval mode by
default, so that Θ of a sample involves that sample alone (BN with running statistics).

The channel (feature) axis of every activation is explicit: declared in ``ModelSpec.feature_dims`` or the
probe's ``feature_dims``, else resolved once by :func:`gradlens.spec.feature_dim` from the module that
produced the values (the last dim of a transformer's ``[B, T, H]``: the H hidden units are the channels and
the T token positions the positions p of eq. 5). An activation whose axis cannot be told is refused at the
first step with a message naming it, its shape and the fix.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import nn

from gradlens.metrics import dominant_flow
from gradlens.probes.base import PROBE_BATCH, Probe, Quantity, Schedule
from gradlens.spec import ModelSpec, feature_dim, feature_kind


def output_tensor(output: object, name: str) -> torch.Tensor:
    """A captured module output as a tensor: itself, or the first element of a tuple/list output."""
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    if not isinstance(output, torch.Tensor):
        raise ValueError(
            f"module {name!r} returns {type(output).__name__}, not a tensor; name the submodule whose output is "
            f"the activation"
        )
    return output


def module_names(model: nn.Module) -> dict[str, nn.Module]:
    """Every module by its dotted name (and its wrapper-free name when :mod:`gradlens.naming` provides it)."""
    try:
        from gradlens.naming import module_table
    except ImportError:  # pragma: no cover - the naming module arrives with the session changes
        return dict(model.named_modules())
    return module_table(model)


def check_modules(model: nn.Module, names: Iterable[str], probe: str, argument: str) -> None:
    """Raise ``ValueError`` naming the first of ``names`` that ``model`` does not have."""
    table = module_names(model)
    for name in names:
        if name not in table:
            raise ValueError(
                f"{probe}: module {name!r} in {argument} does not exist in {type(model).__name__}; names look "
                f"like {list(table)[1:4]} (see model.named_modules())"
            )


def final_activation(ctx, name: str | None) -> str:
    """The module whose output is a^(L): ``name``, else the model's declared final activation."""
    chosen = name or ctx.spec.final_activation
    if chosen is None:
        raise ValueError("no final activation a^(L): the model declares none; pass final='module name'")
    ctx.module(chosen)
    return chosen


def declared_final(probe: str, model: nn.Module, spec: ModelSpec | None, final: str | None) -> None:
    """Attach-time check of the final activation a^(L) of ``probe``."""
    chosen = final or (spec.final_activation if spec is not None else None)
    if chosen is None:
        raise ValueError(
            f"{probe} needs the final activation a^(L) and the model declares none; pass final='module name'"
        )
    check_modules(model, [chosen], probe, "final")


class DominantFlow(Probe):
    """σ^(ℓ) per activation layer (mean over the probe batch and per sample) and the ratios r_i.

    Records ``sigma`` ``[layer]``, ``sigma_per_sample`` ``[layer, sample]``, ``r``
    ``[layer, sample, channel]`` (NaN-padded to the widest layer), ``nonfinite`` ``[layer]``: the samples whose
    σ is NaN (non-finite activations or gradients), which ``sigma`` leaves NaN rather than hiding, and
    ``feature_dim`` ``[layer]``: the channel axis used for each activation.

    Args:
        every: schedule (None: the session default).
        activations: modules whose outputs are a^(ℓ) (default: the model's declared activations).
        final: module whose output is a^(L) (default: the model's declared final activation).
        eval_mode: evaluate in eval mode (default) or in the mode training is in.
        feature_dims: module name -> channel axis of its output (overrides the spec's ``feature_dims``).
        name: HDF5 group name.
    """

    needs = frozenset({PROBE_BATCH})

    def __init__(
        self,
        every: int | Iterable[int] | Schedule | None = None,
        activations: Sequence[str] | None = None,
        final: str | None = None,
        eval_mode: bool = True,
        feature_dims: Mapping[str, int] | None = None,
        name: str = "dominant_flow",
    ) -> None:
        super().__init__(every)
        self.activations = None if activations is None else list(activations)
        self.final = final
        self.eval_mode = eval_mode
        self.feature_dims = dict(feature_dims or {})
        self.name = name
        self._layout: tuple[list[int], int] | None = None

    def validate(self, model: nn.Module, spec: ModelSpec | None) -> None:
        """Unknown activation/final module names and a missing declaration are reported at attach time."""
        names = self.activations if self.activations is not None else (spec.activations if spec else ())
        if not names:
            raise ValueError(
                "DominantFlow found no activations: the model declares none; pass activations=[module names]"
            )
        check_modules(model, names, "DominantFlow", "activations")
        declared_final("DominantFlow", model, spec, self.final)
        check_modules(model, self.feature_dims, "DominantFlow", "feature_dims")

    def _activations(self, ctx) -> list[str]:
        names = list(ctx.spec.activations) if self.activations is None else self.activations
        if not names:
            raise ValueError(
                "DominantFlow found no activations: the model declares none; pass activations=[...]"
            )
        for name in names:
            ctx.module(name)
        return names

    def _resolve(self, ctx, names: list[str], final: str) -> tuple[list[int], int, list[int]]:
        """(feature axis of each activation, of a^(L), channels of each activation) from one sample's forward.

        The producer of an activation is the last module of a known type (:func:`gradlens.spec.feature_kind`)
        whose forward finished at or before the activation's (forward hooks fire in completion order).
        """
        owners = [n for n, m in ctx.model.named_modules() if feature_kind(m) is not None]
        seen = ctx.capture(ctx.probe_batch[0][:1], outputs=[*owners, *names, final], eval_mode=True)
        order = list(seen.outputs)
        owner_set = set(owners)
        declared = {**getattr(ctx.spec, "feature_dims", {}), **self.feature_dims}

        def axis(name: str) -> tuple[int, int]:
            tensor = output_tensor(seen.outputs[name], name)
            made = [n for n in order[: order.index(name) + 1] if n in owner_set]
            producer = ctx.module(made[-1]) if made else None
            dim = feature_dim(name, tuple(tensor.shape), producer, declared.get(name))
            return dim, int(tensor.shape[dim])

        dims = [axis(n) for n in names]
        return [d for d, _ in dims], axis(final)[0], [c for _, c in dims]

    def quantities(self, ctx) -> dict[str, Quantity]:
        names = self._activations(ctx)
        final = final_activation(ctx, self.final)
        dims, final_dim, channels = self._resolve(ctx, names, final)
        self._layout = (dims, final_dim)
        batch = int(ctx.probe_batch[0].shape[0])
        labels = {"layer": names}
        return {
            "sigma": Quantity((len(names),), ("layer",), labels),
            "sigma_per_sample": Quantity((len(names), batch), ("layer", "sample"), labels),
            "r": Quantity((len(names), batch, max(channels)), ("layer", "sample", "channel"), labels),
            "nonfinite": Quantity((len(names),), ("layer",), labels),
            "feature_dim": Quantity((len(names),), ("layer",), labels, dtype="int64"),
        }

    def compute(self, ctx) -> dict[str, torch.Tensor]:
        names = self._activations(ctx)
        final = final_activation(ctx, self.final)
        if self._layout is None:
            dims, final_dim, _ = self._resolve(ctx, names, final)
            self._layout = (dims, final_dim)
        dims, final_dim = self._layout
        x, y = ctx.probe_batch
        seen = ctx.capture(x, outputs=[*names, final], grad=True, eval_mode=self.eval_mode)
        with torch.enable_grad():
            loss = ctx.loss_fn(seen.output, y)
            result = dominant_flow(
                output_tensor(seen.outputs[final], final),
                [output_tensor(seen.outputs[n], n) for n in names],
                loss=loss,
                feature_dims=dims,
                final_feature_dim=final_dim,
            )
        widest = max(r.shape[1] for r in result.r)
        r = torch.full((len(names), x.shape[0], widest), float("nan"), dtype=torch.float64)
        for index, ratios in enumerate(result.r):
            r[index, :, : ratios.shape[1]] = ratios.detach().double().cpu()
        per_sample = result.sigma_per_sample.detach().T
        return {
            "sigma": result.sigma.detach(),
            "sigma_per_sample": per_sample,
            "r": r,
            "nonfinite": (~torch.isfinite(per_sample)).sum(dim=1).double(),
            "feature_dim": torch.tensor(dims, dtype=torch.int64),
        }
