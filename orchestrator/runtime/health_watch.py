"""The serving health watch: exits are caught at once by the driver; this catches processes
that hang without exiting (their own health check fails `serve_failures` times in a row)."""

from __future__ import annotations

import signal
from collections.abc import Callable, Collection, Mapping

from orchestrator.effects import HttpClient
from orchestrator.errors import ProcessFailed
from orchestrator.plan.model import Plan
from orchestrator.runtime import health
from orchestrator.runtime.processes import Backend, Running, log_tail
from orchestrator.runtime.state import StateFile


class HealthWatch:
    """Counts consecutive failed health checks per process while serving."""

    def __init__(self, plan: Plan, http: HttpClient, backend: Backend, state: StateFile,
                 say: Callable[[str], None]) -> None:  # fmt: skip
        self.plan, self.http, self.backend, self.state, self.say = plan, http, backend, state, say
        self.misses: dict[str, int] = {}

    def check(self, running: Mapping[str, Running], skip: Collection[str]) -> None:
        """Probe every process not in `skip` (restarting); a hung one that may restart is
        killed (the driver's next tick sees the exit and restarts it), else ProcessFailed."""
        for name, proc_running in running.items():
            probe = proc_running.proc.health
            if probe is None or name in skip:
                continue
            # An answer must come within the check interval (capped: SGLang's own /health runs a
            # 1-token generation and gives up after 20 s).
            timeout = max(1.0, min(10.0, self.plan.readiness.serve_check_s))
            verdict = health.probe(
                self.http, probe.url, expect=probe.expect_status, timeout=timeout
            )
            misses = 0 if verdict.ok else self.misses.get(name, 0) + 1
            self.misses[name] = misses
            if misses >= self.plan.readiness.serve_failures:
                self._failed(proc_running, misses, verdict.detail)

    def _failed(self, running: Running, misses: int, detail: str) -> None:
        proc, name = running.proc, running.proc.name
        if proc.restart.mode != "never" and running.poll() is None:
            self.say(f"{name} failed {misses} health checks in a row ({detail}); killing it")
            self.backend.signal([running], signal.SIGKILL)
            return
        self.state.process(name, state="unhealthy", last_check=detail)
        raise ProcessFailed(
            f"{name} ({proc.role}) on {running.host} (node {proc.node_index}) failed {misses} "
            f"health checks in a row while serving (last: {detail}); last 50 lines of "
            f"{running.log}:\n{log_tail(running.log)}"
        )
