"""What a run really is: state.json as its driver last wrote it, checked against the Slurm job
and the driver process. Readers (ctl status, sweeps) show this; nothing here writes state.json:
a run shown `lost` may come back (Slurm re-runs a requeued job's batch script, and with it the
driver, in the same run directory)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any

from orchestrator.slurm.states import JobState

# Phases in which a driver should be running (or about to run).
DRIVER_PHASES = ("", "submitted", "starting", "ready", "stopping")
STARTED_PHASES = ("starting", "ready", "stopping")


@dataclass(frozen=True, slots=True, kw_only=True)
class RunView:
    """A run as it is: `phase` is what to show (`lost` and `requeued` never come from
    state.json), `recorded` what state.json says, `why` the evidence when they differ."""

    phase: str
    recorded: str
    job_state: str = ""
    why: str = ""

    @property
    def ok(self) -> bool:
        """False for a run that failed or was lost (ctl status exits 1)."""
        return self.phase not in ("failed", "lost")


def reconcile(state: dict[str, Any], job: JobState | None, driver_alive: bool | None) -> RunView:
    """Reconcile state.json with reality. `job`: the run's Slurm job (None without Slurm);
    `driver_alive`: whether the local driver process exists (None when it cannot be checked,
    e.g. it runs on another host).

    - a Slurm job that ended while state.json says a driver runs -> `lost`, naming the state;
      also while Slurm still cleans it up (COMPLETING), unless the driver is stopping;
    - a driver process that is gone while state.json says it runs -> `lost`;
    - a job back in the queue after its driver started or finished (requeue, preemption) ->
      `requeued`: Slurm will run the batch script, and so the driver, again;
    - anything else: the recorded phase."""
    recorded = str(state.get("phase", ""))
    slurm = job.state if job is not None else ""
    view = RunView(
        phase=recorded or ("submitted" if job else ""), recorded=recorded, job_state=slurm
    )
    if job is not None and job.ended and recorded in DRIVER_PHASES:
        where = f"in phase {recorded}" if recorded else "before its driver started"
        return _lost(view, f"job {job.job_id} ended ({slurm}) {where}")
    if job is not None and job.ending and recorded in DRIVER_PHASES and recorded != "stopping":
        # The driver is the batch script: once it ends, a running driver has written its end.
        return _lost(view, f"job {job.job_id} is ending ({slurm}) in phase {recorded or '-'}")
    if job is not None and job.queued and (recorded in STARTED_PHASES or _after_start(state)):
        return RunView(phase="requeued", recorded=recorded, job_state=slurm,
                       why=f"job {job.job_id} is {slurm} again: Slurm requeued it; the driver "
                       "starts a new attempt in this run directory")  # fmt: skip
    if driver_alive is False and recorded in DRIVER_PHASES:
        pid, host = state.get("driver_pid", "?"), state.get("driver_host", "?")
        return _lost(view, f"the driver (pid {pid} on {host}) is gone in phase {recorded or '-'}")
    return view


def _after_start(state: dict[str, Any]) -> bool:
    """A final phase reached by a driver (not by `ctl stop` cancelling a queued job)."""
    return state.get("phase") in ("done", "failed") and any(
        t.get("phase") == "starting" for t in state.get("timeline", [])
    )


def _lost(view: RunView, why: str) -> RunView:
    return RunView(phase="lost", recorded=view.recorded, job_state=view.job_state, why=why)


def driver_alive(state: dict[str, Any]) -> bool | None:
    """Whether a local driver's pid exists; None when it runs elsewhere or is not recorded."""
    pid, host = state.get("driver_pid"), state.get("driver_host")
    if not pid or host != socket.gethostname():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True
