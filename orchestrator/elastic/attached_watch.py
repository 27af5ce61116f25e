"""The run's driver watches its attached jobs (`ctl scale`) and mirrors them into state.json.

`ctl scale` lists attached jobs in RUN_DIR/attached.json (the driver owns state.json and
rewrites it whole). Every WATCH_EVERY_S this plugin reads attached.json and each attached job's
state.json; Slurm is asked (ONE batched squeue/sacct call) only for jobs whose state.json says
they ended but not yet how (a plain `scancel` ends the job as CANCELLED after its driver wrote
"done"), and every SLURM_EVERY_S for jobs that look alive (a driver killed with its node writes
nothing). An attached job that ended without a scale-down is said in driver.log and recorded in
state.json: which job, how it ended, which workers are gone and what still serves; the run
itself keeps serving with the rest (its frontend drops the workers: router DELETE from the
attached driver's before_stop, or the Dynamo worker's own etcd lease).

state.json gets "attached" (every attached job) and "workers" (every worker of the deployment:
name, group, job, host, GPUs, state), written only when they change: state.json may live on a
shared filesystem.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.elastic.attached import bound_gpus, read_attached
from orchestrator.plan.model import TIER_WORKER, Plan
from orchestrator.rundir import FINAL, read_state
from orchestrator.rundir.records import REMOVED
from orchestrator.slurm.client import SlurmClient
from orchestrator.slurm.states import category_of

if TYPE_CHECKING:
    from orchestrator.runtime.hooks import DriverView

GROUP_ORDER = ("prefill", "decode", "aggregated")
WATCH_EVERY_S = 2.0
SLURM_EVERY_S = 10.0
ENDED = ("ended_ok", "ended_failed")


def worker_order(worker: Mapping[str, Any]) -> tuple[int, int, int]:
    """prefill-0, prefill-0-rank1, prefill-1, ..., decode-0, ... whichever job holds them."""
    group, index, rank = (str(worker["name"]).split("-") + ["", ""])[:3]
    order = GROUP_ORDER.index(group) if group in GROUP_ORDER else len(GROUP_ORDER)
    digits = rank.removeprefix("rank")
    return order, int(index) if index.isdigit() else 0, int(digits) if digits.isdigit() else 0


def own_workers(plan: Plan, state: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The run's own workers as "workers" entries (its bound plan, its state.json)."""
    procs = state.get("processes", {})
    return [{"name": p.name, "group": p.group, "job_id": str(state.get("job_id") or ""),
             "host": procs.get(p.name, {}).get("host", ""),
             "gpus": p.env.get("CUDA_VISIBLE_DEVICES", ""),
             "state": procs.get(p.name, {}).get("state", "")}
            for p in plan.processes if p.tier == TIER_WORKER
            and procs.get(p.name, {}).get("state") != REMOVED]  # fmt: skip


def job_entry(entry: Mapping[str, Any], state: Mapping[str, Any], slurm: str) -> dict[str, Any]:
    """One "attached" entry: the job, where its state is, how it ended (when it did)."""
    phase = str(state.get("phase", ""))
    ended = phase in FINAL or category_of(slurm) in ("ended_ok", "ended_failed")
    procs = state.get("processes", {})
    # Every worker removed by a scale-down (elastic/retire.py): the job ends, and is no loss.
    retired = all(procs.get(n, {}).get("state") == REMOVED for n in entry["workers"])
    out = {"job_id": entry["job_id"], "run_dir": entry["run_dir"], "workers": entry["workers"],
           "phase": phase, "slurm_state": slurm, "ended": ended,
           # drain_at: a rollover's drain or teardown (orchestrator.elastic.rollover) asked.
           "removed": bool(entry.get("removed_at") or entry.get("drain_at")) or retired}  # fmt: skip
    if ended:
        out["reason"] = str(state.get("error") or state.get("reason") or "")
    return out


def attached_workers(entry: Mapping[str, Any], state: Mapping[str, Any],
                     gpus: Mapping[str, str]) -> list[dict[str, Any]]:  # fmt: skip
    """The workers of a live attached job as "workers" entries."""
    procs = state.get("processes", {})
    groups = {n: n.split("-")[0] for n in entry["workers"]}  # decode-1-rank1: decode
    return [{"name": n, "group": groups[n], "job_id": entry["job_id"],
             "host": procs.get(n, {}).get("host", ""), "gpus": gpus.get(n, ""),
             "state": procs.get(n, {}).get("state", "")} for n in entry["workers"]
            if procs.get(n, {}).get("state") != REMOVED]  # fmt: skip


