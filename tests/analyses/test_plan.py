"""``gradlens figures --plan``: the runs each item needs, to do and to reuse, and their estimated cost."""

from __future__ import annotations

import json
import re

from analyses.estimate import Estimator
from analyses.runner import plan
from figures import cli


def rows(lines: list[str]) -> dict[tuple[str, str], list[str]]:
    """(item, analysis) -> the row's columns runs, reuse, resume, do, steps, time."""
    out = {}
    for line in lines:
        parts = line.split()
        if len(parts) >= 8 and parts[2].isdigit():
            out[parts[0], parts[1]] = parts[2:]
    return out


def test_paper_plan_lists_the_documents_run_counts(tmp_path):
    lines = cli.plan_lines(["yt", "van"], "paper", tmp_path, measure=False)
    table = rows(lines)
    # document 004, Figure 9: "10 randomly initialized networks ... for each network type": 3 kinds × 3 depths
    assert table["yt-tab1", "simplified_training"][:4] == ["90", "0", "0", "90"]
    # Figure 2: "training 13 plain networks and 13 residual networks" of depth 20 "for 1200 epochs": runs of their
    # own, not the Table-1 runs (which yt-tab1 & co. keep seeing alone)
    assert table["yt-fig2", "simplified_curves"][0] == "26"
    assert table["yt-fig2", "simplified_curves"][4] == f"{26 * 1200 * 391:,}"
    assert table["yt-tab2", "equivalence"][0] == "6"  # Table 2: one equivalent pair per depth 20/32/44
    # Figure 3: the four simplified nets of depths 20 and 32 are Table-1 runs; the fully-fledged pair is its own
    assert table["yt-fig3", "simplified_noise"][0] == "4"
    assert table["yt-tab-icushion", "noise_stability"][0] == "2"
    # document 002: "10 independent training sessions" × 6 architectures × depths 1..30, MNIST and Fashion-MNIST
    assert table["van-fig1", "van_thin"][0] == "1800" and table["van-fig1", "van_thin_fashion"][0] == "1800"
    # "five independent training sessions" × 4 architectures × (8 CIFAR-10 + 4 CIFAR-100 depths)
    assert table["van-fig2", "van_preact"][0] == "240"
    # steps: 200 epochs × ⌈50 000 / 128⌉ for every simplified run (CIFAR-10's nominal size: no data here)
    assert table["yt-tab1", "simplified_training"][4] == f"{90 * 200 * 391:,}"
    assert any(line.startswith("distinct runs: ") for line in lines)
    assert not list(tmp_path.rglob("*.h5"))  # nothing ran


def test_plan_measures_reuses_and_caches(tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["--plan", "--scale", "smoke", "--only", "sc-fig5", "yt-fig13", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    table = rows(printed.splitlines())
    assert table["sc-fig5", "sc_fcn"][:4] == ["2", "0", "0", "2"]
    steps = 1 * -(-512 // 32)  # one epoch of 512 digits in batches of 32, per run
    assert table["sc-fig5", "sc_fcn"][4] == str(2 * steps)
    assert re.match(r"\d+\.\d s", " ".join(table["sc-fig5", "sc_fcn"][5:]))  # a measured estimate
    assert table["yt-fig13", "phi_curve"][4:] == ["0", "0.0", "s"]  # a computed result: no steps
    assert not list(out.rglob("*.h5"))
    timings = json.loads((out / "runs" / "timings.json").read_text())
    (kind,) = timings
    assert kind == Estimator(None).kind and len(timings[kind]) == 2  # the two models of sc_fcn
    cli.make_figures(["sc-fig5"], "smoke", out, progress=False)
    table = rows(cli.plan_lines(["sc-fig5"], "smoke", out, measure=False))
    assert table["sc-fig5", "sc_fcn"][:4] == ["2", "2", "0", "0"]  # both runs now reused
    assert len(plan("sc_fcn", "smoke")) == 2


def test_fig2_adds_no_run_to_the_table_1_runs_below_paper_scale(tmp_path):
    for scale in ("smoke", "quick"):
        lines = cli.plan_lines(["yt-tab1", "yt-fig2"], scale, tmp_path, measure=False)
        training = plan("simplified_training", scale)
        assert rows(lines)["yt-fig2", "simplified_curves"][0] == "4"  # 2 seeds × plain/residual at one depth
        assert {s.key for s in plan("simplified_curves", scale)} < {s.key for s in training}
        (total,) = [line for line in lines if line.startswith("distinct runs: ")]
        assert total.startswith(f"distinct runs: {len(training)} ")
