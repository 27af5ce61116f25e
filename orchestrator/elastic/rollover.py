"""frontend.placement=here: the run's driver (on this host, beside the frontend) keeps its
workers in Slurm jobs attached to it, so the endpoint outlives every one of them.

- Once the frontend (and etcd) are healthy, the first worker job is submitted; the run is ready
  when the frontend's own gate and canary pass with its workers (the driver's usual readiness).
- `serve.rollover`: when a worker job has less than the lead left before its time limit
  (`squeue %L`), a copy of it is submitted; once the copy is ready (its workers healthy,
  registered with the frontend and a canary through it passed -- the attached job's own
  readiness), the old job is drained like `ctl stop` does (its driver deregisters the workers;
  SGLang and Dynamo workers finish their in-flight requests on SIGTERM), then it ends.
- A worker job that ends without being asked to (preempted, node failure, scancel, crash) is
  replaced at once.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator.core.effects import CommandRunner, SubprocessRunner
from orchestrator.core.errors import OrchestratorError
from orchestrator.elastic.attached import read_attached
from orchestrator.elastic.workerjobs import (
    ask_to_stop,
    copy_of,
    first_job,
    set_fields,
    stop_asked,
    submit_job,
)  # fmt: skip
from orchestrator.plan.model import ServePlan
from orchestrator.rundir import Phase, RunDir, RunState
from orchestrator.runtime.hooks import DriverView
from orchestrator.slurm.client import JobState, SlurmClient

TICK_S = 0.5  # state.json of each live worker job: a replacement's readiness is seen at once
SLURM_TICK_S = 2.0  # one batched squeue for the live worker jobs (polite to slurmctld)
LEFT_REFRESH_S = 30.0  # time left is asked again this often (it only shrinks with the clock)


@dataclass(frozen=True, slots=True)
class Look:
    """One tick's facts about a live worker job."""

    entry: Mapping[str, Any]
    state: RunState  # its state.json
    job: JobState

    @property
    def phase(self) -> Phase:
        """What its driver recorded."""
        return self.state.phase

    @property
    def ended(self) -> bool:
        """Its driver recorded the end, or Slurm says the job is over."""
        return self.state.ended or self.job.ended


def lead_s(serve: ServePlan, entry: Mapping[str, Any], limit_s: float) -> float:
    """How long before its limit a job is replaced: serve.rollover_lead_min, else the job's own
    submit -> ready time (at least the stop signal's lead, which ends the old workers) plus the
    margin -- at most half the limit, so that each job serves at least half its time."""
    if serve.lead_s:
        return serve.lead_s
    measured = float(entry.get("ready_at", 0) - entry.get("submitted_at", 0))
    return min(max(measured, serve.signal_before_limit_s) + serve.margin_s, limit_s / 2)


def looks_of(entries: Sequence[Mapping[str, Any]], states: Mapping[str, JobState]) -> list[Look]:
    """Each job's state.json with Slurm's `states` (a job Slurm did not report: unknown)."""
    return [Look(e, RunDir(e["run_dir"]).state(), states.get(e["job_id"]) or JobState(job_id=e["job_id"]))
            for e in entries]  # fmt: skip


