"""The schematic graph of an architecture: boxes (:class:`SchematicNode`) in forward order, typed edges
(:class:`SchematicEdge`), and its JSON form, which analyses store in HDF5 so that figures draw it without
building the model.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field


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
