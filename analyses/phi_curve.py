"""φ(r) = P[|X| > |Y|] on a log grid of r: closed form, the document's integral, its approximation
(document 004, appendix E, eqs. 14–15; Figure 13). Computed, not trained."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from gradlens.metrics import phi, phi_approx, phi_approx_best_c, phi_integral
from gradlens.results import save_result

USES_DEVICE = False  # closed forms and a quadrature on the CPU: never asks for a GPU (analyses.run_spec.uses_device)


@dataclass(frozen=True)
class Config:
    """Grid of r (log-spaced over [10^log_min, 10^log_max]) and the document's exponent c."""

    points: int
    log_min: float = -3.0
    log_max: float = 3.0
    c: float = 1.2

    @classmethod
    def smoke(cls) -> Config:
        return cls(points=41)

    @classmethod
    def quick(cls) -> Config:
        return cls(points=241)

    @classmethod
    def medium(cls) -> Config:
        """= quick: yt-fig13's closed forms hold at quick (computed, no training)."""
        return cls.quick()

    @classmethod
    def paper(cls) -> Config:
        return cls(points=1201)


def runs(config: Config) -> list[dict]:
    """One computed result."""
    return [{"analysis": "phi_curve", **asdict(config), "seed": 0}]


def execute(params: dict, path: Path, *, data_dir: str | None, resume: bool, progress: bool) -> None:
    """Evaluate φ three ways on the grid and store the arrays with the best-fit c."""
    r = np.logspace(params["log_min"], params["log_max"], params["points"])
    best_c, best_error = phi_approx_best_c()
    arrays = {
        "r": r,
        "phi": phi(r),
        "phi_integral": phi_integral(r),
        "phi_approx": phi_approx(r, params["c"]),
        "phi_best_fit": phi_approx(r, best_c),
        "best_c": np.array([best_c, best_error]),
    }
    save_result(path, {"config": params}, arrays, overwrite=True)
