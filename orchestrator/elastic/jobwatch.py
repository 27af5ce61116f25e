"""The run's driver over its worker jobs (orchestrator.rundir.jobs): one plugin for every run (a
worker job's own driver has none); what it does when a job ends or serves is its placement's.

Every `look_every_s` the plugin reads attached.json and the state.json of each job
not settled yet. Slurm is asked in ONE batched call: at every look for jobs whose driver recorded
its end but Slurm not yet how (a plain `scancel` ends the job as CANCELLED after its driver wrote
"done"), and every `slurm_every_s` for jobs that look alive (a driver killed with its node
writes nothing). A job has ended when its driver recorded the end or Slurm says it is over; the
end is handled once Slurm no longer runs it. What then happens is the placement's:
- frontend.placement=job (`JobWatch` itself, the jobs `ctl scale` adds): the run keeps serving
  with the rest (its frontend drops the workers: router DELETE from the job driver's before_stop, or the
  Dynamo worker's own etcd lease); an end nobody asked for (scancel, node lost) is said in
  driver.log and recorded in state.json `attached_lost`;
- frontend.placement=here (its subclass orchestrator.elastic.rollover.Rollover): submits the
  first job, replaces jobs before their time limit or when they are lost, drains replaced ones.
state.json gets "attached" (every job) and "workers" (every worker of the deployment: name,
group, job, host, GPUs, state), written only when they change: it may be on a shared filesystem.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.elastic.attached import bound_gpus
from orchestrator.elastic.workerjobs import stop_asked
from orchestrator.plan.model import TIER_WORKER, Plan
from orchestrator.rundir import Phase, RunDir, RunState, WorkerJob
from orchestrator.rundir.jobs import WorkerJobs
from orchestrator.rundir.records import REMOVED
from orchestrator.slurm.client import JobState, SlurmClient

if TYPE_CHECKING:
    from orchestrator.runtime.hooks import DriverView

GROUP_ORDER = ("prefill", "decode", "aggregated")
WATCH_EVERY_S = 2.0  # placement=job: how often the jobs are looked at
SLURM_EVERY_S = 10.0  # placement=job: Slurm asked about live jobs (polite to slurmctld)


@dataclass(frozen=True, slots=True)
class Look:
    """One look at a worker job: its record, its state.json and Slurm's last word on it."""

    job: WorkerJob
    state: RunState
    slurm: JobState

    @property
    def ended(self) -> bool:
        """Its driver recorded the end, or Slurm says the job is over."""
        return self.state.ended or self.slurm.ended

    @property
    def known(self) -> bool:
        """Ended, and Slurm no longer runs it (it says how, or does not know the job)."""
        return self.ended and not self.slurm.live

    @property
    def settled(self) -> bool:
        """Over in its state.json and in Slurm: nothing about it changes any more."""
        return self.state.ended and self.slurm.ended

    @property
    def how(self) -> str:
        """How it ended: Slurm's word once it has one, else what its driver recorded."""
        return self.slurm.state if self.slurm.ended else self.state.phase or self.slurm.state

    @property
    def removed(self) -> bool:
        """Holds no workers by someone's choice: a scale-down (every worker removed, or the job
        listed removed), a drain or the run's teardown."""
        return self.job.removed or bool(self.job.drain_at) or self.retired

    @property
    def retired(self) -> bool:
        """Every worker removed by a scale-down (elastic/retire.py): it ends, and is no loss."""
        return set(self.job.workers) <= self.state.removed()

    @property
    def asked(self) -> bool:
        """Its end was asked for (removed, or its stop file: ctl stop, a drain)."""
        return self.removed or stop_asked(self.job)


