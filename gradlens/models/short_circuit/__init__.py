"""Short circuits: backward-only connections from a rear layer to front layers (document 000, SCNet).

Document 000 (section 3, Algorithm 1) writes a feed-forward net as ``Z^{l+1} = W^l a^l``,
``a^{l+1} = f(Z^{l+1})`` with sensitivities ``δ^l = ∂J/∂Z^l``. A short circuit from a rear layer to a
front layer ``l`` leaves the forward pass alone and changes the front layer's weight gradient (eq. 13,
with the SC weight ``w`` of section 5.4)::

    ∂J/∂W^l = (δ^{l+1} + w·δ_sc) a^{lᵀ}          (summed over the samples of the mini-batch)

In module terms (how this module names things): the *front* is an ``nn.Linear``/``nn.Conv{1,2,3}d`` whose
output is ``Z^{l+1} = W^l a^l``; ``δ^{l+1}`` is the gradient w.r.t. that output. The *rear* is any module;
``δ_sc`` is the gradient w.r.t. the rear module's output (for a weight layer: its pre-activation output,
the document's ``δ^{sc}``). Both outputs must have the same shape (the document's "same neurons"
precondition) and the front must come before the rear (``i < sc``).

Two modes:

* ``"weight_only"`` (default; Algorithm 1 literally): only the front's weight and bias gradients change,
  ``∂J/∂W^l = (δ^{l+1} + w·δ_sc) a^{lᵀ}``, ``∂J/∂b^l = δ^{l+1} + w·δ_sc``. The sensitivity handed further
  down, ``∂J/∂a^l = W^{lᵀ} δ^{l+1}``, is the plain one, so no layer below the front sees ``δ_sc``.
* ``"propagate"``: ``δ̃^{l+1} = δ^{l+1} + w·δ_sc`` replaces ``δ^{l+1}`` everywhere: in the weight and bias
  gradients and in the sensitivity that flows on, ``∂J/∂a^l = W^{lᵀ} δ̃^{l+1}``. This is a backward-only
  edge with Jacobian ``w·I`` from the rear output to the front output: every layer below the front gets
  the extra sensitivity too.

``δ_sc`` is the gradient arriving at the rear module's output (including what "propagate" short circuits
further down the net have added to it, excluding what short circuits with this module as *front* add).

One module per part: :mod:`~gradlens.models.short_circuit.circuit` (one short circuit; Algorithm 1's rule
for choosing fronts), :mod:`~gradlens.models.short_circuit.circuit_set` (a set installed on a model: listed,
switched off, removed), :mod:`~gradlens.models.short_circuit.inject` (the backward of a front layer, where the
short-circuit terms are added) and :mod:`~gradlens.models.short_circuit.families` (the registered SC models).
"""

from gradlens.models.short_circuit.circuit import MODES, ShortCircuit, select_fronts
from gradlens.models.short_circuit.circuit_set import ShortCircuits, gap_short_circuits
from gradlens.models.short_circuit.families import scencoder, scfcn_5, scresnet_v1

__all__ = [
    "MODES",
    "ShortCircuit",
    "ShortCircuits",
    "gap_short_circuits",
    "scencoder",
    "scfcn_5",
    "scresnet_v1",
    "select_fronts",
]
