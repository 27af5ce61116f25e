"""autoscale=dynamo_planner, the executor side (orchestrator.elastic.autoscale): each planner
decision (the fake VirtualConnectorClient, tests/fakes.FakeDecisions) becomes the scale-up or
scale-down `ctl scale` does against the fake Slurm, clipped to the bounds; the planner is told
once the target serves, or once it cannot be met; a hand scale in between is left alone; a
decision handed over again (a restarted driver or link) submits nothing twice."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from orchestrator.ctl import status
from orchestrator.ctl.report_autoscale import autoscale_html, frontend_series, steps
from orchestrator.elastic import scale_up as scaling
from orchestrator.elastic.autoscale import TICK_S, Autoscaler, clean_env, clip, link_argv
from orchestrator.elastic.autoscale_view import autoscale_lines, planner_reason
from orchestrator.elastic.decisions import LINK_SCRIPT, NOT_SET, Decision
from orchestrator.observe import prom
from orchestrator.plan.model import AutoscalePlan, Plan
from orchestrator.rundir import WorkerJob
from orchestrator.rundir.jobs import WorkerJobs
from orchestrator.rundir.layout import RETIRE_FILE
from orchestrator.runtime.state import StateFile
from orchestrator.slurm.client import SlurmClient
from tests.fake_slurm import FakeSlurm
from tests.fakes import FakeDecisions
from tests.test_attached_watch import run_driver_view, started_attached
from tests.test_scale import ETCD, started_run

SPEC = AutoscalePlan(min_prefill=1, max_prefill=2, min_decode=1, max_decode=3, max_gpus=0)


def grow_with(slurm: FakeSlurm) -> Any:
    """`ctl scale` in this process (the real one runs it as a command) against the fake Slurm."""

    def grow(run_dir: Path, counts: Mapping[str, int]) -> WorkerJob:
        request = scaling.ScaleRequest(dict(counts), {})
        return scaling.scale_up(run_dir, request, slurm)

    return grow


def scaled_to(tmp_path: Path, decode: int) -> tuple[FakeSlurm, Path, Any, Any, Any, WorkerJob]:
    """A run scaled by decision 1 to `decode` decodes, the new ones serving in one job."""
    slurm, run_dir, d, planner, scaler = setup(tmp_path)
    planner.publish(NOT_SET, decode)
    tick(d, scaler)
    (job,) = jobs(run_dir)
    serve(run_dir, slurm, job)
    tick(d, scaler)
    return slurm, run_dir, d, planner, scaler, job


def setup(tmp_path: Path, spec: AutoscalePlan = SPEC) -> tuple[FakeSlurm, Path, Any, Any, Any]:
    slurm = FakeSlurm()
    run_dir = started_run(tmp_path, slurm, ETCD)
    d, planner = run_driver_view(run_dir), FakeDecisions()
    scaler = Autoscaler(spec, planner, grow_with(slurm), SlurmClient(slurm))
    return slurm, run_dir, d, planner, scaler


def tick(d: Any, scaler: Autoscaler, times: int = 1) -> None:
    for _ in range(times):
        scaler.on_tick(d)
        d.clock.sleep(TICK_S)


def attached_submits(slurm: FakeSlurm) -> int:
    """sbatch calls after the run's own."""
    return len(slurm.calls_to("sbatch")) - 1


def jobs(run_dir: Path) -> list[WorkerJob]:
    return [j for j in WorkerJobs(run_dir).read() if not j.removed]


