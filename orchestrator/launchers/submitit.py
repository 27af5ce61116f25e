"""launcher=submitit: submitit's SlurmExecutor submits the driver function; submitit itself is
imported only when a request is executed (an optional backend)."""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.core.effects import CommandRunner
from orchestrator.core.errors import SubmissionError
from orchestrator.launchers.base import LauncherFacts, Materials, Session
from orchestrator.plan.model import Plan
from orchestrator.plan.placeholders import RUN_DIR
from orchestrator.render.shell import DRIVER_MODULE
from orchestrator.rundir.layout import SUBMITIT_DIR
from orchestrator.slurm.request import SBATCH, submitit_parameters

KIND = "submitit"
FOLDER = SUBMITIT_DIR  # RUN_DIR/submitit: submitit's pickles and logs (named in the run's layout)


@dataclass(frozen=True, slots=True, kw_only=True)
class SubmititRequest:
    """`submitit.SlurmExecutor(folder, python).update_parameters(**parameters).submit(...)`."""

    parameters: Mapping[str, Any]
    folder: str  # {run_dir}/submitit
    python: str  # `exec <python>`: the driver becomes the batch shell
    function: str = f"{DRIVER_MODULE}:submitit_job"
    kind: str = KIND

    def bind(self, run_dir: str) -> SubmititRequest:
        """The folder inside `run_dir`."""
        return dataclasses.replace(self, folder=self.folder.replace(RUN_DIR, run_dir))

    def after_job(self, job_id: str) -> SubmititRequest:
        """`dependency=afterany:<id>` among the additional parameters ('' = unchanged)."""
        if not job_id:
            return self
        extra = {
            **self.parameters.get("additional_parameters", {}),
            "dependency": f"afterany:{job_id}",
        }
        return dataclasses.replace(
            self, parameters={**self.parameters, "additional_parameters": extra}
        )

    def to_dict(self) -> dict[str, Any]:
        """{"kind", "folder", "python", "function", "parameters"}."""
        return {
            "kind": self.kind,
            "folder": self.folder,
            "python": self.python,
            "function": self.function,
            "parameters": dict(self.parameters),
        }

    def describe(self) -> list[str]:
        """The executor call."""
        return [
            f"submitit: SlurmExecutor(folder={self.folder}, python={self.python!r})"
            f".submit({self.function}, {{run_dir}})"
        ]

    def slurm_view(self) -> dict[str, Any]:
        """The parameters as handed to submitit."""
        return {KIND: dict(self.parameters)}

    def submit(self, run_dir: Path, runner: CommandRunner) -> str:
        """Hand the parameters to submitit's executor and submit the driver function (submitit
        runs sbatch itself: `runner` is not used)."""
        import submitit  # optional backend: imported only when used

        # `exec` makes the driver the batch shell itself, so --signal=B:TERM and scancel --batch
        # reach it (bash does not forward signals to a foreground child).
        executor = submitit.SlurmExecutor(folder=self.folder, python=self.python)
        executor.update_parameters(**self.parameters)
        try:
            job = executor.submit(self.driver(), str(Path(self.folder).parent))
        except Exception as exc:  # noqa: BLE001 - submitit raises plain exceptions with sbatch's stderr
            raise SubmissionError([SBATCH, f"({KIND})"], 1, str(exc)) from exc
        return str(job.job_id)

    def driver(self) -> Callable[[str], Any]:
        """The function submitted (`function`, module:name)."""
        module, _, name = self.function.partition(":")
        found: Callable[[str], Any] = getattr(importlib.import_module(module), name)
        return found

    def execute(self, session: Session) -> int:
        """Submit, then follow the job."""
        return session.submitted(self.submit)


@dataclass(frozen=True, slots=True, kw_only=True)
class SubmititLauncher(LauncherFacts):
    """Builds submitit's parameters (without constructing the executor: no cluster needed)."""

    def materialize(self, plan: Plan, materials: Materials) -> SubmititRequest:
        """The parameters for `plan`; the driver runs under `exec <python>`."""
        return SubmititRequest(
            parameters=submitit_parameters(plan.slurm),
            folder=f"{RUN_DIR}/{FOLDER}",
            python=f"exec {materials.python}",
        )

    def request_from_dict(self, data: Mapping[str, Any]) -> SubmititRequest:
        """Inverse of `SubmititRequest.to_dict`."""
        return SubmititRequest(
            parameters=dict(data["parameters"]),
            folder=data["folder"],
            python=data["python"],
            function=data["function"],
        )


LAUNCHER = SubmititLauncher(kind=KIND, submits_job=True)
