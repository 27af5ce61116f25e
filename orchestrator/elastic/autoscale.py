"""autoscale=dynamo_planner: the run's driver carries out Dynamo's planner decisions.

The planner (a head process, `environment: virtual`) decides prefill/decode counts and publishes
each decision in etcd; the driver reads it (orchestrator.elastic.decisions) and reconciles the
deployment to the decision's ABSOLUTE counts, clipped to the plan's bounds, with the scale-up
and scale-down `ctl scale` does: more workers in one attached Slurm job (`ctl scale --no-wait`,
the same validation and submit path), fewer by retiring single workers, newest first. A job
still queued counts as capacity coming (it is listed in attached.json at once), so a decision
handed over twice (a restarted link: the planner keeps unacknowledged decisions in etcd) never
submits twice. The planner is told (`complete()`) once the deployment serves the target: new
workers' jobs ready, removed workers gone. A decision that cannot be met (a job queued past
`autoscale.pending_timeout_s`, cancelled then; an attached job failing before it serves; a
submission refused) is said in driver.log and state.json and completed anyway, so the planner is
not left waiting for an acknowledgement (Dynamo 1.6.1 still holds its next decision until the
instances it discovers equal its target). Between decisions nothing is reconciled: `ctl scale`
by hand wins until the next decision.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.core.effects import CommandRunner, SubprocessRunner
from orchestrator.core.errors import OrchestratorError
from orchestrator.elastic.autoscale_view import planner_reason, serving_history
from orchestrator.elastic.decisions import LINK_SCRIPT, NOT_SET, Decision, DecisionSource
from orchestrator.elastic.retire import request_retire
from orchestrator.elastic.scale_down import Holder, choose, current_counts, holders
from orchestrator.elastic.workerjobs import ask_to_stop
from orchestrator.plan.model import TIER_WORKER, AutoscalePlan, Plan
from orchestrator.rundir import Phase, RunDir, WorkerJob
from orchestrator.rundir.jobs import WorkerJobs
from orchestrator.rundir.secrets import secret_names
from orchestrator.slurm.client import SlurmClient

if TYPE_CHECKING:
    from orchestrator.runtime.hooks import DriverView

TICK_S = 1.0  # a decision is looked for (and carried on) this often
SLURM_EVERY_S = 5.0  # queued jobs of a decision: Slurm asked this often
GROUPS = ("prefill", "decode")
KEPT = 100  # decisions kept in state.json (autoscale.decisions)

# `ctl scale` for the counts given (absolute): submits the attached job, returns its record.
Grow = Callable[[Path, Mapping[str, int]], WorkerJob]


@dataclass
class Carrying:
    """The decision being carried out and what was done for it."""

    decision: Decision
    target: dict[str, int]
    started: float  # clock
    received_at: float  # wall clock, for state.json
    why: str
    notes: list[str]
    jobs: list[str] = field(default_factory=list)  # run dirs of the jobs submitted for it
    asked: set[str] = field(default_factory=set)  # workers (or job dirs) asked to leave
    actions: list[str] = field(default_factory=list)
    status: str = "carrying"  # carrying | done | unmet
    detail: str = ""


class Autoscaler:
    """The on_tick plugin (see the module docstring)."""

    def __init__(
        self, spec: AutoscalePlan, source: DecisionSource, grow: Grow, slurm: SlurmClient
    ) -> None:
        self.spec, self.source, self.grow, self.slurm = spec, source, grow, slurm
        self.current: Carrying | None = None
        self.next_at: float | None = None
        self.slurm_at = 0.0

    def on_tick(self, d: DriverView) -> None:
        """Every TICK_S: take a new decision, carry the current one on, record serving counts."""
        now = d.clock.now()
        if self.next_at is not None and now < self.next_at:
            return
        self.next_at = now + TICK_S
        decision = self.source.poll()
        if decision is not None:
            if self.current is None or decision.decision_id != self.current.decision.decision_id:
                self._take(d, decision)
            elif self.current.status != "carrying":  # handed over again: acknowledged again
                self.source.complete(decision)
        if self.current is not None and self.current.status == "carrying":
            self._carry(d)
        history = serving_history(d.state.data)
        if history is not None:
            d.state.update(autoscale_history=history)

    def stop(self, d: DriverView) -> None:
        """Teardown: stop listening; a job submitted for a decision and still queued is
        cancelled (one that runs sees the run gone and stops by itself)."""
        self.source.close()
        for job in WorkerJobs(d.run_dir).read():
            if not job.removed and RunDir(job.run_dir).state().phase in QUEUED:
                self._cancel(d, job.run_dir, "the run stops")

    def _take(self, d: DriverView, decision: Decision) -> None:
        have = current_counts(d.run_dir)
        target, notes = clip(decision, self.spec, have, worker_gpus(d.plan))
        why = planner_reason(RunDir(d.run_dir).log(self.spec.process), decision)
        self.current = Carrying(decision, target, d.clock.now(), time.time(), why, notes)
        asked = f"prefill {show(decision.prefill)}, decode {show(decision.decode)}"
        d.say(
            f"planner decision {decision.decision_id}: {asked}"
            + (f" ({'; '.join(notes)})" if notes else "")
            + (f"; planner: {why}" if why else "")
        )
        self._record(d)

    def _carry(self, d: DriverView) -> None:
        cur = self.current
        assert cur is not None
        problem = self._unmet(d, cur)
        if problem:
            self._finish(d, "unmet", problem)
            return
        found = holders(d.run_dir)
        have = current_counts(d.run_dir, found)
        more = {g: n for g, n in cur.target.items() if have.get(g, 0) < n}
        if more:
            self._submit(d, cur, more)
            if cur.status != "carrying":
                return
        fewer = {g: have.get(g, 0) - n for g, n in cur.target.items() if have.get(g, 0) > n}
        if fewer:
            self._shrink(d, cur, found, fewer)
        serving = serving_counts(found)
        if not more and not fewer and all(serving.get(g, 0) == n for g, n in cur.target.items()):
            self._finish(d, "done", "")

    def _submit(self, d: DriverView, cur: Carrying, more: Mapping[str, int]) -> None:
        try:
            job = self.grow(d.run_dir, more)
        except OrchestratorError as exc:
            self._finish(d, "unmet", f"scale-up refused: {exc}")
            return
        cur.jobs.append(job.run_dir)
        self._act(d, f"submitted attached job {job.job_id} ({', '.join(job.workers)})")

    def _shrink(
        self, d: DriverView, cur: Carrying, found: list[Holder], fewer: Mapping[str, int]
    ) -> None:
        """Newest workers first; a job not serving yet is cancelled whole (capacity that was
        coming), a worker of one still starting waits until it serves."""
        for r in choose(found, fewer):
            if r.holder.attached and RunDir(r.holder.run_dir).state().phase != Phase.READY:
                if r.whole and str(r.holder.run_dir) not in cur.asked:
                    cur.asked.add(str(r.holder.run_dir))
                    self._cancel(d, str(r.holder.run_dir), "not needed any more")
                continue
            names = [n for n in r.workers if n not in cur.asked]
            if names:
                cur.asked.update(names)
                request_retire(r.holder.run_dir, names)
                where = f"job {r.holder.job_id}" if r.holder.attached else "the run's own job"
                self._act(d, f"removing {', '.join(names)} ({where})")

    def _unmet(self, d: DriverView, cur: Carrying) -> str:
        """Why the decision cannot be met: one of its jobs failed before it served, or waited
        in the queue past pending_timeout_s (then cancelled)."""
        jobs = [j for j in WorkerJobs(d.run_dir).read() if j.run_dir in cur.jobs]
        for job in jobs:
            state = RunDir(job.run_dir).state()
            if state.ended and not job.ready_at and state.phase != Phase.READY:
                return f"attached job {job.job_id} ended before serving ({state.phase}: " + (
                    f"{state.error or state.reason or 'see ' + job.run_dir})"
                )
        waiting = [j for j in jobs if not j.removed and RunDir(j.run_dir).state().phase in QUEUED]
        now = d.clock.now()
        if not waiting or now < self.slurm_at:
            return ""
        self.slurm_at = now + SLURM_EVERY_S
        states = self.slurm.states([j.job_id for j in waiting if j.job_id])
        for job in waiting:
            seen = states.get(job.job_id)
            waited = time.time() - job.submitted_at
            if seen is not None and seen.queued and waited > self.spec.pending_timeout_s:
                self._cancel(d, job.run_dir, f"queued {waited:.0f} s")
                return (
                    f"attached job {job.job_id} still {seen.state} after {waited:.0f} s "
                    f"(autoscale.pending_timeout_s={self.spec.pending_timeout_s:g}); cancelled"
                )
        return ""

    def _cancel(self, d: DriverView, job_dir: str, why: str) -> None:
        job = next((j for j in WorkerJobs(d.run_dir).read() if j.run_dir == job_dir), None)
        if job is None:
            return
        ask_to_stop(job, self.slurm, queued=True)
        WorkerJobs(d.run_dir).set(job_dir, removed_at=time.time(), ended=f"cancelled: {why}")
        self._act(d, f"cancelled attached job {job.job_id} ({why})")

    def _act(self, d: DriverView, action: str) -> None:
        d.say(f"autoscale: {action}")
        if self.current is not None and self.current.status == "carrying":
            self.current.actions.append(action)
            self._record(d)

    def _finish(self, d: DriverView, status: str, detail: str) -> None:
        cur = self.current
        assert cur is not None
        cur.status, cur.detail = status, detail
        self.source.complete(cur.decision)
        took = d.clock.now() - cur.started
        counts = ", ".join(f"{g} {n}" for g, n in cur.target.items())
        if status == "done":
            d.say(f"planner decision {cur.decision.decision_id} done in {took:.1f} s: {counts}")
        else:
            d.say(
                f"planner decision {cur.decision.decision_id} cannot be met ({detail}); "
                "the planner was told"
            )
        self._record(d, took)

    def _record(self, d: DriverView, took: float | None = None) -> None:
        """state.json `autoscale` (the decision being carried or the last one) and
        `autoscale_decisions` (every decision: ctl report and benchmarks/autoscale.py)."""
        cur = self.current
        assert cur is not None
        entry = {
            "decision": cur.decision.decision_id,
            "asked": {"prefill": cur.decision.prefill, "decode": cur.decision.decode},
            "target": dict(cur.target),
            "at": cur.received_at,
            "why": cur.why,
            "notes": list(cur.notes),
            "status": cur.status,
            "detail": cur.detail,
            "actions": list(cur.actions),
            **({"took_s": round(took, 2)} if took is not None else {}),
        }
        past = [
            e
            for e in d.state.data.get("autoscale_decisions", [])
            if e["decision"] != entry["decision"]
        ]
        d.state.update(autoscale=entry, autoscale_decisions=[*past, entry][-KEPT:])


QUEUED = (Phase.SUBMITTED, "")  # a job whose driver has not started yet


def show(count: int) -> str:
    """A decision's count, or `-` when the planner left it unset."""
    return "-" if count == NOT_SET else str(count)