class JobWatch:
    """The on_tick plugin (see the module docstring), as frontend.placement=job runs it."""

    look_every_s = WATCH_EVERY_S
    slurm_every_s = SLURM_EVERY_S

    def __init__(self, slurm: SlurmClient) -> None:
        self.slurm = slurm
        self.next_at: float | None = None
        self.slurm_at: float | None = None
        self.slurm_states: dict[str, JobState] = {}  # as of the last call
        self.handled: set[str] = set()  # run dirs of jobs whose end was handled
        self.settled: dict[str, RunState] = {}  # run dir -> its final state.json
        self.gpus: dict[str, dict[str, str]] = {}  # job run dir -> process -> GPU ids

    def on_tick(self, d: DriverView) -> None:
        """Every look_every_s: look at the jobs, act on them, mirror them into state.json."""
        now = d.clock.now()
        if self.next_at is not None and now < self.next_at:
            return
        self.next_at = now + self.look_every_s
        looks = self._ask_slurm(now, self.looks(WorkerJobs(d.run_dir).read()))
        if self._act(d, looks):  # the list changed: mirror what it is now
            looks = self.looks(WorkerJobs(d.run_dir).read())
        self._mirror(d, looks)

    def looks(self, jobs: Sequence[WorkerJob]) -> list[Look]:
        """Each job with its state.json (read once settled) and Slurm's last word."""
        out = [look_at(j, self.slurm_states, self.settled.get(j.run_dir)) for j in jobs]
        self.settled.update({k.job.run_dir: k.state for k in out if k.settled})
        return out

    def _ask_slurm(self, now: float, looks: list[Look]) -> list[Look]:
        """ONE Slurm call for the jobs whose end we do not know yet (see the module docstring);
        `looks` with its answers."""
        undecided = [k.job.job_id for k in looks if k.state.ended and not k.slurm.ended]
        alive = [k.job.job_id for k in looks if not k.state.ended]
        due = self.slurm_at is None or now >= self.slurm_at
        ids = [j for j in undecided + (alive if due else []) if j]
        if not ids:
            return looks
        if due:
            self.slurm_at = now + self.slurm_every_s
        self.slurm_states.update(self.slurm.states(ids))
        return [
            dataclasses.replace(k, slurm=self.slurm_states.get(k.job.job_id, k.slurm))
            for k in looks
        ]

    def _act(self, d: DriverView, looks: Sequence[Look]) -> bool:
        """Each end once it is known, each job's readiness once, then what else is due."""
        acted = False
        for look in looks:
            if look.job.removed or look.job.run_dir in self.handled:
                continue
            if look.known:
                self.handled.add(look.job.run_dir)
                self.ended(d, look, looks)
                acted = True
            elif not look.ended and look.state.phase == Phase.READY and not look.job.ready_at:
                at = time.time()
                WorkerJobs(d.run_dir).set(look.job.run_dir, ready_at=at)
                job = dataclasses.replace(look.job, ready_at=at)
                self.ready(d, Look(job, look.state, look.slurm), looks)
                acted = True
        return self.due(d, self.looks(WorkerJobs(d.run_dir).read()) if acted else looks) or acted

    def ended(self, d: DriverView, look: Look, looks: Sequence[Look]) -> None:
        """A job's end is known (once per job): if nobody asked for it, say that it is gone and
        what still serves."""
        if look.asked:
            return
        names = [str(w["name"]) for w in self.workers(d, looks)]
        how = look.slurm.state or "not known to Slurm"
        reason = look.state.error or look.state.reason
        d.say(
            f"attached job {look.job.job_id} ended ({how}; its driver: "
            f"{look.state.phase or 'nothing'}{', ' + reason if reason else ''}): "
            f"{', '.join(look.job.workers)} gone; still serving: {', '.join(names)}"
        )
        lost = [
            *d.state.data.get("attached_lost", []),
            {
                "job_id": look.job.job_id,
                "slurm_state": how,
                "workers": list(look.job.workers),
                "serving": names,
            },
        ]
        d.state.update(attached_lost=lost)

    def ready(self, d: DriverView, look: Look, looks: Sequence[Look]) -> None:
        """A job's workers serve (once per job; its ready_at is recorded): nothing more here."""

    def due(self, d: DriverView, looks: Sequence[Look]) -> bool:
        """Whatever else is due after ends and readiness (nothing here: jobs come and go with
        `ctl scale`); whether the list changed."""
        return False

    def workers(self, d: DriverView, looks: Sequence[Look]) -> list[dict[str, Any]]:
        """Every worker serving: the run's own and those of jobs neither ended nor removed."""
        workers = own_workers(d.plan, d.state.data)
        for k in looks:
            if not k.ended and not k.removed:
                gpus = self._gpus(k.job.run_dir)
                workers += worker_entries(k.job.workers, k.job.job_id, k.state.processes, gpus)
        return sorted(workers, key=worker_order)

    def _mirror(self, d: DriverView, looks: Sequence[Look]) -> None:
        """state.json's "attached" and "workers", written only when they change."""
        jobs, workers = [job_entry(k) for k in looks], self.workers(d, looks)
        changed = {
            k: v
            for k, v in (("attached", jobs), ("workers", workers))
            if d.state.data.get(k) != v and (v or k in d.state.data)
        }
        if changed:
            d.state.update(**changed)

    def _gpus(self, job_dir: str) -> dict[str, str]:
        """GPU ids per worker from the job's plan.bound.json (read once it exists)."""
        if job_dir not in self.gpus:
            found = bound_gpus(Path(job_dir))
            if not found:
                return {}
            self.gpus[job_dir] = found
        return self.gpus[job_dir]


