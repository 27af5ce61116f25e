"""What every worker engine provides (one module per engine, see `orchestrator.engines`), and
the argv helpers the SGLang-based engines share."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from orchestrator.config.schema import RootConfig
from orchestrator.core.errors import Issue
from orchestrator.plan.model import Plan
from orchestrator.plan.placeholders import node_ip, port_ref
from orchestrator.plan.placement import WorkerSlot


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerProcess:
    """What the argv builders need to know about one process of one worker."""

    group: str  # prefill | decode | aggregated
    tp: int
    dp: int
    ep: int
    dp_attention: bool
    node_index: int
    rank: int
    nnodes: int
    leader_node: int
    ports: Mapping[str, int]  # this process's planned ports (block 0)
    leader_ports: Mapping[str, int]  # rank 0's planned ports
    group_extra_args: tuple[str, ...]

    def port(self, name: str) -> str:
        """Placeholder of this process's port `name` (shifted into the job's block when bound)."""
        return port_ref(self.ports[name])

    def leader_port(self, name: str) -> str:
        """Placeholder of rank 0's port `name`."""
        return port_ref(self.leader_ports[name])

    @property
    def ip(self) -> str:
        """Placeholder of this process's node address."""
        return node_ip(self.node_index)


class Engine(Protocol):
    """One worker engine: ports, argv, env, health, its own rules and its partners."""

    kind: str
    frontends: tuple[str, ...]  # frontends its workers can register with, preferred first
    max_port: int  # highest port its processes accept
    max_port_reason: str  # why, when below 65535
    loads_model: bool  # its workers read model.path (checked on the nodes before start)
    # Its flag (no dashes) for a worker's static GPU memory as a fraction of the memory free when
    # it starts; set per worker when GPUs are shared ('' = it holds no GPU memory: the mocker).
    memory_flag: str

    def worker_ports(self, group: str, rank: int, nnodes: int) -> list[str]:
        """Port names to plan for one worker process."""
        ...

    def argv(self, cfg: RootConfig, w: WorkerProcess, discovery: str) -> list[str]:
        """The command line of one worker process (`discovery`: Dynamo's backend, or '')."""
        ...

    def env(self, cfg: RootConfig, w: WorkerProcess) -> dict[str, str]:
        """Environment additions of one worker process (GPUs and discovery are added by the plan)."""
        ...

    def health_url(self, w: WorkerProcess) -> str:
        """The URL whose 200 says this process is up ('' for node ranks >= 1)."""
        ...

    def serve_health_url(self, w: WorkerProcess) -> str:
        """A deeper check for the serving health watch ('' = `health_url`'s)."""
        ...

    def worker_url(self, w: WorkerProcess) -> str:
        """The URL a frontend registers ('' when workers register themselves)."""
        ...

    def prepare(self, cfg: RootConfig) -> dict[str, str]:
        """Files the driver creates before start (e.g. {"tiny_model_dir": path})."""
        ...

    def local_tokenizer(self, cfg: RootConfig) -> str:
        """A tokenizer directory benchmark clients can use instead of the model's ('' = none)."""
        ...

    def validate(self, cfg: RootConfig, slots: Sequence[WorkerSlot]) -> list[Issue]:
        """Rules of this engine on a placed, otherwise valid config."""
        ...

    def check_argvs(self, items: Sequence[tuple[RootConfig, Plan]]) -> list[list[Issue]]:
        """The engine's own parser on every worker argv of every `(cfg, plan)` in `items`
        (before submission): one list of issues per item, in order. Batched: a sweep of N
        points calls it once, so a parser that needs a subprocess (SGLang's, ~2 s to import)
        starts once, not N times; a single launch passes one item."""
        ...


def no_argv_check(items: Sequence[tuple[RootConfig, Plan]]) -> list[list[Issue]]:
    """`Engine.check_argvs` of an engine whose argv is not checked: no issues for any item."""
    return [[] for _ in items]


class EngineDefaults:
    """What an engine without its own behaviour there does: no registration URL (its workers join
    the frontend by themselves), nothing to prepare, the model's tokenizer, no extra rules.
    Engines inherit it and override what they have."""

    def worker_url(self, w: WorkerProcess) -> str:
        """None: the workers register through discovery."""
        return ""

    def serve_health_url(self, w: WorkerProcess) -> str:
        """None: the serving health watch asks `health_url` too."""
        return ""

    def prepare(self, cfg: RootConfig) -> dict[str, str]:
        """Nothing to create."""
        return {}

    def local_tokenizer(self, cfg: RootConfig) -> str:
        """None: benchmark clients use the model's tokenizer."""
        return ""

    def validate(self, cfg: RootConfig, slots: Sequence[WorkerSlot]) -> list[Issue]:
        """No rules beyond the shared ones."""
        return []


def dynamo_health_url(w: WorkerProcess) -> str:
    """Dynamo's system server `/health` (endpoint health of `generate`); rank 0 only."""
    return f"http://{w.ip}:{w.port('system')}/health" if w.rank == 0 else ""


def disagg_args(cfg: RootConfig, group: str) -> list[str]:
    """Role and KV transfer backend; nothing for aggregated workers."""
    if group == "aggregated":
        return []
    return [
        "--disaggregation-mode",
        group,
        "--disaggregation-transfer-backend",
        cfg.engine.transfer_backend,
    ]


def flag_if(flag: str, value: str) -> list[str]:
    """`[flag, value]` when value is set."""
    return [flag, value] if value else []


