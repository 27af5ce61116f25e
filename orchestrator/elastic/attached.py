"""`ctl status` lines for a run's worker jobs (orchestrator.rundir.jobs): reading them needs none
of the planning that scaling does (orchestrator.elastic.scale_up)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from orchestrator.core.errors import OrchestratorError
from orchestrator.rundir import RunDir, WorkerJob
from orchestrator.rundir.jobs import WorkerJobs
from orchestrator.slurm.client import SlurmClient


def attached_lines(run_dir: Path, client: SlurmClient | None = None) -> list[str]:
    """`ctl status` lines for the worker jobs: one per job, one per worker (node, GPUs). With
    `client` (ONE squeue/sacct call), a job that ended without a scale-down (scancel, node
    lost) says so with its Slurm state."""
    lines = []
    jobs = WorkerJobs(run_dir).read()
    live = [j.job_id for j in jobs if not j.removed]
    slurm = client.states(live) if client and live else {}
    for job in jobs:
        state = RunDir(job.run_dir).state()
        phase: str = state.phase
        seen = slurm.get(job.job_id)
        if job.removed:
            phase += f" ({_why_removed(job, jobs)})"
        elif seen is not None and seen.ended:
            phase = f"ended ({seen.state}; its driver: {phase or 'nothing'})"
        generation = f" generation {job.generation}" if job.generation else ""
        lines.append(
            f"attached: job {job.job_id}{generation} {phase}  "
            f"{', '.join(job.workers)}  ({job.run_dir})"
        )
        if job.removed and job.generation:
            continue  # a rolled-over job: one line (days of serving leave many)
        gpus = bound_gpus(Path(job.run_dir))
        for name, proc in state.processes.items():
            lines.append(
                f"    {name:<16} {proc.get('role', ''):<8} {proc.get('host', '?')}  "
                f"gpus {gpus.get(name, '?')}  {proc.get('state', '')}"
            )
    return lines


def _why_removed(job: WorkerJob, jobs: Sequence[WorkerJob]) -> str:
    """Why a listed job holds no workers: a scale-down, or (placement=here) a drain or a loss."""
    if not job.generation:
        return job.ended or "removed by scale-down"  # ended: the autoscaler cancelled it
    successor = next((j.job_id for j in jobs if j.replaces == job.job_id), "")
    how = "drained" if job.drain_at else f"lost: {job.ended or '?'}"
    return how + (f", replaced by job {successor}" if successor else "")


def bound_gpus(adir: Path) -> dict[str, str]:
    """CUDA_VISIBLE_DEVICES per process of a started worker job ({} before it started)."""
    try:
        bound = RunDir(adir).bound_plan()
    except OrchestratorError:
        return {}
    return {p.name: p.env.get("CUDA_VISIBLE_DEVICES", "") for p in bound.processes}
