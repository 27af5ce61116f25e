"""The narrow view of the driver that plugins get (frontend registration, the benchmark step):
what they may read and the hooks they may add, not the driver itself."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from orchestrator.core.effects import Clock, HttpClient
from orchestrator.plan.model import Plan
from orchestrator.runtime.processes import Backend, Running
from orchestrator.runtime.state import StateFile


class Stopped(Exception):
    """A stop was requested (signal, ctl stop, time limit)."""


class DriverView(Protocol):
    """What a plugin sees of the running driver."""

    plan: Plan  # bound: every placeholder resolved
    run_dir: Path
    backend: Backend
    http: HttpClient
    clock: Clock
    state: StateFile
    say: Callable[[str], None]
    stop_event: threading.Event
    stop_reason: str
    run_gone: str  # an attached job's run is gone (its frontend with it): no deregistration
    on_process_healthy: list[ProcessHook]  # a process's own health passed
    on_process_lost: list[ProcessHook]  # a process exited and will be restarted in place
    on_process_retired: list[ProcessHook]  # scale-down removes it: deregister, then it stops
    on_workers_healthy: list[Hook]  # every probed process is healthy
    on_ready: list[Hook]  # the deployment is ready (e.g. the benchmark); may request a stop
    before_stop: list[Hook]  # teardown begins (e.g. deregistration)
    on_tick: list[Hook]  # every supervision tick, while waiting for readiness and serving

    def request_stop(self, reason: str) -> None:
        """Ask the driver to stop (thread- and signal-safe)."""
        ...

    def check_alive(self) -> None:
        """Supervise while a hook runs: restart what exited by policy; raise `ProcessFailed`
        when a process exited for good, `Stopped` on a stop request."""
        ...

    def retire(self, names: list[str]) -> list[Running]:
        """Take processes out of supervision for good (scale-down); the caller stops them."""
        ...

    def restarts_since(self, t: float) -> list[str]:
        """Restarts decided at or after clock time `t` (the benchmark invalidates a point
        measured across one)."""
        ...


Hook = Callable[[DriverView], None]
ProcessHook = Callable[[DriverView, Running], None]
