"""The in-allocation driver: start every process, wait for real readiness, watch (restarting
dead workers in place by their plan's RestartPolicy while the others keep serving), tear down.

The same driver runs under every launcher: as the exec'ed batch script (sbatch), as the
submitit job function, inside an salloc allocation, or on one machine (local); its entry point
is `orchestrator.run.entry`, which loads plan.json and binds it.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from orchestrator.core.effects import Clock, HttpClient
from orchestrator.core.errors import OrchestratorError, ProcessFailed, WorkersNotReady
from orchestrator.frontends import get_frontend
from orchestrator.frontends.control_key import authorized
from orchestrator.plan.model import TIER_INFRA, Plan, Process
from orchestrator.run.early_stop import STOP_SIGNALS
from orchestrator.rundir import Phase, RunDir
from orchestrator.rundir.secrets import API_KEY_ENV
from orchestrator.runtime import health, restarts
from orchestrator.runtime.health_watch import HealthWatch, probe_starting
from orchestrator.runtime.hooks import Hook, ProcessHook, Stopped
from orchestrator.runtime.processes import (
    Backend,
    Running,
    close_backend,
    exit_detail,
    stop_tier,
)
from orchestrator.runtime.restarts import RestartBook, unit_key
from orchestrator.runtime.state import StateFile, progress_line

# A process that ends this soon after our own stop signal is part of the stop, not a crash
# (scancel and preemption signal every step and the driver at the same time).
STOP_RACE_S = 1.0


class Driver:
    """Runs one bound plan (every placeholder resolved) to completion."""

    def __init__(
        self,
        plan: Plan,
        *,
        run_dir: Path,
        backend: Backend,
        http: HttpClient,
        clock: Clock,
        state: StateFile,
        say: Callable[[str], None],
    ) -> None:
        self.plan, self.run_dir, self.backend = plan, run_dir, backend
        self.http, self.clock, self.state, self.say = http, clock, state, say
        self.running: dict[str, Running] = {}
        self.queued: list[Process] = []  # waiting for their start_after to be healthy
        self.healthy: set[str] = set()
        self.deadline: float | None = None  # readiness deadline, set when starting
        self.health_watch = HealthWatch(plan, http, backend, state, say)  # hung, not exited
        self.stop_event = threading.Event()
        self.stop_reason = ""
        self.run_gone = ""  # why the run this job attaches to is gone (runtime/heartbeat.py)
        self.last_detail = ""  # why the last readiness check failed (for the timeout message)
        self.serving = False  # ready once: from now on exits are restarted by policy
        self.book = RestartBook()
        self.degraded: list[str] = []  # processes restarting or not healthy again yet
        self.last_progress = ""
        self.progress_at = -1  # state.changes when the progress line was last derived
        self.on_process_healthy: list[ProcessHook] = []  # e.g. register a worker with the router
        self.on_process_lost: list[ProcessHook] = []  # exited, to be restarted (router: DELETE)
        self.on_process_retired: list[ProcessHook] = []  # scale-down: deregister before the stop
        self.on_workers_healthy: list[Hook] = []  # every probed process is healthy
        self.on_ready: list[Hook] = []  # e.g. the benchmark; may call request_stop()
        self.before_stop: list[Hook] = []  # e.g. router deregistration
        self.on_tick: list[Hook] = []  # every supervision tick, waiting and serving (rollover)

    # --- stop requests -------------------------------------------------------------------
    def request_stop(self, reason: str) -> None:
        """Ask the driver to stop (thread- and signal-safe)."""
        if not self.stop_reason:
            self.stop_reason = reason
        self.stop_event.set()

    def install_signal_handlers(self, pending: str = "") -> None:
        """SIGTERM (scancel, time limit via --signal=B:TERM, ctl stop), SIGINT (Ctrl-C) and the
        USR signals (preemption warnings) all mean: stop gracefully. `pending`: the reason of a
        stop signal that arrived before (orchestrator.run.early_stop); the run stops at once."""

        def handler(signum: int, _frame: FrameType | None) -> None:
            self.request_stop(f"received {signal.Signals(signum).name}")

        for sig in STOP_SIGNALS:
            signal.signal(sig, handler)
        if pending:
            self.request_stop(pending)

    # --- phases --------------------------------------------------------------------------
    def run(self) -> int:
        """Start, wait until ready, serve until stopped; always tear down. Exit code 0/1."""
        failure = ""
        try:
            if self.stop_event.is_set():  # stopped before anything started: start nothing
                raise Stopped()
            self.state.phase(Phase.STARTING)
            self._start_all()
            self._wait_ready()
            url = self.plan.readiness.frontend_url
            self.serving = True
            self.state.phase(Phase.READY, frontend_url=url, degraded=[])
            self.say(f"ready: {url} serves {self.plan.readiness.model}")
            for hook in self.on_ready:
                hook(self)
            self._serve()
        except Stopped:
            pass
        except OrchestratorError as exc:
            failure = str(exc)
        return self._teardown(failure)

    def _start_all(self) -> None:
        infra = [p for p in self.plan.processes if p.tier == TIER_INFRA]
        with self.state.batched():
            for proc in infra:
                self._start(proc)
        # Workers retry discovery for ~120 s, but waiting for etcd first costs ~0.1 s and
        # turns a broken etcd into a clear error instead of a worker timeout.
        self._wait(lambda: all(n in self.healthy for n in self._probed(infra)) or None, "infra")
        self.queued = [p for p in self.plan.processes if p.tier != TIER_INFRA]
        with self.state.batched():  # one state.json write for every start, not one each
            for proc in self.queued:
                if proc.start_after:
                    self.state.process(
                        proc.name,
                        node=proc.node_index,
                        role=proc.role,
                        state="queued",
                        probed=proc.health is not None,
                        last_check=f"starts once {', '.join(proc.start_after)} is healthy",
                    )
            self._start_unblocked()

    def _start_unblocked(self) -> None:
        """Start the queued processes whose `start_after` are healthy: workers sharing a GPU
        start one after another, as SGLang sizes its memory from what is free when it starts
        (orchestrator.plan.sharing)."""
        for proc in [p for p in self.queued if set(p.start_after) <= self.healthy]:
            self.queued.remove(proc)
            self._start(proc)

    def _start(self, proc: Process, state: str = "starting") -> None:
        log = RunDir(self.run_dir).log(proc.name)  # appended to on a restart
        running = self.backend.start(proc, log)
        self.running[proc.name] = running
        self.state.process(
            proc.name,
            node=proc.node_index,
            host=running.host,
            role=proc.role,
            state=state,
            probed=proc.health is not None,
            log=str(log),
            started_at=time.time(),
        )

    def _probed(self, procs: list[Process]) -> list[str]:
        return [p.name for p in procs if p.health is not None]

    def _wait_ready(self) -> None:
        workers_done = False

        def check() -> bool | None:
            nonlocal workers_done
            if not workers_done and all(
                n in self.healthy for n in self._probed(list(self.plan.processes))
            ):
                workers_done = True
                self.state.update(workers_healthy_at=time.time())
                for hook in self.on_workers_healthy:
                    hook(self)
            if not workers_done:
                return None
            return self._frontend_and_canary()

        self._wait(check, "ready")

    def _frontend_and_canary(self) -> bool | None:
        r = self.plan.readiness
        verdict = get_frontend(r.frontend_kind).ready(self.http, r)
        if not verdict.ok:
            self.last_detail = verdict.detail
            return None
        if r.canary:
            started = time.time()
            # With frontend.api_key_env the canary is a client like any other: it sends the key.
            http = authorized(self.http, API_KEY_ENV)
            verdict = health.canary(http, r.frontend_url, r.model, r.canary_max_tokens)
            if not verdict.ok:
                self.last_detail = verdict.detail
                return None
            # What the canary cost, apart from the driver's own readiness overhead.
            self.state.update(canary=verdict.detail, canary_s=round(time.time() - started, 3))
        return True

    def _wait(self, check: Callable[[], bool | None], what: str) -> None:
        """Poll health and `check` until it returns True; fail fast on exits, stop or deadline."""
        r = self.plan.readiness
        if self.deadline is None:  # one deadline for infra and workers together
            self.deadline = self.clock.now() + r.timeout_s
        self.last_detail = ""
        while True:
            with self.state.batched():  # one state.json write per tick, not one per event
                self._check_alive()
                self._probe_health()
                self._start_unblocked()
                self._tick()
                done = check()
            if done:
                return
            if self.clock.now() >= self.deadline:
                raise WorkersNotReady(self._not_ready_message(what, r.timeout_s))
            if self.clock.wait(self.stop_event, r.interval_s) or self._stop_file_seen():
                raise Stopped()

    def _probe_health(self) -> None:
        waiting = self._waiting() | self.healthy
        targets = {n: r for n, r in self.running.items() if r.proc.health and n not in waiting}
        verdicts = probe_starting(self.health_watch.startup_pool, self.http, targets)
        for name, verdict in verdicts.items():  # hooks in the driver's thread, in plan order
            running = targets[name]
            if verdict.ok:
                self.healthy.add(name)
                self.state.process(name, state="healthy", healthy_at=time.time())
                for hook in self.on_process_healthy:  # e.g. router registration, then counted
                    hook(self, running)
                self._back_in_service(running.proc)
            elif self.state.data["processes"].get(name, {}).get("last_check") != verdict.detail:
                # Only on change: state.json often lives on a shared filesystem.
                self.state.process(name, last_check=verdict.detail)

    def _not_ready_message(self, what: str, timeout: float) -> str:
        missing = [n for n in self._probed(list(self.plan.processes)) if n not in self.healthy]
        details = "; ".join(
            f"{n}: {self.state.data['processes'].get(n, {}).get('last_check', 'not started')}"
            for n in missing
        )
        have = progress_line(self.state.data)
        last = f"; last: {self.last_detail}" if self.last_detail else ""
        waiting = f"waiting for {', '.join(missing)} ({details})" if missing else "workers healthy"
        return f"not {what} after {timeout:g} s: {waiting}; {have}{last}"

    def check_alive(self) -> None:
        """Supervise while an on_ready hook (the benchmark) runs (see DriverView)."""
        self._supervise()

    def restarts_since(self, t: float) -> list[str]:
        """Restarts decided at or after clock time `t`, e.g. ['decode-0 exited with code -9']."""
        return self.book.since(t)

    def retire(self, names: list[str]) -> list[Running]:
        """Take processes out of supervision for good (scale-down, elastic/retire.py): never
        restarted, not a failure; the caller stops them. Returns those that were supervised."""
        out = [self.running.pop(n) for n in names if n in self.running]
        for running in out:
            self.healthy.discard(running.proc.name)
            self.book.pending.pop(unit_key(running.proc), None)
        if any(n in self.degraded for n in names):
            self._set_degraded([n for n in self.degraded if n not in names])
        return out

    def _supervise(self) -> None:
        """One serving tick: exits, due restarts, health of restarted processes, progress."""
        with self.state.batched():
            self._check_alive()
            if not self.serving:
                return
            self._start_due()
            if self.degraded:
                self._probe_health()
            self._tick()

    def _tick(self) -> None:
        for hook in self.on_tick:
            hook(self)
        if self.state.changes == self.progress_at:  # a walk over every process: not per tick
            return
        self.progress_at = self.state.changes
        line = progress_line(self.state.data)
        if line != self.last_progress:  # progress, only when it changed
            self.say(line)
            self.last_progress = line

    def _check_alive(self) -> None:
        waiting = self._waiting()
        for name, running in list(self.running.items()):
            code = running.poll()
            if code is None or name in waiting:
                continue
            detail = exit_detail(self.backend, running)  # e.g. its node failed: no restart there
            decision = self.book.decide(running.proc, code, now=self.clock.now())
            if (
                self.serving
                and decision.due is not None
                and not detail
                and not self.stop_event.is_set()
            ):
                self._lose_unit(running, code, decision)
                waiting |= {p.name for p in self._members(unit_key(running.proc))}
                continue
            if self.clock.wait(self.stop_event, STOP_RACE_S):
                raise Stopped()
            self._fail_exited(running, code, decision.refusal if self.serving else "", detail)

    def _fail_exited(self, running: Running, code: int, refusal: str, detail: str) -> None:
        """Raise ProcessFailed for an exit that is not restarted, with every earlier tail."""
        earlier = self.state.data["processes"][running.proc.name].get("restarts", [])
        self.state.process(running.proc.name, state="exited", exit_code=code)
        raise ProcessFailed(restarts.exit_message(running, code, refusal, earlier, detail))

    def _members(self, key: restarts.UnitKey) -> list[Process]:
        return restarts.unit_members(self.plan.processes, key)

    def _waiting(self) -> set[str]:
        """Processes whose restart is scheduled but not started yet."""
        return {p.name for key in self.book.pending for p in self._members(key)}

    def _lose_unit(self, running: Running, code: int, decision: restarts.Decision) -> None:
        """`running` exited: stop the rest of its unit, record the exit, schedule the restart."""
        cause = running.proc
        now = self.clock.now()
        self.book.schedule(cause, code, decision, now=now)
        members = [self.running[p.name] for p in self._members(unit_key(cause))]
        # The other ranks hang in their next collective without the dead one, and what the dead
        # process spawned may still hold its ports: kill the whole unit at once.
        self.backend.signal(members, signal.SIGKILL)
        for r in members:
            self.healthy.discard(r.proc.name)
            self.health_watch.misses.pop(r.proc.name, None)
            old = self.state.data["processes"].get(r.proc.name, {}).get("restarts", [])
            entry = restarts.restart_entry(r, cause=cause.name, exited=r is running)
            self.state.process(r.proc.name, state="restarting", restarts=[*old, entry])
        self._set_degraded(
            self.degraded
            + [p.name for p in self._members(unit_key(cause)) if p.name not in self.degraded]
        )
        self.say(
            f"{cause.name} ({cause.role}) on {running.host} exited with code {code}; restart "
            f"{decision.recent + 1} of {cause.restart.max_restarts} in {(decision.due or now) - now:g} s "
            "on the same node, GPUs and ports"
        )
        for hook in self.on_process_lost:
            hook(self, running)

    def _start_due(self) -> None:
        """Start every unit whose backoff passed once its old processes are all gone."""
        for key in self.book.due(self.clock.now()):
            members = self._members(key)
            if self.backend.leftovers([self.running[p.name] for p in members]):
                continue  # a killed rank (or its srun step) has not ended yet: next tick
            procs = self.plan.processes
            starts = [s for p in members if (s := restarts.shared_restart(procs, p, self.healthy))]
            if len(starts) < len(members):
                continue  # sharing a GPU: a worker planned before it is not healthy yet
            del self.book.pending[key]
            for proc in starts:
                self._start(proc, state="restarting")
            if all(p.health is None for p in members):  # e.g. Dynamo's planner: running is all
                self.say(f"restarted {', '.join(p.name for p in members)} (no health check)")
                self._back_in_service(members[0])
                continue
            self.say(
                f"restarted {', '.join(p.name for p in members)}; waiting for its health check"
            )

    def _back_in_service(self, proc: Process) -> None:
        """A restarted unit's own health check passed: it counts again."""
        names = [p.name for p in self._members(unit_key(proc))]
        if not any(n in self.degraded for n in names):
            return
        for name in names:
            if name != proc.name or proc.health is None:
                self.state.process(name, state="running")
        self._set_degraded([n for n in self.degraded if n not in names])

    def _set_degraded(self, names: list[str]) -> None:
        self.degraded = names
        self.state.update(degraded=list(names))

    def _serve(self) -> None:
        r = self.plan.readiness
        next_check = self.clock.now() + r.serve_check_s
        while not self.clock.wait(self.stop_event, r.interval_s) and not self._stop_file_seen():
            self._supervise()
            if r.serve_failures and self.clock.now() >= next_check:
                with self.state.batched():
                    self.health_watch.check(self.running, self.degraded)
                next_check = self.clock.now() + r.serve_check_s
        raise Stopped()

    def _stop_file_seen(self) -> bool:
        """`ctl stop` leaves a file in the run directory: it reaches the driver wherever it runs
        (batch step, salloc shell on a login node, local), with or without signal delivery."""
        if RunDir(self.run_dir).stop_requested():
            self.request_stop("stop requested (ctl stop)")
            return True
        return False

    # --- teardown ------------------------------------------------------------------------
    def _teardown(self, failure: str) -> int:
        reason = failure or self.stop_reason or "finished"
        self.state.phase(Phase.STOPPING, reason=reason)
        if failure:
            self.say(f"failed: {failure}")
        self.say(f"stopping ({reason})")
        for hook in self.before_stop:
            try:
                hook(self)
            except OrchestratorError as exc:
                self.say(f"warning: {exc}")
        self._stop_tiers()
        leftovers = self.backend.leftovers(list(self.running.values()))
        close_backend(self.backend)  # node agents end once their processes are gone
        if leftovers:
            failure = failure or f"processes still running after teardown: {', '.join(leftovers)}"
        if failure:
            self.state.phase(Phase.FAILED, error=failure)
            return 1
        self.state.phase(Phase.DONE)
        self.say("done")
        return 0

    def _stop_tiers(self) -> None:
        grace = self.plan.stop_grace_s
        # Workers and the frontend first, infrastructure (etcd) last: workers deregister from it.
        for tiers in ((1, 2), (0,)):
            batch = [r for r in self.running.values() if r.proc.tier in tiers]
            killed = stop_tier(self.backend, batch, grace_s=grace, clock=self.clock)
            with self.state.batched():
                for r in batch:
                    state = "killed" if r.proc.name in killed else "stopped"
                    self.state.process(r.proc.name, state=state, exit_code=r.exit_code)


def default_say(message: str) -> None:
    """Progress goes to stderr (stdout is reserved for the job id and run directory)."""
    sys.stderr.write(f"[orchestrator] {message}\n")
    sys.stderr.flush()
