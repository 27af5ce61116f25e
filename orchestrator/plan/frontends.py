"""The frontend on node 0 and its infrastructure (etcd for Dynamo's multi-node discovery)."""

from __future__ import annotations

from orchestrator.config.schema import RootConfig
from orchestrator.plan.model import TIER_FRONTEND, TIER_INFRA, HealthProbe, Process
from orchestrator.plan.placeholders import RUN_DIR, node_ip
from orchestrator.plan.ports import PortAllocator

FRONTEND_KINDS = ("dynamo", "sglang_router")
DISCOVERY_KINDS = ("auto", "etcd", "file")


def discovery_backend(cfg: RootConfig, num_nodes: int) -> str:
    """Dynamo discovery: `file` only works when everything shares one node (inotify and mtime
    leases do not cross hosts), so deployments that span nodes use etcd."""
    if cfg.frontend.discovery != "auto":
        return cfg.frontend.discovery
    return "file" if num_nodes == 1 else "etcd"


def discovery_env(cfg: RootConfig, backend: str, etcd_port: int) -> dict[str, str]:
    """Environment every Dynamo process needs to find the others."""
    env = {"DYN_DISCOVERY_BACKEND": backend, "DYN_NAMESPACE": cfg.frontend.namespace}
    if backend == "etcd":
        env["ETCD_ENDPOINTS"] = f"http://{node_ip(0)}:{etcd_port}"
    else:
        env["DYN_FILE_KV"] = f"{RUN_DIR}/dynamo-discovery"
    return env


def etcd_process(cfg: RootConfig, ports: PortAllocator) -> Process:
    """A single-member etcd on node 0, bound to the node address only."""
    p = ports.allocate(0, ["client", "peer"])
    ip = node_ip(0)
    client, peer = f"http://{ip}:{p['client']}", f"http://{ip}:{p['peer']}"
    argv = (
        cfg.frontend.etcd_binary,
        "--name", "orchestrator",
        "--data-dir", f"{RUN_DIR}/infra/etcd",
        "--listen-client-urls", client,
        "--advertise-client-urls", client,
        "--listen-peer-urls", peer,
        "--initial-advertise-peer-urls", peer,
        "--initial-cluster", f"orchestrator={peer}",
        "--initial-cluster-state", "new",
    )  # fmt: skip
    return Process(
        name="etcd", role="infra", group="infra", worker_index=0, rank=0, node_index=0, gpus=(),
        ports=p, env={}, argv=argv, tier=TIER_INFRA, health=HealthProbe(url=f"{client}/health"),
    )  # fmt: skip


def dynamo_frontend_process(cfg: RootConfig, ports: PortAllocator, env: dict[str, str]) -> Process:
    """`python3 -m dynamo.frontend --http-port 8000` (the guide's command) bound to node 0."""
    ip = node_ip(0)
    port = cfg.frontend.http_port
    argv = [cfg.frontend.python, "-m", "dynamo.frontend", "--http-port", str(port)]
    # Bind to the job's address on node 0 rather than 0.0.0.0 (Dynamo's default).
    argv += ["--http-host", ip]
    argv += ["--discovery-backend", env["DYN_DISCOVERY_BACKEND"]]
    argv += ["--request-plane", "tcp", "--event-plane", "zmq"]
    argv += ["--namespace", cfg.frontend.namespace]
    if cfg.frontend.router_mode:
        argv += ["--router-mode", cfg.frontend.router_mode]
    argv += list(cfg.frontend.extra_args)
    full_env = {**env, "PYTHONUNBUFFERED": "1"}
    # Workers call back into the frontend for streamed responses: advertise the node address.
    full_env["DYN_TCP_RESPONSE_STREAM_HOST"] = ip
    full_env.update(cfg.frontend.env)
    ports.allocate(0, [])  # keep a slot so worker ports do not move when the frontend changes
    return Process(
        name="frontend", role="frontend", group="frontend", worker_index=0, rank=0, node_index=0,
        gpus=(), ports={"http": port}, env=full_env, argv=tuple(argv), tier=TIER_FRONTEND,
        health=HealthProbe(url=f"http://{ip}:{port}/health"), url=f"http://{ip}:{port}",
    )  # fmt: skip


def router_process(cfg: RootConfig, ports: PortAllocator, disaggregated: bool) -> Process:
    """sglang-router on node 0, started with no workers: the driver registers each worker over
    HTTP once it is healthy (static --prefill/--decode lists lose late or restarted workers)."""
    ip = node_ip(0)
    port = cfg.frontend.http_port
    extra = ports.allocate(0, ["metrics"])
    argv = [cfg.frontend.python, "-m", "sglang_router.launch_router"]
    argv += ["--pd-disaggregation"] if disaggregated else []
    argv += ["--host", ip, "--port", str(port)]
    # 0.3.2 panics at start when its Prometheus port (default 0.0.0.0:29000) is taken.
    argv += ["--prometheus-host", ip, "--prometheus-port", str(extra["metrics"])]
    if cfg.frontend.router_mode:
        argv += ["--policy", cfg.frontend.router_mode]
    argv += list(cfg.frontend.extra_args)
    return Process(
        name="frontend", role="frontend", group="frontend", worker_index=0, rank=0, node_index=0,
        gpus=(), ports={"http": port, **extra}, env={"PYTHONUNBUFFERED": "1", **cfg.frontend.env},
        argv=tuple(argv), tier=TIER_FRONTEND,
        health=HealthProbe(url=f"http://{ip}:{port}/health"), url=f"http://{ip}:{port}",
    )  # fmt: skip


def ready_path(cfg: RootConfig) -> str:
    """The frontend's readiness gate: Dynamo's /health says healthy with zero workers; its
    /v1/models/{model}/ready waits for both worker types. The router's is /readiness."""
    if cfg.frontend.kind == "dynamo":
        return f"/v1/models/{cfg.model.served_name or cfg.model.path}/ready"
    return "/readiness"
