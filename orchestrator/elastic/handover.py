"""Never drain before the frontend routes to the replacement, role by role (issue 19).

A rollover's copy is ready once its own driver saw its workers healthy, registered and answering
a canary through the run's frontend. That is not enough to release the old job: measured on the
testbed (Dynamo 1.6.1, ~50 requests/s), the old job drained 10 ms after its copy was declared
ready and every request then got 503 "No workers available for endpoint dynamo/prefill/generate"
for 5 s. So the run's driver releases an old worker job only when, at every frontend of the run
(both replicas of a pair), for each role of the copy's workers (prefill, decode, aggregated)
the frontend both lists a worker of the copy and has routed requests to it -- its own evidence,
asked of it through `Frontend.routes` (Dynamo: its /health instance list and its per-worker
gauges; sglang-router and SMG: workers listed healthy). While a copy's role is not routed yet,
one canary (a new prompt each time) goes through each such frontend per look, so an idle run
hands over too.

A frontend with no worker at all of a role is said at once: state.json `frontend_missing`
({url: [roles]}), a driver.log line when it starts and when it ends; drains wait meanwhile.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from orchestrator.core.effects import HttpError
from orchestrator.frontends import Frontend, get_frontend
from orchestrator.frontends.base import Routes
from orchestrator.frontends.control_key import authorized
from orchestrator.plan.model import TIER_WORKER, Process, Readiness
from orchestrator.rundir import Phase, RunDir, WorkerJob
from orchestrator.rundir.secrets import API_KEY_ENV

if TYPE_CHECKING:
    from orchestrator.runtime.hooks import DriverView

CANARY_TIMEOUT_S = 30.0
SAY_WAITING_EVERY_S = 30.0  # a handover that waits is said again this often


def frontend_urls(readiness: Readiness) -> tuple[str, ...]:
    """Every frontend that routes the run's requests: each replica of a pair, else the one."""
    return readiness.replica_urls or (readiness.frontend_url,)


def copy_keys(frontend: Frontend, job: WorkerJob) -> dict[str, list[str]]:
    """Plan role -> the frontend's keys of the job's workers (those its driver recorded)."""
    run = RunDir(job.run_dir)
    records = run.state().data.get("processes", {})
    out: dict[str, list[str]] = {}
    # The bound plan has the workers' real addresses (a router's keys); a job that serves has it.
    plan = run.bound_plan() if run.bound_plan_file.exists() else run.plan()
    for proc in plan.processes:
        if proc.tier == TIER_WORKER and proc.health is not None:
            keys = frontend.worker_keys(proc, records.get(proc.name, {}))
            out.setdefault(proc.role, []).extend(keys)
    return out


def canary(d: DriverView, url: str) -> None:
    """One request through `url` with a new prompt (a KV-aware router sends a repeated
    prompt where it is cached): the frontend's own pick shows in its next look."""
    from orchestrator.runtime.health import canary_payload

    r = d.plan.readiness
    payload = canary_payload(r.model, r.canary_max_tokens)
    payload["messages"][0]["content"] += f" ({uuid.uuid4().hex[:8]})"
    http = authorized(d.http, API_KEY_ENV)  # frontend.api_key_env: a client sends the key
    try:
        http.post(f"{url}/v1/chat/completions", payload, timeout=CANARY_TIMEOUT_S)
    except HttpError as exc:
        d.say(f"warning: canary through {url} failed: {exc}")


def look_at_frontends(d: DriverView, frontend: Frontend) -> dict[str, Routes | None]:
    """One `Frontend.routes` look at every frontend of the run (None: it did not answer)."""
    out: dict[str, Routes | None] = {}
    for url in frontend_urls(d.plan.readiness):
        try:
            out[url] = frontend.routes(d.http, url, d.plan.readiness)
        except HttpError:
            out[url] = None
    return out


