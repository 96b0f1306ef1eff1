"""yt-fig13 plots exactly the φ values stored in HDF5, and they are right."""

from __future__ import annotations

import numpy as np

from gradlens.results import load_result


def test_plots_what_the_file_holds(smoke_figures):
    output = smoke_figures("yt-fig13")["yt-fig13"]
    assert all(path.stat().st_size > 0 for path in output.files)
    (stored,) = (smoke_figures.out / "runs" / "phi_curve").glob("*.h5")
    result = load_result(stored)
    lines = output.figure.axes[0].get_lines()
    np.testing.assert_array_equal(lines[0].get_xdata(), result["r"])
    np.testing.assert_array_equal(lines[0].get_ydata(), result["phi_integral"])
    np.testing.assert_array_equal(lines[2].get_ydata(), result["phi_approx"])
    np.testing.assert_allclose(result["phi_integral"], 2 / np.pi * np.arctan(result["r"]), atol=1e-12)
    assert output.numbers["phi(1)"] == 0.5
    assert "scale: smoke" in output.caption
