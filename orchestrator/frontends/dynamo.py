"""Dynamo's frontend (`python3 -m dynamo.frontend`) and its discovery (etcd or a shared file)."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from orchestrator.config.schema import RootConfig
from orchestrator.core.effects import HttpClient, HttpResponse
from orchestrator.core.errors import Issue
from orchestrator.frontends.base import Head, Routes, http_port
from orchestrator.frontends.pair import pair_processes
from orchestrator.launchers import runs_on_one_machine
from orchestrator.plan.model import TIER_FRONTEND, TIER_INFRA, HealthProbe, Plan, Process, Readiness
from orchestrator.plan.placeholders import RUN_DIR, node_ip, port_ref
from orchestrator.plan.ports import PortAllocator
from orchestrator.rundir.secrets import (
    ETCD_PASSWORD,
    ETCD_PASSWORD_ENV,
    ETCD_USER,
    ETCD_USER_ENV,
    SECRETS_DIR,
    TLS_DIR,
    TLS_FILES,
    TLS_SERVER_NAME,
    placeholder,
)

if TYPE_CHECKING:
    from orchestrator.runtime.health import Verdict
    from orchestrator.runtime.hooks import DriverView

DISCOVERY_KINDS = ("auto", "etcd", "file")
MIGRATION_LIMIT = (
    3  # dynamo.frontend --migration-limit (default 0: a broken stream fails the request)
)


def discovery_backend(cfg: RootConfig, num_nodes: int) -> str:
    """`file` only works when everything shares one node (inotify and mtime leases do not cross
    hosts), so deployments that span nodes use etcd."""
    if cfg.frontend.discovery != "auto":
        return cfg.frontend.discovery
    # placement=here, or autoscale: the workers (some of them) run in other jobs, on other hosts.
    one_host = num_nodes == 1 and cfg.frontend.placed_in_job and not cfg.autoscale.enabled
    return "file" if one_host else "etcd"


def discovery_env(cfg: RootConfig, backend: str, etcd_port: int) -> dict[str, str]:
    """Environment every Dynamo process needs to find the others."""
    env = {"DYN_DISCOVERY_BACKEND": backend, "DYN_NAMESPACE": cfg.frontend.namespace}
    if backend == "etcd":
        env["ETCD_ENDPOINTS"] = f"http://{node_ip(0)}:{port_ref(etcd_port)}"
    else:
        env["DYN_FILE_KV"] = f"{RUN_DIR}/dynamo-discovery"
    return {**env, **(request_plane_tls_env() if cfg.frontend.request_plane_tls else {})}


def request_plane_tls_env() -> dict[str, str]:
    """Mutual TLS on Dynamo 1.6.1's TCP request plane (dynamo_runtime::tls_utils: "TLS enabled
    with mutual authentication (client certificates required)"), for every Dynamo process: the
    workers' request servers and the frontend's response-stream server require a certificate
    of the run's CA, and each process presents the run's certificate as a client. Paths only
    (RUN_DIR/secrets/tls, made at launch); the server name is the certificate's, not a node's."""
    tls = f"{RUN_DIR}/{SECRETS_DIR}/{TLS_DIR}"
    ca, cert, key = (f"{tls}/{name}" for name in TLS_FILES)
    return {
        "DYN_TCP_TLS_CERT_PATH": cert,
        "DYN_TCP_TLS_KEY_PATH": key,
        "DYN_TCP_TLS_CLIENT_CA_CERT_PATH": ca,
        "DYN_TCP_TLS_CA_CERT_PATH": ca,
        "DYN_TCP_TLS_CLIENT_CERT_PATH": cert,
        "DYN_TCP_TLS_CLIENT_KEY_PATH": key,
        "DYN_TCP_TLS_SERVER_NAME": TLS_SERVER_NAME,
    }


def etcd_process(cfg: RootConfig, ports: PortAllocator) -> Process:
    """A single-member etcd on node 0, bound to the node address only."""
    p = ports.allocate(0, ["client", "peer"])
    ip = node_ip(0)
    client = f"http://{ip}:{port_ref(p['client'])}"
    peer = f"http://{ip}:{port_ref(p['peer'])}"
    # etcd reads every ETCD_* variable as a flag and logs the ones it does not know *with their
    # values* ("unrecognized environment variable ETCD_AUTH_PASSWORD=...", etcd 3.4 pkg/flags):
    # the clients' credentials the driver exports must not reach it. Its data directory is under
    # RUN_DIR/secrets (0700): its WAL records the root user's password as it was added.
    argv = (
        "env",
        "-u",
        ETCD_USER_ENV,
        "-u",
        ETCD_PASSWORD_ENV,
        cfg.frontend.etcd_binary,
        "--name",
        "orchestrator",
        "--data-dir",
        f"{RUN_DIR}/{SECRETS_DIR}/etcd",
        "--listen-client-urls",
        client,
        "--advertise-client-urls",
        client,
        "--listen-peer-urls",
        peer,
        "--initial-advertise-peer-urls",
        peer,
        "--initial-cluster",
        f"orchestrator={peer}",
        "--initial-cluster-state",
        "new",
    )
    return Process(
        name="etcd",
        role="infra",
        group="discovery",
        worker_index=0,
        rank=0,
        node_index=0,
        gpus=(),
        ports=p,
        env={},
        argv=argv,
        tier=TIER_INFRA,
        health=HealthProbe(url=f"{client}/health"),
    )


def stream_host(cfg: RootConfig, ip: str) -> str:
    """DYN_TCP_RESPONSE_STREAM_HOST: the node address, or on loopback (launcher=local binds
    127.0.0.1) the interface's name. Dynamo 1.6 takes either; 1.4.x (the Dynamo of SGLang 0.5.16,
    torch 2.11) takes only a name: an IP there fails the frontend's model registration with
    "Interface not found: 127.0.0.1" and the model never becomes ready. With 1.4.x on Slurm, set
    +frontend.env.DYN_TCP_RESPONSE_STREAM_HOST=<node 0's interface>."""
    return "lo" if runs_on_one_machine(cfg.launcher.kind) else ip


