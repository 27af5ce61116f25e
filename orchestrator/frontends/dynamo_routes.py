"""What Dynamo 1.6.1's frontend routes to, read from the frontend itself (fixtures captured from a
real frontend in tests/fixtures/routes/).

- Its instance list: `GET /health` lists every instance its discovery watch holds
  (`{"component": "prefill"|"backend", "endpoint": "generate", "instance_id": <u64>}`); the
  instance id is the worker's etcd lease, written in hex in discovery keys and in the worker's own
  /metrics `worker_id` label (state.json `discovery_ids`, frontends/dynamo_purge.py). With no
  instance of a worker type the model's requests get 503 ("not ready to serve requests yet").
- What it has routed requests to: its /metrics has one `dynamo_frontend_worker_last_*` gauge per
  worker it sent a request to (`worker_id="<decimal id>"`, `worker_type="prefill"|"decode"`:
  time to first token for prefills, inter-token latency for decodes). Measured: the gauges stay
  while the worker does, and the frontend drops every gauge of a worker type when an instance of
  that type leaves (a live prefill's too, until a request reaches it again), so a gauge is proof
  that the frontend's router picked that worker since the last change of its type.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from orchestrator.core.effects import HttpClient, HttpError
from orchestrator.frontends.base import Routes
from orchestrator.observe.prom import parse
from orchestrator.plan.model import Process, Readiness

LOOK_TIMEOUT_S = 2.0  # the run's driver waits on this: a stuck frontend must not hold it
ROUTED_PREFIX = "dynamo_frontend_worker_last_"
WORKER_ID = re.compile(r'worker_id="(\d+)"')


def component_roles(readiness: Readiness) -> dict[str, str]:
    """Dynamo component -> plan role: `backend` serves decode in a disaggregated deployment and
    the aggregated workers otherwise (both register `<ns>.backend.generate`)."""
    return {
        "prefill": "prefill",
        "backend": "decode" if "decode" in readiness.expected else "worker",
    }


def listed(health: Any, readiness: Readiness) -> dict[str, frozenset[str]]:
    """`GET /health` JSON -> plan role -> hex instance ids of its `generate` endpoints."""
    roles = component_roles(readiness)
    out: dict[str, set[str]] = {}
    for inst in (health or {}).get("instances") or []:
        role = roles.get(str(inst.get("component")))
        if role and inst.get("endpoint") == "generate" and inst.get("instance_id") is not None:
            out.setdefault(role, set()).add(format(int(inst["instance_id"]), "x"))
    return {role: frozenset(ids) for role, ids in out.items()}


def routed(metrics: str) -> frozenset[str]:
    """/metrics text -> hex ids of the workers the frontend has sent requests to."""
    ids = set()
    for name, labels, _ in parse(metrics):
        found = WORKER_ID.search(labels) if name.startswith(ROUTED_PREFIX) else None
        if found:
            ids.add(format(int(found.group(1)), "x"))
    return frozenset(ids)


def dynamo_routes(http: HttpClient, url: str, readiness: Readiness) -> Routes:
    """One look at the frontend at `url`: its /health, then its /metrics."""
    health = http.get(f"{url}/health", timeout=LOOK_TIMEOUT_S)
    metrics = http.get(f"{url}/metrics", timeout=LOOK_TIMEOUT_S)
    if health.status != 200 or metrics.status != 200:
        raise HttpError(f"{url}: /health {health.status}, /metrics {metrics.status}")
    return Routes(listed=listed(health.json(), readiness), routed=routed(metrics.body))


def dynamo_worker_keys(proc: Process, record: Mapping[str, Any]) -> list[str]:
    """The worker's instance ids, as its driver read them from its /metrics once healthy."""
    return [str(i) for i in record.get("discovery_ids") or []]
