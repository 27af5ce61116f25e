"""launcher=sbatch: `sbatch --parsable --output=slurm-%j.out job.sbatch`, run in the run directory.

Also how a driver submits worker jobs (frontend.placement=here, orchestrator.elastic.workerjobs):
this module knows nothing of submitit, so the driver side submits without importing it.
"""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.core.effects import CommandRunner
from orchestrator.launchers.base import LauncherFacts, Materials, Session
from orchestrator.plan.model import Plan
from orchestrator.plan.placeholders import RUN_DIR
from orchestrator.render.shell import quote_argv, sbatch_script
from orchestrator.slurm.client import SlurmClient
from orchestrator.slurm.request import SBATCH

KIND = SBATCH  # the launcher is named after the command
SCRIPT_NAME = "job.sbatch"
# sbatch runs in the run directory, so neither its argv nor the script hold the path: a path
# with spaces, quotes or `%` needs no escaping anywhere (sbatch expands %-patterns in --output).
SBATCH_OPTIONS = ("--output=slurm-%j.out", SCRIPT_NAME)


@dataclass(frozen=True, slots=True, kw_only=True)
class SbatchRequest:
    """`sbatch --parsable --output=slurm-%j.out job.sbatch`, run in the run directory."""

    script: str  # the text of job.sbatch
    options: tuple[str, ...] = SBATCH_OPTIONS
    kind: str = KIND

    @property
    def argv(self) -> tuple[str, ...]:
        """The full sbatch command line."""
        return (SBATCH, "--parsable", *self.options)

    def bind(self, run_dir: str) -> SbatchRequest:
        """The script's "Run with" header names `run_dir` (the script itself never does)."""
        header = run_with_line(run_dir).replace("\n", "\\n").replace("\r", "\\r")
        return dataclasses.replace(self, script=self.script.replace(run_with_line(), header))

    def after_job(self, job_id: str) -> SbatchRequest:
        """`--dependency=afterany:<id>`: held until that job ended, however it ended (no process
        waits on the login node). Slurm 22.05 starts it at once when that job has already ended
        or is no longer known (checked on the testbed)."""
        if not job_id:
            return self
        return dataclasses.replace(self, options=(f"--dependency=afterany:{job_id}", *self.options))

    def to_dict(self) -> dict[str, Any]:
        """{"kind", "argv", "cwd", "script"}."""
        return {"kind": self.kind, "argv": list(self.argv), "cwd": RUN_DIR, "script": self.script}

    def describe(self) -> list[str]:
        """The sbatch command and the script."""
        return [
            f"submitted from {{run_dir}} with: {quote_argv(self.argv)}",
            "--- sbatch script ---",
            self.script.rstrip(),
        ]

    def slurm_view(self) -> dict[str, Any]:
        """The script."""
        return {"script": self.script}

    def submit(self, run_dir: Path, runner: CommandRunner) -> str:
        """Write job.sbatch and run the sbatch argv in the run directory."""
        return submit_sbatch(self, run_dir, runner)

    def execute(self, session: Session) -> int:
        """Submit, then follow the job."""
        return session.submitted(self.submit)


def submit_sbatch(request: SbatchRequest, run_dir: Path, runner: CommandRunner) -> str:
    """Write job.sbatch and run the request's sbatch argv in the run directory."""
    (run_dir / request.options[-1]).write_text(request.script)
    return SlurmClient(runner).sbatch(request.options, cwd=str(run_dir))


def run_with_line(run_dir: str = RUN_DIR) -> str:
    """How the script is submitted (for its header)."""
    where = run_dir if run_dir == RUN_DIR else shlex.quote(run_dir)
    return f"cd {where} && {shlex.join(SbatchRequest(script='').argv)}"


@dataclass(frozen=True, slots=True, kw_only=True)
class SbatchLauncher(LauncherFacts):
    """Renders job.sbatch, whose batch shell execs the driver."""

    def materialize(self, plan: Plan, materials: Materials) -> SbatchRequest:
        """The script for `plan`."""
        script = sbatch_script(
            plan,
            python=materials.python,
            overrides=materials.overrides,
            git_sha=materials.git_sha,
            cwd=materials.cwd,
            run_with=run_with_line(),
        )
        return SbatchRequest(script=script)

    def request_from_dict(self, data: Mapping[str, Any]) -> SbatchRequest:
        """Inverse of `SbatchRequest.to_dict`."""
        return SbatchRequest(script=data["script"], options=tuple(data["argv"][2:]))


LAUNCHER = SbatchLauncher(kind=KIND, submits_job=True)
