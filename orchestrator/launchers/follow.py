"""Follow a submitted run from the submitting side: its phases from state.json, its job from
Slurm (queued, or ended before its driver got where we wait)."""

from __future__ import annotations

import sys
from pathlib import Path

from orchestrator.core.effects import Clock, SubprocessRunner, SystemClock
from orchestrator.core.errors import OrchestratorError
from orchestrator.observe.reconcile import StateLike, as_state, driver_alive
from orchestrator.rundir import FINAL, Phase, RunDir
from orchestrator.rundir.phase import QUEUED, SETTLED
from orchestrator.runtime import logscan
from orchestrator.runtime.state import progress_line
from orchestrator.slurm.client import JobState, SlurmClient

JOB_CHECK_S = 5.0  # polite to slurmctld: one squeue (or sacct) every 5 s per follower
LOG_CHECK_S = 2.0  # log tails are read at most this often (they may sit on a shared filesystem)


class ReadinessLines:
    """One line per change of a process's readiness progress parsed from its log
    (`decode-0: loading weights 50%`, in 25 % steps: a line per change, not a flood)."""

    def __init__(self) -> None:
        self.last: dict[str, str] = {}
        self.next_check = 0.0

    def changes(self, state: StateLike, now: float) -> list[str]:
        """The processes whose progress changed since the last call (throttled)."""
        state = as_state(state)
        if now < self.next_check or state.phase != Phase.STARTING:
            return []
        self.next_check = now + LOG_CHECK_S
        out = []
        for name, entry in state.processes.items():
            if entry.get("state") != "starting" or not entry.get("log"):
                continue
            found = logscan.progress(logscan.read_tail(Path(entry["log"])))
            text = found.coarse() if found else ""
            if text and text != self.last.get(name):
                self.last[name] = text
                out.append(f"{name}: {text}")
        return out


def follow(
    run_dir: Path,
    job_id: str,
    *,
    until_done: bool = False,
    interval_s: float = 0.5,
    client: SlurmClient | None = None,
    clock: Clock | None = None,
) -> int:
    """Print progress (stderr) until the deployment is ready (0) or failed (1); with
    `until_done` (a benchmark that ends the job) until it is done (0) or failed (1). Raises
    when the job ends before its driver reached that phase (killed, failed to start)."""
    client = client or SlurmClient(SubprocessRunner())
    clock = clock or SystemClock()
    settled = FINAL if until_done else SETTLED
    last, last_job, announced, next_job_check = "", "", False, 0.0
    readiness = ReadinessLines()
    while True:
        state = RunDir(run_dir).state()
        phase = state.phase
        line = progress_line(state)
        if line != last:
            _say(line)
            last = line
        for change in readiness.changes(state, clock.now()):
            _say(change)
        if phase == Phase.READY and not announced:
            _say(
                f"ready: {state.frontend_url} (stop with: python -m orchestrator.ctl stop "
                f"{run_dir})"
            )
            announced = True
            if not until_done:
                return 0
        if phase in FINAL:
            _say(f"{phase}: {state.error or state.reason}")
            return 0 if phase == Phase.DONE and until_done else 1
        if clock.now() >= next_job_check:
            job = _check_job_alive(client, job_id, run_dir, settled=settled)
            if phase in QUEUED and job.state and job.state != last_job:
                _say(f"job {job_id}: {job.state}")  # e.g. PENDING in the queue
                last_job = job.state
            next_job_check = clock.now() + JOB_CHECK_S
        clock.sleep(interval_s)


def _say(message: str) -> None:
    sys.stderr.write(f"[orchestrator] {message}\n")
    sys.stderr.flush()


def _check_job_alive(
    client: SlurmClient, job_id: str, run_dir: Path, *, settled: frozenset[Phase]
) -> JobState:
    """The job's Slurm state; raises when it ended before its driver wrote a phase we wait for
    (killed, failed to start)."""
    if not job_id:  # a driver on this host (frontend.placement=here)
        files = RunDir(run_dir)
        here = files.state()
        if driver_alive(here) is False and here.phase not in settled:
            raise OrchestratorError(
                f"the driver (pid {here.driver_pid}) ended in phase "
                f"{here.phase or 'none'}; see {files.driver_out} "
                f"and {files.driver_log}"
            )
        return JobState(job_id="")
    job = client.state(job_id)
    if job.ended:
        files = RunDir(run_dir)
        phase = files.state().phase
        if phase not in settled:
            raise OrchestratorError(
                f"job {job_id} ended ({job.state}) in phase {phase or 'none'}; "
                f"see {files.driver_log}, {files.submitit_dir} or "
                f"{files.slurm_output(job_id)}"
            )
    return job
