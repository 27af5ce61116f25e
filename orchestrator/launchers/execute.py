"""Execute a launch request (orchestrator.launchers.requests): the only place that submits."""

from __future__ import annotations

import subprocess
from pathlib import Path

from orchestrator.effects import CommandRunner, SubprocessRunner
from orchestrator.errors import SubmissionError
from orchestrator.launchers.requests import LaunchRequest, SbatchRequest, SubmititRequest
from orchestrator.launchers.sbatch import submit_sbatch
from orchestrator.rundir import RunDir


def submit(request: LaunchRequest, run_dir: Path, runner: CommandRunner | None = None) -> str:
    """Submit a bound sbatch or submitit request; the job id."""
    if isinstance(request, SbatchRequest):
        return submit_sbatch(request, run_dir, runner or SubprocessRunner())
    if isinstance(request, SubmititRequest):
        return submit_submitit(request)
    raise TypeError(f"{request.kind} requests are run, not submitted")


def submit_submitit(request: SubmititRequest) -> str:
    """Hand the parameters to submitit's executor and submit the driver function."""
    import submitit  # optional backend: imported only when used

    from orchestrator.runtime.run import submitit_job

    # `exec` makes the driver the batch shell itself, so --signal=B:TERM and scancel --batch
    # reach it (bash does not forward signals to a foreground child).
    executor = submitit.SlurmExecutor(folder=request.folder, python=request.python)
    executor.update_parameters(**request.parameters)
    run_dir = str(Path(request.folder).parent)
    try:
        job = executor.submit(submitit_job, run_dir)
    except Exception as exc:  # noqa: BLE001 - submitit raises plain exceptions with sbatch's stderr
        raise SubmissionError(["sbatch", "(submitit)"], 1, str(exc)) from exc
    return str(job.job_id)


def detach(argv: tuple[str, ...], run_dir: Path) -> int:
    """Start the driver in its own session (wait=false without Slurm); its pid."""
    log = open(RunDir(run_dir).driver_out, "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                            start_new_session=True)  # fmt: skip
    log.close()
    return proc.pid
