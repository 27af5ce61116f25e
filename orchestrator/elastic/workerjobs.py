"""Worker jobs (orchestrator.rundir.jobs): how they are made and submitted, one path for the
jobs `ctl scale` adds and for a frontend.placement=here run's, which its driver creates,
replaces and stops. Each is a Slurm job with its own run directory (RUN_DIR/attached/<n>/), run
by the normal driver, whose plan joins the run's frontend and discovery.

No Hydra here: the first job of a placement=here run is made from the saved plan (plan.json
`serve`), and a replacement is a copy of the job it replaces (its plan.json, its request moved
to the new directory), so jobs added by `ctl scale` roll over the same way.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from orchestrator.core.effects import CommandRunner
from orchestrator.core.errors import OrchestratorError
from orchestrator.launchers import get_launcher
from orchestrator.launchers.base import LaunchRequest
from orchestrator.launchers.rundir import write_run_record
from orchestrator.plan.model import Plan, WorkerJobPlan
from orchestrator.plan.placeholders import RUN_DIR
from orchestrator.rundir import Phase, RunDir, WorkerJob
from orchestrator.rundir.jobs import WorkerJobs
from orchestrator.slurm.client import SlurmClient


def first_job(run_dir: Path, bound: Plan) -> tuple[Plan, LaunchRequest]:
    """The plan and request of the run's first worker job, from its plan's `serve`."""
    assert bound.serve is not None
    # sbatch jobs: orchestrator.launchers.here records their request.
    request = get_launcher(bound.serve.launcher).request_from_dict(bound.serve.request)
    return joined(bound.serve.workers, run_dir, bound), request


def joined(plan: Plan, run_dir: Path, bound: Plan) -> Plan:
    """A worker job's `plan` attached to the run in `run_dir` (bound: its real addresses),
    using the run's own prepared files (the mocker's tokenizer directory: Dynamo's frontend
    rejects later workers whose model card path differs from the first ones': "Rejected
    incompatible workers", seen on the testbed)."""
    job = dataclasses.replace(plan.job or WorkerJobPlan(), run_dir=str(run_dir))
    return dataclasses.replace(with_files(plan, bound.prepare), job=job)


def with_files(plan: Plan, prepared: Mapping[str, str]) -> Plan:
    """`plan` with the paths of its prepared files replaced by `prepared`'s (same keys)."""
    swap = {plan.prepare[k]: prepared[k] for k in plan.prepare if k in prepared}

    def sub(text: str) -> str:
        for planned, real in swap.items():
            text = text.replace(planned, real)
        return text

    procs = tuple(
        dataclasses.replace(
            p, argv=tuple(map(sub, p.argv)), env={k: sub(v) for k, v in p.env.items()}
        )
        for p in plan.processes
    )
    return dataclasses.replace(
        plan, processes=procs, prepare={k: sub(v) for k, v in plan.prepare.items()}
    )


def copy_of(job: WorkerJob) -> tuple[Plan, LaunchRequest]:
    """The plan and (unbound) request of an existing worker job, for its replacement."""
    adir = RunDir(job.run_dir)
    plan, request = adir.plan(), adir.launch().request
    # Workers a scale-down removed from it (elastic/retire.py) do not come back with the copy.
    gone = adir.state().removed()
    plan = dataclasses.replace(
        plan, processes=tuple(p for p in plan.processes if p.name not in gone)
    )
    # Its gate counts its own workers: the run's total may have changed since (ctl scale), and
    # each worker must join the frontend by itself (frontends/dynamo_attach, router_attach).
    own: dict[str, int] = {}
    for role, n in job_groups(plan).items():
        own["worker" if role == "aggregated" else role] = n
    readiness = dataclasses.replace(plan.readiness, expected=own)
    unbound = unbind(request, str(adir.path))
    return dataclasses.replace(plan, readiness=readiness), request_of(adir, unbound)


def unbind(request: Mapping[str, Any], run_dir: str) -> dict[str, Any]:
    """A bound request's dict with its run directory back to {run_dir} (its only placeholder)."""
    return {k: v.replace(run_dir, RUN_DIR) if isinstance(v, str) else v for k, v in request.items()}


def request_of(job: RunDir, request: Mapping[str, Any]) -> LaunchRequest:
    """`request` (a dict) as the launcher of the job in `job` made it (sbatch for a
    placement=here run's jobs; a job `ctl scale` added: the run's launcher)."""
    return get_launcher(job.launch().launcher).request_from_dict(request)


def submit_job(
    run_dir: Path,
    plan: Plan,
    request: LaunchRequest,
    *,
    runner: CommandRunner,
    config: Mapping[str, Any] | None = None,
    overrides: tuple[str, ...] = (),
    **facts: Any,
) -> WorkerJob:
    """Create RUN_DIR/attached/<n>/, submit its job, list it in attached.json with `facts`
    (generation, replaces, reason). `config`: config.json of the job (default: the run's, as
    launched). The job is listed before it is submitted, so a process killed in between leaves
    a record of the directory (with no job id)."""
    jobs = WorkerJobs(run_dir)
    adir = jobs.new_dir()
    bound = request.bind(str(adir))
    if config is None:
        config = RunDir(run_dir).config_or_none() or {}
    state = write_run_record(
        adir, config, plan, launcher=bound.kind, overrides=overrides, request=bound.to_dict()
    )
    job = WorkerJob(
        job_id="",
        run_dir=str(adir),
        workers=tuple(p.name for p in plan.processes),
        groups=job_groups(plan),
        submitted_at=time.time(),
        **facts,
    )
    jobs.add(job)
    try:
        job_id = bound.submit(adir, runner)
    except OrchestratorError as exc:
        jobs.set(str(adir), removed_at=time.time(), ended="not submitted", error=str(exc))
        state.phase(Phase.FAILED, error=str(exc))
        raise
    state.phase(Phase.SUBMITTED, job_id=job_id)
    jobs.set(str(adir), job_id=job_id)
    return dataclasses.replace(job, job_id=job_id)


def job_groups(plan: Plan) -> dict[str, int]:
    """Workers per group of a job's plan (multi-node workers once: their rank 0)."""
    groups: dict[str, int] = {}
    for proc in plan.processes:
        groups[proc.group] = groups.get(proc.group, 0) + (proc.rank == 0)
    return groups


def ask_to_stop(job: WorkerJob, client: SlurmClient, *, queued: bool) -> None:
    """Stop a worker job the way `ctl stop` does: the stop file (its driver deregisters the
    workers, lets them finish what they serve, stops them), SIGTERM to its batch shell only
    (the driver) to be quick; a job still queued is cancelled."""
    RunDir(job.run_dir).request_stop()
    if job.job_id:
        if queued:
            client.cancel(job.job_id)
        else:
            client.cancel(job.job_id, signal="TERM", batch=True)


def stop_asked(job: WorkerJob) -> bool:
    """Whether someone asked the job to stop (ctl stop, ctl scale down, a drain)."""
    return RunDir(job.run_dir).stop_requested()
