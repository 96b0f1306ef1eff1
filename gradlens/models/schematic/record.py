"""Reading the schematic graph off a built model (steps 1-5 of :mod:`gradlens.models.schematic`): one
side-effect-free forward pass traced box to box by a ``TorchFunctionMode``, edges typed by the connection
markers, short circuits added from ``model.short_circuits``, blocks grouped into stages and long stages folded.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from gradlens.models.connections import ConcatSkip, GatedSkip, IdentitySkip, LongSkip, SkipMarker
from gradlens.models.schematic.graph import SchematicEdge, SchematicGraph, SchematicNode
from gradlens.models.van import VANSkip

BOX_TYPES: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.modules.conv._ConvNd,
    nn.Embedding,
    nn.modules.pooling._MaxPoolNd,
    nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd,
    nn.modules.pooling._AdaptiveMaxPoolNd,
    nn.Upsample,
    SkipMarker,
)

# marker type -> (edge kind of its skipped arguments, which argument positions are skipped)
_MARKER_KINDS: tuple[tuple[type[SkipMarker], str, str], ...] = (
    (VANSkip, "van", "first"),
    (IdentitySkip, "skip", "first"),
    (GatedSkip, "gated", "first"),
    (LongSkip, "long", "rest"),
    (ConcatSkip, "concat", "rest"),
)


# ---------------------------------------------------------------------------------------------- recording


class _Provenance(TorchFunctionMode):
    """Tags every tensor produced by a torch function with the union of its inputs' box sets.

    A function outside any box that combines tensors of different boxes (``embed + pos_embed``, the
    ``q @ kᵀ`` of attention) becomes a small ``merge`` node of its own, named after the module running it.
    """

    _SYMBOLS = {"add": "+", "sub": "−", "mul": "×", "matmul": "@", "cat": "cat", "stack": "stack"}

    def __init__(self) -> None:
        super().__init__()
        self.tags: dict[int, frozenset[str]] = {}
        self._alive: list[torch.Tensor] = []  # keeps ids unique while recording
        self.stack: list[str] = []  # names of the modules running, innermost last
        self.in_box = 0
        self.ops: list[tuple[str, str, list[frozenset[str]], tuple[int, ...]]] = []

    def tag(self, value: Any, boxes: frozenset[str]) -> None:
        for t in tree_flatten(value)[0]:
            if isinstance(t, torch.Tensor):
                self.tags[id(t)] = boxes
                self._alive.append(t)

    def of(self, value: Any) -> frozenset[str]:
        found: set[str] = set()
        for t in tree_flatten(value)[0]:
            if isinstance(t, torch.Tensor):
                found |= self.tags.get(id(t), frozenset())
        return frozenset(found)

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        parts = [self.tags.get(id(t), frozenset()) for t in tree_flatten((args, kwargs))[0]]
        parts = [p for p in dict.fromkeys(p for p in parts if p)]
        sources = frozenset().union(*parts)
        if len(parts) > 1 and len(sources) > 1 and not self.in_box and isinstance(out, torch.Tensor):
            base = getattr(func, "__name__", "op").strip("_")
            prefix = f"{self.stack[-1]}." if self.stack and self.stack[-1] else ""
            name = f"{prefix}{base}"
            taken = {op[0] for op in self.ops}
            name = next(
                f"{name}#{i}" if i > 1 else name
                for i in range(1, len(taken) + 2)
                if (f"{name}#{i}" if i > 1 else name) not in taken
            )
            self.ops.append((name, self._SYMBOLS.get(base, base), parts, tuple(out.shape[1:])))
            self.tag(out, frozenset({name}))
        elif sources:
            self.tag(out, sources)
        return out


def _describe(module: nn.Module) -> tuple[str, str]:
    """(kind, label) of a box module."""
    if isinstance(module, SkipMarker):
        labels = {VANSkip: "⊕ (1−α)·x", IdentitySkip: "⊕ skip", GatedSkip: "gate T·H+(1−T)·x"}
        for cls, label in labels.items():
            if isinstance(module, cls):
                return "merge", label
        return "merge", "concat" + (" (long)" if isinstance(module, LongSkip) else "")
    if isinstance(module, nn.Linear):
        return "linear", f"{type(module).__name__} {module.in_features}→{module.out_features}"
    if isinstance(module, nn.modules.conv._ConvNd):
        kernel = "×".join(str(k) for k in module.kernel_size)
        stride = max(module.stride)
        text = f"{type(module).__name__[:4]}{kernel} {module.in_channels}→{module.out_channels}"
        return "conv", text + (f" /{stride}" if stride > 1 else "")
    if isinstance(module, nn.Embedding):
        return "embedding", f"Embedding {module.num_embeddings}×{module.embedding_dim}"
    return "pool", type(module).__name__


def _skipped_positions(marker: SkipMarker, n_args: int) -> tuple[str, set[int]]:
    for cls, kind, where in _MARKER_KINDS:
        if isinstance(marker, cls):
            return kind, ({0} if where == "first" else set(range(1, n_args)))
    return "skip", {0}


def _record(model: nn.Module) -> tuple[list[SchematicNode], list[SchematicEdge]]:
    """One forward pass; nodes in call order and dataflow edges between boxes."""
    names = {module: name for name, module in model.named_modules()}
    mode = _Provenance()
    nodes: dict[str, SchematicNode] = {}
    edges: list[SchematicEdge] = []

    def add_edge(src: str, dst: str, kind: str) -> None:
        edge = SchematicEdge(src, dst, kind)
        if edge not in edges:
            edges.append(edge)

    def flush_ops() -> None:
        # op nodes recorded since the last box call, in call order
        for name, label, parts, shape in mode.ops:
            if name not in nodes:
                nodes[name] = SchematicNode(name, "merge", label, shape)
                for part in parts:
                    for src in sorted(part):
                        add_edge(src, name, "forward")

    def pre_hook(module: nn.Module, args: tuple[Any, ...]) -> None:
        mode.stack.append(names[module])
        if not isinstance(module, BOX_TYPES):
            return
        mode.in_box += 1
        if mode.in_box > 1:
            return
        flush_ops()
        name = names[module]
        skip_kind, skipped = ("", set())
        if isinstance(module, SkipMarker):
            skip_kind, skipped = _skipped_positions(module, len(args))
        for i, arg in enumerate(args):
            for src in sorted(mode.of(arg)):
                add_edge(src, name, skip_kind if i in skipped else "forward")

    def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        mode.stack.pop()
        if not isinstance(module, BOX_TYPES):
            return
        mode.in_box -= 1
        if mode.in_box > 0:
            return
        name = names[module]
        kind, label = _describe(module)
        shape = tuple(output.shape[1:]) if isinstance(output, torch.Tensor) else ()
        nodes.setdefault(name, SchematicNode(name, kind, label, shape))
        mode.tag(output, frozenset({name}))

    handles = []
    for module in model.modules():
        handles.append(module.register_forward_pre_hook(pre_hook))
        handles.append(module.register_forward_hook(hook))
    training = {m: m.training for m in model.modules()}
    try:
        model.eval()
        x = model.example_input(2, torch.Generator().manual_seed(0))
        with torch.no_grad(), mode:
            mode.tag(x, frozenset({"input"}))
            model(x)
    finally:
        for handle in handles:
            handle.remove()
        for module, flag in training.items():
            module.training = flag
    flush_ops()
    input_node = SchematicNode("input", "input", "input", tuple(model.input_shape))
    # Skip-type edges win over a forward edge between the same two boxes (e.g. a ConcatSkip whose
    # main and skipped inputs come from one box).
    typed = {(e.src, e.dst) for e in edges if e.kind != "forward"}
    edges = [e for e in edges if e.kind != "forward" or (e.src, e.dst) not in typed]
    return [input_node, *nodes.values()], edges


# ------------------------------------------------------------------------------------------- graph assembly


def _assign_blocks(model: nn.Module, nodes: list[SchematicNode]) -> None:
    spec = model.gradlens_spec() if hasattr(model, "gradlens_spec") else None
    blocks = sorted(spec.blocks if spec is not None else (), key=len, reverse=True)
    for node in nodes:
        for block in blocks:
            if node.name == block or node.name.startswith(block + "."):
                node.block = block
                node.stage = block.rsplit(".", 1)[0] if "." in block else ""
                break


def _merge(
    nodes: list[SchematicNode], edges: list[SchematicEdge], mapping: dict[str, SchematicNode]
) -> tuple[list[SchematicNode], list[SchematicEdge]]:
    """Replace nodes by representatives (``mapping``: name -> new node); merge edges, drop self-loops."""
    out_nodes: list[SchematicNode] = []
    seen: set[str] = set()
    for node in nodes:
        rep = mapping.get(node.name, node)
        if rep.name not in seen:
            seen.add(rep.name)
            out_nodes.append(rep)
    counts: dict[tuple[str, str, str], int] = {}
    for e in edges:
        src, dst = mapping.get(e.src, None), mapping.get(e.dst, None)
        key = (src.name if src else e.src, dst.name if dst else e.dst, e.kind)
        if key[0] != key[1]:
            counts[key] = counts.get(key, 0) + e.count
    return out_nodes, [SchematicEdge(s, d, k, c) for (s, d, k), c in counts.items()]


def schematic_graph(model: nn.Module, *, level: str = "layers", max_blocks: int | None = 9) -> SchematicGraph:
    """Read the schematic graph of ``model`` (see :mod:`gradlens.models.schematic` for how).

    Args:
        model: a zoo model (needs ``example_input`` and ``input_shape``; ``gradlens_spec`` for shading).
        level: ``"layers"`` (every box) or ``"blocks"`` (each spec block drawn as one box).
        max_blocks: per stage, blocks beyond this many are folded into one collapsed node (None: never).

    Returns:
        The graph; ``edges`` include ``short_circuit`` edges (rear -> front) of ``model.short_circuits``.

    Raises:
        ValueError: unknown ``level`` or ``max_blocks < 2``.
    """
    if level not in ("layers", "blocks"):
        raise ValueError(f"level {level!r} is unknown; use 'layers' or 'blocks'")
    if max_blocks is not None and max_blocks < 2:
        raise ValueError(f"max_blocks must be >= 2 or None, got {max_blocks}")
    nodes, edges = _record(model)
    names = {n.name for n in nodes}
    circuits = getattr(model, "short_circuits", None)
    for sc in circuits or ():
        if sc.front in names and sc.rear in names:
            edges.append(SchematicEdge(sc.rear, sc.front, "short_circuit"))
    _assign_blocks(model, nodes)
    notes = []
    if circuits is not None and not circuits.enabled:
        notes.append("short circuits switched off")

    # Fold long stages: blocks of one stage in forward order; keep the first max_blocks - 1 and the last.
    mapping: dict[str, SchematicNode] = {}
    stages: dict[str, list[str]] = {}
    for node in nodes:
        if node.block is not None and node.block not in stages.setdefault(node.stage or "", []):
            stages[node.stage or ""].append(node.block)
    for stage, blocks in stages.items():
        if max_blocks is None or len(blocks) <= max_blocks:
            continue
        hidden = blocks[max_blocks - 1 : -1]
        label = f"⋯ {len(hidden)} blocks ({hidden[0]} … {hidden[-1]})"
        rep = SchematicNode(f"~{hidden[0]}-{hidden[-1]}", "collapsed", label, (), hidden[0], stage)
        for node in nodes:
            if node.block in hidden:
                mapping[node.name] = rep
    if level == "blocks":
        for node in nodes:
            if node.block is not None and node.name not in mapping:
                shape = node.shape
                rep = mapping.setdefault(
                    node.block, SchematicNode(node.block, "block", "block", shape, node.block, node.stage)
                )
                rep.shape = shape  # the block's output: its last box
                mapping[node.name] = rep
        mapping = {k: v for k, v in mapping.items() if k in names}
    nodes, edges = _merge(nodes, edges, mapping)
    if level == "blocks":
        for node in nodes:
            if node.kind == "block":
                node.label = f"{type(model.get_submodule(node.name)).__name__} → {list(node.shape)}"
    return SchematicGraph(nodes, edges, type(model).__name__, notes)
