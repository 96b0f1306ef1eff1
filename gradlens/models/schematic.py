"""Architecture schematics read off a built model: :func:`schematic_graph` and :func:`draw_schematic`.

How the graph is read (no hand-placed boxes):

1. One forward pass on ``model.example_input(2)`` (eval mode, no grad, a local generator; the modes of
   all modules are restored afterwards, so BN statistics and the global RNG are untouched).
2. *Boxes* are the modules of :data:`BOX_TYPES` (weight layers, embeddings, pooling, upsampling) and every
   connection marker (:class:`~gradlens.models.connections.SkipMarker`: identity, gated, VAN, concat and
   long skips). Modules nested inside a box are not boxes of their own.
3. Dataflow: a ``TorchFunctionMode`` follows every tensor from box to box (each tensor carries the set of
   boxes it was computed from, through any functional code: ReLU, BN, views, attention products...).
   A box's incoming edges come from the boxes its inputs were computed from.
   A functional op outside any box that combines tensors of different boxes (``embed + pos_embed``,
   attention's ``q @ kᵀ``) becomes a small ``merge`` node named after the module running it
   (``blocks.0.matmul``, ``add``).
4. Edge kinds: into a marker, an edge through a *skipped* argument gets the marker's kind (``skip`` for
   :class:`IdentitySkip` argument ``x``, ``van``, ``gated``, ``concat`` / ``long`` for the extra arguments of
   :class:`ConcatSkip` / :class:`LongSkip`); every other edge is ``forward``. Short circuits come from
   ``model.short_circuits`` as ``short_circuit`` edges from the rear to the front (backward only).
5. Grouping: the model's ``gradlens_spec().blocks`` are shaded, coloured by their parent module (the
   stage). For deep nets, stages with more than ``max_blocks`` blocks show the first ``max_blocks - 1``
   and the last block and fold the rest into one ``collapsed`` node ("⋯ N blocks") that keeps their
   edges; ``level="blocks"`` draws every block as one box.

The drawing stacks the boxes top to bottom in forward order, one column per stage (long stages wrap
after ``max_rows``), forward edges in blue, skip-type edges as arcs on the left, short circuits in green
as dashed arcs on the right (pointing from the rear to the front, the direction the sensitivity travels),
and, with ``backward=True``, the backpropagation flow in orange (document 000, Figure 1).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import matplotlib.pyplot as plt
import torch
from matplotlib.axes import Axes
from matplotlib.lines import Line2D
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
from matplotlib.path import Path
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from gradlens.models.connections import ConcatSkip, GatedSkip, IdentitySkip, LongSkip, SkipMarker
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

EDGE_COLOURS = {
    "forward": "tab:blue",
    "skip": "tab:red",
    "van": "tab:purple",
    "gated": "tab:brown",
    "concat": "crimson",
    "long": "darkmagenta",
    "short_circuit": "tab:green",
    "backward": "tab:orange",
}
_NODE_COLOURS = {
    "input": "#eeeeee",
    "linear": "#dbe9f6",
    "conv": "#dbe9f6",
    "embedding": "#e5dbf6",
    "pool": "#f0f0f0",
    "merge": "#fde2e2",
    "collapsed": "#ffffff",
    "block": "#dbe9f6",
}
_STAGE_COLOURS = ("#cfe3f7", "#d5f0d5", "#fbe3c8", "#eadcf5", "#f7d7df", "#e0e0e0")


@dataclass
class SchematicNode:
    """One box of the schematic.

    Attributes:
        name: dotted module name (``"input"`` for the model input, ``"~stage1.3-7"`` for a collapsed run).
        kind: ``input``, ``linear``, ``conv``, ``embedding``, ``pool``, ``merge``, ``collapsed`` or ``block``.
        label: type and width, e.g. ``"Conv3×3 16→32 /2"``, ``"Linear 784→100"``, ``"⊕ skip"``.
        shape: output shape of one sample (without the batch dimension).
        block: the ``gradlens_spec().blocks`` entry containing the node (``None`` outside blocks).
        stage: the parent module of that block (``""`` when the block hangs off the root).
    """

    name: str
    kind: str
    label: str
    shape: tuple[int, ...] = ()
    block: str | None = None
    stage: str | None = None


@dataclass(frozen=True)
class SchematicEdge:
    """A directed edge ``src -> dst`` of one ``kind`` (see :data:`EDGE_COLOURS`); ``count`` merged edges."""

    src: str
    dst: str
    kind: str
    count: int = 1


@dataclass
class SchematicGraph:
    """Nodes in forward order and edges; what :func:`draw_schematic` draws."""

    nodes: list[SchematicNode]
    edges: list[SchematicEdge]
    title: str = ""
    notes: list[str] = field(default_factory=list)

    def edge_set(self, kind: str | None = None) -> set[tuple[str, str]]:
        """``{(src, dst)}`` of all edges, or of the edges of one ``kind``."""
        return {(e.src, e.dst) for e in self.edges if kind is None or e.kind == kind}

    def node(self, name: str) -> SchematicNode:
        """The node called ``name``; ``KeyError`` listing a few names otherwise."""
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(f"no schematic node {name!r}; nodes are e.g. {[n.name for n in self.nodes[:5]]}")

    def to_json(self) -> str:
        """The graph as JSON (analyses store it in HDF5; figures draw it without building the model)."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> SchematicGraph:
        """Inverse of :meth:`to_json`."""
        data = json.loads(text)
        nodes = [SchematicNode(**{**n, "shape": tuple(n["shape"])}) for n in data["nodes"]]
        edges = [SchematicEdge(**e) for e in data["edges"]]
        return cls(nodes, edges, data.get("title", ""), list(data.get("notes", [])))


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
    """Read the schematic graph of ``model`` (see the module docstring for how).

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


# ------------------------------------------------------------------------------------------------- drawing

_ROW = 0.34  # vertical pitch of boxes (data units = inches at scale 1)
_BOX_W, _BOX_H = 2.5, 0.24
_COL = 4.2  # column pitch


def _layout(graph: SchematicGraph, max_rows: int) -> dict[str, tuple[float, float]]:
    """Column/row of each node: a new column per stage (when the current one is not nearly empty) and
    whenever a column reaches ``max_rows``."""
    pos: dict[str, tuple[float, float]] = {}
    col, row, stage = 0, 0, None
    for node in graph.nodes:
        new_stage = node.stage is not None and node.stage != stage and stage is not None
        if row >= max_rows or (new_stage and row > 3):
            col, row = col + 1, 0
        if node.stage is not None:
            stage = node.stage
        pos[node.name] = (col * _COL, -row * _ROW)
        row += 1
    return pos


def _arc(ax: Axes, p: tuple[float, float], q: tuple[float, float], side: int, colour: str, **kw: Any) -> None:
    """Arrow p -> q bulging to the left (side = -1) or right (side = +1) of a column."""
    span = abs(q[1] - p[1]) + abs(q[0] - p[0])
    bulge = min(0.3 + 0.06 * span / _ROW, 1.2)
    rad = bulge / max(span, 1e-9)
    # arc3 bulges to the left of the direction of travel for rad > 0.
    going_down = q[1] < p[1]
    rad = rad if (side < 0) == going_down else -rad
    ax.add_patch(
        FancyArrowPatch(
            p,
            q,
            connectionstyle=f"arc3,rad={rad:.4f}",
            arrowstyle="-|>",
            mutation_scale=7,
            color=colour,
            lw=kw.pop("lw", 0.9),
            shrinkA=1,
            shrinkB=1,
            **kw,
        )
    )


def draw_schematic(
    model: nn.Module | SchematicGraph,
    ax: Axes | None = None,
    title: str | None = None,
    *,
    level: str = "layers",
    max_blocks: int | None = 9,
    max_rows: int = 32,
    backward: bool = False,
    show_names: bool = True,
) -> Axes:
    """Draw ``model`` (or a prepared :class:`SchematicGraph`) as an architecture schematic.

    Args:
        model: a zoo model or the graph of :func:`schematic_graph`.
        ax: axes to draw on (a new figure sized to the graph when None).
        title: axes title (default: the model class name).
        level, max_blocks: as in :func:`schematic_graph`.
        max_rows: boxes per column before wrapping.
        backward: also draw the backpropagation flow (orange) next to the forward edges.
        show_names: prefix each box with its module name.

    Returns:
        The axes; the figure is ``ax.figure``.
    """
    graph = model if isinstance(model, SchematicGraph) else schematic_graph(model, level=level, max_blocks=max_blocks)
    pos = _layout(graph, max_rows)
    n_cols = 1 + round(max(x for x, _ in pos.values()) / _COL)
    n_rows = 1 + round(max(-y for _, y in pos.values()) / _ROW)
    if ax is None:
        _, ax = plt.subplots(figsize=(1.2 + n_cols * _COL * 0.85, 0.9 + n_rows * _ROW * 0.85))
    kinds = {n.name: n for n in graph.nodes}

    # Shade blocks (one rectangle per block and column), coloured by stage.
    stage_ids: dict[str, int] = {}
    spans: dict[tuple[str, float], list[float]] = {}
    for node in graph.nodes:
        if node.block is not None and node.kind not in ("block",):
            x, y = pos[node.name]
            spans.setdefault((node.block, x), []).append(y)
            stage_ids.setdefault(node.stage or "", len(stage_ids))
    for (block, x), ys in spans.items():
        stage = next(n.stage or "" for n in graph.nodes if n.block == block)
        colour = _STAGE_COLOURS[stage_ids[stage] % len(_STAGE_COLOURS)]
        top, bottom = max(ys) + _ROW / 2 - 0.02, min(ys) - _ROW / 2 + 0.02
        ax.add_patch(
            FancyBboxPatch(
                (x - _BOX_W / 2 - 0.12, bottom),
                _BOX_W + 0.24,
                top - bottom,
                boxstyle="round,pad=0.0,rounding_size=0.06",
                fc=colour,
                ec="none",
                zorder=0,
            )
        )

    for node in graph.nodes:
        x, y = pos[node.name]
        width = _BOX_W * (0.55 if node.kind == "merge" else 1.0)
        style = "round,pad=0.0,rounding_size=0.1" if node.kind == "merge" else "square,pad=0.0"
        ax.add_patch(
            FancyBboxPatch(
                (x - width / 2, y - _BOX_H / 2),
                width,
                _BOX_H,
                boxstyle=style,
                fc=_NODE_COLOURS.get(node.kind, "white"),
                ec="0.35",
                lw=0.6,
                zorder=2,
                ls="--" if node.kind == "collapsed" else "-",
            )
        )
        text = (
            node.label
            if node.kind in ("merge", "collapsed", "input") or not show_names
            else (f"{node.name}: {node.label}")
        )
        if node.kind == "input":
            text = f"input {list(node.shape)}"
        ax.text(x, y, text, ha="center", va="center", fontsize=5.2, zorder=3, clip_on=False)

    def anchor(name: str, side: str) -> tuple[float, float]:
        # Arcs attach at the column edge; a narrow merge box gets a thin stub out to that edge.
        x, y = pos[name]
        if side in ("left", "right") and kinds[name].kind == "merge":
            sign = -1 if side == "left" else 1
            ax.plot([x + sign * _BOX_W * 0.275, x + sign * _BOX_W / 2], [y, y], color="0.6", lw=0.5, zorder=1)
        return {
            "top": (x, y + _BOX_H / 2),
            "bottom": (x, y - _BOX_H / 2),
            "left": (x - _BOX_W / 2, y),
            "right": (x + _BOX_W / 2, y),
        }[side]

    def elbow(src: str, dst: str, colour: str, lane: float) -> None:
        # Between columns: down out of src, along the gutter, into dst from its left.
        gutter = (pos[src][0] + pos[dst][0]) / 2 + lane
        start, end = anchor(src, "bottom"), anchor(dst, "left")
        drop = start[1] - _ROW * 0.3
        verts = [start, (start[0], drop), (gutter, drop), (gutter, end[1]), end]
        path = Path(verts, [Path.MOVETO] + [Path.LINETO] * 4)
        ax.add_patch(FancyArrowPatch(path=path, arrowstyle="-|>", mutation_scale=6, color=colour, lw=0.8, zorder=1))

    present = set()
    for e in graph.edges:
        colour = EDGE_COLOURS.get(e.kind, "black")
        present.add(e.kind)
        (xs, ys), (xd, yd) = pos[e.src], pos[e.dst]
        same_col = abs(xs - xd) < 1e-9
        if e.kind == "short_circuit":
            _arc(ax, anchor(e.src, "right"), anchor(e.dst, "right"), +1, colour, ls="--", lw=1.1, zorder=4)
        elif e.kind == "forward" and same_col and abs(ys - yd - _ROW) < 1e-6:
            ax.add_patch(
                FancyArrowPatch(
                    anchor(e.src, "bottom"),
                    anchor(e.dst, "top"),
                    arrowstyle="-|>",
                    mutation_scale=6,
                    color=colour,
                    lw=0.8,
                    shrinkA=0,
                    shrinkB=0,
                    zorder=1,
                )
            )
            if backward:
                off = 0.18
                ax.add_patch(
                    FancyArrowPatch(
                        (xd + off, yd + _BOX_H / 2),
                        (xs + off, ys - _BOX_H / 2),
                        arrowstyle="-|>",
                        mutation_scale=6,
                        color=EDGE_COLOURS["backward"],
                        lw=0.8,
                        shrinkA=0,
                        shrinkB=0,
                        zorder=1,
                    )
                )
                present.add("backward")
        elif same_col:
            _arc(ax, anchor(e.src, "left"), anchor(e.dst, "left"), -1, colour, zorder=1)
        else:
            lane = -0.15 if e.kind == "forward" else 0.15
            elbow(e.src, e.dst, colour, lane)
        if e.count > 1 and e.kind != "forward":  # e.g. several short circuits into a collapsed run
            mid = ((xs + xd) / 2 + (0.9 if e.kind == "short_circuit" else -1.6), (ys + yd) / 2)
            ax.text(*mid, f"×{e.count}", fontsize=5, color=colour)

    legend = [
        Line2D([], [], color=EDGE_COLOURS[k], ls="--" if k == "short_circuit" else "-", label=k.replace("_", " "))
        for k in EDGE_COLOURS
        if k in present
    ]
    if legend:
        ax.legend(handles=legend, loc="upper right", fontsize=6, frameon=False, bbox_to_anchor=(1.0, 1.0))
    if graph.notes:
        ax.text(0.0, 0.0, "; ".join(graph.notes), transform=ax.transAxes, fontsize=6, va="top")
    xs = [x for x, _ in pos.values()]
    ys = [y for _, y in pos.values()]
    ax.set_xlim(min(xs) - _BOX_W / 2 - 1.4, max(xs) + _BOX_W / 2 + 1.4)
    ax.set_ylim(min(ys) - _ROW, max(ys) + _ROW * 1.5)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(graph.title if title is None else title, fontsize=9)
    return ax


def draw_schematics(models: Iterable[nn.Module], titles: Iterable[str], **kw: Any) -> plt.Figure:
    """Side-by-side schematics (e.g. ResNet vs SCResNet); ``kw`` as in :func:`draw_schematic`."""
    models, titles = list(models), list(titles)
    graphs = [schematic_graph(m, level=kw.get("level", "layers"), max_blocks=kw.get("max_blocks", 9)) for m in models]
    fig, axes = plt.subplots(1, len(graphs), figsize=(5.0 * len(graphs), 8.0), squeeze=False)
    rest = {k: v for k, v in kw.items() if k not in ("level", "max_blocks")}
    for ax, graph, title in zip(axes[0], graphs, titles, strict=True):
        draw_schematic(graph, ax, title, **rest)
    fig.tight_layout()
    return fig
