"""How tests/data/v3_run.h5, v3_killed.h5 and v3_run_expected.npz were made, with gradlens at commit 93c9544
(schema version 3).

Run from the repository root with that version checked out: ``python tests/data/make_v3_run.py``. It records
a tiny MLP with GradStats (histograms with 4 fixed bins) and UpdateRatio, logs loss and lr, records one event:

- ``v3_run.h5``: 100 steps, closed (every row in its column, the summary's blocks of 32 stored);
- ``v3_killed.h5``: a Recorder fed directly (a probe ``g`` with a ``[20]`` float32 per-layer norm at each of
  1100 steps, a probe ``w`` with a wide ``[600]`` float64 record every 50 steps, scalars ``loss`` and ``lr``),
  SIGKILLed after its last flush: its writer left status ``running``, whole chunks in the columns (13 rows of
  ``w``), the rest in ``tail/<column>``, and one stored chunk of 32-record summary blocks (a killed writer's
  file, as ``gradlens repair`` and ``resume`` meet it).

and saves everything that version's loader returned from each (records, scalars, events, summaries), so that
tests/test_loader.py can check that today's loader reads the old files identically.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

RECORD = r"""
import sys
import numpy as np
import torch
from torch import nn
import gradlens
from gradlens.probes import GradStats, UpdateRatio

path, steps = sys.argv[1], int(sys.argv[2])
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
probes = [GradStats(bins=np.linspace(-0.2, 0.2, 5)), UpdateRatio(every=3)]
with gradlens.attach(model, optimizer, path, probes=probes, overwrite=True, flush_every=5) as session:
    for step in range(steps):
        x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        session.log(loss=loss.item(), lr=0.1)
        if step == 40:
            session.recorder.log_event(step, "warning", "make_v3_run", "an event to read back")
"""

KILLED = r"""
import os, signal, sys
import numpy as np
from gradlens.recorder import Recorder
from gradlens.schema import Quantity

path, steps = sys.argv[1], int(sys.argv[2])
layers = [{"name": f"l{i}", "kind": "Linear", "shape": [1, 1], "params": 1} for i in range(20)]
quantities = {
    "g": {"norm": Quantity((20,), ("layer",), dtype="float32")},
    "w": {"wide": Quantity((600,), ("x",))},
}
recorder = Recorder(path, meta={"config": {"made_by": "make_v3_run.py"}}, flush_every=7)
recorder.start(layers, quantities)
rng = np.random.default_rng(0)
for step in range(steps):
    recorder.record("g", step, {"norm": (np.exp(-np.arange(20) / 4) * rng.lognormal(0, 0.3, 20)).astype(np.float32)})
    if step % 50 == 0:
        recorder.record("w", step, {"wide": step + 0.5 * np.arange(600)})
    recorder.log_scalars(step, loss=float(np.exp(-step / 300) + 0.01 * rng.standard_normal()), lr=0.1)
    if step == 500:
        recorder.log_event(step, "warning", "make_v3_run", "an event to read back")
recorder.flush()
os.kill(os.getpid(), signal.SIGKILL)
"""


def expected_of(path: Path, prefix: str) -> dict[str, np.ndarray]:
    """Everything the loader returns from ``path``, keyed ``<prefix>/...``."""
    import gradlens

    run = gradlens.load(path)
    expected: dict[str, np.ndarray] = {}
    for probe in run.probes:
        for quantity, declared in run.quantities(probe).items():
            steps, values, _, _ = run.array(probe, quantity)
            expected[f"{prefix}/{probe}/{quantity}/steps"] = steps
            expected[f"{prefix}/{probe}/{quantity}/values"] = values
            if declared.axes in (("layer",), ()):
                for points in (1, 3, 30):
                    summary = run.summary(probe, quantity, points=points)
                    for field in summary._fields:
                        expected[f"{prefix}/{probe}/{quantity}/summary{points}/{field}"] = np.asarray(
                            getattr(summary, field)
                        )
    scalars = run.scalars()
    expected[f"{prefix}/scalars/step"] = scalars["step"].to_numpy()
    expected[f"{prefix}/scalars/name"] = scalars["name"].to_numpy(str)
    expected[f"{prefix}/scalars/value"] = scalars["value"].to_numpy()
    for name in run.scalar_names():
        steps, values = run.scalar(name)
        expected[f"{prefix}/scalar/{name}/steps"] = steps
        expected[f"{prefix}/scalar/{name}/values"] = values
        summary = run.scalar_summary(name, points=3)
        for field in summary._fields:
            expected[f"{prefix}/scalar/{name}/summary3/{field}"] = np.asarray(getattr(summary, field))
    events = run.events()
    for column in events.columns:
        expected[f"{prefix}/events/{column}"] = events[column].to_numpy(str if column != "step" else np.int64)
    expected[f"{prefix}/status"] = np.asarray(run.status)
    return expected


def main() -> None:
    expected: dict[str, np.ndarray] = {}
    for name, code, steps, status in (("v3_run", RECORD, 100, 0), ("v3_killed", KILLED, 1100, -signal.SIGKILL)):
        path = HERE / f"{name}.h5"
        path.unlink(missing_ok=True)
        returned = subprocess.run([sys.executable, "-c", code, str(path), str(steps)], check=False).returncode
        assert returned == status, returned
        Path(f"{path}.lock").unlink(missing_ok=True)
        expected |= expected_of(path, name)
    os.chdir(HERE)
    np.savez_compressed("v3_run_expected.npz", **expected)


if __name__ == "__main__":
    main()