def frontend_process(cfg: RootConfig, ports: PortAllocator, env: dict[str, str]) -> Process:
    """`python3 -m dynamo.frontend --http-port 8000` (the guide's command) bound to node 0."""
    port, planned = http_port(cfg, ports)
    return replica_process(cfg, env, "frontend", 0, 0, port, planned)


def replica_process(
    cfg: RootConfig,
    env: dict[str, str],
    name: str,
    index: int,
    node: int,
    port: str,
    planned: dict[str, int],
) -> Process:
    """One Dynamo frontend named `name` on `node` serving `port` (one of a pair: index 0 or 1,
    each restarted on its own)."""
    ip = node_ip(node)
    argv = [cfg.frontend.python, "-m", "dynamo.frontend", "--http-port", port]
    # Bind to the job's address on node 0 rather than 0.0.0.0 (Dynamo's default).
    argv += ["--http-host", ip]
    argv += ["--discovery-backend", env["DYN_DISCOVERY_BACKEND"]]
    argv += ["--request-plane", "tcp", "--event-plane", "zmq"]
    argv += ["--namespace", cfg.frontend.namespace]
    if cfg.frontend.router_mode:
        argv += ["--router-mode", cfg.frontend.router_mode]
    # The same in every placement (frontend.migration_limit, default 0). Migration re-runs a
    # request whose stream to a worker broke on another worker. Measured with launcher=local and
    # Dynamo 1.6.1 (2P2D mocker, etcd, 16 clients, a dead worker purged from discovery at once,
    # frontends/dynamo_purge.py): with limit 1 or 3 a kill -9 failed 0-2 requests, but in 4 of 19
    # kills every request then failed for 1.9-7 s ("No workers available for endpoint
    # dynamo/prefill/generate": a retry sent with the same request id to a live prefill fails
    # there with "request ... is already active", and the router then drops that prefill from its
    # routable list until discovery changes); with limit 0 the 5-11 requests in flight on the dead
    # worker failed and none sent 0.2 s or more after the kill, in 13 of 13 kills. What migration
    # saves: a worker leaving (scale-down, rollover drain) unregisters first and the frontend
    # cancels the streams in flight to it ("Cancelled stream registrations for removed instance",
    # then 503 "migration retries exhausted"): 2 of 1935 requests in a scale-down with limit 0.
    # 0 is Dynamo's own default: the flag only when set (the argv stays the guide's).
    if cfg.frontend.migration_limit:
        argv += ["--migration-limit", str(cfg.frontend.migration_limit)]
    argv += list(cfg.frontend.extra_args)
    full_env = {**env, "PYTHONUNBUFFERED": "1"}
    # Workers call back into the frontend for streamed responses: advertise the node address.
    full_env["DYN_TCP_RESPONSE_STREAM_HOST"] = stream_host(cfg, ip)
    full_env.update(cfg.frontend.env)
    return Process(
        name=name,
        role="frontend",
        group="frontend",
        worker_index=index,
        rank=0,
        node_index=node,
        gpus=(),
        ports=planned,
        env=full_env,
        argv=tuple(argv),
        tier=TIER_FRONTEND,
        health=HealthProbe(url=f"http://{ip}:{port}/health"),
        url=f"http://{ip}:{port}",
    )