def unserved_roles(d: DriverView, leaving: Sequence[Process]) -> dict[str, list[str]]:
    """Per frontend, the roles of the `leaving` workers (a scale-down) that it routes to no
    other worker of ("(no answer)" when it does not answer); a canary through each frontend
    that has other workers of such a role, so that its router picks one."""
    frontend = get_frontend(d.plan.readiness.frontend_kind)
    records = d.state.view().data.get("processes", {})
    own = {k for p in leaving for k in frontend.worker_keys(p, records.get(p.name, {}))}
    roles: list[str] = sorted({str(p.role) for p in leaving})
    out: dict[str, list[str]] = {}
    for url, routes in look_at_frontends(d, frontend).items():
        if routes is None:
            out[url] = ["(no answer)"]
            continue
        others: dict[str, frozenset[str]] = {
            r: routes.listed.get(r, frozenset()) - own for r in roles
        }
        missing: list[str] = [r for r in roles if not others[r] & routes.routed]
        if missing:
            out[url] = missing
            if all(others[r] for r in missing):
                canary(d, url)
    return out


def unrouted(routes: Routes, keys: Mapping[str, list[str]]) -> list[str]:
    """The roles none of whose `keys` the frontend routes to."""
    return [role for role, ks in keys.items() if not any(routes.routes_to(k) for k in ks)]


@dataclass
class Handover:
    """The run driver's gate before releasing an old worker job, and its watch of the roles."""

    missing: dict[str, list[str]] = field(default_factory=dict)  # url -> roles without a worker
    said_at: dict[str, float] = field(default_factory=dict)  # old job -> when waiting was said

    def routed(self, d: DriverView, old: WorkerJob, new: WorkerJob) -> bool:
        """Whether every frontend routes to `new`'s workers of each of its roles (a canary
        through each that does not yet); says and records what it waits for."""
        frontend = get_frontend(d.plan.readiness.frontend_kind)
        keys = copy_keys(frontend, new)
        waits: dict[str, list[str]] = {}
        looks = self.look(d, frontend, sorted(keys))
        for url, routes in looks.items():
            roles = unrouted(routes, keys) if routes is not None else ["(no answer)"]
            if roles:
                waits[url] = roles
                if routes is not None and not routes.empty_roles(sorted(keys)):
                    canary(d, url)
        if not waits:
            d.say(
                f"worker job {new.job_id} takes requests from every frontend for "
                f"{', '.join(sorted(keys))}: draining worker job {old.job_id}"
            )
            return True
        self._say_waiting(d, old, new, waits)
        return False

    def watch(self, d: DriverView) -> None:
        """A look at the roles of the run (its expected ones) at every frontend, once the run
        serves (before, no worker is what starting looks like)."""
        if d.state.view().phase == Phase.READY:
            roles = sorted(d.plan.readiness.expected)
            self.look(d, get_frontend(d.plan.readiness.frontend_kind), roles)

    def look(self, d: DriverView, frontend: Frontend, roles: list[str]) -> dict[str, Routes | None]:
        """One look at every frontend (None: it did not answer); records and says the roles
        a frontend has no worker of, at once and when that ends."""
        out = look_at_frontends(d, frontend)
        missing = {u: r.empty_roles(roles) for u, r in out.items() if r and r.empty_roles(roles)}
        if missing != self.missing:
            self._say_missing(d, missing)
        return out

    def _say_missing(self, d: DriverView, missing: dict[str, list[str]]) -> None:
        for url, roles in missing.items():
            if self.missing.get(url) != roles:
                d.say(
                    f"warning: the frontend {url} has no {' and no '.join(roles)} worker: "
                    "requests that need one fail now; no worker is released meanwhile"
                )
        for url in set(self.missing) - set(missing):
            d.say(f"the frontend {url} has a worker of every role again")
        self.missing = missing
        d.state.update(frontend_missing=missing)

    def _say_waiting(
        self, d: DriverView, old: WorkerJob, new: WorkerJob, waits: dict[str, list[str]]
    ) -> None:
        now = d.clock.now()
        if now - self.said_at.get(old.job_id, -SAY_WAITING_EVERY_S) < SAY_WAITING_EVERY_S:
            return
        self.said_at[old.job_id] = now
        said = "; ".join(f"{url}: {', '.join(roles)}" for url, roles in waits.items())
        d.say(
            f"worker job {old.job_id} not drained yet: the frontend does not route to "
            f"worker job {new.job_id}'s {said}"
        )
