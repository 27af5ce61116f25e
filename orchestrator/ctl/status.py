"""`ctl status RUN_DIR`: the run reconciled with its Slurm job and its driver (phase, job, URL,
every process and where it runs), and the exit code (1 when it failed or is lost)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from orchestrator.core.effects import SubprocessRunner
from orchestrator.ctl import locks
from orchestrator.elastic import attached as attachments
from orchestrator.elastic.autoscale_view import autoscale_lines
from orchestrator.launchers import facts_of
from orchestrator.observe.reconcile import RunView, driver_alive, reconcile
from orchestrator.rundir import Phase, RunDir, RunState
from orchestrator.runtime.processes import log_tail
from orchestrator.runtime.state import cold_start_lines, progress_line
from orchestrator.slurm.client import SlurmClient

TAIL_LINES = 20


def default_client() -> SlurmClient:
    return SlurmClient(SubprocessRunner())


def run_view(run_dir: Path, client: SlurmClient | None = None) -> tuple[RunView, RunState]:
    """The run reconciled with its Slurm job and its driver process, and its state.json."""
    files = RunDir(run_dir)
    state, launcher = files.state(), facts_of(files.launch().launcher)
    job_id = state.job_id
    job = (client or default_client()).state(job_id) if launcher.slurm_job and job_id else None
    alive = driver_alive(state) if launcher.driver_on_this_host else None
    return reconcile(state, job, alive), state


def status(run_dir: Path, client: SlurmClient | None = None) -> tuple[str, int]:
    """One block (phase, job, URL, per-process state) and the exit code: 1 when the run failed
    or is lost (its job or driver is gone while state.json says it runs)."""
    client = client or default_client()
    view, state = run_view(run_dir, client)
    job = f"{state.job_id or '-'}" + (f" ({view.job_state})" if view.job_state else "")
    progress = progress_line(dataclasses.replace(state, phase=Phase.of(view.phase)))
    lines = [
        f"run: {run_dir}",
        f"launcher: {RunDir(run_dir).launch().launcher}  job: {job}  {progress}",
    ]
    if view.phase != view.recorded:
        lines.append(f"{view.phase}: {view.why} (state.json says {view.recorded or 'nothing yet'})")
    if state.data.get("attempt", 1) > 1:
        lines.append(f"attempt: {state.data['attempt']} (Slurm requeued the job)")
    if state.frontend_url:
        lines.append(f"frontend: {state.frontend_url}")
    for key, value in (("reason", state.reason), ("error", state.error)):
        if value:
            lines.append(f"{key}: {value}")
    if state.degraded:
        lines.append(f"degraded: {', '.join(state.degraded)} restarting")
    lines += cold_start_lines(state.data)
    if state.benchmark:
        b = state.benchmark
        lines.append(
            f"benchmark: {b.get('tool')} {b.get('status')} {b.get('done')}/{b.get('of')} "
            f"point(s) (results/points.jsonl)"
        )
    lines += [_process_line(name, entry) for name, entry in state.processes.items()]
    lines += locks.status_lines(run_dir)
    lines += attachments.attached_lines(run_dir, client)
    lines += autoscale_lines(state.data)
    if view.phase == Phase.LOST:
        lines += _lost_tail(run_dir, state.job_id)
    return "\n".join(lines), 0 if view.ok else 1


def _process_line(name: str, entry: Mapping[str, Any]) -> str:
    code = f" exit={entry['exit_code']}" if entry.get("exit_code") is not None else ""
    restarts = f" restarts={len(entry['restarts'])}" if entry.get("restarts") else ""
    return (
        f"  {name:<18} {entry.get('role', ''):<9} {entry.get('host', '')}:"
        f"node{entry.get('node', '?')}  {entry.get('state', '')}{code}{restarts}"
    )


def _lost_tail(run_dir: Path, job_id: str) -> list[str]:
    """The last lines of the first log that exists: the driver's, the batch job's, submitit's."""
    files = RunDir(run_dir)
    candidates = [files.driver_log, files.slurm_output(job_id)]
    candidates += sorted(files.submitit_dir.glob(f"{job_id}_*_log.*"))
    for path in candidates:
        if path.exists():
            return [f"last {TAIL_LINES} lines of {path}:", log_tail(path, TAIL_LINES)]
    return ["(no driver log found)"]
