"""What every frontend provides (one module per frontend, see `orchestrator.frontends`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from orchestrator.config.schema import RootConfig
from orchestrator.effects import HttpClient
from orchestrator.errors import Issue
from orchestrator.plan.model import Plan, Process, Readiness
from orchestrator.plan.ports import PortAllocator

if TYPE_CHECKING:
    from orchestrator.runtime.health import Verdict
    from orchestrator.runtime.hooks import DriverView


@dataclass(frozen=True, slots=True)
class Head:
    """What a frontend puts on node 0, and what its workers need to find it."""

    processes: list[Process]  # infrastructure and the frontend itself, in start order
    worker_env: dict[str, str] = field(default_factory=dict)  # e.g. Dynamo's discovery variables
    discovery: str = ""  # Dynamo discovery backend for worker argv ('' for none)


class Frontend(Protocol):
    """One frontend: its processes, its readiness gate, how workers join it, its own rules."""

    kind: str

    def head(self, cfg: RootConfig, ports: PortAllocator, num_nodes: int) -> Head:
        """The processes on node 0 (planned ports from `ports`)."""
        ...

    def ready_path(self, cfg: RootConfig) -> str:
        """The path of the frontend's own readiness gate."""
        ...

    def validate(self, cfg: RootConfig) -> list[Issue]:
        """Rules of this frontend."""
        ...

    def registration_lines(self, plan: Plan) -> list[str]:
        """Dry-run lines saying how workers join (empty when they join by themselves)."""
        ...

    def ready(self, http: HttpClient, readiness: Readiness) -> Verdict:
        """One look at the readiness gate (runtime; every expected worker counted)."""
        ...

    def attach(self, driver: DriverView) -> None:
        """Add the frontend's runtime hooks to the driver (e.g. worker registration)."""
        ...