def clip(
    decision: Decision,
    spec: AutoscalePlan,
    have: Mapping[str, int],
    gpus: Mapping[str, int],
) -> tuple[dict[str, int], list[str]]:
    """The decision's counts within the bounds (an unset count: as it is now), then within the
    GPU budget (decode, then prefill, down towards their minimum); notes say what was changed."""
    target, notes = {}, []
    bounds = {
        "prefill": (spec.min_prefill, spec.max_prefill),
        "decode": (spec.min_decode, spec.max_decode),
    }
    for group in GROUPS:
        asked = getattr(decision, group)
        want = have.get(group, 0) if asked == NOT_SET else asked
        low, high = bounds[group]
        target[group] = min(max(want, low), high)
        if asked != NOT_SET and target[group] != asked:
            # Dynamo 1.6.1's planner knows minima and a GPU budget, no per-role maximum, and
            # decides again only once it discovers its own target (engines.md).
            notes.append(
                f"{group} {asked} -> {target[group]} (autoscale bounds {low}-{high}; the planner "
                "holds its next decision until it sees its own count)"
            )
    if spec.max_gpus:
        before = dict(target)
        for group in ("decode", "prefill"):
            while cost(target, gpus) > spec.max_gpus and target[group] > bounds[group][0]:
                target[group] -= 1
        if cost(target, gpus) > spec.max_gpus:
            notes.append(f"{cost(target, gpus)} GPUs exceed autoscale.max_gpus={spec.max_gpus}")
        elif target != before:
            notes.append(f"cut to autoscale.max_gpus={spec.max_gpus}")
    return target, notes


