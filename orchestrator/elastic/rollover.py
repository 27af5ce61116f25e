"""frontend.placement=here: the run's driver (on this host, beside the frontend) keeps its
workers in Slurm jobs attached to it, so the endpoint outlives every one of them.

- Once the frontend (and etcd) are healthy, the first worker job is submitted; the run is ready
  when the frontend's own gate and canary pass with its workers (the driver's usual readiness).
- `serve.rollover`: when a worker job has less than the lead left before its time limit
  (`squeue %L`), a copy of it is submitted; once the copy is ready (its workers healthy,
  registered with the frontend and a canary through it passed -- the attached job's own
  readiness) and the frontend routes to it role by role (elastic/handover.py: asked of the
  frontend itself), the old job is drained like `ctl stop` does (its driver deregisters the
  workers; SGLang and Dynamo workers finish their in-flight requests on SIGTERM), then it ends.
- A worker job that Slurm preempts is replaced at once: each Slurm tick asks squeue for the
  PreemptTime of the serving jobs (Slurm 22.05 SIGTERMs the steps, which the stop wrapper keeps
  from the workers, and tells the batch shell nothing); the job is drained once its copy serves,
  within the partition's GraceTime if the copy is ready by then (Slurm ends the job after it).
- A worker job that ends without being asked to (preempted, node failure, scancel, crash) is
  replaced at once.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from orchestrator.core.effects import CommandRunner, SubprocessRunner
from orchestrator.core.errors import OrchestratorError
from orchestrator.elastic.handover import Handover
from orchestrator.elastic.jobwatch import JobWatch, Look, look_at
from orchestrator.elastic.workerjobs import ask_to_stop, copy_of, first_job, stop_asked, submit_job
from orchestrator.plan.model import ServePlan
from orchestrator.rundir import Phase, WorkerJob
from orchestrator.rundir.jobs import WorkerJobs
from orchestrator.runtime.hooks import DriverView
from orchestrator.slurm.client import JobState, Preemption, SlurmClient

TICK_S = 0.5  # state.json of each live worker job: a replacement's readiness is seen at once
SLURM_TICK_S = 2.0  # one batched squeue for the live worker jobs (polite to slurmctld)
LEFT_REFRESH_S = 30.0  # time left is asked again this often (it only shrinks with the clock)


def lead_s(serve: ServePlan, job: WorkerJob, limit_s: float) -> float:
    """How long before its limit a job is replaced: serve.rollover_lead_min, else the job's own
    submit -> ready time (at least the stop signal's lead, which ends the old workers) plus the
    margin -- at most half the limit, so that each job serves at least half its time."""
    if serve.lead_s:
        return serve.lead_s
    measured = job.ready_at - job.submitted_at
    return min(max(measured, serve.signal_before_limit_s) + serve.margin_s, limit_s / 2)


def live(looks: Sequence[Look]) -> list[Look]:
    """Worker jobs not yet seen ending."""
    return [k for k in looks if not k.job.removed]


def replaced(job: WorkerJob, looks: Sequence[Look]) -> bool:
    """Whether a live job replaces `job` (a rollover in progress)."""
    return any(k.job.replaces == job.job_id for k in live(looks) if k.job is not job)


class Rollover(JobWatch):
    """The run's JobWatch as frontend.placement=here runs it, and the driver hooks around it:
    the first job when the head is healthy, every job stopped (and waited for) before the
    frontend and etcd stop."""

    look_every_s = TICK_S
    slurm_every_s = SLURM_TICK_S

    def __init__(self, serve: ServePlan, runner: CommandRunner) -> None:
        super().__init__(SlurmClient(runner))
        self.serve, self.runner = serve, runner
        self.failures = 0  # replacements that failed in a row
        self.deadlines: dict[str, tuple[float, float]] = {}  # job -> (limit at, asked at), clock
        self.preempted: dict[str, Preemption] = {}  # as of the last squeue
        self.preempted_at: float | None = None  # when squeue was last asked (clock)
        self.handover = Handover()
        self.watched_at = -SLURM_TICK_S  # the frontend's roles looked at (clock)

    def start(self, d: DriverView) -> None:
        """The frontend is healthy: submit the first worker job (on_workers_healthy)."""
        if any(not j.removed for j in WorkerJobs(d.run_dir).read()):
            return
        plan, request = first_job(d.run_dir, d.plan)
        job = submit_job(
            d.run_dir, plan, request, runner=self.runner, generation=1, replaces="", reason="start"
        )
        d.say(f"submitted worker job {job.job_id} ({', '.join(job.workers)}) -> {job.run_dir}")

    def due(self, d: DriverView, looks: Sequence[Look]) -> bool:
        """Drain what its copy took over from; replace what is due: a job Slurm told to stop
        or is preempting, or one near its time limit."""
        submitted = self._hand_over(d, looks)
        preempted = self._preempted(d, looks)
        for look in live(looks):
            if look.ended or not self._replaceable(look.job, looks):
                continue
            signalled = look.state.data.get("stop_signal")  # on disk: another driver wrote it
            if signalled:  # Slurm told it to stop (elastic/hold.py): it serves a while longer
                submitted |= self._replace(
                    d, look.job, f"{signalled} from Slurm (time limit or preemption)"
                )
            elif look.job.job_id in preempted:
                submitted |= self._replace(
                    d, look.job, preempted_reason(preempted[look.job.job_id])
                )
            elif self.serve.rollover and self._due(d, look.job):
                submitted |= self._replace(
                    d, look.job, f"time limit in {self._left(d, look.job):.0f} s"
                )
        return submitted

    def ended(self, d: DriverView, look: Look, looks: Sequence[Look]) -> None:
        """Record the end; replace a serving job nobody asked to end."""
        job, how = look.job, look.how
        WorkerJobs(d.run_dir).set(job.run_dir, removed_at=time.time(), ended=how)
        if look.asked:
            d.say(f"worker job {job.job_id} ended ({how}) as asked: {', '.join(job.workers)} gone")
            return
        error = look.state.error
        d.say(
            f"worker job {job.job_id} ended unexpectedly ({how}{': ' + error if error else ''}); "
            f"{', '.join(job.workers)} gone (see {job.run_dir})"
        )
        if not job.ready_at:
            self.failures += 1
            if d.state.view().phase != Phase.READY and not job.replaces:
                raise OrchestratorError(
                    f"worker job {job.job_id} failed before the run was ready "
                    f"({how}): {error or 'see ' + job.run_dir}"
                )
            return  # a failed replacement: the job it replaces is due again on the next tick
        if not replaced(job, looks):
            self._replace(d, job, f"lost: {how}")

    def ready(self, d: DriverView, look: Look, looks: Sequence[Look]) -> None:
        """A job serves: the job it replaces is drained once the frontend routes to it
        (`due`, on this very tick when it already does)."""
        job = look.job
        self.failures = 0
        d.say(
            f"worker job {job.job_id} (generation {job.generation or '?'}) serves: submit -> "
            f"ready {job.ready_at - job.submitted_at:.1f} s"
        )

    def _hand_over(self, d: DriverView, looks: Sequence[Look]) -> bool:
        """Drain each old job whose serving copy the frontend routes to, role by role (each
        look while one waits); else look at the frontend's roles every SLURM_TICK_S. Whether
        a job was drained. Derived from attached.json alone: a restarted driver resumes."""
        drained = False
        waiting = False
        for new in (k.job for k in live(looks) if k.job.ready_at and not k.ended):
            old = next((k for k in live(looks) if k.job.job_id == new.replaces), None)
            if old is None or old.ended or old.job.drain_at:
                continue
            waiting = True
            if self.handover.routed(d, old.job, new):
                self._drain(d, old.job)
                drained = True
        now = d.clock.now()
        if not waiting and now - self.watched_at >= SLURM_TICK_S:
            self.watched_at = now
            self.handover.watch(d)
        return drained

    def _drain(self, d: DriverView, job: WorkerJob) -> None:
        ask_to_stop(job, self.slurm, queued=False)
        WorkerJobs(d.run_dir).set(job.run_dir, drain_at=time.time())
        d.say(
            f"draining worker job {job.job_id}: its workers leave the frontend, finish their "
            "requests, then stop"
        )

    def _left(self, d: DriverView, job: WorkerJob) -> float:
        """Seconds before `job` reaches its limit (inf: none), asked every LEFT_REFRESH_S."""
        now = d.clock.now()
        limit_at, asked = self.deadlines.get(job.job_id, (0.0, -LEFT_REFRESH_S))
        if now - asked >= LEFT_REFRESH_S:
            left = self.slurm.time_left([job.job_id]).get(job.job_id)
            limit_at = now + left if left is not None else float("inf")
            self.deadlines[job.job_id] = (limit_at, now)
        return limit_at - now

    def _preempted(self, d: DriverView, looks: Sequence[Look]) -> dict[str, Preemption]:
        """The replaceable jobs Slurm is preempting: ONE squeue every slurm_every_s (their batch
        shell is told nothing, their steps' SIGTERM is kept from the workers: stepwrap.py)."""
        now = d.clock.now()
        if self.preempted_at is None or now >= self.preempted_at + self.slurm_every_s:
            self.preempted_at = now
            ids = [k.job.job_id for k in live(looks) if self._replaceable(k.job, looks)]
            self.preempted = self.slurm.preemptions(ids)
        return self.preempted

    def _replaceable(self, job: WorkerJob, looks: Sequence[Look]) -> bool:
        """Serving, not being drained, no replacement on its way, attempts left."""
        if not job.ready_at or job.drain_at or stop_asked(job) or replaced(job, looks):
            return False
        return self.failures < self.serve.attempts  # else said once, when the last one failed

    def _due(self, d: DriverView, job: WorkerJob) -> bool:
        limit_s = self.serve.workers.slurm.time_limit_min * 60
        return self._left(d, job) <= lead_s(self.serve, job, limit_s)

    def _replace(self, d: DriverView, job: WorkerJob, reason: str) -> bool:
        """Submit a copy of `job`; whether the list changed (a failed submission is listed)."""
        if self.failures >= self.serve.attempts:
            d.say(
                f"not replacing worker job {job.job_id} ({reason}): {self.failures} replacements "
                f"failed in a row (serve.rollover_attempts={self.serve.attempts})"
            )
            return False
        plan, request = copy_of(job)
        generation = max(j.generation for j in WorkerJobs(d.run_dir).read()) + 1
        try:
            new = submit_job(
                d.run_dir,
                plan,
                request,
                runner=self.runner,
                generation=generation,
                replaces=job.job_id,
                reason=reason,
            )
        except OrchestratorError as exc:
            self.failures += 1
            d.say(f"warning: could not submit a replacement for worker job {job.job_id}: {exc}")
            return True
        d.say(
            f"replacing worker job {job.job_id} ({reason}) with job {new.job_id} "
            f"(generation {generation})"
        )
        return True

    def stop_all(self, d: DriverView) -> None:
        """Teardown: stop every worker job before the frontend and etcd stop (Dynamo workers
        deregister from etcd; the router must still answer their DELETE), and wait for them."""
        jobs = [j for j in WorkerJobs(d.run_dir).read() if not j.removed]
        states = self.slurm.states([j.job_id for j in jobs])
        store = WorkerJobs(d.run_dir)
        for job in jobs:
            ask_to_stop(
                job, self.slurm, queued=(states.get(job.job_id) or JobState(job_id="")).queued
            )
            store.set(job.run_dir, drain_at=time.time())
        deadline = d.clock.now() + 2 * d.plan.stop_grace_s + 30
        waiting = list(jobs)
        while waiting and d.clock.now() < deadline:
            states = self.slurm.states([j.job_id for j in waiting])
            waiting = [j for j in waiting if not look_at(j, states).ended]
            d.clock.sleep(0.5)
        for job in jobs:
            store.set(job.run_dir, removed_at=time.time(), ended="stopped")
        if waiting:
            self.slurm.cancel_jobs([j.job_id for j in waiting])
            raise OrchestratorError(
                "worker jobs did not stop in time, cancelled: "
                + ", ".join(j.job_id for j in waiting)
            )


def preempted_reason(p: Preemption) -> str:
    """Why a preempted job is replaced, with Slurm's times (local clock)."""
    ends = time.strftime("%H:%M:%S", time.localtime(p.ends_at)) if p.ends_at else "?"
    return f"preempted by Slurm at {time.strftime('%H:%M:%S', time.localtime(p.at))}, ends {ends}"


def attach_rollover(driver: DriverView, serve: ServePlan) -> None:
    """The worker-job hooks of a frontend.placement=here run: its JobWatch, the first job
    once the head is healthy, every job stopped first at teardown."""
    rollover = Rollover(serve, SubprocessRunner())
    driver.on_workers_healthy.append(rollover.start)
    driver.on_tick.append(rollover.on_tick)
    # First: the worker jobs end before the head's own processes are stopped.
    driver.before_stop.insert(0, rollover.stop_all)
