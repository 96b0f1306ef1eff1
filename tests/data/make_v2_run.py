"""How tests/data/v2_run.h5 and v2_run_expected.npz were made, with gradlens at commit 7d7de26 (schema version 2).

Run from the repository root with that version checked out: ``python tests/data/make_v2_run.py``. It records 12
steps of a tiny MLP with GradStats (histograms with 4 fixed bins) and UpdateRatio, logs loss and lr, records one
event, and saves everything that version's loader returned, so that tests/test_loader.py can check that
today's loader reads the old file identically.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

import gradlens
from gradlens.probes import GradStats, UpdateRatio

HERE = Path(__file__).resolve().parent


def main() -> None:
    path = HERE / "v2_run.h5"
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    probes = [GradStats(bins=np.linspace(-0.2, 0.2, 5)), UpdateRatio(every=3)]
    with gradlens.attach(model, optimizer, path, probes=probes, overwrite=True, flush_every=5) as session:
        for _ in range(12):
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            session.log(loss=loss.item(), lr=0.1)
        session.recorder.log_event(11, "warning", "make_v2_run", "an event to read back")
    run = gradlens.load(path)
    expected: dict[str, np.ndarray] = {}
    for probe in run.probes:
        for quantity in run.quantities(probe):
            steps, values, _, _ = run.array(probe, quantity)
            expected[f"{probe}/{quantity}/steps"] = steps
            expected[f"{probe}/{quantity}/values"] = values
    scalars = run.scalars()
    expected["scalars/step"] = scalars["step"].to_numpy()
    expected["scalars/name"] = scalars["name"].to_numpy(str)
    expected["scalars/value"] = scalars["value"].to_numpy()
    events = run.events()
    for column in events.columns:
        expected[f"events/{column}"] = events[column].to_numpy(str if column != "step" else np.int64)
    np.savez(HERE / "v2_run_expected.npz", **expected)


if __name__ == "__main__":
    main()
