"""The Shepherd Model Gateway (PyPI `smg` 1.13, sglang-router's successor:
`python -m smg.launch_router`), started with no workers; the driver registers each worker over
HTTP once it is healthy, as for sglang-router.

SMG 1.13.0's worker API, captured against tests/doubles/sglang_test_double.py (tests/test_smg.py):
- `POST /workers {"url", "worker_type", "bootstrap_port"}` -> 202 `{"status": "accepted",
  "worker_id": "<uuid>", "location": "/workers/<uuid>", ...}`: registration is queued; the
  worker shows up in `GET /workers` (and `GET /workers/<uuid>`) with `"status": "ready",
  "is_healthy": true` once SMG's own health check passed. The readiness gate polls that list.
- `DELETE /workers/<uuid>` -> 202. `GET /readiness` -> 200 `{"status": "ready", ...}`.
- `--control-plane-api-keys 'id:name:admin:<key>'` protects `/workers` (401 "Missing or invalid
  Authorization header" without `Authorization: Bearer <key>`). The run's own key, or yours
  from `frontend.admin_key_env`, kept off SMG's command line (orchestrator.frontends.control_key).
- Prometheus on its own `--prometheus-host/--prometheus-port` (default 0.0.0.0:29000: two
  gateways on one node would collide, as sglang-router 0.3.2's did).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from orchestrator.config.schema import RootConfig
from orchestrator.core.effects import HttpClient
from orchestrator.core.errors import Issue
from orchestrator.frontends.base import Head, Routes, client_key_issues, no_request_plane_tls
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

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def gateway_argv(cfg: RootConfig, ip: str, metrics_port: int) -> list[str]:
    """`smg.launch_router`'s arguments: PD mode unless aggregated, bound to the job's address."""
    argv = ["--pd-disaggregation"] if cfg.deployment.mode == "disaggregated" else []
    argv += ["--host", ip, "--port", str(cfg.frontend.http_port)]
    argv += ["--prometheus-host", ip, "--prometheus-port", port_ref(metrics_port)]
    # As for sglang-router (frontends/sglang_router.py): our own watch removes dead workers; the
    # circuit breaker would shut out a healthy prefill after its decode died.
    argv += ["--disable-circuit-breaker"]
    if cfg.frontend.router_mode:
        argv += ["--policy", cfg.frontend.router_mode]
    return argv + list(cfg.frontend.extra_args)


def gateway_process(cfg: RootConfig, ports: PortAllocator) -> Process:
    """The gateway on node 0 with its own metrics port."""
    ip, port = node_ip(0), cfg.frontend.http_port
    extra = ports.allocate(0, ["metrics"])
    # The control plane is locked with the run's admin key, kept off the command line.
    key_env = key_env_name(cfg)
    argv = keyed_launch(
        cfg.frontend.python,
        "smg.launch_router",
        gateway_argv(cfg, ip, extra["metrics"]),
        key_env,
        client_key_env(cfg),
    )
    env = {"PYTHONUNBUFFERED": "1", **cfg.frontend.env, KEY_ENV_REF: key_env}
    return Process(
        name="frontend",
        role="frontend",
        group="frontend",
        worker_index=0,
        rank=0,
        node_index=0,
        gpus=(),
        ports={"http": port, **extra},
        env=env,
        argv=tuple(argv),
        tier=TIER_FRONTEND,
        health=HealthProbe(url=f"http://{ip}:{port}/health"),
        url=f"http://{ip}:{port}",
    )


class Smg:
    """Workers are registered by URL (as for sglang-router); the gate counts them healthy in
    `GET /workers`, then asks `/readiness`."""

    kind = "smg"

    def __init__(self) -> None:
        self._key_env = ""  # set by attach() from the plan (the driver runs one plan)

    def head(self, cfg: RootConfig, ports: PortAllocator, num_nodes: int) -> Head:
        """Only the gateway: no discovery service. The admin key's variable name travels in
        the workers' environment too, so that the driver of an attached job (ctl scale,
        placement=here), which has no gateway process, finds it."""
        return Head(
            processes=[gateway_process(cfg, ports)], worker_env={KEY_ENV_REF: key_env_name(cfg)}
        )

    def ready_path(self, cfg: RootConfig) -> str:
        """SMG's own gate (200 once a healthy worker of each needed type is registered)."""
        return "/readiness"

    def validate(self, cfg: RootConfig) -> list[Issue]:
        """Your own admin key is named by an environment variable, never given itself."""
        name, issues = (
            cfg.frontend.admin_key_env,
            no_request_plane_tls(cfg) + client_key_issues(cfg),
        )
        if not name or ENV_NAME.match(name):
            return issues
        return issues + [
            Issue(
                "frontend.admin_key_env",
                repr(name),
                "not an environment variable name (the key itself must not be in the config)",
                "export SMG_ADMIN_KEY=... where you launch and set "
                "frontend.admin_key_env=SMG_ADMIN_KEY",
            )
        ]

    def attach_issues(self, cfg: RootConfig) -> list[Issue]:
        """None: the attached job registers its workers with the run's router URL."""
        return []

    def registration_lines(self, plan: Plan) -> list[str]:
        """The POST /workers of every worker (as for sglang-router), and the key's source."""
        from orchestrator.frontends.sglang_router import FRONTEND as ROUTER

        lines = [line.replace("router", "SMG") for line in ROUTER.registration_lines(plan)]
        return lines

    def lock_lines(self, plan: Plan) -> list[str]:
        """The control plane's admin key, as for sglang-router."""
        return [
            line.replace("router", "SMG")
            for line in key_lines(planned_key_env(plan), planned_client_key(plan))
        ]

    def ready(self, http: HttpClient, readiness: Readiness) -> Verdict:
        """Every expected worker healthy in `GET /workers`, then `/readiness` (as for the router,
        with the admin key when one is configured)."""
        from orchestrator.frontends.sglang_router import FRONTEND as ROUTER

        return ROUTER.ready(authorized(http, self._key_env), readiness)

    def attach(self, driver: DriverView) -> None:
        """Register each worker when healthy, deregister all before stopping (sglang-router's
        hooks: the API is the same), with the admin key when one is configured."""
        from orchestrator.frontends.worker_api import attach_router_registration

        self._key_env = planned_key_env(driver.plan)
        view = AuthorizedView(driver, authorized(driver.http, self._key_env))
        attach_router_registration(view)
        if driver.plan.job is not None:  # its workers join a gateway that serves others already
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


FRONTEND = Smg()