def cost(target: Mapping[str, int], gpus: Mapping[str, int]) -> int:
    """GPUs `target` holds (gpus: per worker of each group)."""
    return sum(n * gpus.get(g, 1) for g, n in target.items())


def worker_gpus(plan: Plan) -> dict[str, int]:
    """GPUs per worker of each group (every rank's), from the run's workers or, with
    placement=here, its worker job's plan."""
    procs = plan.serve.workers.processes if plan.serve else plan.processes
    units: dict[str, set[int]] = {}
    total: dict[str, int] = {}
    for p in procs:
        if p.tier == TIER_WORKER:
            devices = p.env.get("CUDA_VISIBLE_DEVICES", "")
            total[p.group] = total.get(p.group, 0) + len([x for x in devices.split(",") if x])
            units.setdefault(p.group, set()).add(p.worker_index)
    return {g: max(1, total[g] // max(1, len(units[g]))) for g in total}


def serving_counts(found: list[Holder]) -> dict[str, int]:
    """Workers per group that serve now: the run's own, and those of attached jobs that are
    ready (a job still queued or starting is capacity coming, not serving)."""
    ready = [h for h in found if not h.attached or RunDir(h.run_dir).state().phase == Phase.READY]
    return current_counts(Path(), ready)


def ctl_scale(runner: CommandRunner) -> Grow:
    """Grow through `python -m orchestrator.ctl scale --no-wait` (the very path of a hand scale:
    the saved config with the new counts, validated as at launch, one attached job), in an
    environment without the run's secrets or this job's Slurm variables, as from a shell."""

    def grow(run_dir: Path, counts: Mapping[str, int]) -> WorkerJob:
        items = [f"{g}.workers={n}" for g, n in counts.items()]
        argv = [sys.executable, "-m", "orchestrator.ctl", "scale", "--no-wait", str(run_dir)]
        done = runner.run([*argv, *items], timeout=300.0, env=clean_env(os.environ))
        lines = done.stdout.split()
        if done.returncode != 0 or len(lines) < 2:
            raise OrchestratorError(f"ctl scale {' '.join(items)}: {done.stderr.strip()[-400:]}")
        job = next((j for j in WorkerJobs(run_dir).read() if j.run_dir == lines[1]), None)
        if job is None:
            raise OrchestratorError(f"ctl scale submitted {lines[1]}, not in attached.json")
        return job

    return grow


def clean_env(env: Mapping[str, str]) -> dict[str, str]:
    """`env` less the run's secrets and the enclosing job's SLURM_* variables (sbatch would
    hand them on to the new job)."""
    drop = set(secret_names())
    return {k: v for k, v in env.items() if k not in drop and not k.startswith("SLURM_")}


def attach_autoscale(driver: DriverView, source: DecisionSource) -> Autoscaler:
    """Carry out the planner's decisions once the run serves (on_ready), stop listening at
    teardown."""
    spec = driver.plan.autoscale
    assert spec is not None
    runner = SubprocessRunner()
    scaler = Autoscaler(spec, source, ctl_scale(runner), SlurmClient(runner))

    def start(d: DriverView) -> None:
        d.on_tick.append(scaler.on_tick)

    driver.on_ready.append(start)
    driver.before_stop.append(scaler.stop)
    return scaler


def link_argv(plan: Plan, spec: AutoscalePlan) -> list[str]:
    """The link child's command, run by the planner's own interpreter (it has ai-dynamo; the
    driver's may not): the last word of the planner's argv (frontends/dynamo_planner.py's
    START_SCRIPT execs "$3" -m dynamo.planner; tests/test_autoscale.py holds them together)."""
    python = plan.process(spec.process).argv[-1]
    return [python, "-I", str(LINK_SCRIPT), spec.namespace]


def link_env(plan: Plan, spec: AutoscalePlan) -> dict[str, Any]:
    """The link child's environment: the driver's (the run's etcd secrets exported) with the
    planner process's own (etcd endpoints, discovery backend, request plane)."""
    return {**os.environ, **plan.process(spec.process).env}
