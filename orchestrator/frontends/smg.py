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
  Authorization header" without `Authorization: Bearer <key>`). The key is read from the
  environment variable named by `frontend.admin_key_env`: a shell expands it when SMG starts, and
  the driver reads it for its calls; plans, scripts and logs carry only the variable's name.
- Prometheus on its own `--prometheus-host/--prometheus-port` (default 0.0.0.0:29000: two
  gateways on one node would collide, as sglang-router 0.3.2's did).
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any

from orchestrator.config.schema import RootConfig
from orchestrator.core.effects import HttpClient
from orchestrator.core.errors import Issue
from orchestrator.frontends.base import Head
from orchestrator.plan.model import TIER_FRONTEND, HealthProbe, Plan, Process, Readiness
from orchestrator.plan.placeholders import node_ip, port_ref
from orchestrator.plan.ports import PortAllocator

if TYPE_CHECKING:
    from orchestrator.runtime.health import Verdict
    from orchestrator.runtime.hooks import DriverView

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# SMG's control-plane key format is id:name:role:key; this is the orchestrator's admin entry.
ADMIN_KEY_ID = "orchestrator:orchestrator:admin"
# The name of the variable the driver reads the key from, passed to the driver's environment.
KEY_ENV_REF = "ORCHESTRATOR_SMG_ADMIN_KEY_ENV"


def gateway_argv(cfg: RootConfig, ip: str, metrics_port: int) -> list[str]:
    """`python -m smg.launch_router`, PD mode unless aggregated, bound to the job's address."""
    argv = [cfg.frontend.python, "-m", "smg.launch_router"]
    argv += ["--pd-disaggregation"] if cfg.deployment.mode == "disaggregated" else []
    argv += ["--host", ip, "--port", str(cfg.frontend.http_port)]
    argv += ["--prometheus-host", ip, "--prometheus-port", port_ref(metrics_port)]
    # As for sglang-router (frontends/sglang_router.py): our own watch removes dead workers; the
    # circuit breaker would shut out a healthy prefill after its decode died.
    argv += ["--disable-circuit-breaker"]
    if cfg.frontend.router_mode:
        argv += ["--policy", cfg.frontend.router_mode]
    return argv + list(cfg.frontend.extra_args)


def with_admin_key(argv: list[str], env_name: str) -> list[str]:
    """`argv` plus the admin key, expanded by bash from `$env_name` at start: only the
    variable's name is in the plan. (`exec` keeps SMG the step's process, so signals reach it.)"""
    if not env_name:
        return argv
    script = f'exec "$@" --control-plane-api-keys "{ADMIN_KEY_ID}:${{{env_name}}}"'
    return ["bash", "-c", script, "smg", *argv]


def gateway_process(cfg: RootConfig, ports: PortAllocator) -> Process:
    """The gateway on node 0 with its own metrics port."""
    ip, port = node_ip(0), cfg.frontend.http_port
    extra = ports.allocate(0, ["metrics"])
    argv = with_admin_key(gateway_argv(cfg, ip, extra["metrics"]), cfg.frontend.admin_key_env)
    env = {"PYTHONUNBUFFERED": "1", **cfg.frontend.env}
    if cfg.frontend.admin_key_env:
        env[KEY_ENV_REF] = cfg.frontend.admin_key_env
    return Process(
        name="frontend", role="frontend", group="frontend", worker_index=0, rank=0, node_index=0,
        gpus=(), ports={"http": port, **extra}, env=env, argv=tuple(argv), tier=TIER_FRONTEND,
        health=HealthProbe(url=f"http://{ip}:{port}/health"), url=f"http://{ip}:{port}",
    )  # fmt: skip


def authorized(http: HttpClient, env_name: str, env: dict[str, str] | None = None) -> HttpClient:
    """`http` sending the admin key from `$env_name` (unchanged without a key or for clients that
    cannot add headers, such as the unit tests' fakes)."""
    key = (os.environ if env is None else env).get(env_name, "") if env_name else ""
    with_headers: Any = getattr(http, "with_headers", None)
    if not key or with_headers is None:
        return http
    client: HttpClient = with_headers({"Authorization": f"Bearer {key}"})
    return client


class _AuthorizedView:
    """The driver as the registration hooks see it, with the authorized HTTP client."""

    def __init__(self, driver: DriverView, http: HttpClient) -> None:
        self._driver, self.http = driver, http

    def __getattr__(self, name: str) -> Any:
        return getattr(self._driver, name)


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
        name = cfg.frontend.admin_key_env
        return Head(processes=[gateway_process(cfg, ports)],
                    worker_env={KEY_ENV_REF: name} if name else {})  # fmt: skip

    def ready_path(self, cfg: RootConfig) -> str:
        """SMG's own gate (200 once a healthy worker of each needed type is registered)."""
        return "/readiness"

    def validate(self, cfg: RootConfig) -> list[Issue]:
        """The admin key is named by an environment variable, never given itself."""
        name = cfg.frontend.admin_key_env
        if not name or ENV_NAME.match(name):
            return []
        return [Issue("frontend.admin_key_env", repr(name), "not an environment variable name "
                      "(the key itself must not be in the config)",
                      "export SMG_ADMIN_KEY=... where you launch and set "
                      "frontend.admin_key_env=SMG_ADMIN_KEY")]  # fmt: skip

    def attach_issues(self, cfg: RootConfig) -> list[Issue]:
        """None: the attached job registers its workers with the run's router URL."""
        return []

    def registration_lines(self, plan: Plan) -> list[str]:
        """The POST /workers of every worker (as for sglang-router), and the key's source."""
        from orchestrator.frontends.sglang_router import FRONTEND as ROUTER

        lines = [line.replace("router", "SMG") for line in ROUTER.registration_lines(plan)]
        front = next((p for p in plan.processes if p.role == "frontend"), None)
        name = front.env.get(KEY_ENV_REF, "") if front else ""
        if name:
            lines.append(f"admin key: Authorization: Bearer ${name} (read from the environment)")
        return lines

    def ready(self, http: HttpClient, readiness: Readiness) -> Verdict:
        """Every expected worker healthy in `GET /workers`, then `/readiness` (as for the router,
        with the admin key when one is configured)."""
        from orchestrator.frontends.sglang_router import FRONTEND as ROUTER

        return ROUTER.ready(authorized(http, self._key_env), readiness)

    def attach(self, driver: DriverView) -> None:
        """Register each worker when healthy, deregister all before stopping (sglang-router's
        hooks: the API is the same), with the admin key when one is configured."""
        from orchestrator.frontends.worker_api import attach_router_registration

        self._key_env = next((p.env[KEY_ENV_REF] for p in driver.plan.processes
                              if KEY_ENV_REF in p.env), "")  # fmt: skip
        view = _AuthorizedView(driver, authorized(driver.http, self._key_env))
        attach_router_registration(view)
        if driver.plan.job is not None:  # its workers join a gateway that serves others already
            from orchestrator.frontends.router_attach import require_listed

            driver.on_workers_healthy.append(lambda _d: require_listed(view))


FRONTEND = Smg()
