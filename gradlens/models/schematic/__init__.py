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

One module per part: :mod:`~gradlens.models.schematic.graph` (the graph: nodes, edges, JSON),
:mod:`~gradlens.models.schematic.record` (reading it off a forward pass, steps 1-5) and
:mod:`~gradlens.models.schematic.draw` (drawing it with matplotlib).
"""

from gradlens.models.schematic.draw import EDGE_COLOURS, draw_schematic, draw_schematics
from gradlens.models.schematic.graph import SchematicEdge, SchematicGraph, SchematicNode
from gradlens.models.schematic.record import BOX_TYPES, schematic_graph

__all__ = [
    "BOX_TYPES",
    "EDGE_COLOURS",
    "SchematicEdge",
    "SchematicGraph",
    "SchematicNode",
    "draw_schematic",
    "draw_schematics",
    "schematic_graph",
]
