"""Submit-side paths against the fake Slurm: follow, ctl status (reconciled: `lost`), ctl stop in
every phase, sweep status batching, attempts of a requeued job, node-failure exit messages."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest

from orchestrator.core.errors import OrchestratorError
from orchestrator.ctl import cli, status, stop
from orchestrator.launchers.follow import follow
from orchestrator.observe.reconcile import reconcile
from orchestrator.plan.model import Process
from orchestrator.rundir import read_state, write_json_atomic
from orchestrator.runtime.attempts import begin_attempt
from orchestrator.runtime.processes import Running, SrunBackend, exit_detail
from orchestrator.runtime.state import StateFile
from orchestrator.slurm.client import SlurmClient
from orchestrator.slurm.states import JOB_STATES, job_state
from orchestrator.sweep import sweepdir
from tests.fake_slurm import FakeSlurm
from tests.fakes import FakeClock


def make_run(run_dir: Path, *, launcher: str = "submitit", job_id: str = "", **state: Any) -> Path:
    """A run directory as launch() leaves it (launch.json, state.json)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / "launch.json", {"launcher": launcher})
    write_json_atomic(
        run_dir / "state.json", {"timeline": [], "processes": {}, "job_id": job_id, **state}
    )
    return run_dir


def submitted(tmp_path: Path, slurm: FakeSlurm, **state: Any) -> tuple[Path, str]:
    job_id = SlurmClient(slurm).sbatch(["job.sbatch"])
    state.setdefault("phase", "submitted")
    return make_run(tmp_path / "run", job_id=job_id, **state), job_id


class ScriptedClock(FakeClock):
    """Runs `script[n]` at the n-th sleep: the world moves while follow() waits."""

    def __init__(self, script: dict[int, Any]) -> None:
        super().__init__()
        self.script, self.sleeps = script, 0

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        self.sleeps += 1
        if self.sleeps in self.script:
            self.script[self.sleeps]()
        assert self.sleeps < 1000, "follow() never returned"


