"""Materialize a validated config: run directory, then local / in-allocation / submitit / sbatch."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from orchestrator.config.schema import RootConfig
from orchestrator.effects import SubprocessRunner
from orchestrator.errors import InvalidConfig, Issue, OrchestratorError, SubmissionError
from orchestrator.launchers.rundir import create_run_dir, git_sha, write_run_files
from orchestrator.plan.build import build_plan
from orchestrator.plan.model import Plan
from orchestrator.render.shell import sbatch_script
from orchestrator.runtime.run import allocation_issues, run_driver
from orchestrator.runtime.state import StateFile, progress_line, read_state
from orchestrator.slurm.parse import job_state, parse_sbatch_parsable
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