def live(entries: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Worker jobs not yet seen ending."""
    return [e for e in entries if not e.get("removed_at")]


class Rollover:
    """The driver hooks: first job when the head is healthy, a tick for replacements and
    drains, every job stopped (and waited for) before the frontend and etcd stop."""

    def __init__(self, serve: ServePlan, runner: CommandRunner) -> None:
        self.serve, self.runner, self.client = serve, runner, SlurmClient(runner)
        self.next_tick = self.next_slurm = 0.0
        self.states: dict[str, JobState] = {}  # as of the last squeue
        self.failures = 0  # replacements that failed in a row
        self.deadlines: dict[str, tuple[float, float]] = {}  # job -> (limit at, asked at), clock

    def start(self, d: DriverView) -> None:
        """The frontend is healthy: submit the first worker job (on_workers_healthy)."""
        if live(read_attached(d.run_dir)):
            return
        plan, request = first_job(d.run_dir, d.plan)
        entry = submit_job(d.run_dir, plan, request, runner=self.runner, generation=1,
                           replaces="", reason="start")  # fmt: skip
        d.say(f"submitted worker job {entry['job_id']} ({', '.join(entry['workers'])}) -> "
              f"{entry['run_dir']}")  # fmt: skip

    def tick(self, d: DriverView) -> None:
        """Every TICK_S: record ends and readiness, drain replaced jobs, replace what is due."""
        if d.clock.now() < self.next_tick:
            return
        self.next_tick = d.clock.now() + TICK_S
        entries = live(read_attached(d.run_dir))
        looks = self._look(d, entries)
        for look in looks:
            if look.ended:
                self._ended(d, look, entries)
            elif look.phase == Phase.READY and not look.entry.get("ready_at"):
                self._ready(d, look.entry, entries)
        for look in looks:
            if look.ended or not self._replaceable(look.entry, entries):
                continue
            signalled = look.state.data.get("stop_signal")  # on disk: another driver wrote it
            if signalled:  # Slurm told it to stop (elastic/hold.py): it serves a while longer
                self._replace(d, look.entry, f"{signalled} from Slurm (time limit or preemption)")
            elif self.serve.rollover and self._due(d, look.entry):
                self._replace(d, look.entry, f"time limit in {self._left(d, look.entry):.0f} s")

    def _look(self, d: DriverView, entries: Sequence[Mapping[str, Any]]) -> list[Look]:
        """Each live job's state.json, and Slurm's view as of the last SLURM_TICK_S."""
        if d.clock.now() >= self.next_slurm:
            self.next_slurm = d.clock.now() + SLURM_TICK_S
            self.states = self.client.states([e["job_id"] for e in entries])
        return looks_of(entries, self.states)

    def _ended(self, d: DriverView, look: Look, entries: Sequence[Mapping[str, Any]]) -> None:
        e = look.entry
        how = look.job.state if look.job.ended else look.phase or look.job.state
        set_fields(d.run_dir, e["run_dir"], removed_at=time.time(), ended=how)
        if e.get("drain_at") or stop_asked(e):
            d.say(
                f"worker job {e['job_id']} ended ({how}) as asked: {', '.join(e['workers'])} gone"
            )
            return
        error = look.state.error
        d.say(f"worker job {e['job_id']} ended unexpectedly ({how}{': ' + error if error else ''}); "
              f"{', '.join(e['workers'])} gone (see {e['run_dir']})")  # fmt: skip
        if not e.get("ready_at"):
            self.failures += 1
            if d.state.view().phase != Phase.READY and not e.get("replaces"):
                raise OrchestratorError(f"worker job {e['job_id']} failed before the run was ready "
                                        f"({how}): {error or 'see ' + e['run_dir']}")  # fmt: skip
            return  # a failed replacement: the job it replaces is due again on the next tick
        if not any(o.get("replaces") == e["job_id"] for o in entries if o is not e):
            self._replace(d, e, f"lost: {how}")

    def _ready(
        self, d: DriverView, e: Mapping[str, Any], entries: Sequence[Mapping[str, Any]]
    ) -> None:
        now = time.time()
        set_fields(d.run_dir, e["run_dir"], ready_at=now)
        self.failures = 0
        d.say(f"worker job {e['job_id']} (generation {e.get('generation', '?')}) serves: submit -> "
              f"ready {now - e['submitted_at']:.1f} s")  # fmt: skip
        old = next((o for o in entries if o["job_id"] == e.get("replaces")), None)
        if old is not None and not old.get("drain_at"):
            self._drain(d, old)

    def _drain(self, d: DriverView, e: Mapping[str, Any]) -> None:
        ask_to_stop(e, self.client, queued=False)
        set_fields(d.run_dir, e["run_dir"], drain_at=time.time())
        d.say(f"draining worker job {e['job_id']}: its workers leave the frontend, finish their "
              "requests, then stop")  # fmt: skip

    def _left(self, d: DriverView, e: Mapping[str, Any]) -> float:
        """Seconds before job `e` reaches its limit (inf: none), asked every LEFT_REFRESH_S."""
        now = d.clock.now()
        limit_at, asked = self.deadlines.get(e["job_id"], (0.0, -LEFT_REFRESH_S))
        if now - asked >= LEFT_REFRESH_S:
            left = self.client.time_left([e["job_id"]]).get(e["job_id"])
            limit_at = now + left if left is not None else float("inf")
            self.deadlines[e["job_id"]] = (limit_at, now)
        return limit_at - now

    def _replaceable(self, e: Mapping[str, Any], entries: Sequence[Mapping[str, Any]]) -> bool:
        """Serving, not being drained, no replacement on its way, attempts left."""
        if not e.get("ready_at") or e.get("drain_at") or stop_asked(e):
            return False
        if any(o.get("replaces") == e["job_id"] for o in entries):
            return False
        return self.failures < self.serve.attempts  # else said once, when the last one failed

    def _due(self, d: DriverView, e: Mapping[str, Any]) -> bool:
        limit_s = self.serve.workers.slurm.time_limit_min * 60
        return self._left(d, e) <= lead_s(self.serve, e, limit_s)

    def _replace(self, d: DriverView, e: Mapping[str, Any], reason: str) -> None:
        if self.failures >= self.serve.attempts:
            d.say(f"not replacing worker job {e['job_id']} ({reason}): {self.failures} replacements "
                  f"failed in a row (serve.rollover_attempts={self.serve.attempts})")  # fmt: skip
            return
        plan, request = copy_of(e)
        generation = max(int(o.get("generation", 0)) for o in read_attached(d.run_dir)) + 1
        try:
            new = submit_job(d.run_dir, plan, request, runner=self.runner,
                             generation=generation, replaces=e["job_id"], reason=reason)  # fmt: skip
        except OrchestratorError as exc:
            self.failures += 1
            d.say(f"warning: could not submit a replacement for worker job {e['job_id']}: {exc}")
            return
        d.say(f"replacing worker job {e['job_id']} ({reason}) with job {new['job_id']} "
              f"(generation {generation})")  # fmt: skip

    def stop_all(self, d: DriverView) -> None:
        """Teardown: stop every worker job before the frontend and etcd stop (Dynamo workers
        deregister from etcd; the router must still answer their DELETE), and wait for them."""
        entries = live(read_attached(d.run_dir))
        states = self.client.states([e["job_id"] for e in entries])
        for e in entries:
            ask_to_stop(
                e, self.client, queued=(states.get(e["job_id"]) or JobState(job_id="")).queued
            )
            set_fields(d.run_dir, e["run_dir"], drain_at=time.time())
        deadline = d.clock.now() + 2 * d.plan.stop_grace_s + 30
        waiting = list(entries)
        while waiting and d.clock.now() < deadline:
            states = self.client.states([e["job_id"] for e in waiting])
            waiting = [look.entry for look in looks_of(waiting, states) if not look.ended]
            d.clock.sleep(0.5)
        for e in entries:
            set_fields(d.run_dir, e["run_dir"], removed_at=time.time(), ended="stopped")
        if waiting:
            self.client.cancel_jobs([e["job_id"] for e in waiting])
            raise OrchestratorError("worker jobs did not stop in time, cancelled: "
                                    + ", ".join(e["job_id"] for e in waiting))  # fmt: skip


def attach_rollover(driver: DriverView, serve: ServePlan) -> None:
    """Add the worker-job hooks of a frontend.placement=here run to its driver."""
    rollover = Rollover(serve, SubprocessRunner())
    driver.on_workers_healthy.append(rollover.start)
    driver.on_tick.append(rollover.tick)
    # First: the worker jobs end before the head's own processes are stopped.
    driver.before_stop.insert(0, rollover.stop_all)