def parse_ready(resp: HttpResponse) -> Verdict:
    """`GET /v1/models/{model}/ready`: 200 with ready=true, else 503 with the missing types."""
    from orchestrator.runtime.health import Verdict

    body = resp.json() or {}
    if resp.status == 200 and body.get("ready") is True:
        return Verdict(True)
    reason = body.get("reason") if isinstance(body, dict) else None
    return Verdict(False, f"frontend not ready (HTTP {resp.status}): {reason or resp.body[:200]}")


class Dynamo:
    """Workers find the frontend through discovery; its gate waits for both worker types."""

    kind = "dynamo"

    def head(self, cfg: RootConfig, ports: PortAllocator, num_nodes: int) -> Head:
        """etcd (when discovery needs it), then the frontend."""
        backend = discovery_backend(cfg, num_nodes)
        procs: list[Process] = []
        etcd_port = 0
        if backend == "etcd":
            etcd = etcd_process(cfg, ports)
            procs.append(etcd)
            etcd_port = etcd.ports["client"]
        env = discovery_env(cfg, backend, etcd_port)
        if cfg.frontend.replicas == 2:
            # Both replicas read the same discovery: every worker registers once and serves both.
            pair, url = pair_processes(
                cfg,
                ports,
                num_nodes,
                self.ready_path(cfg),
                lambda *a: replica_process(cfg, env, *a),
            )
            return Head(processes=procs + pair, worker_env=env, discovery=backend, url=url)
        procs.append(frontend_process(cfg, ports, env))
        return Head(processes=procs, worker_env=env, discovery=backend)

    def ready_path(self, cfg: RootConfig) -> str:
        """Dynamo's /health says healthy with zero workers; /v1/models/{model}/ready waits for
        both worker types."""
        return f"/v1/models/{cfg.model.served_name or cfg.model.path}/ready"

    def validate(self, cfg: RootConfig) -> list[Issue]:
        """The discovery choice, the migration limit; openssl for request_plane_tls."""
        issues = []
        if cfg.frontend.discovery not in DISCOVERY_KINDS:
            issues.append(
                Issue(
                    "frontend.discovery",
                    repr(cfg.frontend.discovery),
                    "unknown value",
                    f"use one of: {', '.join(DISCOVERY_KINDS)}",
                )
            )
        if cfg.frontend.migration_limit < 0:
            issues.append(
                Issue(
                    "frontend.migration_limit",
                    str(cfg.frontend.migration_limit),
                    "negative",
                    "use 0 (no migration) or more",
                )
            )
        if cfg.frontend.api_key_env:
            # Dynamo 1.6.1's frontend (dynamo/frontend/frontend_args.py) has no API key: its
            # HTTP endpoint takes only TLS with client certificates (--tls-cert-path,
            # --tls-key-path, --tls-client-ca-cert-path; DYN_TLS_*).
            issues.append(
                Issue(
                    "frontend.api_key_env",
                    cfg.frontend.api_key_env,
                    "Dynamo 1.6.1's "
                    "frontend has no client API key (only HTTPS with client "
                    "certificates: --tls-client-ca-cert-path, DYN_TLS_*)",
                    "use frontend=sglang_router or frontend=smg, or drop frontend.api_key_env",
                )
            )
        if cfg.frontend.request_plane_tls and not shutil.which("openssl"):
            issues.append(
                Issue(
                    "frontend.request_plane_tls",
                    "true",
                    "needs `openssl` on PATH where you launch (it makes the run's CA)",
                    "install openssl, or set frontend.request_plane_tls=false",
                )
            )
        return issues

    def attach_issues(self, cfg: RootConfig) -> list[Issue]:
        """Workers of another job find the frontend through etcd only: the file backend is
        local to the run's node (inotify and mtime leases do not cross hosts)."""
        if discovery_backend(cfg, 1) == "etcd":
            return []
        return [
            Issue(
                "frontend.discovery",
                repr(cfg.frontend.discovery),
                "workers of an attached job find a Dynamo frontend through etcd only",
                "start runs that may scale with frontend.discovery=etcd",
            )
        ]

    def registration_lines(self, plan: Plan) -> list[str]:
        """None: workers register through discovery."""
        return []

    def lock_lines(self, plan: Plan) -> list[str]:
        """etcd's authentication, or the file discovery's place; the request plane."""
        from orchestrator.frontends.etcd_lock import ETCD_PROCESS

        if any(p.name == ETCD_PROCESS for p in plan.processes):
            out = [
                f"etcd: authentication on before any worker starts: user {ETCD_USER}, password "
                f"{placeholder(ETCD_PASSWORD)} (every Dynamo process gets {ETCD_USER_ENV} and "
                f"{ETCD_PASSWORD_ENV}); reads and writes without them refused"
            ]
        else:
            out = ["discovery: files in RUN_DIR/dynamo-discovery (the run directory's mode)"]
        if any("DYN_TCP_TLS_CLIENT_CA_CERT_PATH" in p.env for p in plan.processes):
            return out + [
                "request plane: mutual TLS (per-run CA in RUN_DIR/secrets/tls): only "
                "the run's processes can send requests to its workers"
            ]
        return out + [
            "request plane: TCP from the frontend to the workers, not authenticated "
            "(frontend.request_plane_tls=true: mutual TLS)"
        ]

    def ready(self, http: HttpClient, readiness: Readiness) -> Verdict:
        """The model's ready endpoint."""
        from orchestrator.runtime.health import frontend_gate

        # A pair: the proxy's URL and each replica's own (the proxy asks only one of them).
        for url in (readiness.frontend_url, *readiness.replica_urls):
            verdict = frontend_gate(
                http, dataclasses.replace(readiness, frontend_url=url), parse_ready
            )
            if not verdict.ok:
                return verdict
        return verdict

    def attach(self, driver: DriverView) -> None:
        """Dynamo workers (and restarted ones) join through discovery; a dead one is removed
        from it at once. The run's etcd is locked the moment it is healthy. An attached job's
        workers must also take requests from the run's frontend before it is ready."""
        from orchestrator.frontends.dynamo_purge import attach_purge
        from orchestrator.frontends.etcd_lock import ETCD_PROCESS, etcd_client, lock_etcd

        if any(p.name == ETCD_PROCESS for p in driver.plan.processes):
            driver.on_process_healthy.append(lock_etcd)
        attach_purge(driver, etcd_client)  # revoking a dead worker's lease needs the run's token
        if driver.plan.job is not None:
            from orchestrator.frontends.dynamo_attach import require_traffic

            driver.on_workers_healthy.append(require_traffic)

    def routes(self, http: HttpClient, url: str, readiness: Readiness) -> Routes:
        """Its /health instance list and its per-worker gauges (frontends/dynamo_routes.py)."""
        from orchestrator.frontends.dynamo_routes import dynamo_routes

        return dynamo_routes(http, url, readiness)

    def worker_keys(self, proc: Process, record: Mapping[str, Any]) -> list[str]:
        """Its instance ids (state.json `discovery_ids`)."""
        from orchestrator.frontends.dynamo_routes import dynamo_worker_keys

        return dynamo_worker_keys(proc, record)


FRONTEND = Dynamo()
