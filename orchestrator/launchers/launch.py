"""Launch a prepared config: run directory, then execute its request (submit, or run the driver
here for the local launcher and inside an allocation)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from orchestrator.api import Prepared
from orchestrator.effects import CommandRunner, SubprocessRunner
from orchestrator.errors import InvalidConfig, Issue, OrchestratorError, SubmissionError
from orchestrator.launchers.execute import detach, submit
from orchestrator.launchers.requests import LocalRequest, bind, request_to_dict
from orchestrator.launchers.rundir import create_run_dir, write_run_files
from orchestrator.runtime.run import allocation_issues, run_driver
from orchestrator.runtime.state import StateFile, progress_line, read_state
from orchestrator.slurm.parse import job_state


def launch(prepared: Prepared, runner: CommandRunner | None = None) -> int:
    """Create the run directory and execute the prepared request; returns an exit code."""
    cfg, plan = prepared.cfg, prepared.plan
    if prepared.launcher == "allocation":
        _check_allocation(prepared)
    run_dir = create_run_dir(cfg, plan.name)
    request = bind(prepared.request, str(run_dir))
    state = write_run_files(run_dir, cfg, plan, launcher=prepared.launcher,
                            overrides=prepared.overrides, request=request_to_dict(request))  # fmt: skip
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
        state.phase("failed", error=str(exc))  # the run directory says why it never ran
        raise
    state.phase("submitted", job_id=job_id)
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


FINAL_OR_READY = ("failed", "done", "ready")


def follow(run_dir: Path, job_id: str, *, until_done: bool = False, interval_s: float = 0.5) -> int:
    """Print progress (stderr) until the deployment is ready (0) or failed (1); with
    `until_done` (a benchmark that ends the job) until it is done (0) or failed (1)."""
    last, last_job, announced = "", "", False
    runner = SubprocessRunner()
    next_job_check = 0.0
    while True:
        state = read_state(run_dir)
        phase = state.get("phase", "")
        line = progress_line(state)
        if line != last:
            sys.stderr.write(f"[orchestrator] {line}\n")
            last = line
        if phase == "ready" and not announced:
            sys.stderr.write(f"[orchestrator] ready: {state.get('frontend_url')} (stop with: "
                             f"python -m orchestrator.ctl stop {run_dir})\n")  # fmt: skip
            announced = True
            if not until_done:
                return 0
        if phase in ("failed", "done"):
            ok = phase == "done" and until_done
            sys.stderr.write(
                f"[orchestrator] {phase}: {state.get('error') or state.get('reason', '')}\n"
            )
            return 0 if ok else 1
        if time.monotonic() >= next_job_check:
            job = _check_job_alive(
                runner,
                job_id,
                run_dir,
                settled=("failed", "done") if until_done else FINAL_OR_READY,
            )
            if phase in ("", "submitted") and job and job != last_job:
                sys.stderr.write(
                    f"[orchestrator] job {job_id}: {job}\n"
                )  # e.g. PENDING in the queue
                last_job = job
            next_job_check = time.monotonic() + 5.0
        time.sleep(interval_s)


def _check_job_alive(
    runner: SubprocessRunner, job_id: str, run_dir: Path, *, settled: tuple[str, ...]
) -> str:
    """The job's Slurm state; raises when it ended before its driver wrote a phase we wait for
    (killed, failed to start)."""
    state = job_state(runner, job_id)
    if state in (
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "BOOT_FAIL",
        "COMPLETED",
    ):
        phase = read_state(run_dir).get("phase")
        if phase not in settled:
            raise OrchestratorError(f"job {job_id} ended ({state}) in phase {phase or 'none'}; "
                                    f"see {run_dir}/driver.log, {run_dir}/submitit or "
                                    f"{run_dir}/slurm-{job_id}.out")  # fmt: skip
    return state
