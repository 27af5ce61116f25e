"""`ctl stop RUN_DIR`: stop a run in whatever phase it is (attached jobs first, then the run)."""

from __future__ import annotations

import os
import signal
import socket
import stat
from pathlib import Path

from orchestrator.core.effects import Clock, SystemClock
from orchestrator.core.errors import OrchestratorError
from orchestrator.ctl.status import default_client, run_view
from orchestrator.launchers import Facts, facts_of
from orchestrator.rundir import FINAL, Phase, RunDir
from orchestrator.rundir.jobs import WorkerJobs
from orchestrator.rundir.phase import QUEUED
from orchestrator.runtime.state import StateFile
from orchestrator.slurm.client import SlurmClient
from orchestrator.slurm.states import category_of


class NotYourRun(OrchestratorError):
    """`stop`/`scale` of a run directory this user cannot write: refused before anything."""

    exit_code = 2


def check_control(run_dir: Path) -> None:
    """`stop` and `scale` write into the run directory (stop-requested, retire-requested.json,
    attached/) and signal its job: a run this user cannot write is someone else's."""
    try:
        st = run_dir.stat()
    except PermissionError as exc:
        raise NotYourRun(
            f"{run_dir} cannot be reached by you ({exc.strerror}): only the run's "
            "owner can stop or scale it"
        ) from exc
    except FileNotFoundError:
        return  # said by the command itself
    if not os.access(run_dir, os.W_OK | os.X_OK):
        raise NotYourRun(
            f"{run_dir} is not writable by you (owner uid {st.st_uid}, mode "
            f"{stat.S_IMODE(st.st_mode):04o}): only the run's owner can stop or "
            "scale it"
        )


def stop(
    run_dir: Path,
    timeout_s: float = 120.0,
    client: SlurmClient | None = None,
    clock: Clock | None = None,
) -> str:
    """Stop the run in whatever phase it is: a job still queued is cancelled at once (and the run
    recorded done); a running driver is asked to stop gracefully and waited for."""
    launcher = facts_of(RunDir(run_dir).launch().launcher)  # also: is this a run directory?
    client, clock = client or default_client(), clock or SystemClock()
    # Worker jobs first: Dynamo workers deregister from the run's etcd, which must outlive them.
    attached = [
        f"attached job {j.job_id}: {stop(Path(j.run_dir), timeout_s, client, clock)}"
        for j in WorkerJobs(run_dir).live()
    ]
    said = stop_run(run_dir, launcher, timeout_s, client, clock)
    return "\n".join([*attached, said])


def stop_run(
    run_dir: Path, launcher: Facts, timeout_s: float, client: SlurmClient, clock: Clock
) -> str:
    """`stop` of the run itself (not its worker jobs)."""
    view, state = run_view(run_dir, client)
    if view.recorded in FINAL and view.phase != Phase.REQUEUED:
        return f"already {view.recorded}"
    job_id = state.job_id
    if view.phase == Phase.LOST:
        return f"nothing to stop: {view.why}"
    if launcher.slurm_job and job_id and category_of(view.job_state) == "queued":
        return _cancel_queued(run_dir, job_id, client, view.recorded)
    # The stop file works wherever the driver runs; a signal only makes it quicker.
    RunDir(run_dir).request_stop()
    if launcher.submits_job and job_id:
        # The driver is the batch shell (exec): --batch delivers SIGTERM to it alone, and it
        # stops the workers and infrastructure in order.
        client.cancel(job_id, signal="TERM", batch=True)
    elif state.driver_pid and state.driver_host == socket.gethostname():
        try:
            os.kill(state.driver_pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = clock.now() + timeout_s
    while clock.now() < deadline:
        phase = RunDir(run_dir).state().phase
        if phase in FINAL:
            return f"stopped ({phase})"
        clock.sleep(0.2)
    raise OrchestratorError(
        f"the driver did not finish within {timeout_s:g} s; see {RunDir(run_dir).driver_log}"
    )


def _cancel_queued(run_dir: Path, job_id: str, client: SlurmClient, seen: str) -> str:
    """scancel a job that has not started (or waits to start again after a requeue): no driver
    runs to record anything, so the run is recorded done here. `seen`: the phase before."""
    client.cancel(job_id)
    state = StateFile(run_dir)
    if state.view().phase != seen:
        # It started between our look and scancel: its driver got SIGTERM and records the end.
        return f"cancelled job {job_id}; its driver had just started and is stopping"
    reason = "cancelled before start" if seen in QUEUED else "cancelled while requeued"
    state.phase(Phase.DONE, reason=reason)
    return f"{reason} (job {job_id})"
