"""`ctl scale RUN_DIR decode.workers=N` below the current count: remove single workers, newest
first. Attached jobs newest first, within a job the highest index; the run's own workers last
(a group keeps at least one worker: `ctl stop` removes everything). The driver holding a worker
is asked through a control file in its run directory (orchestrator.elastic.retire): it
deregisters the worker, stops it with the plan's grace and marks it "removed"; an attached job
with no workers left ends. `ctl scale` waits for that and says what was removed.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from orchestrator.core.effects import Clock, SystemClock
from orchestrator.core.errors import InvalidConfig, Issue, OrchestratorError
from orchestrator.elastic.retire import request_retire
from orchestrator.plan.model import TIER_WORKER, Plan
from orchestrator.rundir import Phase, RunDir, RunState
from orchestrator.rundir.jobs import WorkerJobs

WAIT_MARGIN_S = 60.0  # beyond the plan's stop grace: deregistration, the driver's next tick


@dataclass(frozen=True, slots=True)
class Holder:
    """A driver holding workers: an attached job's or the run's own. `units` are the worker
    units not removed yet, as (group, index, name of rank 0), highest index first."""

    run_dir: Path
    job_id: str
    attached: bool
    units: tuple[tuple[str, int, str], ...]
    grace_s: float


@dataclass(frozen=True, slots=True)
class Removal:
    """The workers one driver is asked to remove; `whole`: an attached job left with none."""

    holder: Holder
    workers: tuple[str, ...]
    whole: bool


def holder(run_dir: Path, plan: Plan, job_id: str, attached: bool) -> Holder:
    """The worker units of one driver that are not removed yet."""
    removed = RunDir(run_dir).state().removed()
    units = sorted(
        (
            (p.group, p.worker_index, p.name)
            for p in plan.processes
            if p.tier == TIER_WORKER and p.rank == 0 and p.name not in removed
        ),
        key=lambda u: -u[1],
    )
    return Holder(run_dir, job_id, attached, tuple(units), plan.stop_grace_s)


def holders(run_dir: Path) -> list[Holder]:
    """Every driver holding workers of the run, newest first: its worker jobs that hold workers
    now (a job being replaced counts through its copy, WorkerJobs.holding), then its own job
    (generation 0)."""
    found = [
        holder(Path(j.run_dir), RunDir(j.run_dir).plan(), j.job_id, True)
        for j in reversed(WorkerJobs(run_dir).holding())
    ]
    run = RunDir(run_dir)
    return [*found, holder(run_dir, run.bound_plan(), run.state().job_id, False)]


def current_counts(run_dir: Path, found: list[Holder] | None = None) -> dict[str, int]:
    """Workers per group now serving: the run's own and its worker jobs', less removed ones."""
    counts: dict[str, int] = {}
    for h in holders(run_dir) if found is None else found:
        for group, _, _ in h.units:
            counts[group] = counts.get(group, 0) + 1
    return counts


def plan_removal(run_dir: Path, counts: Mapping[str, int]) -> list[Removal]:
    """The workers a scale-down removes, newest first ([] when nothing shrinks)."""
    found = holders(run_dir)
    have = current_counts(run_dir, found)
    if all(n >= have.get(g, 0) for g, n in counts.items()):
        return []
    if any(n > have.get(g, 0) for g, n in counts.items()):
        keys = keys_of(counts)
        said = ", ".join(f"{n} (running {have.get(g, 0)})" for g, n in counts.items())
        raise InvalidConfig(
            [
                Issue(
                    keys,
                    said,
                    "one request both adds and removes workers",
                    "scale up and down in separate commands",
                )
            ]
        )
    excess = {g: have.get(g, 0) - n for g, n in counts.items()}
    removals = choose(found, excess)
    for r in removals:
        check_serving(r.holder, keys_of(counts))
    return removals


def choose(found: list[Holder], excess: Mapping[str, int]) -> list[Removal]:
    """Which workers go for `excess` (group -> how many fewer), newest first (`found`'s order,
    within a holder the highest index)."""
    left = dict(excess)
    removals = []
    for h in found:
        chosen = []
        for group, _, name in h.units:
            if left.get(group, 0) > 0:
                chosen.append(name)
                left[group] -= 1
        if chosen:
            removals.append(Removal(h, tuple(chosen), h.attached and len(chosen) == len(h.units)))
    return removals


def keys_of(counts: Mapping[str, int]) -> str:
    """`decode.workers, prefill.workers`: the keys of a request, for its error messages."""
    return ", ".join(f"{g}.workers" for g in counts)


def check_serving(h: Holder, keys: str) -> None:
    """Workers leave a job only once it serves: its driver still waits for the frontend to
    count every worker of its plan while it starts."""
    phase = RunDir(h.run_dir).state().phase
    if phase != Phase.READY:
        raise InvalidConfig(
            [
                Issue(
                    keys,
                    f"attached job {h.job_id} ({phase or 'not started'})",
                    "its newest workers are in a job that is not serving yet",
                    "scale down once `ctl status` says it is ready, or `ctl stop` it",
                )
            ]
        )


def _done(removal: Removal) -> RunState | None:
    """The holder's state once the removal is over (None while it is not)."""
    holder = RunDir(removal.holder.run_dir)
    state = holder.state()
    if removal.whole:
        return state if state.ended else None
    if set(removal.workers) <= state.removed():
        return state
    if state.ended:  # its driver ended before removing them
        raise OrchestratorError(
            f"{', '.join(removal.workers)}: the driver of "
            f"{holder.path} ended ({state.phase}) first; "
            f"see {holder.driver_log}"
        )
    return None


def remove(run_dir: Path, removals: list[Removal], clock: Clock | None = None) -> list[str]:
    """Ask each holder's driver, wait until every removal is over; one line per holder."""
    clock = clock or SystemClock()
    started = clock.now()
    for r in removals:
        request_retire(r.holder.run_dir, list(r.workers))
    deadline = started + max(r.holder.grace_s for r in removals) + WAIT_MARGIN_S
    lines, waiting = [], list(removals)
    while waiting:
        for r in list(waiting):
            state = _done(r)
            if state is not None:
                waiting.remove(r)
                if r.whole:  # listed as removed (the run's driver saw its workers removed)
                    WorkerJobs(run_dir).set(str(r.holder.run_dir), removed_at=time.time())
                lines.append(removal_line(r, state, clock.now() - started))
        if waiting and clock.now() >= deadline:
            raise OrchestratorError(
                f"not removed within {deadline - started:.0f} s: "
                + "; ".join(
                    f"{', '.join(r.workers)} (see {RunDir(r.holder.run_dir).driver_log})"
                    for r in waiting
                )
            )
        if waiting:
            clock.sleep(0.2)
    return lines


def removal_line(r: Removal, state: RunState, took: float) -> str:
    """`removed decode-2 (attached job 12) in 1.3 s`, and whether the attached job ended."""
    where = f"attached job {r.holder.job_id}" if r.holder.attached else "the run's own job"
    end = f"; the job ended: {state.phase}" if r.whole else ""
    return f"removed {', '.join(r.workers)} ({where}) in {took:.1f} s{end}"
