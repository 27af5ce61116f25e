"""Launch requests: what each launcher hands to Slurm or to this machine, as data (pure).

`materialize(plan, launcher, ...)` builds the request the dry-run prints; `bind(request,
run_dir)` fills in the run directory; `orchestrator.launchers.execute` runs that very object.
Nothing else builds an sbatch script, sbatch argv, submitit parameters or the driver argv.
"""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator.plan.model import Plan
from orchestrator.plan.placeholders import RUN_DIR
from orchestrator.render.shell import DRIVER_MODULE, sbatch_script
from orchestrator.slurm.request import submitit_parameters

SCRIPT_NAME = "job.sbatch"
# sbatch runs in the run directory, so neither its argv nor the script hold the path: a path
# with spaces, quotes or `%` needs no escaping anywhere (sbatch expands %-patterns in --output).
SBATCH_OPTIONS = ("--output=slurm-%j.out", SCRIPT_NAME)


@dataclass(frozen=True, slots=True, kw_only=True)
class SbatchRequest:
    """`sbatch --parsable --output=slurm-%j.out job.sbatch`, run in the run directory."""

    script: str  # the text of job.sbatch
    options: tuple[str, ...] = SBATCH_OPTIONS
    kind: str = "sbatch"

    @property
    def argv(self) -> tuple[str, ...]:
        """The full sbatch command line."""
        return ("sbatch", "--parsable", *self.options)


@dataclass(frozen=True, slots=True, kw_only=True)
class SubmititRequest:
    """`submitit.SlurmExecutor(folder, python).update_parameters(**parameters).submit(...)`."""

    parameters: Mapping[str, Any]
    folder: str  # {run_dir}/submitit
    python: str  # `exec <python>`: the driver becomes the batch shell
    function: str = f"{DRIVER_MODULE}:submitit_job"
    kind: str = "submitit"


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalRequest:
    """The driver on this machine (`local`) or in the current allocation (`allocation`)."""

    argv: tuple[str, ...]  # python -m orchestrator.runtime.run {run_dir}
    kind: str = "local"


LaunchRequest = SbatchRequest | SubmititRequest | LocalRequest
# frontend.placement=here: the driver runs on this host, detached; it submits the worker jobs.
HERE = "here"
ON_THIS_HOST = ("local", HERE)  # launchers whose driver is a process of this host


def driver_argv(python: str, run_dir: str = RUN_DIR) -> tuple[str, ...]:
    """The in-allocation driver's command line."""
    return (python, "-m", DRIVER_MODULE, run_dir)


def materialize(
    plan: Plan, launcher: str, *, python: str, overrides: Sequence[str], git_sha: str, cwd: str
) -> LaunchRequest:
    """The request `launcher` (sbatch | submitit | local | allocation) makes for `plan`."""
    if launcher == "sbatch":
        script = sbatch_script(plan, python=python, overrides=overrides, git_sha=git_sha,
                               cwd=cwd, run_with=run_with_line())  # fmt: skip
        return SbatchRequest(script=script)
    if launcher == "submitit":
        return SubmititRequest(parameters=submitit_parameters(plan.slurm),
                               folder=f"{RUN_DIR}/submitit", python=f"exec {python}")  # fmt: skip
    return LocalRequest(argv=driver_argv(python), kind=launcher)


def run_with_line(run_dir: str = RUN_DIR) -> str:
    """How the script is submitted (for its header)."""
    where = run_dir if run_dir == RUN_DIR else shlex.quote(run_dir)
    return f"cd {where} && {shlex.join(SbatchRequest(script='').argv)}"


def bind(request: LaunchRequest, run_dir: str) -> LaunchRequest:
    """`request` for the run directory `run_dir` (the only placeholder a request holds)."""
    if isinstance(request, SbatchRequest):
        header = run_with_line(run_dir).replace("\n", "\\n").replace("\r", "\\r")
        return dataclasses.replace(request, script=request.script.replace(run_with_line(), header))
    if isinstance(request, SubmititRequest):
        return dataclasses.replace(request, folder=request.folder.replace(RUN_DIR, run_dir))
    argv = tuple(run_dir if a == RUN_DIR else a for a in request.argv)
    return dataclasses.replace(request, argv=argv)


def after_job(request: LaunchRequest, job_id: str) -> LaunchRequest:
    """`request` held by Slurm until job `job_id` has ended, however it ended
    (`--dependency=afterany:<id>`; no process waits on the login node). Slurm 22.05 starts it
    at once when that job has already ended or is no longer known (checked on the testbed).
    No job id: `request` as it is."""
    if not job_id:
        return request
    dependency = f"afterany:{job_id}"
    if isinstance(request, SbatchRequest):
        return dataclasses.replace(
            request, options=(f"--dependency={dependency}", *request.options)
        )
    if isinstance(request, SubmititRequest):
        extra = {**request.parameters.get("additional_parameters", {}), "dependency": dependency}
        return dataclasses.replace(
            request, parameters={**request.parameters, "additional_parameters": extra}
        )
    raise TypeError(f"{request.kind} requests run at once; they cannot wait for a Slurm job")


def request_to_dict(request: LaunchRequest) -> dict[str, Any]:
    """JSON form for the dry-run."""
    if isinstance(request, SbatchRequest):
        return {"kind": request.kind, "argv": list(request.argv), "cwd": RUN_DIR,
                "script": request.script}  # fmt: skip
    if isinstance(request, SubmititRequest):
        return {"kind": request.kind, "folder": request.folder, "python": request.python,
                "function": request.function, "parameters": dict(request.parameters)}  # fmt: skip
    return {"kind": request.kind, "argv": list(request.argv)}


def request_from_dict(data: Mapping[str, Any]) -> LaunchRequest:
    """Inverse of `request_to_dict` (the worker jobs' request in a plan's `serve`)."""
    if data["kind"] == "sbatch":
        return SbatchRequest(script=data["script"], options=tuple(data["argv"][2:]))
    if data["kind"] == "submitit":
        return SubmititRequest(parameters=dict(data["parameters"]), folder=data["folder"],
                               python=data["python"], function=data["function"])  # fmt: skip
    return LocalRequest(argv=tuple(data["argv"]), kind=data["kind"])
