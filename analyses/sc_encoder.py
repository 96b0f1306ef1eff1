"""SUBSTITUTE for document 000's Tables 3 and 4 (DREAM / SemEval-2018 with pretrained BERT/RoBERTa):
a small transformer encoder with and without short circuits, trained from scratch on a generated task.

The document fine-tunes pretrained BERT-base/large and RoBERTa-large (with and without short circuits
across encoder blocks, gap k = 4, batch 2) on two multiple-choice reading-comprehension sets. Neither the
pretrained models nor the data can be had offline, so this analysis does something else, and says so:
``encoder_{depth}`` vs ``scencoder_{depth}`` (short circuits from the last block's ``fc2`` to every k-th
block's ``fc2``, k = ``sc_gap``; the SCBERT idea of the document's Figure 3) trained from scratch on
*bracket matching*: a sequence of ``seq_len`` brackets ``(``/``)`` is balanced (label 1) or not (label 0).
Half the samples are uniformly random balanced words (Dyck-1); the other half are random arrangements of
the same number of ``(`` and ``)`` that are *not* balanced (some prefix closes more than it opened), so
that counting tokens is not enough: the model must track prefix depths (position-dependent aggregation,
where depth helps). Samples are drawn with a local generator seeded per split (train seed 1000 + run seed
is not used: the data are the same for every run, ``data_seed``), no file is read.

Every run records :class:`~gradlens.probes.GradStats` at every step. Token ids are int64 tensors
(``train()`` casts only floating inputs to the training dtype).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from analyses.common import run_device, train_config, train_recorded
from gradlens.data import Dataset
from gradlens.models import create_model
from gradlens.probes import GradStats

OPEN, CLOSE = 0, 1


def balanced_words(n: int, length: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` uniformly random balanced bracket words ``[n, length]`` (``length`` even) by rejection.

    Random arrangements of ``length/2`` opens and closes are balanced with probability ``1/(length/2 + 1)``
    (the cycle lemma), so rejection sampling stays cheap for the lengths used here.
    """
    out, have = [], 0
    while have < n:
        words = arrangements(4 * n, length, generator)
        keep = words[is_balanced(words)]
        out.append(keep)
        have += len(keep)
    return torch.cat(out)[:n]


def arrangements(n: int, length: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` uniformly random arrangements of ``length/2`` opens and ``length/2`` closes ``[n, length]``."""
    order = torch.rand(n, length, generator=generator).argsort(dim=1)
    return (order >= length // 2).long()


def is_balanced(words: torch.Tensor) -> torch.Tensor:
    """``[n]`` bool: every prefix of the word opens at least as many brackets as it closes, and all close."""
    depth = torch.cumsum(torch.where(words == OPEN, 1, -1), dim=1)
    return (depth.min(dim=1).values >= 0) & (depth[:, -1] == 0)


def bracket_data(n_train: int, n_test: int, length: int, seed: int) -> Dataset:
    """Half balanced, half unbalanced (same token counts) words, shuffled; token ids int64 ``[N, length]``."""
    if length % 2 or length < 4:
        raise ValueError(f"seq_len must be even and >= 4 for bracket words, got {length}")
    generator = torch.Generator().manual_seed(seed)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        positive = balanced_words(n - n // 2, length, generator)
        negative = []
        while sum(len(w) for w in negative) < n // 2:
            words = arrangements(2 * n, length, generator)
            negative.append(words[~is_balanced(words)])
        x = torch.cat([positive, torch.cat(negative)[: n // 2]])
        y = torch.cat([torch.ones(len(positive)), torch.zeros(n // 2)]).long()
        order = torch.randperm(n, generator=generator)
        return x[order].long(), y[order]

    x_train, y_train = split(n_train)
    x_test, y_test = split(n_test)
    return Dataset(
        "brackets",
        x_train,
        y_train,
        x_test,
        y_test,
        num_classes=2,
        input_shape=(length,),
        source=f"generated bracket matching (Dyck-1 vs unbalanced, length {length}, seed {seed}); no file",
        preprocessing="token ids 0 = '(', 1 = ')' (int64)",
    )


@dataclass(frozen=True)
class Config:
    """Task size, encoder size, schedule, seeds."""

    n_train: int
    n_test: int
    depths: tuple[int, ...]
    seeds: tuple[int, ...]
    epochs: int
    seq_len: int = 16
    d_model: int = 32
    heads: int = 4
    d_ff: int = 64
    sc_gap: int = 4
    sc_weight: float = 0.2
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.9
    data_seed: int = 0

    @classmethod
    def smoke(cls) -> Config:
        return cls(256, 128, depths=(4,), seeds=(0,), epochs=1, seq_len=8, d_model=16, d_ff=32, sc_gap=2)

    @classmethod
    def quick(cls) -> Config:
        return cls(4000, 1000, depths=(8,), seeds=(0, 1, 2), epochs=5)

    @classmethod
    def medium(cls) -> Config:
        """= quick: the encoder items show at quick on the generated task."""
        return cls.quick()

    @classmethod
    def paper(cls) -> Config:
        return cls(20000, 4000, depths=(8, 12, 24), seeds=(0, 1, 2, 3, 4), epochs=30, seq_len=32)


def runs(config: Config) -> list[dict]:
    """``encoder_{d}`` and ``scencoder_{d}`` for every depth and seed."""
    out = []
    for depth in config.depths:
        for seed in config.seeds:
            for sc in (False, True):
                out.append(
                    {
                        "analysis": "sc_encoder",
                        "model": f"{'sc' if sc else ''}encoder_{depth}",
                        "depth": depth,
                        "sc": sc,
                        "sc_gap": config.sc_gap if sc else None,
                        "sc_weight": config.sc_weight if sc else None,
                        "seed": seed,
                        "epochs": config.epochs,
                        "dataset": "brackets",
                        "n_train": config.n_train,
                        "n_test": config.n_test,
                        "seq_len": config.seq_len,
                        "d_model": config.d_model,
                        "heads": config.heads,
                        "d_ff": config.d_ff,
                        "batch_size": config.batch_size,
                        "lr": config.lr,
                        "momentum": config.momentum,
                        "data_seed": config.data_seed,
                    }
                )
    return out


def execute(params: dict, path: Path, *, data_dir: str | None, resume: bool, progress: bool) -> None:
    """Generate the task, train one encoder/SC encoder with GradStats at every step."""
    data = bracket_data(params["n_train"], params["n_test"], params["seq_len"], params["data_seed"])
    options = {
        "vocab_size": 2,
        "seq_len": params["seq_len"],
        "d_model": params["d_model"],
        "heads": params["heads"],
        "d_ff": params["d_ff"],
        "num_classes": 2,
    }
    if params["sc"]:
        options |= {"sc_gap": params["sc_gap"], "sc_weight": params["sc_weight"]}
    torch.manual_seed(params["seed"])
    encoder = create_model(params["model"], **options).to(run_device(params))
    circuits = [[sc.front, sc.rear] for sc in getattr(encoder, "short_circuits", None) or ()]
    config = train_config(params)
    train_recorded(
        params,
        path,
        model=encoder,
        data=data,
        config=config,
        probes=[GradStats(every=1, params="weights")],
        resume=resume,
        progress=progress,
        extra_meta={"short_circuits": circuits},
    )
