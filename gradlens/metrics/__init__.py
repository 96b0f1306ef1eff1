"""Pure metric functions of gradlens (no hooks, no I/O): tensors in, per-sample tensors out.

Document 004 (Yu & Tomasi, noise stability): layer and interlayer cushions (section 5), dominant gradient
flow σ and the final-activation gradient histogram (appendix D), φ(r) (appendix E) and the trivial-case
simulation of Figure 11 (appendix D.4.1).
"""

from gradlens.metrics.cushion import (
    AUTO_EXACT_MAX,
    AUTODIFF,
    BN_STATISTICS,
    InterlayerCushion,
    conv_operator_frobenius_norm,
    cushion_summary,
    id_kernel,
    identity_part,
    interlayer_cushion,
    jacobian_frobenius_sq,
    jacobian_frobenius_sq_hutchinson,
    layer_cushion,
    layer_operator_frobenius_norm,
    statistics_of_input,
)
from gradlens.metrics.dominant_flow import (
    CHUNK_ELEMENTS,
    DominantFlow,
    GradientHistogram,
    dominant_flow,
    final_grad_histogram,
    ratio_terms,
    sigma_from_ratios,
)
from gradlens.metrics.phi import phi, phi_approx, phi_approx_best_c, phi_integral
from gradlens.metrics.trivial import (
    p_prime,
    trivial_sigma,
    trivial_sigma_conclusion,
    trivial_sigma_draws,
    trivial_sigma_eq11,
)

__all__ = [
    "AUTO_EXACT_MAX",
    "AUTODIFF",
    "BN_STATISTICS",
    "CHUNK_ELEMENTS",
    "DominantFlow",
    "GradientHistogram",
    "InterlayerCushion",
    "conv_operator_frobenius_norm",
    "cushion_summary",
    "dominant_flow",
    "final_grad_histogram",
    "id_kernel",
    "identity_part",
    "interlayer_cushion",
    "jacobian_frobenius_sq",
    "jacobian_frobenius_sq_hutchinson",
    "layer_cushion",
    "layer_operator_frobenius_norm",
    "p_prime",
    "phi",
    "phi_approx",
    "phi_approx_best_c",
    "phi_integral",
    "ratio_terms",
    "sigma_from_ratios",
    "statistics_of_input",
    "trivial_sigma",
    "trivial_sigma_conclusion",
    "trivial_sigma_draws",
    "trivial_sigma_eq11",
]
