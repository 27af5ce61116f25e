"""Scale-down of single workers: `ctl scale` asks the driver that holds them through a control
file in its run directory (like `ctl stop` with its stop file: it reaches the driver wherever
it runs, with or without signal delivery).

For each worker unit named in RUN_DIR/retire-requested.json the driver first waits until every
frontend of the run routes to another worker of each role leaving (elastic/handover.py: asked of
the frontend itself, a canary per look while it does not; up to readiness.timeout_s, else the
units are not removed and driver.log says why), then takes them out of supervision (never restarted, not a failure), deregisters it (on_process_retired; router:
DELETE /workers/<id>, waiting until the router no longer lists it; Dynamo: nothing here, its
worker leaves etcd on SIGTERM and finishes its in-flight requests), stops it with the plan's
grace (SIGTERM, then SIGKILL) and marks it "removed" in state.json. An attached job with no
workers left ends (phase done).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.core.errors import OrchestratorError
from orchestrator.elastic.handover import unserved_roles
from orchestrator.plan.model import TIER_WORKER, Process
from orchestrator.rundir import RunDir, write_json_atomic
from orchestrator.rundir.records import REMOVED
from orchestrator.runtime.processes import stop_tier
from orchestrator.runtime.restarts import unit_key, unit_members

if TYPE_CHECKING:
    from orchestrator.runtime.hooks import DriverView


def request_retire(run_dir: Path, names: list[str]) -> None:
    """Ask the driver of the run in `run_dir` to remove the worker units `names` (merged with a
    request it has not taken yet; written atomically, taken by a rename: nothing is lost)."""
    path = RunDir(run_dir).retire_file
    try:
        pending = [str(n) for n in json.loads(path.read_text()).get("workers", [])]
    except (OSError, ValueError, AttributeError):
        pending = []
    write_json_atomic(path, {"workers": [*pending, *(n for n in names if n not in pending)]})


def units_of(d: DriverView, names: list[str]) -> tuple[list[Process], list[str]]:
    """Every process of the named worker units (ranks included), and the names not found."""
    procs: list[Process] = []
    unknown = []
    for name in names:
        try:
            proc = d.plan.process(name)
        except KeyError:
            unknown.append(name)
            continue
        if proc.tier != TIER_WORKER:
            unknown.append(name)
            continue
        procs += [p for p in unit_members(d.plan.processes, unit_key(proc)) if p not in procs]
    return procs, unknown


def retire(d: DriverView, names: list[str]) -> None:
    """Deregister, stop and mark removed the worker units `names` (see the module docstring)."""
    procs, unknown = units_of(d, names)
    if unknown:
        d.say(f"warning: scale-down names no worker of this job: {', '.join(unknown)}")
    running = d.retire([p.name for p in procs])
    started = d.clock.now()
    for r in running:
        for hook in d.on_process_retired:
            try:
                hook(d, r)
            except OrchestratorError as exc:  # stopped anyway; the router drops it on its checks
                d.say(f"warning: {r.proc.name}: {exc}")
    deregistered = d.clock.now()
    killed = stop_tier(d.backend, running, grace_s=d.plan.stop_grace_s, clock=d.clock)
    for r in running:
        d.state.process(r.proc.name, state=REMOVED, removed_at=time.time(), exit_code=r.exit_code)
    if running:
        d.say(
            f"removed {', '.join(r.proc.name for r in running)} (scale-down): deregistered in "
            f"{deregistered - started:.1f} s, stopped in {d.clock.now() - deregistered:.1f} s"
            + (f" (killed after {d.plan.stop_grace_s:g} s: {', '.join(killed)})" if killed else "")
        )
    if d.plan.job is not None and all_removed(d):
        d.request_stop("every worker removed by scale-down")


def all_removed(d: DriverView) -> bool:
    """Whether no worker of this plan is left (every one removed by scale-down)."""
    removed = d.state.view().removed()
    return all(p.name in removed for p in d.plan.processes if p.tier == TIER_WORKER)


class Retirer:
    """The on_tick plugin: takes scale-down requests, removes their units once handed over."""

    def __init__(self) -> None:
        self.pending: list[str] = []  # units asked for, not removed yet
        self.since = 0.0  # when the oldest pending request was taken (clock)
        self.looked_at = float("-inf")
        self.said = False

    def on_tick(self, d: DriverView) -> None:
        """Take a pending request (one stat per tick while there is none); remove what is
        asked once the frontends route to other workers of its roles (a look per interval)."""
        names = take_request(d)
        now = d.clock.now()
        if names and not self.pending:
            self.since, self.said = now, False
        self.pending += [n for n in names if n not in self.pending]
        if not self.pending or now - self.looked_at < d.plan.readiness.interval_s:
            return
        self.looked_at = now
        procs, _ = units_of(d, self.pending)
        waits = unserved_roles(d, procs) if procs else {}
        if waits and now - self.since < d.plan.readiness.timeout_s:
            self._say_waiting(d, waits)
            return
        names, self.pending = self.pending, []
        if waits:
            d.say(
                f"warning: not removing {', '.join(names)} (scale-down): after "
                f"{now - self.since:.0f} s the frontend still routes to no other worker of "
                f"{_said(waits)}; they keep serving"
            )
            return
        retire(d, names)

    def _say_waiting(self, d: DriverView, waits: dict[str, list[str]]) -> None:
        if not self.said:
            self.said = True
            d.say(
                f"scale-down of {', '.join(self.pending)} waits: the frontend routes to no "
                f"other worker of {_said(waits)} yet"
            )


def _said(waits: dict[str, list[str]]) -> str:
    return "; ".join(f"{', '.join(roles)} ({url})" for url, roles in waits.items())


def take_request(d: DriverView) -> list[str]:
    """The worker units of a pending scale-down request ([] when there is none), taken."""
    path = RunDir(d.run_dir).retire_file
    taken = path.with_name(f".{path.name}.taken")
    try:
        path.rename(taken)  # atomic: a request written after this is taken on the next tick
    except FileNotFoundError:
        return []
    try:
        names = [str(n) for n in json.loads(taken.read_text())["workers"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        d.say(f"warning: ignoring an unreadable scale-down request {path}: {exc}")
        names = []
    taken.unlink(missing_ok=True)  # ctl waits for "removed" in state.json
    return names


def attach_retire(driver: DriverView) -> None:
    """Every driver takes scale-down requests (the run's own workers and attached jobs')."""
    driver.on_tick.append(Retirer().on_tick)
