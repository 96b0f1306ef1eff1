"""The overhead benchmark's report (python -m gradlens.bench) at a tiny size: its lines, not its ratios (those
are measured by `make bench` in one interleaved run, never in a unit test)."""

from __future__ import annotations

import re

from gradlens import bench


def test_the_benchmark_prints_each_variants_ratio_and_the_firing_time(capsys):
    status = bench.main(["--cases", "thin", "--threads", "1", "--rounds", "2", "--steps", "1", "--no-peers"])
    out = capsys.readouterr().out
    assert status in (0, 1)  # 1 when a target was missed: two rounds say nothing about the ratios
    for variant in ("bare", "gradstats", "gradstats+exp", "gradstats+hist40", "activations", "gradstats+activations"):
        assert re.search(rf"^  {re.escape(variant)} +[\d.]+ ms/step wall +[\d.]+x", out, re.M), variant
    firings = re.findall(r"its firing inside optimizer\.step\(\): median (\d+) us, mean (\d+) us = ([\d.]+) %", out)
    assert len(firings) == 5  # GradStats, with exponent histograms, with 40 bins, ActivationStats, with GradStats
    # the ActivationStats variants time whole periods of their schedule (every 10 steps) in rounds of their own
    assert "-- activations, gradstats+activations in rounds of their own with bare: 5 rounds x 10 steps" in out
    assert all(float(median) > 0 and float(share) > 0 for median, _, share in firings)
    assert "load average at start" in out and "load average at end" in out


def test_a_variant_is_one_line_in_the_registry(capsys, monkeypatch):
    """A new variant added to VARIANTS (here two GradStats probes) is timed beside bare, with its firing time."""
    from gradlens.bench import variants
    from gradlens.probes import GradStats

    line = variants.Variant(variants.probes(lambda: [GradStats(), GradStats(name="second", exponents=True)]))
    monkeypatch.setitem(variants.VARIANTS, "two-probes", line)
    status = bench.main(["--cases", "thin", "--threads", "1", "--rounds", "2", "--steps", "1", "--variants",
                         "two-probes"])
    out = capsys.readouterr().out
    assert status in (0, 1)
    assert re.search(r"^  two-probes +[\d.]+ ms/step wall +[\d.]+x", out, re.M)
    assert not re.search(r"^  gradstats ", out, re.M)  # only the variants named


def test_a_group_times_whole_periods_of_its_schedule():
    from gradlens.bench.timing import group_shape

    assert group_shape(["bare", "gradstats"], 45, 2) == (45, 2)
    assert group_shape(["bare", "activations"], 45, 2) == (9, 10)  # 90 timed steps either way
    assert group_shape(["bare", "activations"], 100, 10) == (100, 10)
    assert group_shape(["bare", "activations"], 9, 1) == (5, 10)  # at least 5 rounds
    assert group_shape(["bare", "tensorboard"], 100, 10) == (33, 10)  # a peer's group: a third as many


def test_an_unknown_variant_is_refused_by_name(capsys):
    import pytest

    with pytest.raises(SystemExit):
        bench.main(["--variants", "gradstat"])
    assert "unknown variants ['gradstat']" in capsys.readouterr().err
