"""Follow a submitted run from the submitting side: its phases from state.json, its job from
Slurm (queued, or ended before its driver got where we wait)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from orchestrator.effects import Clock, SubprocessRunner, SystemClock
from orchestrator.errors import OrchestratorError
from orchestrator.runtime import logscan
from orchestrator.runtime.reconcile import driver_alive
from orchestrator.runtime.state import progress_line, read_state
from orchestrator.slurm.client import JobState, SlurmClient

FINAL_OR_READY = ("failed", "done", "ready")
JOB_CHECK_S = 5.0  # polite to slurmctld: one squeue (or sacct) every 5 s per follower
LOG_CHECK_S = 2.0  # log tails are read at most this often (they may sit on a shared filesystem)


class ReadinessLines:
    """One line per change of a process's readiness progress parsed from its log
    (`decode-0: loading weights 50%`, in 25 % steps: a line per change, not a flood)."""

    def __init__(self) -> None:
        self.last: dict[str, str] = {}
        self.next_check = 0.0

    def changes(self, state: dict[str, Any], now: float) -> list[str]:
        """The processes whose progress changed since the last call (throttled)."""
        if now < self.next_check or state.get("phase") != "starting":
            return []
        self.next_check = now + LOG_CHECK_S
        out = []
        for name, entry in state.get("processes", {}).items():
            if entry.get("state") != "starting" or not entry.get("log"):
                continue
            found = logscan.progress(logscan.read_tail(Path(entry["log"])))
            text = found.coarse() if found else ""
            if text and text != self.last.get(name):
                self.last[name] = text
                out.append(f"{name}: {text}")
        return out


def follow(
    run_dir: Path, job_id: str, *, until_done: bool = False, interval_s: float = 0.5,
    client: SlurmClient | None = None, clock: Clock | None = None,
) -> int:  # fmt: skip
    """Print progress (stderr) until the deployment is ready (0) or failed (1); with
    `until_done` (a benchmark that ends the job) until it is done (0) or failed (1). Raises
    when the job ends before its driver reached that phase (killed, failed to start)."""
    client = client or SlurmClient(SubprocessRunner())
    clock = clock or SystemClock()
    settled = ("failed", "done") if until_done else FINAL_OR_READY
    last, last_job, announced, next_job_check = "", "", False, 0.0
    readiness = ReadinessLines()
    while True:
        state = read_state(run_dir)
        phase = state.get("phase", "")
        line = progress_line(state)
        if line != last:
            _say(line)
            last = line
        for change in readiness.changes(state, clock.now()):
            _say(change)
        if phase == "ready" and not announced:
            _say(f"ready: {state.get('frontend_url')} (stop with: python -m orchestrator.ctl stop "
                 f"{run_dir})")  # fmt: skip
            announced = True
            if not until_done:
                return 0
        if phase in ("failed", "done"):
            _say(f"{phase}: {state.get('error') or state.get('reason', '')}")
            return 0 if phase == "done" and until_done else 1
        if clock.now() >= next_job_check:
            job = _check_job_alive(client, job_id, run_dir, settled=settled)
            if phase in ("", "submitted") and job.state and job.state != last_job:
                _say(f"job {job_id}: {job.state}")  # e.g. PENDING in the queue
                last_job = job.state
            next_job_check = clock.now() + JOB_CHECK_S
        clock.sleep(interval_s)


def _say(message: str) -> None:
    sys.stderr.write(f"[orchestrator] {message}\n")
    sys.stderr.flush()


def _check_job_alive(
    client: SlurmClient, job_id: str, run_dir: Path, *, settled: tuple[str, ...]
) -> JobState:
    """The job's Slurm state; raises when it ended before its driver wrote a phase we wait for
    (killed, failed to start)."""
    if not job_id:  # a driver on this host (frontend.placement=here)
        here = read_state(run_dir)
        if driver_alive(here) is False and here.get("phase") not in settled:
            raise OrchestratorError(f"the driver (pid {here.get('driver_pid')}) ended in phase "
                                    f"{here.get('phase') or 'none'}; see {run_dir}/driver.out "
                                    f"and {run_dir}/driver.log")  # fmt: skip
        return JobState(job_id="")
    job = client.state(job_id)
    if job.ended:
        state: dict[str, Any] = read_state(run_dir)
        phase = state.get("phase")
        if phase not in settled:
            raise OrchestratorError(f"job {job_id} ended ({job.state}) in phase {phase or 'none'}; "
                                    f"see {run_dir}/driver.log, {run_dir}/submitit or "
                                    f"{run_dir}/slurm-{job_id}.out")  # fmt: skip
    return job