def look_at(job: WorkerJob, slurm: Mapping[str, JobState], state: RunState | None = None) -> Look:
    """A look at `job`: its state.json (unless given) with Slurm's `slurm` (unknown if absent)."""
    state = state or RunDir(job.run_dir).state()
    return Look(job, state, slurm.get(job.job_id) or JobState(job_id=job.job_id))


def worker_order(worker: Mapping[str, Any]) -> tuple[int, int, int]:
    """prefill-0, prefill-0-rank1, prefill-1, ..., decode-0, ... whichever job holds them."""
    group, index, rank = (str(worker["name"]).split("-") + ["", ""])[:3]
    order = GROUP_ORDER.index(group) if group in GROUP_ORDER else len(GROUP_ORDER)
    digits = rank.removeprefix("rank")
    return order, int(index) if index.isdigit() else 0, int(digits) if digits.isdigit() else 0


def own_workers(plan: Plan, state: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The run's own workers (generation 0) as "workers" entries (its bound plan, state.json)."""
    workers = [p for p in plan.processes if p.tier == TIER_WORKER]
    gpus = {p.name: p.env.get("CUDA_VISIBLE_DEVICES", "") for p in workers}
    job_id = str(state.get("job_id") or "")
    return worker_entries([p.name for p in workers], job_id, state.get("processes", {}), gpus)


def worker_entries(
    names: Sequence[str], job_id: str, procs: Mapping[str, Any], gpus: Mapping[str, str]
) -> list[dict[str, Any]]:
    """The "workers" entries of one job's workers (those a scale-down removed left out)."""
    out = []
    for name in names:
        proc = procs.get(name, {})
        state = proc.get("state", "")
        if state != REMOVED:
            facts = {"group": name.split("-")[0], "job_id": job_id, "host": proc.get("host", "")}
            out.append({"name": name, **facts, "gpus": gpus.get(name, ""), "state": state})
    return out


def job_entry(look: Look) -> dict[str, Any]:
    """One "attached" entry: the job, where its state is, how it ended (when it did)."""
    out = {
        "job_id": look.job.job_id,
        "run_dir": look.job.run_dir,
        "workers": list(look.job.workers),
        "phase": str(look.state.phase),
        "slurm_state": look.slurm.state,
        "ended": look.ended,
        "removed": look.removed,
    }
    if look.ended:
        out["reason"] = look.state.error or look.state.reason
    return out


def attach_job_watch(driver: DriverView, slurm: SlurmClient) -> None:
    """Watch the run's worker jobs (a worker job's own driver has none)."""
    if driver.plan.job is None:
        driver.on_tick.append(JobWatch(slurm).on_tick)