# --- follow ------------------------------------------------------------------------------------
def test_follow_reports_the_queue_then_returns_when_ready(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    slurm = FakeSlurm()
    run_dir, job = submitted(tmp_path, slurm)

    def start() -> None:
        slurm.set_state(job, "RUNNING", nodes=["node1"])
        StateFile(run_dir).phase("ready", frontend_url="http://10.0.0.1:8000")

    clock = ScriptedClock({30: start})
    assert follow(run_dir, job, client=SlurmClient(slurm), clock=clock) == 0
    err = capsys.readouterr().err
    assert f"job {job}: PENDING" in err and "ready: http://10.0.0.1:8000" in err
    # Polite to slurmctld: one state query per 5 s, not per 0.5 s poll.
    assert len(slurm.calls_to("squeue")) <= clock.t / 5 + 1


def test_follow_fails_when_the_job_ends_before_ready_naming_the_phase(tmp_path: Path) -> None:
    slurm = FakeSlurm()
    run_dir, job = submitted(tmp_path, slurm)
    clock = ScriptedClock({3: lambda: slurm.set_state(job, "BOOT_FAIL")})
    with pytest.raises(
        OrchestratorError, match=f"job {job} ended \\(BOOT_FAIL\\) in phase submitted"
    ):
        follow(run_dir, job, client=SlurmClient(slurm), clock=clock)


def test_follow_until_done_waits_for_the_benchmark(tmp_path: Path) -> None:
    slurm = FakeSlurm()
    run_dir, job = submitted(tmp_path, slurm, phase="ready")
    slurm.set_state(job, "RUNNING")

    def finish() -> None:
        StateFile(run_dir).phase("done", reason="finished")
        slurm.set_state(job, "COMPLETED")

    clock = ScriptedClock({20: finish})
    assert follow(run_dir, job, until_done=True, client=SlurmClient(slurm), clock=clock) == 0
    assert clock.sleeps == 20


# --- reconcile / ctl status --------------------------------------------------------------------
ENDED = sorted(s for s, c in JOB_STATES.items() if c in ("ended_failed", "ended_ok"))


@pytest.mark.parametrize("slurm_state", ENDED)
@pytest.mark.parametrize("phase", ["submitted", "starting", "ready", "stopping"])
def test_a_run_whose_job_ended_is_lost(slurm_state: str, phase: str) -> None:
    view = reconcile({"phase": phase}, job_state("7", slurm_state), None)
    assert view.phase == "lost" and not view.ok and view.recorded == phase
    assert f"job 7 ended ({slurm_state}) in phase {phase}" in view.why


@pytest.mark.parametrize("slurm_state", ["RUNNING", "SUSPENDED", "SIGNALING"])
def test_a_live_job_keeps_its_recorded_phase(slurm_state: str) -> None:
    view = reconcile({"phase": "ready"}, job_state("7", slurm_state), None)
    assert (view.phase, view.ok, view.job_state) == ("ready", True, slurm_state)


def test_a_completing_job_is_lost_unless_its_driver_is_stopping() -> None:
    # Its batch script (the driver) is over: a driver that still says ready did not end it.
    view = reconcile({"phase": "ready"}, job_state("7", "COMPLETING"), None)
    assert view.phase == "lost" and "job 7 is ending (COMPLETING) in phase ready" in view.why
    stopping = reconcile({"phase": "stopping"}, job_state("7", "COMPLETING"), None)
    assert stopping.phase == "stopping" and stopping.ok


def test_final_phases_and_requeued_jobs() -> None:
    assert reconcile({"phase": "done"}, job_state("7", "COMPLETED"), None).phase == "done"
    failed = reconcile({"phase": "failed"}, job_state("7", "FAILED"), None)
    assert failed.phase == "failed" and not failed.ok
    # Driver killed (no phase written), then Slurm put the job back in the queue.
    back = reconcile({"phase": "ready"}, job_state("7", "PENDING"), None)
    assert back.phase == "requeued" and back.ok and "requeued" in back.why
    started = {"phase": "done", "timeline": [{"phase": "starting"}, {"phase": "done"}]}
    assert reconcile(started, job_state("7", "REQUEUED"), None).phase == "requeued"
    assert reconcile({"phase": "submitted"}, job_state("7", "PENDING"), None).phase == "submitted"


def test_a_gone_local_driver_is_lost_and_never_written(tmp_path: Path) -> None:
    gone = {"phase": "ready", "driver_pid": 2**22 + 7, "driver_host": socket.gethostname()}
    run_dir = make_run(tmp_path / "run", launcher="local", **gone)
    (run_dir / "driver.log").write_text("starting\nready: http://127.0.0.1:8000\n")
    assert cli.main(["status", str(run_dir)]) == 1
    text, code = status.status(run_dir)
    assert code == 1 and "lost: the driver (pid 4194311" in text
    assert "last 20 lines of" in text and "ready: http://127.0.0.1:8000" in text
    assert read_state(run_dir)["phase"] == "ready"  # lost is shown, never recorded
    alive = {**gone, "driver_pid": os.getpid()}
    write_json_atomic(run_dir / "state.json", alive)
    assert status.status(run_dir)[1] == 0
    elsewhere = {**gone, "driver_host": "another-host"}
    write_json_atomic(run_dir / "state.json", elsewhere)
    assert status.status(run_dir)[1] == 0  # cannot be checked from here: shown as recorded


def test_status_of_a_lost_slurm_run_names_the_state_and_tails_the_log(tmp_path: Path) -> None:
    slurm = FakeSlurm()
    run_dir, job = submitted(tmp_path, slurm, phase="ready")
    slurm.set_state(job, "FAILED")
    (run_dir / "submitit").mkdir()
    (run_dir / "submitit" / f"{job}_0_log.err").write_text("Traceback\nKilled\n")
    text, code = status.status(run_dir, SlurmClient(slurm))
    assert code == 1
    assert f"job: {job} (FAILED)" in text and "lost: " in text
    assert f"job {job} ended (FAILED) in phase ready (state.json says ready)" in text
    assert "Killed" in text


def test_status_shows_restarts_and_degraded(tmp_path: Path) -> None:
    slurm = FakeSlurm()
    restarts = [{"at": "t", "exit_code": -9, "tail": "x"}] * 2
    run_dir, job = submitted(
        tmp_path,
        slurm,
        phase="ready",
        degraded=["decode-0"],
        processes={"decode-0": {"role": "decode", "state": "starting", "restarts": restarts}},
    )
    slurm.set_state(job, "RUNNING")
    text, code = status.status(run_dir, SlurmClient(slurm))
    assert code == 0 and "degraded: decode-0" in text and "restarts=2" in text


# --- ctl stop ----------------------------------------------------------------------------------
def test_stop_of_a_pending_job_cancels_it_at_once(tmp_path: Path) -> None:
    slurm = FakeSlurm()
    run_dir, job = submitted(tmp_path, slurm)
    assert stop.stop(run_dir, client=SlurmClient(slurm)) == f"cancelled before start (job {job})"
    assert ("scancel", job) in slurm.calls and slurm.jobs[job].state == "CANCELLED"
    state = read_state(run_dir)
    assert state["phase"] == "done" and state["reason"] == "cancelled before start"
    assert not (run_dir / "stop-requested").exists()  # nothing to ask: no driver ever ran
    assert stop.stop(run_dir, client=SlurmClient(slurm)) == "already done"


def test_stop_while_starting_asks_the_driver(tmp_path: Path) -> None:
    slurm = FakeSlurm()
    run_dir, job = submitted(tmp_path, slurm, phase="starting")
    slurm.set_state(job, "RUNNING", nodes=["node1"])
    # The driver (the batch shell) reacts to SIGTERM by stopping what started.
    slurm.on_signal = lambda j, sig, batch: StateFile(run_dir).phase("done", reason="SIGTERM")
    assert stop.stop(run_dir, client=SlurmClient(slurm)) == "stopped (done)"
    assert slurm.signals == [(job, "TERM", True)] and (run_dir / "stop-requested").exists()


def test_stop_waits_on_its_clock_for_the_driver_and_names_its_log(tmp_path: Path) -> None:
    slurm = FakeSlurm()
    run_dir, job = submitted(tmp_path, slurm, phase="ready")
    slurm.set_state(job, "RUNNING", nodes=["node1"])
    clock = FakeClock()  # the driver never records its end: ctl gives up at its deadline
    with pytest.raises(OrchestratorError, match=r"did not finish within 30 s; see .*driver.log"):
        stop.stop(run_dir, timeout_s=30, client=SlurmClient(slurm), clock=clock)
    assert 30 <= clock.t < 30.5


def test_stop_of_a_requeued_or_lost_run(tmp_path: Path) -> None:
    slurm = FakeSlurm()
    run_dir, job = submitted(tmp_path, slurm, phase="ready")  # its driver was killed; requeued
    assert stop.stop(run_dir, client=SlurmClient(slurm)) == f"cancelled while requeued (job {job})"
    assert read_state(run_dir)["phase"] == "done"
    run2, job2 = submitted(tmp_path / "b", slurm, phase="ready")
    slurm.set_state(job2, "NODE_FAIL")
    assert stop.stop(run2, client=SlurmClient(slurm)).startswith(
        f"nothing to stop: job {job2} ended"
    )


# --- sweep status: one query for all points ----------------------------------------------------
def test_sweep_status_asks_slurm_once_for_all_points(tmp_path: Path) -> None:
    slurm = FakeSlurm()
    client = SlurmClient(slurm)
    points = []
    for i, final in enumerate(["RUNNING", "PENDING", "FAILED", "TIMEOUT"]):
        job = client.sbatch(["x"])
        slurm.set_state(job, final)
        make_run(tmp_path / f"runs/p{i}", job_id=job, phase="submitted")
        points.append(
            {
                "label": f"p{i}",
                "name": f"p{i}",
                "nodes": 1,
                "gpus": 8,
                "runs": [{"run_dir": f"runs/p{i}", "job_id": job}],
            }
        )
    write_json_atomic(tmp_path / "manifest.json", {"points": points})
    slurm.calls.clear()
    lines = sweepdir.status(tmp_path, slurm).splitlines()[1:]
    assert [c[0] for c in slurm.calls] == ["squeue", "sacct"]
    assert [line.split()[1] for line in lines] == ["active", "active", "failed", "failed"]
    assert "ended (TIMEOUT)" in lines[3]


# --- attempts ----------------------------------------------------------------------------------
def test_a_requeued_job_is_a_new_attempt_of_the_same_run(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run", job_id="42", phase="submitted")
    state = StateFile(run_dir)
    assert begin_attempt(state, {"SLURM_JOB_ID": "42"}) == 1
    state.phase("ready")
    state.process("decode-0", state="healthy")
    state.phase("done", reason="received SIGTERM")
    again = StateFile(run_dir)  # the batch script runs again: a new driver process
    assert begin_attempt(again, {"SLURM_JOB_ID": "42", "SLURM_RESTART_COUNT": "1"}) == 2
    data = json.loads((run_dir / "state.json").read_text())
    assert [(a["attempt"], a["job_id"], a["restart_count"]) for a in data["attempts"]] == [
        (1, "42", 0),
        (2, "42", 1),
    ]
    assert data["attempts"][0]["outcome"]["reason"] == "received SIGTERM"
    assert data["attempts"][0]["outcome"]["processes"]["decode-0"]["state"] == "healthy"
    assert data["processes"] == {} and "reason" not in data and data["attempt"] == 2
    assert [t["phase"] for t in data["timeline"]] == ["ready", "done"]  # appended, never reset


# --- node failure in the exit message ----------------------------------------------------------
def running_on(tmp_path: Path, plan: Any, host: str, log_text: str) -> Running:
    proc: Process = plan.process("decode-0")
    log = tmp_path / "decode-1.log"
    log.write_text(log_text)
    return Running(proc=proc, popen=None, log=log, host=host)  # type: ignore[arg-type]


def test_exit_message_names_the_failed_node(tmp_path: Path, plan_of: Any) -> None:
    slurm = FakeSlurm()
    job = SlurmClient(slurm).sbatch(["x"])
    # --no-kill: Slurm dropped node2 from the job and ReturnToService already made it idle.
    slurm.set_state(job, "RUNNING", nodes=["node1", "node3"])
    plan = plan_of()
    backend = SrunBackend(plan.slurm, job, ["node1", "node2", "node3"], slurm)
    running = running_on(tmp_path, plan, "node2", "serving\nsrun: error: Node failure on node2\n")
    assert exit_detail(backend, running) == (
        f"; node failure: node2 (srun reported a node failure; removed from job {job}; now IDLE)"
    )
    slurm.set_state(job, "RUNNING", nodes=["node1", "node2", "node3"])
    slurm.set_node_state("node3", "down*")
    assert backend.describe_exit(running_on(tmp_path, plan, "node2", "bye\n")) == (
        "; node failure: node3 (now DOWN)"
    )
    slurm.set_node_state("node3", "mixed")
    assert backend.describe_exit(running_on(tmp_path, plan, "node2", "exit 1\n")) == ""
