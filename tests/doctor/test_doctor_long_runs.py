"""The doctor on long runs: above ``FULL_RECORDS`` records a probe is read as block summaries, never record by
record, and the findings stay what the full read gives (the first non-finite step and layer exactly, AMP
overflows still excused; block-level onsets within one block). ``FULL_RECORDS`` and ``SUMMARY_POINTS`` are
lowered here so that a 1024-step file is "long" (blocks of 32 records)."""

from __future__ import annotations

import numpy as np
from doctor_runs import LAYERS, healthy_grads, load, loud
from synthetic_runs import RunData, grad_probe, write_run

import gradlens.doctor.evidence as evidence
from gradlens.doctor import diagnose

STEPS = list(range(1024))
BLOCK = 32


def scalars():
    return [(s, "loss", 2.3 * np.exp(-s / 200) + 0.1) for s in STEPS]


def long_run(tmp_path, name, plant=None, events=()):
    grads = healthy_grads(steps=STEPS)
    if plant is not None:
        plant(grads)
    data = RunData(probes=[grad_probe(grads, steps=STEPS)], scalars=scalars(), events=list(events))
    return write_run(tmp_path / f"{name}.h5", data)


def both(path, monkeypatch):
    """(full read, summarised read) findings of one file, and the record spans the summarised read asked for."""
    full = diagnose(load(path))
    monkeypatch.setattr(evidence, "FULL_RECORDS", 100)
    monkeypatch.setattr(evidence, "SUMMARY_POINTS", 20)
    run = load(path)
    spans = []
    original = type(run).array

    def array(self, probe, quantity, start=None, stop=None, stride=None, layers=None):
        spans.append((start, stop))
        return original(self, probe, quantity, start, stop, stride, layers)

    monkeypatch.setattr(type(run), "array", array)
    return full, diagnose(run), spans


def rules(findings):
    return {f.rule: f for f in loud(findings)}


def test_a_healthy_long_run_is_read_by_blocks_only(tmp_path, monkeypatch):
    full, short, spans = both(long_run(tmp_path, "healthy"), monkeypatch)
    assert rules(full) == {} and rules(short) == {}
    assert spans == []  # no record read one by one: every value came from the stored blocks


def test_the_first_nonfinite_step_and_layer_stay_exact(tmp_path, monkeypatch):
    def nan(grads):
        for q in ("mean", "mean_abs", "norm", "max_abs"):
            grads[q][700:, 3:] = np.nan
        grads["nonfinite"][700:, 3:] = 16

    full, short, spans = both(long_run(tmp_path, "nan", nan), monkeypatch)
    assert rules(full)["nonfinite"].step == rules(short)["nonfinite"].step == 700
    assert rules(full)["nonfinite"].layers == rules(short)["nonfinite"].layers == (LAYERS[3],)
    # only the block holding step 700 was read record by record, once per quantity
    assert set(spans) == {(672, 704)} and 672 == 700 // BLOCK * BLOCK


def test_amp_overflows_stay_excused_in_a_long_run(tmp_path, monkeypatch):
    skipped = [100, 130, 500]

    def overflow(grads):
        for q in ("mean", "mean_abs", "norm", "max_abs"):
            grads[q][skipped] = np.inf
        grads["nonfinite"][skipped] = 4

    events = [(s, "step_skipped", "GradScaler", "inf gradients") for s in skipped]
    full, short, spans = both(long_run(tmp_path, "amp", overflow, events), monkeypatch)
    assert "nonfinite" not in rules(full) and "nonfinite" not in rules(short)
    assert len(set(spans)) == 3  # the three blocks with an overflow, read again to find the skipped steps


def test_a_dead_layer_is_found_within_one_block(tmp_path, monkeypatch):
    def dead(grads):
        for q in ("mean", "mean_abs", "norm", "max_abs"):
            grads[q][300:, 2] = 0.0

    full, short, _ = both(long_run(tmp_path, "dead", dead), monkeypatch)
    assert rules(full)["dead_layer"].step == 300
    assert 300 <= rules(short)["dead_layer"].step < 300 + BLOCK
    assert rules(full)["dead_layer"].layers == rules(short)["dead_layer"].layers


def test_a_long_scalar_is_thinned_by_stride_and_keeps_its_first_nan(tmp_path, monkeypatch):
    from gradlens.loader import Run
    from gradlens.recorder import Recorder

    steps = np.arange(50_000)
    values = 2.3 * np.exp(-steps / 1e4)
    values[31_337:] = np.nan
    path = tmp_path / "long-loss.h5"
    with Recorder(path, meta={}) as recorder:
        recorder.start([{"name": "fc", "kind": "Linear", "shape": [1, 1], "params": 1}], {})
        for step, value in zip(steps.tolist(), values.tolist(), strict=True):
            recorder.log_scalars(step, loss=value)
    reads = []
    scalar = Run.scalar

    def spy(self, name, start=None, stop=None, stride=None):
        reads.append((start, stop, stride))
        return scalar(self, name, start, stop, stride)

    monkeypatch.setattr(Run, "scalar", spy)
    read = evidence._scalar(load(path), "loss")
    kept_steps, kept = read.steps, read.values
    stride = -(-len(values) // evidence.FULL_RECORDS)
    assert stride == 7 and reads[0] == (None, None, 7)  # never every record of the scalar
    assert kept_steps[0] == 0 and kept_steps[-1] == 49_999
    assert 31_337 in kept_steps.tolist() and 31_336 not in kept_steps.tolist()
    assert np.isnan(kept[kept_steps.tolist().index(31_337)])
    finite = kept_steps[np.isfinite(kept)]
    assert np.all(np.diff(finite) == stride) and np.array_equal(kept, values[kept_steps], equal_nan=True)
    block = 128  # the summary's blocks at SUMMARY_POINTS = 250: the NaN blocks read again, record by record
    assert len(kept) <= evidence.FULL_RECORDS + 1 + evidence.EXACT_BLOCKS * block
