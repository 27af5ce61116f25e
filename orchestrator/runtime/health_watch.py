"""The serving health watch: exits are caught at once by the driver; this catches processes
that hang without exiting (their own health check fails `serve_failures` times in a row)."""

from __future__ import annotations

import signal
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait

from orchestrator.core.effects import HttpClient
from orchestrator.core.errors import ProcessFailed
from orchestrator.plan.model import Plan
from orchestrator.runtime import health
from orchestrator.runtime.health import Verdict
from orchestrator.runtime.pernode import AgentProcess
from orchestrator.runtime.processes import Backend, Running, log_tail
from orchestrator.runtime.state import StateFile

PROBE_THREADS = 32  # probes in flight at once, whatever the number of processes
STARTUP_TIMEOUT_S = 1.0  # a starting process that does not answer within 1 s is probed next tick


def probe_starting(
    pool: ThreadPoolExecutor, http: HttpClient, targets: Mapping[str, Running]
) -> dict[str, Verdict]:
    """The startup health check of every target at once on `pool`, in the targets' order: one
    after another, 768 starting processes took 19 s to turn healthy, the driver waiting on each
    probe in turn (issue 22). Bounded by the pool, and by one probe's timeout per pool width."""
    futures = {
        name: pool.submit(_one, http, running, STARTUP_TIMEOUT_S, serving=False)
        for name, running in targets.items()
    }
    return {name: future.result() for name, future in futures.items()}


class Round:
    """Checks in flight on a bounded pool of threads: a deep check takes seconds (SGLang's
    /health_generate sleeps 1 s before it looks for its 1-token output) and must not hold up
    the driver's loop, which sees exits and removes dead workers from the router. A thread per
    probe was 1,000 threads a round at 1,000 processes (issue 22)."""

    def __init__(self, pool: ThreadPoolExecutor) -> None:
        self.pool = pool
        self.inflight: dict[str, tuple[Running, Future[Verdict]]] = {}

    def submit(self, http: HttpClient, targets: Mapping[str, Running], timeout: float) -> None:
        """Probe each target that has no probe in flight."""
        for name, running in targets.items():
            if name not in self.inflight:
                self.inflight[name] = (running, self.pool.submit(_one, http, running, timeout))

    def answered(self, wait_s: float) -> dict[str, tuple[Running, Verdict]]:
        """The probes that have their verdict, after waiting up to `wait_s` (one probe's
        timeout: bounded whatever the number of processes) for those still running; the others
        stay in flight (a pool busy with many slow probes delays an answer: not a miss)."""
        wait([f for _, f in self.inflight.values()], timeout=wait_s)
        done = {n: (r, f.result()) for n, (r, f) in self.inflight.items() if f.done()}
        for name in done:
            del self.inflight[name]
        return done


def _one(http: HttpClient, running: Running, timeout: float, *, serving: bool = True) -> Verdict:
    probe = running.proc.health
    assert probe is not None
    url = (probe.serve_url or probe.url) if serving else probe.url
    return health.probe(http, url, expect=probe.expect_status, timeout=timeout)


class HealthWatch:
    """Counts consecutive failed health checks per process while serving."""

    def __init__(
        self,
        plan: Plan,
        http: HttpClient,
        backend: Backend,
        state: StateFile,
        say: Callable[[str], None],
    ) -> None:
        self.plan, self.http, self.backend, self.state, self.say = plan, http, backend, state, say
        self.misses: dict[str, int] = {}
        self.round = Round(ThreadPoolExecutor(PROBE_THREADS, thread_name_prefix="health"))
        # Its own pool: a serving round's slow deep checks must not delay restarted processes.
        self.startup_pool = ThreadPoolExecutor(PROBE_THREADS, thread_name_prefix="startup")

    def check(self, running: Mapping[str, Running], skip: Collection[str]) -> None:
        """Judge the probes answered since the last check (started one check interval ago;
        they time out within that interval), then probe every process not in `skip`
        (restarting) with no probe in flight. A hung process that may restart is killed (the
        driver's next tick sees the exit and restarts it), else ProcessFailed."""
        targets = {n: r for n, r in running.items() if r.proc.health is not None and n not in skip}
        # An answer must come within the check interval (capped: SGLang's own generating check
        # gives up after SGLANG_HEALTH_CHECK_TIMEOUT, 20 s), and at least 3 s for a deep check.
        timeout = max(1.0, min(10.0, self.plan.readiness.serve_check_s))
        if any(r.proc.health and r.proc.health.serve_url for r in running.values()):
            timeout = max(timeout, 3.0)
        for name, (probed, verdict) in self.round.answered(timeout).items():
            # Only the very process probed: one restarted meanwhile is judged anew.
            if name not in skip and running.get(name) is probed:
                self._count(running[name], verdict)
        here = {n: r for n, r in targets.items() if not isinstance(r.popen, AgentProcess)}
        self._node_side([r for n, r in targets.items() if n not in here], timeout)
        self.round.submit(self.http, here, timeout)

    def _node_side(self, targets: list[Running], timeout: float) -> None:
        """Processes of node agents (launch_per=node) are checked by their agent, every check
        interval with the same timeout (nodeagent.HealthChecks); here only their misses are
        judged, so the driver's serving cost follows the nodes, not the processes."""
        r = self.plan.readiness
        for running in targets:
            handle, probe = running.popen, running.proc.health
            assert isinstance(handle, AgentProcess) and probe is not None
            if handle.poll() is not None:
                continue  # exited (killed by a check, say): the driver's exit handling has it
            if not handle.watched:
                url = probe.serve_url or probe.url
                handle.watch_health(url, probe.expect_status, r.serve_check_s, timeout)
            elif handle.misses >= r.serve_failures:
                self._failed(running, handle.misses, handle.health_detail)

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
