"""The ``medium`` scale: every analysis has a preset, and the training presets keep the documents' batch sizes and
schedule shapes (the point of medium: where quick's batch-32 shortcut cannot show a claim)."""

from __future__ import annotations

import pytest

from analyses import runner


@pytest.mark.parametrize("analysis", runner.known_analyses())
def test_every_analysis_plans_at_medium_scale(analysis):
    specs = runner.plan(analysis, "medium")
    assert specs, analysis
    assert len({spec.key for spec in specs}) == len(specs)


# analysis -> (batch size, learning-rate drops as fractions of the epochs) of the document's setup
DOCUMENT_SCHEDULES = {
    "simplified_training": (128, (0.6, 0.8)),  # document 004, Table 1: epochs 120 and 160 of 200
    "noise_stability": (128, (0.5, 0.75)),  # document 004, fully-fledged nets: 90 and 135 of 180
    "equivalence": (128, (0.6, 0.8)),
    "van_preact": (128, (82 / 165, 125 / 165)),  # document 002, 4.2
    "sc_resnet": (32, (0.5, 0.75)),  # document 000: batch 32; ResNet-v1 schedule 100 and 150 of 200
}


@pytest.mark.parametrize("analysis", sorted(DOCUMENT_SCHEDULES))
def test_medium_training_keeps_the_documents_batch_and_schedule_shape(analysis):
    batch, fractions = DOCUMENT_SCHEDULES[analysis]
    for spec in runner.plan(analysis, "medium"):
        params = spec.params
        if "sc_rears" in params and params["batch_size"] != batch:
            continue  # sc-fig9's batch-size ablation
        assert params["batch_size"] == batch, params
        drops = [m / params["epochs"] for m in params["milestones"]]
        assert drops == pytest.approx(list(fractions), abs=0.06), params


def test_every_van_run_reads_eq7_with_the_loss_summed_over_the_documents_batch():
    for analysis in ("van_thin", "van_thin_fashion", "van_preact"):
        for scale in runner.SCALES:
            assert {spec.params["alpha_grad_scale"] for spec in runner.plan(analysis, scale)} == {128.0}
