"""E[σ] in the trivial case of dominant gradient flow (document 004, appendix D.4.1, Figure 11). Computed.

One run per panel: one parameter (n, l, σ_A, σ_V, p or ε) swept, the others at the document's defaults
(n = 20, ε = 0.1, L = 10, l = 5, p = 0.9, σ_A = 0.01, σ_V = 0.1). At each swept value: Monte Carlo E[σ] of
plain and residual nets (:func:`gradlens.metrics.trivial_sigma`, ``draws`` draws, seed 0) with its standard
error, and on a dense grid the two analytical forms of the residual case, eq. 11 with p'
(:func:`~gradlens.metrics.trivial_sigma_eq11`) and the "In conclusion" form with L − l in place of p'
(:func:`~gradlens.metrics.trivial_sigma_conclusion`). The document does not state the sweep ranges (its
figure is an image); the ranges below bracket the defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gradlens.metrics import trivial_sigma, trivial_sigma_conclusion, trivial_sigma_eq11
from gradlens.results import save_result

DEFAULTS = {"n": 20, "eps": 0.1, "L": 10, "l": 5, "p": 0.9, "sigma_a": 0.01, "sigma_v": 0.1}
# panel letter -> swept parameter, in the document's order (a)–(f)
PANELS = {"a": "n", "b": "l", "c": "sigma_a", "d": "sigma_v", "e": "p", "f": "eps"}
LOG_SCALE = ("sigma_a", "sigma_v", "eps")

USES_DEVICE = False  # a Monte Carlo on the CPU: never asks for a GPU (analyses.run_spec.uses_device)


@dataclass(frozen=True)
class Config:
    """Monte Carlo draws per point, the swept n and l (0 <= l < L = 10), and points per continuous sweep."""

    draws: int
    n_values: tuple[int, ...]
    l_values: tuple[int, ...]
    points: int

    @classmethod
    def smoke(cls) -> Config:
        return cls(draws=200, n_values=(2, 5, 10), l_values=(1, 5, 9), points=3)

    @classmethod
    def quick(cls) -> Config:
        return cls(draws=10_000, n_values=(2, 3, 5, 8, 10, 15, 20, 25, 30), l_values=tuple(range(10)), points=7)

    @classmethod
    def medium(cls) -> Config:
        """= quick: yt-fig11's Monte Carlo agrees with the analytical forms at quick."""
        return cls.quick()

    @classmethod
    def paper(cls) -> Config:
        return cls(
            draws=100_000, n_values=(2, 3, 5, 8, 10, 15, 20, 25, 30, 40, 50), l_values=tuple(range(10)), points=13
        )


def sweep(parameter: str, config: Config) -> list[float]:
    """The swept values of ``parameter`` (integers for n and l)."""
    if parameter == "n":
        return [float(v) for v in config.n_values]
    if parameter == "l":
        return [float(v) for v in config.l_values]
    if parameter == "p":
        return np.linspace(0.0, 1.0, 2 * config.points - 1 if config.points > 3 else config.points).tolist()
    decades = {"sigma_a": (-3.0, 0.0), "sigma_v": (-3.0, 1.0), "eps": (-2.0, 0.0)}[parameter]
    return np.logspace(*decades, config.points).tolist()


def runs(config: Config) -> list[dict]:
    """One run per panel (independent, so the runner can spread them over workers)."""
    return [
        {"analysis": "trivial_case", "panel": letter, "parameter": parameter, "values": sweep(parameter, config),
         "draws": config.draws, "defaults": DEFAULTS, "seed": 0}
        for letter, parameter in PANELS.items()
    ]


def _setting(parameter: str, value: float) -> dict:
    setting = dict(DEFAULTS)
    setting[parameter] = int(round(value)) if parameter in ("n", "l") else value
    return setting


def execute(params: dict, path: Path, *, data_dir: str | None, resume: bool, progress: bool) -> None:
    """Simulate plain and residual E[σ] at each swept value; evaluate both analytical forms on a dense grid."""
    parameter, values = params["parameter"], params["values"]
    arrays: dict[str, np.ndarray] = {"x": np.array(values)}
    for net, residual in (("plain", False), ("residual", True)):
        estimates = [
            trivial_sigma(**_setting(parameter, v), residual=residual, draws=params["draws"], seed=params["seed"])
            for v in values
        ]
        arrays[net] = np.array([mean for mean, _ in estimates])
        arrays[f"{net}_se"] = np.array([se for _, se in estimates])
    if parameter in ("n", "l"):
        dense = np.arange(values[0], values[-1] + 1)
    elif parameter in LOG_SCALE:
        dense = np.logspace(np.log10(values[0]), np.log10(values[-1]), 200)
    else:
        dense = np.linspace(values[0], values[-1], 201)
    arrays["x_dense"] = dense
    for name, form in (("eq11", trivial_sigma_eq11), ("conclusion", trivial_sigma_conclusion)):
        arrays[name] = np.array([
            form(**{k: v for k, v in _setting(parameter, x).items() if k != "sigma_v"}) for x in dense
        ])
    save_result(path, {"config": params}, arrays, overwrite=True)
