"""Readiness of an attached job (`ctl scale`) behind a Dynamo frontend: its workers must take
requests from the run's frontend, not only be healthy.

Healthy workers registered in etcd can still be left out: the frontend keeps the model card of
the first workers of a model and rejects later ones whose card differs ("Rejected incompatible
workers", seen on the testbed), and then the canary passes through the old workers alone. So
canaries (each with a new prompt: a KV-aware router would send a repeated one where it is
cached) go through the run's frontend until every new worker's own
`dynamo_component_requests_total` (its system port's /metrics) counts one.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from orchestrator.core.effects import HttpClient, HttpError
from orchestrator.core.errors import OrchestratorError
from orchestrator.plan.model import TIER_WORKER, Process

if TYPE_CHECKING:
    from orchestrator.runtime.hooks import DriverView

CANARIES_PER_WORKER = 4  # round-robin or random routing reaches each new worker well within this


def served(http: HttpClient, proc: Process) -> int:
    """Requests the worker's generate endpoint has taken (0 when its metrics do not answer)."""
    assert proc.health is not None
    try:
        resp = http.get(proc.health.url.replace("/health", "/metrics"), timeout=5.0)
    except HttpError:
        return 0
    total = 0
    for line in resp.body.splitlines():
        if line.startswith("dynamo_component_requests_total{") and 'endpoint="generate"' in line:
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def require_traffic(d: DriverView) -> None:
    """Send canaries through the run's frontend until every new worker took one; raise naming
    the workers that took none."""
    from orchestrator.runtime.health import canary_payload, parse_canary

    r = d.plan.readiness
    workers = [p for p in d.plan.processes if p.tier == TIER_WORKER and p.health is not None]
    waiting = list(workers)
    for _ in range(CANARIES_PER_WORKER * len(workers)):
        waiting = [p for p in waiting if not served(d.http, p)]
        if not waiting:
            d.state.update(attached_traffic="every new worker served a canary")
            return
        payload = canary_payload(r.model, r.canary_max_tokens)
        payload["messages"][0]["content"] += f" ({uuid.uuid4().hex[:8]})"
        try:
            parse_canary(
                d.http.post(f"{r.frontend_url}/v1/chat/completions", payload, timeout=120.0)
            )
        except HttpError as exc:
            d.say(f"canary through {r.frontend_url} failed: {exc}")
    names = ", ".join(p.name for p in waiting if not served(d.http, p))
    if names:
        raise OrchestratorError(
            f"{names}: healthy, but the run's frontend {r.frontend_url} sent them none of "
            f"{CANARIES_PER_WORKER * len(workers)} canaries (a Dynamo frontend rejects workers "
            f"whose model card differs from the first ones: see {d.plan.job.run_dir if d.plan.job else '?'}/logs/frontend.log)"
        )
