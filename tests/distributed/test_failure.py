"""A rank that dies: the survivor stops with a clear error within seconds, and the file keeps its records."""

from __future__ import annotations

import gradlens
from tests.distributed import scenarios
from tests.distributed.harness import GROUP_TIMEOUT_S, run_ranks

STEPS, KILL_AT = 6, 3
# a hang guard below every timeout that could end the survivor's wait (the group's, the reducer's 5 min)
DEADLINE = 240.0
assert DEADLINE < GROUP_TIMEOUT_S


def test_ddp_survivor_stops_with_a_clear_error_and_a_readable_file(tmp_path):
    path = tmp_path / "run.h5"
    rank0, rank1 = run_ranks(scenarios.ddp_session, 2, str(path), STEPS, KILL_AT, deadline=DEADLINE)
    assert rank1.exitcode == 3  # killed itself (os._exit) at the start of step 3
    # rank 0 failed in DDP's gradient all-reduce inside loss.backward(), at once, not after the group timeout
    # (GROUP_TIMEOUT_S > DEADLINE: waiting for it would end in "Deadline"); no bound on its speed
    assert rank0.error is not None and rank0.error != "Deadline"
    assert "Connection" in rank0.message  # gloo: "Connection closed by peer" / "Connection reset by peer"
    # gradlens's note on the exception says what happened to the file
    assert "gradlens: rank 0 of 2 (gloo) stopped at step 3" in rank0.trace
    assert "another rank has probably died" in rank0.trace
    run = gradlens.load(path)
    assert run.status == "failed"
    assert sorted(set(run.frame("grad_stats").step)) == [0, 1, 2]
    assert sorted(set(run.frame("layer_cushion").step)) == [0, 1, 2]


def test_fsdp2_survivor_raises_rank_failure_from_the_reduction(tmp_path):
    path = tmp_path / "run.h5"
    # rank 1 dies after its backward (the reduce-scatter completed), before optimizer.step(): rank 0 waits for it
    # in GradStats' all-reduce
    rank0, rank1 = run_ranks(scenarios.fsdp2_session, 2, str(path), STEPS, KILL_AT, deadline=DEADLINE)
    assert rank1.exitcode == 3
    # it fails when rank 1's socket closes, not after the reducer's timeout (5 min, past DEADLINE: "Deadline")
    assert rank0.error == "RankFailure"
    assert "the all-reduce of GradStats sums" in rank0.message
    assert "failed on rank 0 of 2 (gloo): another rank has probably died" in rank0.message
    run = gradlens.load(path)
    assert run.status == "failed"
    assert sorted(set(run.frame("grad_stats").step)) == [0, 1, 2]
    # the failure is not mistaken for a probe error: no probe_error event, no probe switched off
    assert "probe_error" not in set(run.events().kind)
