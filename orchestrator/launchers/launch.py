"""Launch a prepared config: run directory, then execute its request (submit, or run the driver
here for the local launcher and inside an allocation)."""

from __future__ import annotations

import os
from pathlib import Path

from orchestrator.api import Prepared
from orchestrator.effects import CommandRunner
from orchestrator.errors import InvalidConfig, Issue, SubmissionError
from orchestrator.launchers.execute import detach, submit
from orchestrator.launchers.follow import follow
from orchestrator.launchers.requests import HERE, LocalRequest, bind, request_to_dict
from orchestrator.launchers.rundir import create_run_dir, write_run_files
from orchestrator.rundir import Phase
from orchestrator.runtime.run import allocation_issues, run_driver
from orchestrator.runtime.state import StateFile


def launch(prepared: Prepared, runner: CommandRunner | None = None) -> int:
    """Create the run directory and execute the prepared request; returns an exit code."""
    cfg, plan = prepared.cfg, prepared.plan
    if prepared.launcher == "allocation":
        _check_allocation(prepared)
    run_dir = create_run_dir(cfg, plan.name)
    request = bind(prepared.request, str(run_dir))
    state = write_run_files(run_dir, cfg, plan, launcher=prepared.launcher,
                            overrides=prepared.overrides, request=request_to_dict(request))  # fmt: skip
    if request.kind == HERE and isinstance(request, LocalRequest):
        # A detached driver (its own session: logout and Ctrl-C do not reach it) runs the
        # frontend here and submits the worker jobs; ctl stop ends it all.
        StateFile(run_dir).update(driver_pid=detach(request.argv, run_dir))
        _announce("", run_dir)
        return follow(run_dir, "", until_done=False) if cfg.wait else 0
    if isinstance(request, LocalRequest):
        # The driver runs right here, in the foreground: Ctrl-C stops the deployment.
        _announce(os.environ.get("SLURM_JOB_ID", ""), run_dir)
        if not cfg.wait:
            StateFile(run_dir).update(driver_pid=detach(request.argv, run_dir))
            return 0
        return run_driver(run_dir)
    try:
        job_id = submit(request, run_dir, runner)
    except SubmissionError as exc:
        state.phase(Phase.FAILED, error=str(exc))  # the run directory says why it never ran
        raise
    state.phase(Phase.SUBMITTED, job_id=job_id)
    _announce(job_id, run_dir)
    if not cfg.wait:
        return 0
    # A benchmark that ends the job is what the user waits for; a serving deployment is ready.
    until_done = plan.benchmark is not None and not plan.benchmark.keep_serving
    return follow(run_dir, job_id, until_done=until_done)


def _check_allocation(prepared: Prepared) -> None:
    """Inside salloc/sbatch the allocation is given: check it fits before creating anything."""
    job = os.environ.get("SLURM_JOB_ID", "")
    issues = [Issue("allocation", job, problem, "adjust the allocation or the topology")
              for problem in allocation_issues(prepared.plan, os.environ)]  # fmt: skip
    if not prepared.cfg.wait:
        issues.append(Issue("wait", "false", "inside an allocation the driver runs in the foreground "
                            "(the allocation ends with this command)", "drop wait=false, or submit "
                            "from a login node"))  # fmt: skip
    if issues:
        raise InvalidConfig(issues)


def _announce(job_id: str, run_dir: Path) -> None:
    """stdout carries only the job id and the run directory (scripts parse it)."""
    if job_id:
        print(job_id, flush=True)
    print(run_dir, flush=True)
