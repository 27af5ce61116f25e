"""Command lines of the worker engines: dynamo.sglang, sglang.launch_server and dynamo.mocker."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from orchestrator.config.schema import RootConfig
from orchestrator.plan.placeholders import RUN_DIR, node_ip

ENGINE_KINDS = ("dynamo_sglang", "sglang", "mocker")

# Ports each worker process gets from its slot, by engine and position.
WORKER_PORTS: dict[str, tuple[str, ...]] = {
    "dynamo_sglang": ("nccl", "system"),
    "sglang": ("http", "nccl"),
    "mocker": ("system",),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerProcess:
    """What the argv builders need to know about one process of one worker."""

    group: str  # prefill | decode | aggregated
    tp: int
    dp: int
    ep: int
    node_index: int
    rank: int
    nnodes: int
    leader_node: int
    ports: Mapping[str, int]
    leader_ports: Mapping[str, int]
    group_extra_args: tuple[str, ...]


def worker_ports(engine: str, group: str, rank: int, nnodes: int) -> list[str]:
    """Port names to allocate for one worker process."""
    names = list(WORKER_PORTS[engine])
    if rank > 0:
        # Node ranks >= 1 serve no HTTP and register nothing: only the leader needs these.
        names = [n for n in names if n not in ("http", "system")]
    if group == "prefill" and rank == 0:
        names.append("bootstrap")  # SGLang's prefill bootstrap server (default 8998 collides)
    if nnodes > 1 and rank == 0:
        names.append("dist_init")  # torch.distributed rendezvous of a multi-node worker
    return names


def _disagg_args(cfg: RootConfig, group: str) -> list[str]:
    """Role and KV transfer backend; nothing for aggregated workers."""
    if group == "aggregated":
        return []
    return [
        "--disaggregation-mode",
        group,
        "--disaggregation-transfer-backend",
        cfg.engine.transfer_backend,
    ]


def _flag_if(flag: str, value: str) -> list[str]:
    return [flag, value] if value else []


def _multinode_args(w: WorkerProcess) -> list[str]:
    if w.nnodes == 1:
        return []
    addr = f"{node_ip(w.leader_node)}:{w.leader_ports['dist_init']}"
    return ["--dist-init-addr", addr, "--nnodes", str(w.nnodes), "--node-rank", str(w.rank)]


def _parallel_args(w: WorkerProcess, tp_flag: str) -> list[str]:
    args = [tp_flag, str(w.tp)]
    if w.dp > 1:
        args += ["--dp-size", str(w.dp)]
    if w.ep > 1:
        args += ["--ep-size", str(w.ep)]
    return args


def _bootstrap_args(w: WorkerProcess) -> list[str]:
    if w.group != "prefill":
        return []
    return ["--disaggregation-bootstrap-port", str(w.leader_ports["bootstrap"])]


def dynamo_sglang_argv(cfg: RootConfig, w: WorkerProcess, discovery: str) -> list[str]:
    """`python3 -m dynamo.sglang` with every flag of Dynamo's gpt-oss guide, plus what many
    processes on many nodes additionally need (each addition commented)."""
    m = cfg.model
    argv = [cfg.engine.python, "-m", "dynamo.sglang", "--model-path", m.path]
    argv += ["--served-model-name", m.served_name or m.path]
    # The guide's `--tp` is argparse's prefix abbreviation of --tp-size; kept verbatim so the
    # default reproduces the guide (SGLang's own parser rejects it if the prefix ever turns ambiguous).
    argv += _parallel_args(w, "--tp")
    argv += ["--trust-remote-code"] if m.trust_remote_code else []
    argv += ["--skip-tokenizer-init"] if m.skip_tokenizer_init else []
    argv += _disagg_args(cfg, w.group)
    argv += _flag_if("--dyn-reasoning-parser", m.dynamo_reasoning_parser)
    argv += _flag_if("--dyn-tool-call-parser", m.dynamo_tool_call_parser)
    # SGLang binds the prefill bootstrap server on --host (default 127.0.0.1): a decode worker
    # reaching it by the node address (other node, or as advertised by Dynamo) would be refused.
    argv += ["--host", node_ip(w.node_index)]
    # Explicit bootstrap port: Dynamo otherwise picks a random one, SGLang 8998 (collisions).
    argv += _bootstrap_args(w)
    # Each process its own NCCL port: SGLang's free-port probing races when workers start together.
    argv += ["--nccl-port", str(w.ports["nccl"])]
    argv += _multinode_args(w)
    # Frontend and workers must agree on every plane (Dynamo 1.6: etcd|file discovery, tcp, zmq).
    argv += ["--discovery-backend", discovery, "--request-plane", "tcp", "--event-plane", "zmq"]
    return argv + _extra_args(cfg, w)


def sglang_argv(cfg: RootConfig, w: WorkerProcess) -> list[str]:
    """`python3 -m sglang.launch_server` with long flag names only (prefix abbreviations break
    when SGLang adds a flag with the same prefix)."""
    m = cfg.model
    argv = [cfg.engine.python, "-m", "sglang.launch_server", "--model-path", m.path]
    argv += ["--served-model-name", m.served_name or m.path]
    argv += _parallel_args(w, "--tp-size")
    argv += ["--trust-remote-code"] if m.trust_remote_code else []
    # No --skip-tokenizer-init here: behind sglang-router the worker itself must tokenize chats.
    argv += _disagg_args(cfg, w.group)
    argv += _flag_if("--reasoning-parser", m.sglang_reasoning_parser)
    argv += _flag_if("--tool-call-parser", m.sglang_tool_call_parser)
    # Bind HTTP and the bootstrap server to this node's address: reachable by the router and by
    # decode workers on other nodes, and not by every interface of the node.
    argv += ["--host", node_ip(w.node_index)]
    # Always set --port: SGLang and sglang-router both default to 30000.
    argv += ["--port", str(w.leader_ports["http"])]
    argv += _bootstrap_args(w)
    argv += ["--nccl-port", str(w.ports["nccl"])]
    argv += _multinode_args(w)
    return argv + _extra_args(cfg, w)


def mocker_model_dir(cfg: RootConfig) -> str:
    """Tokenizer directory the mocker loads (generated into the run directory by default)."""
    return cfg.engine.mocker_model_dir or f"{RUN_DIR}/tiny-model"


def mocker_argv(cfg: RootConfig, w: WorkerProcess, discovery: str) -> list[str]:
    """`python3 -m dynamo.mocker`: registers and answers like a dynamo.sglang worker, on CPU."""
    argv = [cfg.engine.python, "-m", "dynamo.mocker", "--model-path", mocker_model_dir(cfg)]
    argv += ["--model-name", cfg.model.served_name or cfg.model.path, "--engine-type", "sglang"]
    mode = "agg" if w.group == "aggregated" else w.group
    argv += ["--disaggregation-mode", mode]
    if w.group == "prefill":
        # The mocker's KV rendezvous: the prefill listens on its planned bootstrap port.
        argv += ["--bootstrap-ports", str(w.leader_ports["bootstrap"])]
    argv += ["--speedup-ratio", f"{cfg.engine.mocker_speedup_ratio:g}"]
    argv += ["--discovery-backend", discovery, "--request-plane", "tcp", "--event-plane", "zmq"]
    return argv + list(cfg.engine.extra_args) + list(w.group_extra_args)


def _extra_args(cfg: RootConfig, w: WorkerProcess) -> list[str]:
    return list(cfg.model.extra_args) + list(cfg.engine.extra_args) + list(w.group_extra_args)


def engine_env(cfg: RootConfig, w: WorkerProcess, gpus: tuple[int, ...]) -> dict[str, str]:
    """Environment additions of one worker process (discovery env is added by the caller)."""
    ip = node_ip(w.node_index)
    env = {"CUDA_VISIBLE_DEVICES": ",".join(str(g) for g in gpus), "PYTHONUNBUFFERED": "1"}
    # SGLang advertises get_local_ip_auto(): SGLANG_HOST_IP first, else a UDP "connect" to
    # 8.8.8.8, which fails without a default route and picks the wrong NIC on multi-homed nodes.
    env["SGLANG_HOST_IP"] = ip
    if cfg.engine.kind in ("dynamo_sglang", "mocker"):
        env.update(_dynamo_worker_env(w, ip))
    env.update(cfg.model.env)
    env.update(cfg.engine.env)
    return env


def _dynamo_worker_env(w: WorkerProcess, ip: str) -> dict[str, str]:
    env = {
        # Pin the advertised addresses of the request plane and ZMQ events to the node address.
        "DYN_TCP_RPC_HOST": ip,
        "DYN_EVENT_PLANE_HOST": ip,
    }
    if w.rank == 0:
        # The worker's system server: /health for our probe, and the model files the frontend
        # fetches (without it the model card holds local paths the head node cannot read).
        env["DYN_SYSTEM_HOST"] = ip
        env["DYN_SYSTEM_PORT"] = str(w.ports["system"])
        # Without health targets /health stays "notready" forever (Dynamo 1.6 default).
        env["DYN_SYSTEM_USE_ENDPOINT_HEALTH_STATUS"] = '["generate"]'
    return env