class AttachedWatch:
    """The on_tick plugin (see the module docstring)."""

    def __init__(self, slurm: SlurmClient) -> None:
        self.slurm = slurm
        self.next_at: float | None = None
        self.slurm_at: float | None = None
        self.slurm_states: dict[str, str] = {}
        self.reported: set[str] = set()  # job ids whose end we said
        self.settled: dict[str, Mapping[str, Any]] = {}  # job id -> its final state.json
        self.gpus: dict[str, dict[str, str]] = {}  # attached run dir -> process -> GPU ids

    def on_tick(self, d: DriverView) -> None:
        """Every WATCH_EVERY_S: look at the attached jobs, report ends, mirror into state.json."""
        now = d.clock.now()
        if self.next_at is not None and now < self.next_at:
            return
        self.next_at = now + WATCH_EVERY_S
        entries = read_attached(d.run_dir)
        # A job over in Slurm and in its state.json changes no more: read once, not every tick
        # (days of scaling leave many of them listed).
        states = {e["job_id"]: self.settled.get(e["job_id"]) or read_state(Path(e["run_dir"]))
                  for e in entries}  # fmt: skip
        self._ask_slurm(now, entries, states)
        jobs = [job_entry(e, states[e["job_id"]], self.slurm_states.get(e["job_id"], ""))
                for e in entries]  # fmt: skip
        for job in jobs:
            if job["phase"] in FINAL and category_of(job["slurm_state"]) in ENDED:
                self.settled[job["job_id"]] = states[job["job_id"]]
        for job in jobs:
            if job["ended"] and not job["removed"] and job["job_id"] not in self.reported:
                self._report(d, job, jobs)
        workers = own_workers(d.plan, d.state.data)
        for entry, job in zip(entries, jobs, strict=True):
            if not job["ended"] and not job["removed"]:
                workers += attached_workers(entry, states[entry["job_id"]], self._gpus(entry))
        workers.sort(key=worker_order)
        changed = {k: v for k, v in (("attached", jobs), ("workers", workers))
                   if d.state.data.get(k) != v and (v or k in d.state.data)}  # fmt: skip
        if changed:
            d.state.update(**changed)

    def _ask_slurm(self, now: float, entries: list[dict[str, Any]],
                   states: Mapping[str, Mapping[str, Any]]) -> None:  # fmt: skip
        """ONE Slurm call for the jobs whose end we do not know yet (see the module docstring)."""
        ended = [e["job_id"] for e in entries if states[e["job_id"]].get("phase") in FINAL]
        undecided = [j for j in ended if category_of(self.slurm_states.get(j, "")) not in
                     ("ended_ok", "ended_failed")]  # fmt: skip
        alive = [e["job_id"] for e in entries if e["job_id"] not in ended]
        due = self.slurm_at is None or now >= self.slurm_at
        ids = undecided + (alive if due else [])
        if not ids:
            return
        if due:
            self.slurm_at = now + SLURM_EVERY_S
        for job_id, job in self.slurm.states(ids).items():
            self.slurm_states[job_id] = job.state

    def _report(self, d: DriverView, job: Mapping[str, Any], jobs: list[dict[str, Any]]) -> None:
        """Say (once the end is known in Slurm, or its driver recorded it) that a job is gone."""
        if job["phase"] in FINAL and category_of(job["slurm_state"]) in ("queued", "active"):
            return  # its driver is done; wait for Slurm to say how the job ended
        self.reported.add(job["job_id"])
        serving = own_workers(d.plan, d.state.data)
        serving += [{"name": n} for j in jobs if not j["ended"] and not j["removed"]
                    for n in j["workers"]]  # fmt: skip
        names = [str(w["name"]) for w in sorted(serving, key=worker_order)]
        how = job["slurm_state"] or "not known to Slurm"
        d.say(f"attached job {job['job_id']} ended ({how}; its driver: {job['phase'] or 'nothing'}"
              f"{', ' + job['reason'] if job.get('reason') else ''}): {', '.join(job['workers'])} "
              f"gone; still serving: {', '.join(names)}")  # fmt: skip
        lost = [*d.state.data.get("attached_lost", []),
                {"job_id": job["job_id"], "slurm_state": how, "workers": job["workers"],
                 "serving": names}]  # fmt: skip
        d.state.update(attached_lost=lost)

    def _gpus(self, entry: Mapping[str, Any]) -> dict[str, str]:
        """GPU ids per worker from the attached job's plan.bound.json (read once it exists)."""
        adir = entry["run_dir"]
        if adir not in self.gpus:
            found = bound_gpus(Path(adir))
            if not found:
                return {}
            self.gpus[adir] = found
        return self.gpus[adir]


def attach_attached_watch(driver: DriverView, slurm: SlurmClient) -> None:
    """Watch the run's attached jobs (a run's driver; attached jobs have none of their own)."""
    if not driver.plan.attach_to:
        driver.on_tick.append(AttachedWatch(slurm).on_tick)
