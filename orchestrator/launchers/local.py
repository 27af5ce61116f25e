"""launcher=local: the driver runs on this machine, in the foreground (Ctrl-C stops the
deployment), and starts every process here. `LocalRequest` is also the request of the
allocation launcher (orchestrator.launchers.allocation)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from orchestrator.core.effects import CommandRunner
from orchestrator.launchers.base import (
    LauncherFacts,
    Materials,
    Session,
    cannot_wait,
    not_submitted,
)
from orchestrator.plan.model import Plan
from orchestrator.plan.placeholders import RUN_DIR
from orchestrator.render.shell import DRIVER_MODULE, quote_argv

KIND = "local"


def driver_argv(python: str, run_dir: str = RUN_DIR) -> tuple[str, ...]:
    """The driver's command line."""
    return (python, "-m", DRIVER_MODULE, run_dir)


def bind_argv(argv: tuple[str, ...], run_dir: str) -> tuple[str, ...]:
    """`argv` with the run directory."""
    return tuple(run_dir if a == RUN_DIR else a for a in argv)


_Request = TypeVar("_Request", bound="DriverRequest")


@dataclass(frozen=True, slots=True, kw_only=True)
class DriverRequest:
    """A request that is the driver's command line (run on this host, never submitted)."""

    argv: tuple[str, ...]  # python -m orchestrator.run.entry {run_dir}
    kind: str = KIND

    def bind(self: _Request, run_dir: str) -> _Request:
        """The driver's argv with `run_dir`."""
        return dataclasses.replace(self, argv=bind_argv(self.argv, run_dir))

    def after_job(self: _Request, job_id: str) -> _Request:
        """Unchanged without a job id; it cannot wait for a Slurm job."""
        if job_id:
            raise cannot_wait(self.kind)
        return self

    def to_dict(self) -> dict[str, Any]:
        """{"kind", "argv"}."""
        return {"kind": self.kind, "argv": list(self.argv)}

    def describe(self) -> list[str]:
        """The driver's command line."""
        return [f"driver ({self.kind}): {quote_argv(self.argv)}"]

    def slurm_view(self) -> dict[str, Any]:
        """Nothing: no Slurm request is made for the driver."""
        return {}

    def submit(self, run_dir: Path, runner: CommandRunner) -> str:
        """Not submitted: it runs here."""
        raise not_submitted(self.kind)


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalRequest(DriverRequest):
    """The driver in the foreground of this command: on this machine (`local`) or in the
    current allocation (`allocation`)."""

    def execute(self, session: Session) -> int:
        """Run the driver here in the foreground."""
        return session.foreground(self.argv)


@dataclass(frozen=True, slots=True, kw_only=True)
class DriverLauncher(LauncherFacts):
    """A launcher whose request is the driver's command line."""

    def materialize(self, plan: Plan, materials: Materials) -> LocalRequest:
        """`python -m orchestrator.run.entry {run_dir}`."""
        return LocalRequest(argv=driver_argv(materials.python), kind=self.kind)

    def request_from_dict(self, data: Mapping[str, Any]) -> LocalRequest:
        """Inverse of `LocalRequest.to_dict`."""
        return LocalRequest(argv=tuple(data["argv"]), kind=data["kind"])


LAUNCHER = DriverLauncher(kind=KIND, driver_on_this_host=True, one_machine=True)
