"""A test-only analysis whose run dies or fails on purpose.

``mode`` of the run:

- ``"crash_once"``: trains a linear classifier on 128 embedded digits for 2 epochs (4 steps each) with
  GradStats; on its first attempt the process ends with ``os._exit(3)`` at step 6, after the first epoch's
  checkpoint. The marker folder (``$GRADLENS_TEST_MARKERS``) records ``<key>.crashed`` then, and
  ``<key>.started-<n>`` for each attempt with whether it resumed from a checkpoint.
- ``"fail"``: raises ``RuntimeError`` every time.
- ``"clean"``: trains like ``crash_once`` without dying (the reference for a resumed run).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from analyses.common import load_data, train_config, train_recorded
from gradlens.probes import GradStats

CRASH_STEP = 6


@dataclass(frozen=True)
class Config:
    mode: str = "crash_once"

    @classmethod
    def smoke(cls) -> Config:
        return cls(os.environ.get("GRADLENS_TEST_FLAKY", "crash_once"))

    quick = paper = smoke


def runs(config: Config) -> list[dict]:
    return [{
        "analysis": "testing_analyses.flaky", "mode": config.mode, "markers": os.environ["GRADLENS_TEST_MARKERS"],
        "dataset": "digits", "n_train": 128, "n_test": 64, "epochs": 2, "batch_size": 32, "lr": 0.1,
        "momentum": 0.9, "seed": 0, "model": "linear",
    }]


def execute(params: dict, path: Path, *, data_dir: str | None, resume: bool, progress: bool) -> None:
    if params["mode"] == "fail":
        raise RuntimeError("this run always fails (test)")
    markers = Path(params["markers"])
    markers.mkdir(parents=True, exist_ok=True)
    key = path.stem
    attempt = len(list(markers.glob(f"{key}.started-*"))) + 1
    checkpoint = path.with_suffix(".ckpt.pt").exists()
    (markers / f"{key}.started-{attempt}").write_text(json.dumps({"resume": resume, "checkpoint": checkpoint}))
    crash = params["mode"] == "crash_once" and not (markers / f"{key}.crashed").exists()
    data = load_data(params, data_dir)
    torch.manual_seed(params["seed"])
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    steps = [0]

    def after_step() -> None:
        steps[0] += 1
        if crash and steps[0] == CRASH_STEP:
            (markers / f"{key}.crashed").write_text(str(steps[0]))
            os._exit(3)

    train_recorded(params, path, model=model, data=data, config=train_config(params), probes=[GradStats(every=1)],
                   resume=resume, progress=progress, after_step=after_step)
