"""Submit an sbatch request: what the CLI and a driver submitting worker jobs
(frontend.placement=here, orchestrator.runtime.workerjobs) share. Knows nothing of submitit,
so the driver side can submit without importing the submitit entry point."""

from __future__ import annotations

from pathlib import Path

from orchestrator.effects import CommandRunner
from orchestrator.launchers.requests import SbatchRequest
from orchestrator.slurm.client import SlurmClient


def submit_sbatch(request: SbatchRequest, run_dir: Path, runner: CommandRunner) -> str:
    """Write job.sbatch and run the request's sbatch argv in the run directory."""
    (run_dir / request.options[-1]).write_text(request.script)
    return SlurmClient(runner).sbatch(request.options, cwd=str(run_dir))