def record(run_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = StateFile(run_dir).data["autoscale"]
    return data


def serve(run_dir: Path, slurm: FakeSlurm, job: WorkerJob) -> None:
    """The attached job's driver started its workers and they serve (as JobWatch records)."""
    started_attached(Path(job.run_dir), slurm, job.job_id, "node2")
    WorkerJobs(run_dir).set(job.run_dir, ready_at=time.time())


def retire_as_asked(holder_dir: Path, *, ends: bool) -> list[str]:
    """The holder's driver takes the retire request: marks its workers removed (and ends)."""
    names = [str(n) for n in json.loads((holder_dir / RETIRE_FILE).read_text())["workers"]]
    state = StateFile(holder_dir)
    for name in names:
        state.process(name, state="removed")
    (holder_dir / RETIRE_FILE).unlink()
    if ends:
        state.phase("done", reason="every worker removed by scale-down")
    return names


def test_a_decision_becomes_one_attached_job_and_is_completed_once_it_serves(
    tmp_path: Path,
) -> None:
    slurm, run_dir, d, planner, scaler = setup(tmp_path)
    planner.publish(NOT_SET, 3)
    tick(d, scaler, 3)  # the job is PENDING: capacity coming, not a second job
    (job,) = jobs(run_dir)
    assert job.workers == ("decode-1", "decode-2") and attached_submits(slurm) == 1
    assert planner.completed == [] and record(run_dir)["status"] == "carrying"
    serve(run_dir, slurm, job)
    tick(d, scaler)
    assert planner.completed == [1]
    rec = record(run_dir)
    assert rec["status"] == "done" and rec["target"] == {"prefill": 1, "decode": 3}
    assert rec["actions"] == [f"submitted attached job {job.job_id} (decode-1, decode-2)"]
    assert any("planner decision 1 done in" in s for s in d.said)


def test_counts_are_clipped_to_the_bounds_and_the_gpu_budget() -> None:
    have = {"prefill": 1, "decode": 1}
    target, notes = clip(Decision(1, 5, 0), SPEC, have, {"prefill": 4, "decode": 4})
    assert target == {"prefill": 2, "decode": 1}
    assert [n.split(";")[0] for n in notes] == [
        "prefill 5 -> 2 (autoscale bounds 1-2",
        "decode 0 -> 1 (autoscale bounds 1-3",
    ]
    budget = AutoscalePlan(max_prefill=2, max_decode=3, max_gpus=16)
    target, notes = clip(Decision(2, 2, 3), budget, have, {"prefill": 4, "decode": 4})
    assert target == {"prefill": 2, "decode": 2} and notes == ["cut to autoscale.max_gpus=16"]
    target, _ = clip(Decision(3, NOT_SET, 2), SPEC, {"prefill": 2, "decode": 1}, {})
    assert target == {"prefill": 2, "decode": 2}  # unset: as it is now


def test_a_job_queued_past_the_timeout_is_cancelled_and_the_planner_told(tmp_path: Path) -> None:
    spec = AutoscalePlan(max_decode=3, pending_timeout_s=30.0)
    slurm, run_dir, d, planner, scaler = setup(tmp_path, spec)
    planner.publish(NOT_SET, 2)
    tick(d, scaler)
    (job,) = jobs(run_dir)
    tick(d, scaler, 6)
    assert planner.completed == []  # queued, within the timeout
    WorkerJobs(run_dir).set(job.run_dir, submitted_at=time.time() - 31)
    tick(d, scaler, 6)
    assert planner.completed == [1]
    rec = record(run_dir)
    assert rec["status"] == "unmet" and "still PENDING after 31 s" in rec["detail"]
    assert slurm.jobs[job.job_id].state == "CANCELLED" and jobs(run_dir) == []
    text, _ = status.status(run_dir, SlurmClient(slurm))
    assert "autoscale: planner decision 1" in text and "cannot be met" in text


def test_a_failed_attached_job_makes_the_decision_unmet(tmp_path: Path) -> None:
    slurm, run_dir, d, planner, scaler = setup(tmp_path)
    planner.publish(NOT_SET, 2)
    tick(d, scaler)
    (job,) = jobs(run_dir)
    StateFile(Path(job.run_dir)).phase("failed", error="decode-1 exited with code 1")
    slurm.set_state(job.job_id, "FAILED")
    tick(d, scaler, 2)
    assert planner.completed == [1] and attached_submits(slurm) == 1  # no retry loop
    assert "decode-1 exited with code 1" in record(run_dir)["detail"]
    assert any("cannot be met" in s and "the planner was told" in s for s in d.said)


def test_scale_down_removes_the_newest_workers_and_completes_once_they_are_gone(
    tmp_path: Path,
) -> None:
    slurm, run_dir, d, planner, scaler, job = scaled_to(tmp_path, 3)
    planner.publish(NOT_SET, 2)
    tick(d, scaler, 2)
    assert retire_as_asked(Path(job.run_dir), ends=False) == ["decode-2"]
    assert planner.completed == [1]
    tick(d, scaler)
    assert planner.completed == [1, 2]
    planner.publish(NOT_SET, 1)
    tick(d, scaler)
    assert retire_as_asked(Path(job.run_dir), ends=True) == ["decode-1"]
    tick(d, scaler)
    assert planner.completed == [1, 2, 3] and record(run_dir)["target"]["decode"] == 1


def test_a_hand_scale_between_decisions_is_left_alone_until_the_next(tmp_path: Path) -> None:
    slurm, run_dir, d, planner, scaler, first = scaled_to(tmp_path, 2)
    by_hand = scaling.scale_up(run_dir, scaling.ScaleRequest({"decode": 3}, {}), slurm)
    serve(run_dir, slurm, by_hand)
    tick(d, scaler, 5)
    assert not (Path(by_hand.run_dir) / RETIRE_FILE).exists()  # the hand scale wins...
    planner.publish(NOT_SET, 2)
    tick(d, scaler)  # ...until the next decision: the newest worker (the hand-added) goes
    assert retire_as_asked(Path(by_hand.run_dir), ends=True) == ["decode-2"]
    assert not (Path(first.run_dir) / RETIRE_FILE).exists()


def test_a_decision_handed_over_again_after_a_restart_submits_nothing_twice(
    tmp_path: Path,
) -> None:
    slurm, run_dir, d, planner, scaler = setup(tmp_path)
    planner.publish(NOT_SET, 3)
    tick(d, scaler)
    (job,) = jobs(run_dir)
    # The driver's executor starts again (a new link): the unacknowledged decision comes again.
    planner.restart()
    again = Autoscaler(SPEC, planner, grow_with(slurm), SlurmClient(slurm))
    tick(d, again, 3)
    assert attached_submits(slurm) == 1 and planner.completed == []
    serve(run_dir, slurm, job)
    tick(d, again)
    assert planner.completed == [1]
    planner.publish(NOT_SET, 3)  # the same counts again: nothing to do, told at once
    tick(d, again)
    assert planner.completed == [1, 2] and attached_submits(slurm) == 1


def test_the_planners_own_reason_is_recorded_and_shown(tmp_path: Path) -> None:
    log = tmp_path / "planner.log"
    log.write_text(
        "INFO [summary] HOLD | current: prefill=1 decode=1 | recommended: prefill=- decode=- "
        "(delta: +0 / +0) | load_reason=no_change throughput_reason=n/a | est_ttft=0.0ms\n"
        "INFO [summary] SCALE_UP | current: prefill=1 decode=1 | recommended: prefill=1 "
        "decode=2 (delta: +0 / +1) | load_reason=scale_up throughput_reason=n/a | "
        "est_ttft=12.0ms est_itl=30.0ms\n"
    )
    why = planner_reason(log, Decision(4, 1, 2))
    assert why.startswith("[summary] SCALE_UP") and "load_reason=scale_up" in why
    state = {
        "autoscale": {
            "decision": 4,
            "target": {"prefill": 1, "decode": 2},
            "at": 0.0,
            "why": why,
            "status": "done",
            "took_s": 3.5,
            "actions": ["submitted attached job 101 (decode-1)"],
        }
    }
    lines = autoscale_lines(state)
    assert lines[0].endswith("prefill 1, decode 2 -> done in 3.5 s")
    assert (
        lines[1] == f"  why: {why}" and lines[2] == "  did: submitted attached job 101 (decode-1)"
    )


def test_ctl_scale_from_the_driver_gets_neither_secrets_nor_the_jobs_slurm_variables() -> None:
    env = {"PATH": "/bin", "ETCD_AUTH_PASSWORD": "x", "SLURM_JOB_ID": "7", "HOME": "/h"}
    assert clean_env(env) == {"PATH": "/bin", "HOME": "/h"}


def test_the_report_draws_workers_per_role_against_rate_ttft_and_itl() -> None:
    history = [
        {"at": 100.0, "counts": {"prefill": 1, "decode": 1}},
        {"at": 130.0, "counts": {"prefill": 1, "decode": 2}},
    ]
    assert steps(history, "decode", 160.0) == [(100.0, 1), (130.0, 1), (130.0, 2), (160.0, 2)]

    def scrape(t: float, requests: float, ttft_s: float, itl_s: float) -> dict[str, Any]:
        values = {
            "dynamo_frontend_requests_total": requests,
            f"{prom.TTFT}_sum": ttft_s,
            f"{prom.TTFT}_count": requests,
            f"{prom.ITL}_sum": itl_s,
            f"{prom.ITL}_count": requests * 10,
        }
        return {"t": t, "role": "frontend", "target": "frontend", "ok": True, "values": values}

    records = [scrape(100, 0, 0, 0), scrape(110, 50, 5.0, 10.0), scrape(120, 150, 25.0, 30.0)]
    assert frontend_series(records) == {
        "req/s": [(110.0, 5.0), (120.0, 10.0)],
        "TTFT ms": [(110.0, 100.0), (120.0, 200.0)],
        "ITL ms": [(110.0, 20.0), (120.0, 20.0)],
    }
    entry = {
        "decision": 1,
        "asked": {"prefill": -1, "decode": 2},
        "target": {"prefill": 1, "decode": 2},
        "at": 125.0,
        "status": "done",
        "took_s": 4.2,
        "actions": ["submitted attached job 101 (decode-1)"],
        "why": "[summary] SCALE_UP | load_reason=scale_up",
    }
    state = {"autoscale_history": history, "autoscale_decisions": [entry]}
    page = autoscale_html(state, records, 160.0)
    for label in ("prefill workers serving", "decode workers serving", "req/s", "TTFT ms"):
        assert f'aria-label="{label}"' in page
    assert "submitted attached job 101 (decode-1)" in page and "load_reason=scale_up" in page
    assert autoscale_html({}, records, 160.0) == ""  # a run without autoscaling: no section


def test_the_link_runs_with_the_planners_own_interpreter(plan_of: Callable[..., Plan]) -> None:
    plan = plan_of("engine=mocker", "autoscale=dynamo_planner", "autoscale.python=/opt/p/python")
    assert plan.autoscale is not None
    argv = link_argv(plan, plan.autoscale)
    assert argv == ["/opt/p/python", "-I", str(LINK_SCRIPT), "dynamo"]


def test_teardown_cancels_a_job_still_queued_for_a_decision(tmp_path: Path) -> None:
    slurm, run_dir, d, planner, scaler = setup(tmp_path)
    planner.publish(NOT_SET, 2)
    tick(d, scaler)
    (job,) = jobs(run_dir)
    scaler.stop(d)
    assert planner.closed and slurm.jobs[job.job_id].state == "CANCELLED" and jobs(run_dir) == []
