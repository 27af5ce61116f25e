"""sglang-router (`python -m sglang_router.launch_router`), started with no workers: the driver
registers each worker over HTTP once it is healthy (orchestrator.frontends.worker_api)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from orchestrator.config.schema import RootConfig
from orchestrator.core.effects import HttpClient, HttpResponse
from orchestrator.core.errors import Issue
from orchestrator.frontends.base import (
    Head,
    Routes,
    client_key_issues,
    http_port,
    no_request_plane_tls,
)
from orchestrator.frontends.control_key import (
    KEY_ENV_REF,
    AuthorizedView,
    authorized,
    client_key_env,
    key_env_name,
    key_lines,
    keyed_launch,
    planned_client_key,
    planned_key_env,
)
from orchestrator.plan.model import TIER_FRONTEND, HealthProbe, Plan, Process, Readiness
from orchestrator.plan.placeholders import node_ip, port_ref
from orchestrator.plan.ports import PortAllocator

if TYPE_CHECKING:
    from orchestrator.runtime.health import Verdict
    from orchestrator.runtime.hooks import DriverView


def router_process(cfg: RootConfig, ports: PortAllocator) -> Process:
    """The router on node 0, PD mode unless the deployment is aggregated (static --prefill /
    --decode lists would lose late or restarted workers)."""
    ip = node_ip(0)
    port, planned = http_port(cfg, ports, ["metrics"])
    argv = ["--pd-disaggregation"] if cfg.deployment.mode == "disaggregated" else []
    argv += ["--host", ip, "--port", port]
    # 0.3.2 panics at start when its Prometheus port (default 0.0.0.0:29000) is taken.
    argv += ["--prometheus-host", ip, "--prometheus-port", port_ref(planned["metrics"])]
    # The orchestrator watches every worker (exit, health) and DELETEs a dead one at once. The
    # router's circuit breaker cannot tell a dead partner from a bad worker: when a decode died
    # with >= 10 requests in flight, their failures opened the *prefill's* circuit, and the
    # router refused every request for its 60-s cool-down after the decode was back (seen with
    # sglang-router 0.3.2 and the SGLang double; --cb-failure-threshold 10, timeout 60 s).
    argv += ["--disable-circuit-breaker"]
    if cfg.frontend.router_mode:
        argv += ["--policy", cfg.frontend.router_mode]
    argv += list(cfg.frontend.extra_args)
    # The control plane is locked with the run's admin key, kept off the command line.
    key_env = key_env_name(cfg)
    launch = keyed_launch(
        cfg.frontend.python, "sglang_router.launch_router", argv, key_env, client_key_env(cfg)
    )
    return Process(
        name="frontend",
        role="frontend",
        group="frontend",
        worker_index=0,
        rank=0,
        node_index=0,
        gpus=(),
        ports=planned,
        env={"PYTHONUNBUFFERED": "1", **cfg.frontend.env, KEY_ENV_REF: key_env},
        argv=tuple(launch),
        tier=TIER_FRONTEND,
        health=HealthProbe(url=f"http://{ip}:{port}/health"),
        url=f"http://{ip}:{port}",
    )


def parse_readiness(resp: HttpResponse) -> Verdict:
    """`GET /readiness`: 200 once >= 1 healthy prefill and decode (or regular) worker."""
    from orchestrator.runtime.health import Verdict

    if resp.status == 200:
        return Verdict(True)
    body = resp.json() or {}
    reason = body.get("reason") if isinstance(body, dict) else None
    return Verdict(False, f"router not ready (HTTP {resp.status}): {reason or resp.body[:200]}")


class SglangRouter:
    """Workers are registered by URL; the gate counts them in `GET /workers`, then /readiness."""

    kind = "sglang_router"

    def __init__(self) -> None:
        self._key_env = ""  # set by attach() from the plan (the driver runs one plan)

    def head(self, cfg: RootConfig, ports: PortAllocator, num_nodes: int) -> Head:
        """Only the router: no discovery service. The admin key's variable name travels in
        the workers' environment too, so that the driver of an attached job (ctl scale,
        placement=here), which has no router process, finds it."""
        return Head(
            processes=[router_process(cfg, ports)], worker_env={KEY_ENV_REF: key_env_name(cfg)}
        )

    def ready_path(self, cfg: RootConfig) -> str:
        """The router's own gate."""
        return "/readiness"

    def validate(self, cfg: RootConfig) -> list[Issue]:
        """No request-plane TLS (it is Dynamo's); the clients' key set where you launch."""
        return no_request_plane_tls(cfg) + client_key_issues(cfg)

    def attach_issues(self, cfg: RootConfig) -> list[Issue]:
        """None: the attached job registers its workers with the run's router URL."""
        return []

    def registration_lines(self, plan: Plan) -> list[str]:
        """The POST /workers each worker gets once healthy, then the router's gate."""
        from orchestrator.frontends.worker_api import WORKER_TYPES, registration_payload

        r = plan.readiness
        want = ", ".join(f"{v} {WORKER_TYPES.get(k, k)}" for k, v in r.expected.items())
        out = [
            f"register each worker when its /health is 200: POST {r.frontend_url}/workers "
            "(id kept for DELETE /workers/<id> at stop)"
        ]
        out += [
            f"  {p.name}: {json.dumps(registration_payload(p))}"
            for p in plan.processes
            if p.url and p.role in WORKER_TYPES
        ]
        out.append(
            f"router gate: GET {r.frontend_url}/workers lists {want} healthy, "
            f"then GET {r.ready_path} == 200"
        )
        return out

    def lock_lines(self, plan: Plan) -> list[str]:
        """The control plane's admin key (workers reach the router over plain HTTP)."""
        return key_lines(planned_key_env(plan), planned_client_key(plan))

    def ready(self, http: HttpClient, readiness: Readiness) -> Verdict:
        """Every expected worker listed healthy by `GET /workers` (registration is asynchronous
        and /readiness turns 200 with one prefill and one decode), then /readiness."""
        from orchestrator.frontends.worker_api import workers_verdict
        from orchestrator.runtime.health import Verdict, frontend_gate

        http = authorized(http, self._key_env)
        if readiness.expected:
            ok, detail = workers_verdict(http, readiness.frontend_url, readiness.expected)
            if not ok:
                return Verdict(False, detail)
        return frontend_gate(http, readiness, parse_readiness)

    def attach(self, driver: DriverView) -> None:
        """Register each worker with the router when healthy; deregister all before stopping
        (with the admin key)."""
        from orchestrator.frontends.worker_api import attach_router_registration

        self._key_env = planned_key_env(driver.plan)
        view = AuthorizedView(driver, authorized(driver.http, self._key_env))
        attach_router_registration(view)
        if driver.plan.job is not None:  # its workers join a router that serves others already
            from orchestrator.frontends.router_attach import require_listed

            driver.on_workers_healthy.append(lambda _d: require_listed(view))

    def routes(self, http: HttpClient, url: str, readiness: Readiness) -> Routes:
        """Its `GET /workers`, healthy ones by URL (with the admin key when one is set)."""
        from orchestrator.frontends.router_attach import router_routes

        return router_routes(authorized(http, self._key_env), url)

    def worker_keys(self, proc: Process, record: Mapping[str, Any]) -> list[str]:
        """The URL it is registered by."""
        from orchestrator.frontends.router_attach import router_worker_keys

        return router_worker_keys(proc)


FRONTEND = SglangRouter()
