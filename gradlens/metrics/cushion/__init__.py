"""Layer cushions and interlayer cushions (document 004, section 5; Arora et al., 2018).

Index letters: ``B`` samples of a batch, ``C`` channels, ``H, W`` (or any spatial dims) feature-map sizes,
``n`` the number of elements of one input sample, ``m`` the number of elements of one output sample.

All functions are pure (no hooks, no I/O) and return per-sample tensors of shape ``[B]``. A sample whose
result is not finite (NaN/inf input, zero input) gets ``NaN`` instead of an exception, so that a probe can
record and flag it during training.

One module per part: :mod:`~gradlens.metrics.cushion.operator_norm` (‖A‖_F of a layer's linear operator),
:mod:`~gradlens.metrics.cushion.layer` (the layer cushion μ_ℓ), :mod:`~gradlens.metrics.cushion.segment` (a
segment's map, its BatchNorm readings and checks), :mod:`~gradlens.metrics.cushion.jacobian` (‖J‖_F² exact and
Hutchinson) and :mod:`~gradlens.metrics.cushion.interlayer` (the interlayer cushion μ_{i,j}).
"""

from gradlens.metrics.cushion.interlayer import (
    AUTO_EXACT_MAX,
    InterlayerCushion,
    check_interlayer_options,
    interlayer_cushion,
)
from gradlens.metrics.cushion.jacobian import jacobian_frobenius_sq, jacobian_frobenius_sq_hutchinson
from gradlens.metrics.cushion.layer import cushion_summary, id_kernel, identity_part, layer_cushion
from gradlens.metrics.cushion.operator_norm import conv_operator_frobenius_norm, layer_operator_frobenius_norm
from gradlens.metrics.cushion.segment import AUTODIFF, BN_STATISTICS, statistics_of_input

__all__ = [
    "AUTODIFF",
    "AUTO_EXACT_MAX",
    "BN_STATISTICS",
    "InterlayerCushion",
    "check_interlayer_options",
    "conv_operator_frobenius_norm",
    "cushion_summary",
    "id_kernel",
    "identity_part",
    "interlayer_cushion",
    "jacobian_frobenius_sq",
    "jacobian_frobenius_sq_hutchinson",
    "layer_cushion",
    "layer_operator_frobenius_norm",
    "statistics_of_input",
]
