"""What every launcher and every launch request provides (one module per launcher kind, see
`orchestrator.launchers`).

A `Launcher` materializes a plan into its `LaunchRequest`: pure data that the dry-run prints and
that `orchestrator.launch` executes, the very same object. The request owns how it is
bound to a run directory, saved (launch.json, a plan's `serve.request`), described and executed;
executing asks a `Session` (the launch in progress) for the flow it needs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from orchestrator.core.effects import CommandRunner
from orchestrator.plan.model import Plan


@dataclass(frozen=True, slots=True, kw_only=True)
class Materials:
    """What a request is made of besides the plan: facts of the submitting side."""

    python: str  # the interpreter that runs the driver
    overrides: Sequence[str]  # the launch's overrides (the script header)
    git_sha: str  # the orchestrator checkout's commit ('' when installed)
    cwd: str  # where the command ran


class Session(Protocol):
    """A launch in progress (implemented by `orchestrator.launch`): the flows a
    request picks from when it is executed."""

    def submitted(self, submit: Callable[[Path, CommandRunner], str]) -> int:
        """Submit with `submit(run_dir, runner)` (the job id), record and announce the job, then
        follow it."""
        ...

    def foreground(self, argv: Sequence[str]) -> int:
        """Run the driver `argv` here in the foreground (detached with wait=false)."""
        ...

    def detached(self, argv: Sequence[str]) -> int:
        """Start the driver `argv` detached on this host, then follow it."""
        ...


class LaunchRequest(Protocol):
    """What one launcher hands to Slurm or to this machine, as data."""

    @property
    def kind(self) -> str:
        """The launcher that made it (the key of `orchestrator.launchers.LAUNCHERS`)."""
        ...

    def bind(self, run_dir: str) -> LaunchRequest:
        """This request for the run directory `run_dir` (the only placeholder it holds)."""
        ...

    def after_job(self, job_id: str) -> LaunchRequest:
        """This request held by Slurm until job `job_id` ended ('' = unchanged)."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """JSON form (the dry-run, launch.json); the launcher's `request_from_dict` reads it."""
        ...

    def describe(self) -> list[str]:
        """The dry-run's lines for this request, as executed."""
        ...

    def slurm_view(self) -> dict[str, Any]:
        """What the dry-run's Slurm section takes from this request (keys it replaces or adds)."""
        ...

    def submit(self, run_dir: Path, runner: CommandRunner) -> str:
        """Submit the bound request from `run_dir`; the job id (TypeError if it is run here)."""
        ...

    def execute(self, session: Session) -> int:
        """Execute the bound request in `session`; the launch's exit code."""
        ...


class Facts(Protocol):
    """What a launcher kind tells about its runs (where the driver runs, whether Slurm knows
    the run's job): asked instead of comparing kinds."""

    @property
    def kind(self) -> str:
        """Its name (launch.json's `launcher`)."""
        ...

    @property
    def selectable(self) -> bool:
        """launcher.kind may name it (the others are chosen by the site or the placement)."""
        ...

    @property
    def driver_on_this_host(self) -> bool:
        """The driver is a process of the submitting host (its pid tells whether it lives)."""
        ...

    @property
    def submits_job(self) -> bool:
        """It submits a Slurm job whose batch shell is the driver (`scancel --batch` reaches it;
        `ctl scale` submits attached workers the same way)."""
        ...

    @property
    def in_allocation(self) -> bool:
        """The driver runs inside the caller's salloc/sbatch allocation."""
        ...

    @property
    def one_machine(self) -> bool:
        """Every process runs on this machine (one node, on loopback)."""
        ...

    @property
    def slurm_job(self) -> bool:
        """The run has a Slurm job to look up (submitted, or the allocation it runs in)."""
        ...


class Launcher(Facts, Protocol):
    """One launcher kind: its facts, and how it makes its request."""

    def place(self, plan: Plan, materials: Materials) -> Plan:
        """`plan` as this launcher runs it (where the driver runs, recorded in the plan)."""
        ...

    def materialize(self, plan: Plan, materials: Materials) -> LaunchRequest:
        """The request this launcher makes for `plan` (pure; {run_dir} left to `bind`)."""
        ...

    def request_from_dict(self, data: Mapping[str, Any]) -> LaunchRequest:
        """Inverse of its requests' `to_dict`."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class LauncherFacts:
    """The facts part of a `Launcher`, shared by the launcher classes."""

    kind: str
    selectable: bool = True
    driver_on_this_host: bool = False
    submits_job: bool = False
    in_allocation: bool = False
    one_machine: bool = False

    @property
    def slurm_job(self) -> bool:
        """The run has a Slurm job to look up (submitted, or the allocation it runs in)."""
        return self.submits_job or self.in_allocation

    def place(self, plan: Plan, materials: Materials) -> Plan:
        """`plan` with where its driver runs."""
        return dataclasses.replace(plan, driver_on_this_host=self.driver_on_this_host)


NO_LAUNCHER = LauncherFacts(kind="", selectable=False)  # a run directory naming no known launcher


def not_submitted(kind: str) -> TypeError:
    """The error of submitting a request whose driver runs here."""
    return TypeError(f"{kind} requests are run, not submitted")


def cannot_wait(kind: str) -> TypeError:
    """The error of holding a request whose driver runs here until a Slurm job ended."""
    return TypeError(f"{kind} requests run at once; they cannot wait for a Slurm job")
