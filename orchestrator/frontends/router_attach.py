"""Readiness of an attached job behind sglang-router (`ctl scale`, a rollover's replacement):
the router's gate counts every worker it lists -- the run's others too -- so the job's own
workers must each be listed healthy by the router (registration is asynchronous: a worker
shows up in `GET /workers` after the router's own health check of it) before the canary."""

from __future__ import annotations

from typing import TYPE_CHECKING

from orchestrator.core.effects import HttpClient, HttpError
from orchestrator.core.errors import OrchestratorError
from orchestrator.frontends.base import Routes
from orchestrator.frontends.worker_api import REQUEST_TIMEOUT_S, WORKER_TYPES, parse_worker_list
from orchestrator.plan.model import TIER_WORKER, Process

if TYPE_CHECKING:
    from orchestrator.runtime.hooks import DriverView

LIST_POLL_S = 0.05
ROLES = {kind: role for role, kind in WORKER_TYPES.items()}  # router worker_type -> plan role


def router_routes(http: HttpClient, url: str) -> Routes:
    """What sglang-router / SMG routes to: `GET /workers` (with the admin key in `http`), by
    worker URL. The router routes to every worker it lists healthy (its own health check put it
    there) and to none other, so listed healthy is routed."""
    resp = http.get(f"{url}/workers", timeout=REQUEST_TIMEOUT_S)
    try:
        workers = parse_worker_list(resp.json() if resp.status == 200 else None)
    except ValueError as exc:
        raise HttpError(f"GET {url}/workers: HTTP {resp.status}: {resp.body[:200]}") from exc
    out: dict[str, set[str]] = {}
    for w in workers:
        if w.healthy:
            out.setdefault(ROLES.get(w.worker_type, w.worker_type), set()).add(w.url)
    listed = {role: frozenset(urls) for role, urls in out.items()}
    return Routes(listed=listed, routed=frozenset().union(*listed.values()))


def router_worker_keys(proc: Process) -> list[str]:
    """The URL the worker is registered by."""
    return [proc.url] if proc.url else []


def require_listed(d: DriverView) -> None:
    """Wait (supervising) until the router lists every worker of this job healthy."""
    from orchestrator.frontends.worker_api import RouterClient, RouterError
    from orchestrator.runtime.hooks import Stopped

    r = d.plan.readiness
    client = RouterClient(d.http, d.clock, r.frontend_url)
    urls = {p.url for p in d.plan.processes if p.tier == TIER_WORKER and p.url}
    deadline = d.clock.now() + r.timeout_s
    while True:
        d.check_alive()
        try:
            missing = urls - {w.url for w in client.list_workers() if w.healthy}
        except RouterError as exc:
            missing, why = urls, str(exc)
        else:
            why = "not listed healthy"
        if not missing:
            d.state.update(attached_listed=sorted(urls))
            return
        if d.clock.now() >= deadline:
            raise OrchestratorError(
                f"the router {r.frontend_url} does not list "
                f"{', '.join(sorted(missing))} healthy after {r.timeout_s:g} s ({why})"
            )
        # A GET to the router, which lists a worker within ~0.1 s of its health check: polled
        # faster than readiness.interval_s, since this is the share ctl scale waits for.
        if d.clock.wait(d.stop_event, min(r.interval_s, LIST_POLL_S)):
            raise Stopped()
