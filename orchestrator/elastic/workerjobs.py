"""Worker jobs of a run whose frontend runs on this host (frontend.placement=here), as the
run's driver creates, submits and stops them: each is an attached job (RUN_DIR/attached/<n>/,
listed in RUN_DIR/attached.json like the jobs `ctl scale` adds) run by the normal driver.

No Hydra here: a job is made from the saved plans and requests (plan.json `serve`), and a
replacement is a copy of the job it replaces (its plan.json, its request moved to the new
directory), so jobs added by `ctl scale` roll over the same way.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from orchestrator.core.effects import CommandRunner
from orchestrator.core.errors import OrchestratorError
from orchestrator.elastic.attached import read_attached, update_attached
from orchestrator.launchers.rundir import write_run_record
from orchestrator.launchers.sbatch import LAUNCHER as SBATCH_LAUNCHER
from orchestrator.launchers.sbatch import submit_sbatch
from orchestrator.plan.model import Plan
from orchestrator.plan.placeholders import RUN_DIR
from orchestrator.rundir import Phase, RunDir
from orchestrator.slurm.client import SlurmClient


def first_job(run_dir: Path, bound: Plan) -> tuple[Plan, dict[str, Any]]:
    """The plan and request of the run's first worker job, from its plan's `serve`: attached
    to this run, using the run's own prepared files (the mocker's tokenizer directory: Dynamo's
    frontend rejects later workers whose model card path differs from the first ones')."""
    assert bound.serve is not None
    plan = dataclasses.replace(
        with_files(bound.serve.workers, bound.prepare), attach_to=str(run_dir)
    )
    return plan, dict(bound.serve.request)


def with_files(plan: Plan, prepared: Mapping[str, str]) -> Plan:
    """`plan` with the paths of its prepared files replaced by `prepared`'s (same keys)."""
    swap = {plan.prepare[k]: prepared[k] for k in plan.prepare if k in prepared}

    def sub(text: str) -> str:
        for planned, real in swap.items():
            text = text.replace(planned, real)
        return text

    procs = tuple(dataclasses.replace(p, argv=tuple(map(sub, p.argv)),
                                      env={k: sub(v) for k, v in p.env.items()})
                  for p in plan.processes)  # fmt: skip
    return dataclasses.replace(
        plan, processes=procs, prepare={k: sub(v) for k, v in plan.prepare.items()}
    )


def copy_of(entry: Mapping[str, Any]) -> tuple[Plan, dict[str, Any]]:
    """The plan and (unbound) request of an existing worker job, for its replacement."""
    adir = RunDir(entry["run_dir"])
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
    return dataclasses.replace(plan, readiness=readiness), unbind(request, str(adir.path))


def unbind(request: Mapping[str, Any], run_dir: str) -> dict[str, Any]:
    """A bound request's dict with its run directory back to {run_dir} (its only placeholder)."""
    return {k: v.replace(run_dir, RUN_DIR) if isinstance(v, str) else v for k, v in request.items()}


def submit_job(run_dir: Path, plan: Plan, request: Mapping[str, Any], *, runner: CommandRunner,
               **facts: Any) -> dict[str, Any]:  # fmt: skip
    """Create RUN_DIR/attached/<n>/, submit its job, list it in attached.json with `facts`
    (generation, replaces, reason). The entry is listed before sbatch runs, so a driver killed
    in between leaves a record of the directory (with no job id)."""
    adir = new_job_dir(run_dir)
    # Worker jobs are sbatch jobs (orchestrator.launchers.here records their request).
    bound = SBATCH_LAUNCHER.request_from_dict(request).bind(str(adir))
    config = RunDir(run_dir).config_or_none() or {}  # the run's, as launched
    state = write_run_record(adir, config, plan, launcher=bound.kind, overrides=[],
                             request=bound.to_dict())  # fmt: skip
    entry = {"job_id": "", "run_dir": str(adir), "workers": [p.name for p in plan.processes],
             "groups": job_groups(plan), "submitted_at": time.time(), **facts}  # fmt: skip
    update_attached(run_dir, lambda entries: [*entries, entry])
    try:
        job_id = submit_sbatch(bound, adir, runner)
    except OrchestratorError as exc:
        set_fields(
            run_dir, str(adir), removed_at=time.time(), ended="not submitted", error=str(exc)
        )
        state.phase(Phase.FAILED, error=str(exc))
        raise
    state.phase(Phase.SUBMITTED, job_id=job_id)
    set_fields(run_dir, str(adir), job_id=job_id)
    return {**entry, "job_id": job_id}


def new_job_dir(run_dir: Path) -> Path:
    """A new RUN_DIR/attached/<n>/ (n: one more than the jobs listed, past existing dirs)."""
    base = RunDir(run_dir).attached_dir
    base.mkdir(exist_ok=True)
    n = len(read_attached(run_dir)) + 1
    while (base / str(n)).exists():
        n += 1
    adir = base / str(n)
    adir.mkdir()
    return adir


def job_groups(plan: Plan) -> dict[str, int]:
    """Workers per group of a job's plan (multi-node workers once: their rank 0)."""
    groups: dict[str, int] = {}
    for proc in plan.processes:
        groups[proc.group] = groups.get(proc.group, 0) + (proc.rank == 0)
    return groups


def set_fields(run_dir: Path, job_dir: str, **fields: Any) -> None:
    """Merge `fields` into the attached.json entry of the job in `job_dir`."""

    def change(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{**e, **fields} if e["run_dir"] == job_dir else e for e in entries]

    update_attached(run_dir, change)


def ask_to_stop(entry: Mapping[str, Any], client: SlurmClient, *, queued: bool) -> None:
    """Stop a worker job the way `ctl stop` does: the stop file (its driver deregisters the
    workers, lets them finish what they serve, stops them), SIGTERM to its batch shell only
    (the driver) to be quick; a job still queued is cancelled."""
    RunDir(entry["run_dir"]).request_stop()
    if entry.get("job_id"):
        if queued:
            client.cancel(entry["job_id"])
        else:
            client.cancel(entry["job_id"], signal="TERM", batch=True)


def stop_asked(entry: Mapping[str, Any]) -> bool:
    """Whether someone asked the job to stop (ctl stop, ctl scale down, a drain)."""
    return RunDir(entry["run_dir"]).stop_requested()
