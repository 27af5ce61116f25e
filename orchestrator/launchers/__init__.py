"""The launcher registry: one module per launcher kind behind `orchestrator.launchers.base.Launcher`.

sbatch, submitit and local are named by `launcher.kind` (or picked by `auto`, see
`orchestrator.launchers.select`); allocation and here are picked by the site and the placement.
Each launcher materializes its request; the request binds, saves, describes and executes itself.
Launcher kinds are compared nowhere else: callers ask a launcher's facts (`driver_on_this_host`,
`submits_job`, `slurm_job`, `one_machine`, ...). Adding a launcher = one module here with a
`LAUNCHER`, one line below.
Launcher modules import core, config, the plan model, slurm, rundir, render.shell, runtime.state
and observe.reconcile; never the engines, frontends or api.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from orchestrator.launchers import allocation, here, local, sbatch, submitit
from orchestrator.launchers.base import NO_LAUNCHER, Facts, Launcher, LaunchRequest, Materials
from orchestrator.launchers.select import AUTO
from orchestrator.plan.model import Plan

LAUNCHERS: dict[str, Launcher] = {
    launcher.kind: launcher
    for launcher in (
        submitit.LAUNCHER,
        sbatch.LAUNCHER,
        local.LAUNCHER,
        allocation.LAUNCHER,
        here.LAUNCHER,
    )
}
# What launcher.kind may say (validation lists them in this order).
CONFIG_KINDS = (AUTO, *(kind for kind, launcher in LAUNCHERS.items() if launcher.selectable))


def get_launcher(kind: str) -> Launcher:
    """The launcher called `kind` (KeyError listing the known ones otherwise)."""
    try:
        return LAUNCHERS[kind]
    except KeyError:
        raise KeyError(f"unknown launcher {kind!r}; known: {', '.join(LAUNCHERS)}") from None


def facts_of(kind: object) -> Facts:
    """The facts of the launcher a run directory names (launch.json's `launcher`); all false
    when it names none this version knows."""
    found = LAUNCHERS.get(kind) if isinstance(kind, str) else None
    return NO_LAUNCHER if found is None else found


def submits_jobs(kind: str) -> bool:
    """launcher.kind (`auto` too) submits Slurm jobs, or may where sbatch is on PATH."""
    return kind == AUTO or (kind in LAUNCHERS and LAUNCHERS[kind].submits_job)


def runs_on_one_machine(kind: str) -> bool:
    """launcher.kind runs every process on this machine (launcher=local)."""
    return kind in LAUNCHERS and LAUNCHERS[kind].one_machine


def materialize(
    plan: Plan, launcher: str, *, python: str, overrides: Sequence[str], git_sha: str, cwd: str
) -> LaunchRequest:
    """The request `launcher` makes for `plan`."""
    materials = Materials(python=python, overrides=overrides, git_sha=git_sha, cwd=cwd)
    return get_launcher(launcher).materialize(plan, materials)


def bind(request: LaunchRequest, run_dir: str) -> LaunchRequest:
    """`request` for the run directory `run_dir` (the only placeholder a request holds)."""
    return request.bind(run_dir)


def after_job(request: LaunchRequest, job_id: str) -> LaunchRequest:
    """`request` held by Slurm until job `job_id` has ended, however it ended; no job id:
    `request` as it is (TypeError for a driver that runs here)."""
    return request.after_job(job_id)


def request_to_dict(request: LaunchRequest) -> dict[str, Any]:
    """JSON form (the dry-run, launch.json, a plan's `serve.request`)."""
    return request.to_dict()


def request_from_dict(data: Mapping[str, Any]) -> LaunchRequest:
    """Inverse of `request_to_dict`."""
    return get_launcher(data["kind"]).request_from_dict(data)


__all__ = [
    "CONFIG_KINDS",
    "LAUNCHERS",
    "LaunchRequest",
    "Launcher",
    "Materials",
    "after_job",
    "bind",
    "Facts",
    "facts_of",
    "get_launcher",
    "materialize",
    "request_from_dict",
    "request_to_dict",
    "runs_on_one_machine",
    "submits_jobs",
]
