"""Materialize a validated config: run directory, then local / in-allocation / submitit / sbatch."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from orchestrator.config.schema import RootConfig
from orchestrator.effects import SubprocessRunner
from orchestrator.errors import InvalidConfig, Issue, SubmissionError
from orchestrator.launchers.follow import follow
from orchestrator.launchers.rundir import create_run_dir, git_sha, write_run_files
from orchestrator.plan.build import build_plan
from orchestrator.plan.model import Plan
from orchestrator.render.shell import sbatch_script
from orchestrator.runtime.run import allocation_issues, run_driver
from orchestrator.runtime.state import StateFile
from orchestrator.slurm.parse import parse_sbatch_parsable
from orchestrator.slurm.request import submitit_parameters


def launch(cfg: RootConfig, launcher: str, overrides: Sequence[str]) -> int:
    """Create the run directory and start the deployment with `launcher`; returns an exit code."""
    plan = build_plan(cfg)
    in_allocation = launcher != "local" and bool(os.environ.get("SLURM_JOB_ID"))
    kind = "allocation" if in_allocation else launcher
    if in_allocation:
        _check_allocation(cfg, plan)
    run_dir = create_run_dir(cfg, plan.name)
    state = write_run_files(run_dir, cfg, plan, launcher=kind, overrides=overrides)
    if kind in ("local", "allocation"):
        # The driver runs right here, in the foreground: Ctrl-C stops the deployment.
        _announce(os.environ.get("SLURM_JOB_ID", ""), run_dir)
        if not cfg.wait:
            return _detach(run_dir)
        return run_driver(run_dir)
    try:
        if kind == "submitit":
            job_id = _submit_submitit(cfg, plan, run_dir)
        else:
            job_id = _submit_sbatch(plan, run_dir, overrides)
    except SubmissionError as exc:
        state.phase("failed", error=str(exc))  # the run directory says why it never ran
        raise
    state.phase("submitted", job_id=job_id)
    _announce(job_id, run_dir)
    if not cfg.wait:
        return 0
    # A benchmark that ends the job is what the user waits for; a serving deployment is ready.
    until_done = cfg.benchmark.kind != "none" and not cfg.benchmark.keep_serving
    return follow(run_dir, job_id, until_done=until_done)


def _check_allocation(cfg: RootConfig, plan: Plan) -> None:
    """Inside salloc/sbatch the allocation is given: check it fits before creating anything."""
    issues = [Issue("allocation", os.environ.get("SLURM_JOB_ID", ""), problem, "adjust the allocation "
                    "or the topology") for problem in allocation_issues(plan, os.environ)]  # fmt: skip
    if not cfg.wait:
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


def _detach(run_dir: Path) -> int:
    """wait=false without Slurm: the driver keeps running in its own session."""
    log = open(run_dir / "driver.out", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.runtime.driver", str(run_dir)],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)  # fmt: skip
    log.close()
    StateFile(run_dir).update(driver_pid=proc.pid)
    return 0


def _submit_submitit(cfg: RootConfig, plan: Plan, run_dir: Path) -> str:
    import submitit  # optional backend: imported only when used

    from orchestrator.runtime.run import submitit_job

    # `exec` makes the driver the batch shell itself, so --signal=B:TERM and scancel --batch
    # reach it (bash does not forward signals to a foreground child).
    executor = submitit.SlurmExecutor(
        folder=str(run_dir / "submitit"), python=f"exec {sys.executable}"
    )
    executor.update_parameters(**submitit_parameters(plan.slurm))
    try:
        job = executor.submit(submitit_job, str(run_dir))
    except Exception as exc:  # submitit raises plain exceptions carrying sbatch's stderr
        raise SubmissionError(["sbatch", "(submitit)"], 1, str(exc)) from exc
    return str(job.job_id)


def _submit_sbatch(plan: Plan, run_dir: Path, overrides: Sequence[str]) -> str:
    script = run_dir / "job.sbatch"
    script.write_text(sbatch_script(plan, run_dir=str(run_dir), python=sys.executable,
                                    overrides=overrides, git_sha=git_sha()))  # fmt: skip
    # sbatch expands %-patterns in --output: a literal % in the run directory must be doubled.
    output = str(run_dir).replace("%", "%%") + "/slurm-%j.out"
    argv = ["sbatch", "--parsable", f"--output={output}", str(script)]
    res = SubprocessRunner().run(argv, timeout=60)
    if res.returncode != 0:
        raise SubmissionError(argv, res.returncode, res.stderr)
    return parse_sbatch_parsable(res.stdout)