def multinode_args(w: WorkerProcess) -> list[str]:
    """torch.distributed rendezvous of a worker spanning nodes (rank 0 hosts it)."""
    if w.nnodes == 1:
        return []
    addr = f"{node_ip(w.leader_node)}:{w.leader_port('dist_init')}"
    return ["--dist-init-addr", addr, "--nnodes", str(w.nnodes), "--node-rank", str(w.rank)]


def parallel_args(w: WorkerProcess, tp_flag: str) -> list[str]:
    """TP, DP / EP sizes when above 1, and DP attention: with --enable-dp-attention SGLang runs
    the dp attention ranks inside the TP group (tp GPUs in all), without it --dp-size starts dp
    replicas of the TP group (tp x dp GPUs)."""
    args = [tp_flag, str(w.tp)]
    if w.dp > 1:
        args += ["--dp-size", str(w.dp)]
    if w.dp_attention:
        args += ["--enable-dp-attention"]
    if w.ep > 1:
        args += ["--ep-size", str(w.ep)]
    return args


def bootstrap_args(w: WorkerProcess) -> list[str]:
    """An explicit prefill bootstrap port: Dynamo otherwise picks a random one, SGLang 8998,
    which collides when several prefill workers share a node."""
    if w.group != "prefill":
        return []
    return ["--disaggregation-bootstrap-port", w.leader_port("bootstrap")]


def sglang_worker_ports(base: Sequence[str], group: str, rank: int, nnodes: int) -> list[str]:
    """`base` ports, minus what only the leader serves, plus bootstrap / dist-init ports."""
    names = list(base)
    if rank > 0:
        # Node ranks >= 1 serve no HTTP and register nothing: only the leader needs these.
        names = [n for n in names if n not in ("http", "system")]
    if group == "prefill" and rank == 0:
        names.append("bootstrap")  # SGLang's prefill bootstrap server (default 8998 collides)
    if nnodes > 1 and rank == 0:
        names.append("dist_init")  # torch.distributed rendezvous of a multi-node worker
    return names


def layered_args(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Merge `args` mappings, later layers winning (model -> engine -> role); a null (or false)
    value removes the flag an earlier layer set."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged.update(layer)
    return {k: v for k, v in merged.items() if v is not None and v is not False}


def _flag_value(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def args_argv(args: Mapping[str, Any]) -> list[str]:
    """`{"mem-fraction-static": 0.8, "disable-radix-cache": True, "cuda-graph-bs-decode": [1,
    2]}` -> `--mem-fraction-static 0.8 --disable-radix-cache --cuda-graph-bs-decode 1 2`."""
    out: list[str] = []
    for name, value in args.items():
        flag = f"--{name}"
        if value is True:
            out.append(flag)
        elif isinstance(value, list | tuple):
            out += [flag, *(_flag_value(v) for v in value)]
        else:
            out += [flag, _flag_value(value)]
    return out


def role_args(cfg: RootConfig, group: str) -> dict[str, Any]:
    """The layered `args` of a worker of `group`: model, then engine, then the role."""
    role = {"prefill": cfg.prefill, "decode": cfg.decode, "aggregated": cfg.aggregated}[group]
    return layered_args(cfg.model.args, cfg.engine.args, role.args)


def extra_args(cfg: RootConfig, w: WorkerProcess) -> list[str]:
    """User flags: the layered `args` mappings, then the verbatim `extra_args` lists of the
    model, the engine and the worker's group (a later copy of a flag wins in argparse)."""
    lists = list(cfg.model.extra_args) + list(cfg.engine.extra_args) + list(w.group_extra_args)
    return args_argv(role_args(cfg, w.group)) + lists


def sglang_host_env(w: WorkerProcess) -> dict[str, str]:
    """SGLang advertises get_local_ip_auto(): SGLANG_HOST_IP first, else a UDP "connect" to
    8.8.8.8, which fails without a default route and picks the wrong NIC on multi-homed nodes."""
    return {"PYTHONUNBUFFERED": "1", "SGLANG_HOST_IP": w.ip}


def dynamo_worker_env(w: WorkerProcess) -> dict[str, str]:
    """Addresses a Dynamo worker (dynamo.sglang or the mocker) advertises, and its system port."""
    env = {
        # Pin the advertised addresses of the request plane and ZMQ events to the node address.
        "DYN_TCP_RPC_HOST": w.ip,
        "DYN_EVENT_PLANE_HOST": w.ip,
    }
    if w.rank == 0:
        # The worker's system server: /health for our probe, and the model files the frontend
        # fetches (without it the model card holds local paths the head node cannot read).
        env["DYN_SYSTEM_HOST"] = w.ip
        env["DYN_SYSTEM_PORT"] = w.port("system")
        # Without health targets /health stays "notready" forever (Dynamo 1.6 default).
        env["DYN_SYSTEM_USE_ENDPOINT_HEALTH_STATUS"] = '["generate"]'
    return env


# Dynamo 1.6.1 reads DYN_SYSTEM_PORT as a signed 16-bit integer ("invalid value unsigned int
# `36820`, expected i16"): a worker given a higher system port dies at start.
DYNAMO_PORT_LIMIT = 32767
DYNAMO_PORT_REASON = "Dynamo reads DYN_SYSTEM_PORT as a 16-bit signed int"


def dynamo_planes(discovery: str) -> list[str]:
    """Frontend and workers must agree on every plane (Dynamo 1.6: etcd|file discovery, tcp, zmq)."""
    return ["--discovery-backend", discovery, "--request-plane", "tcp", "--event-plane", "zmq"]
