"""The serving health watch: exits are caught at once by the driver; this catches processes
that hang without exiting (their own health check fails `serve_failures` times in a row)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Collection, Mapping

from orchestrator.core.effects import HttpClient
from orchestrator.core.errors import ProcessFailed
from orchestrator.plan.model import Plan
from orchestrator.runtime import health
from orchestrator.runtime.health import Verdict
from orchestrator.runtime.processes import Backend, Running, log_tail
from orchestrator.runtime.state import StateFile


class Round:
    """One round of checks, every probe in its own thread: a deep check takes seconds (SGLang's
    /health_generate sleeps 1 s before it looks for its 1-token output) and must not hold up
    the driver's loop, which sees exits and removes dead workers from the router."""

    def __init__(self, http: HttpClient, running: Mapping[str, Running], timeout: float) -> None:
        self.probed = dict(running)
        self.results: dict[str, Verdict] = {}
        self.threads = [threading.Thread(target=self._one, args=(http, name, r, timeout),
                                         daemon=True) for name, r in running.items()]  # fmt: skip
        for thread in self.threads:
            thread.start()

    def _one(self, http: HttpClient, name: str, running: Running, timeout: float) -> None:
        probe = running.proc.health
        assert probe is not None
        url = probe.serve_url or probe.url
        self.results[name] = health.probe(http, url, expect=probe.expect_status, timeout=timeout)

    def join(self) -> dict[str, Verdict]:
        """The verdicts, once every probe answered or timed out."""
        for thread in self.threads:
            thread.join()
        return self.results


class HealthWatch:
    """Counts consecutive failed health checks per process while serving."""

    def __init__(self, plan: Plan, http: HttpClient, backend: Backend, state: StateFile,
                 say: Callable[[str], None]) -> None:  # fmt: skip
        self.plan, self.http, self.backend, self.state, self.say = plan, http, backend, state, say
        self.misses: dict[str, int] = {}
        self.round: Round | None = None

    def check(self, running: Mapping[str, Running], skip: Collection[str]) -> None:
        """Judge the previous round (started one check interval ago; its probes time out
        within that interval), then start the next one on every process not in `skip`
        (restarting). A hung process that may restart is killed (the driver's next tick sees
        the exit and restarts it), else ProcessFailed."""
        if self.round is not None:
            verdicts, probed = self.round.join(), self.round.probed
            self.round = None
            for name, verdict in verdicts.items():
                # Only the very process probed: one restarted meanwhile is judged anew.
                if name not in skip and running.get(name) is probed[name]:
                    self._count(running[name], verdict)
        targets = {n: r for n, r in running.items() if r.proc.health is not None and n not in skip}
        # An answer must come within the check interval (capped: SGLang's own generating check
        # gives up after SGLANG_HEALTH_CHECK_TIMEOUT, 20 s), and at least 3 s for a deep check.
        timeout = max(1.0, min(10.0, self.plan.readiness.serve_check_s))
        if any(r.proc.health and r.proc.health.serve_url for r in targets.values()):
            timeout = max(timeout, 3.0)
        self.round = Round(self.http, targets, timeout)

    def _count(self, running: Running, verdict: Verdict) -> None:
        name = running.proc.name
        misses = 0 if verdict.ok else self.misses.get(name, 0) + 1
        self.misses[name] = misses
        if misses >= self.plan.readiness.serve_failures:
            self._failed(running, misses, verdict.detail)

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
