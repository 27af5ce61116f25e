"""What a run really is: state.json as its driver last wrote it, checked against the Slurm job
and the driver process. Readers (ctl status, sweeps) show this; nothing here writes state.json:
a run shown `lost` may come back (Slurm re-runs a requeued job's batch script, and with it the
driver, in the same run directory)."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from orchestrator.rundir import ACTIVE, FINAL, STARTED, Phase, RunState
from orchestrator.slurm.states import JobState

StateLike = RunState | Mapping[str, Any]  # a record, or state.json's mapping as read


def as_state(state: StateLike) -> RunState:
    """The typed record of `state`."""
    return state if isinstance(state, RunState) else RunState.from_dict(state)


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
        return self.phase not in (Phase.FAILED, Phase.LOST)


def reconcile(state: StateLike, job: JobState | None, driver_alive: bool | None) -> RunView:
    """Reconcile state.json with reality. `job`: the run's Slurm job (None without Slurm);
    `driver_alive`: whether the local driver process exists (None when it cannot be checked,
    e.g. it runs on another host).

    - a Slurm job that ended while state.json says a driver runs -> `lost`, naming the state;
      also while Slurm still cleans it up (COMPLETING), unless the driver is stopping;
    - a driver process that is gone while state.json says it runs -> `lost`;
    - a job back in the queue after its driver started or finished (requeue, preemption) ->
      `requeued`: Slurm will run the batch script, and so the driver, again;
    - anything else: the recorded phase."""
    state = as_state(state)
    recorded = state.phase.value
    slurm = job.state if job is not None else ""
    shown = recorded or (Phase.SUBMITTED.value if job else Phase.NEW.value)
    view = RunView(phase=shown, recorded=recorded, job_state=slurm)
    if job is not None and job.ended and recorded in ACTIVE:
        where = f"in phase {recorded}" if recorded else "before its driver started"
        return _lost(view, f"job {job.job_id} ended ({slurm}) {where}")
    if job is not None and job.ending and recorded in ACTIVE and recorded != Phase.STOPPING:
        # The driver is the batch script: once it ends, a running driver has written its end.
        return _lost(view, f"job {job.job_id} is ending ({slurm}) in phase {recorded or '-'}")
    if job is not None and job.queued and (recorded in STARTED or _after_start(state)):
        return RunView(
            phase=Phase.REQUEUED.value,
            recorded=recorded,
            job_state=slurm,
            why=f"job {job.job_id} is {slurm} again: Slurm requeued it; the driver "
            "starts a new attempt in this run directory",
        )
    if driver_alive is False and recorded in ACTIVE:
        pid, host = state.data.get("driver_pid", "?"), state.data.get("driver_host", "?")
        return _lost(view, f"the driver (pid {pid} on {host}) is gone in phase {recorded or '-'}")
    return view


def _after_start(state: RunState) -> bool:
    """A final phase reached by a driver (not by `ctl stop` cancelling a queued job)."""
    return state.phase in FINAL and state.reached(Phase.STARTING) is not None


def _lost(view: RunView, why: str) -> RunView:
    return RunView(
        phase=Phase.LOST.value, recorded=view.recorded, job_state=view.job_state, why=why
    )


def driver_alive(state: StateLike) -> bool | None:
    """Whether a local driver's pid exists; None when it runs elsewhere or is not recorded."""
    state = as_state(state)
    pid, host = state.driver_pid, state.driver_host
    if not pid or host != socket.gethostname():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True
