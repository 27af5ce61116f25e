"""config -> plan: pure functions, no I/O. The driver calls `build_plan` again with the job's port
offset; placeholders ({node_ip:N}, {run_dir}, ...) are bound afterwards (`placeholders.bind_plan`)."""

from __future__ import annotations

import dataclasses

from orchestrator.config.schema import RootConfig, WorkerGroupConfig
from orchestrator.plan import engines, frontends
from orchestrator.plan.model import TIER_WORKER, HealthProbe, Plan, Process, Readiness, SlurmRequest
from orchestrator.plan.placeholders import RUN_DIR, node_ip
from orchestrator.plan.placement import GroupShape, WorkerSlot, nodes_used, place_workers
from orchestrator.plan.ports import PortAllocator
from orchestrator.plan.restart import restart_policy

# Decode first: the reference deployment puts decode on GPUs 0-3 and prefill on 4-7.
DISAGG_ORDER = ("decode", "prefill")


def group_config(cfg: RootConfig, group: str) -> WorkerGroupConfig:
    """The WorkerGroupConfig of `group` (prefill | decode | aggregated)."""
    return {"prefill": cfg.prefill, "decode": cfg.decode, "aggregated": cfg.aggregated}[group]


def active_groups(cfg: RootConfig) -> tuple[str, ...]:
    """Groups that run workers, in placement order."""
    return ("aggregated",) if cfg.deployment.mode == "aggregated" else DISAGG_ORDER


def tp_of(cfg: RootConfig, group: str) -> int:
    """Tensor parallel size of one worker of `group` (group value, else the model default)."""
    return group_config(cfg, group).tp or cfg.model.tp


def gpus_per_worker(cfg: RootConfig, group: str) -> int:
    """GPUs of one worker: explicit, else TP x DP (SGLang without DP attention)."""
    g = group_config(cfg, group)
    return g.gpus_per_worker or tp_of(cfg, group) * g.dp


def deployment_name(cfg: RootConfig) -> str:
    """Readable name of the topology, e.g. gpt-oss-120b-p1d1."""
    if cfg.name:
        return cfg.name
    model = cfg.model.name or cfg.model.path.rstrip("/").split("/")[-1] or "model"
    if cfg.deployment.mode == "aggregated":
        return f"{model}-a{cfg.aggregated.workers}"
    return f"{model}-p{cfg.prefill.workers}d{cfg.decode.workers}"


def place(cfg: RootConfig) -> list[WorkerSlot]:
    """Worker placement for the configured groups."""
    shapes = [
        GroupShape(
            group=g, workers=group_config(cfg, g).workers, gpus_per_worker=gpus_per_worker(cfg, g)
        )
        for g in active_groups(cfg)
    ]
    return place_workers(
        shapes,
        gpus_per_node=cfg.cluster.gpus_per_node,
        separate_groups=cfg.deployment.separate_nodes,
    )


def build_plan(cfg: RootConfig, *, port_offset: int = 0) -> Plan:
    """The complete plan of a validated config. `port_offset` is the job's port block."""
    slots = place(cfg)
    num_nodes = nodes_used(slots)
    ports = PortAllocator(cfg.cluster.port_base, port_offset)
    head, discovery = _head_processes(cfg, ports, num_nodes)
    workers = [p for slot in slots for p in _worker_processes(cfg, slot, ports, discovery)]
    return Plan(
        name=deployment_name(cfg),
        num_nodes=num_nodes,
        gpus_per_node=cfg.cluster.gpus_per_node,
        port_offset=port_offset,
        processes=tuple(
            dataclasses.replace(_with_identity(p), restart=restart_policy(cfg, p.group))
            for p in head + workers
        ),
        readiness=_readiness(cfg),
        slurm=slurm_request(cfg, num_nodes),
        ip_source=cfg.cluster.ip_source,
        network_interface=cfg.cluster.network_interface,
        stop_grace_s=cfg.launcher.stop_grace_s,
        prepare=_prepare(cfg),
    )


def _with_identity(proc: Process) -> Process:
    """Every process knows its run and its name (log prefixes, cleanup tools, tests)."""
    env = {**proc.env, "ORCHESTRATOR_RUN_DIR": RUN_DIR, "ORCHESTRATOR_PROCESS": proc.name}
    return dataclasses.replace(proc, env=env)


def _head_processes(
    cfg: RootConfig, ports: PortAllocator, num_nodes: int
) -> tuple[list[Process], dict[str, str]]:
    """Infra + frontend on node 0, and the discovery env workers need (Dynamo only)."""
    if cfg.frontend.kind == "sglang_router":
        disagg = cfg.deployment.mode == "disaggregated"
        return [frontends.router_process(cfg, ports, disagg)], {}
    backend = frontends.discovery_backend(cfg, num_nodes)
    head: list[Process] = []
    etcd_port = 0
    if backend == "etcd":
        etcd = frontends.etcd_process(cfg, ports)
        head.append(etcd)
        etcd_port = etcd.ports["client"]
    env = frontends.discovery_env(cfg, backend, etcd_port)
    head.append(frontends.dynamo_frontend_process(cfg, ports, env))
    return head, env


def _worker_processes(
    cfg: RootConfig, slot: WorkerSlot, ports: PortAllocator, discovery: dict[str, str]
) -> list[Process]:
    g = group_config(cfg, slot.group)
    kind = cfg.engine.kind
    nnodes = len(slot.ranks)
    leader_node = slot.ranks[0][0]
    procs: list[Process] = []
    leader_ports: dict[str, int] = {}
    for rank, (node, gpus) in enumerate(slot.ranks):
        own = ports.allocate(node, engines.worker_ports(kind, slot.group, rank, nnodes))
        leader_ports = own if rank == 0 else leader_ports
        w = engines.WorkerProcess(
            group=slot.group, tp=tp_of(cfg, slot.group), dp=g.dp, ep=g.ep, node_index=node,
            rank=rank, nnodes=nnodes, leader_node=leader_node, ports=own,
            leader_ports=leader_ports, group_extra_args=tuple(g.extra_args),
        )  # fmt: skip
        procs.append(_worker_process(cfg, slot, w, gpus, discovery))
    return procs


def _worker_process(
    cfg: RootConfig, slot: WorkerSlot, w: engines.WorkerProcess, gpus: tuple[int, ...],
    discovery: dict[str, str],
) -> Process:  # fmt: skip
    kind = cfg.engine.kind
    backend = discovery.get("DYN_DISCOVERY_BACKEND", "")
    if kind == "dynamo_sglang":
        argv = engines.dynamo_sglang_argv(cfg, w, backend)
    elif kind == "mocker":
        argv = engines.mocker_argv(cfg, w, backend)
    else:
        argv = engines.sglang_argv(cfg, w)
    env = {**discovery, **engines.engine_env(cfg, w, gpus), **group_config(cfg, slot.group).env}
    name = f"{slot.group}-{slot.worker_index}" + (f"-rank{w.rank}" if w.rank else "")
    ip = node_ip(w.node_index)
    health_port = w.ports.get("http") or w.ports.get("system")
    health = HealthProbe(url=f"http://{ip}:{health_port}/health") if w.rank == 0 else None
    url = f"http://{ip}:{w.ports['http']}" if kind == "sglang" and w.rank == 0 else ""
    return Process(
        name=name, role="worker" if slot.group == "aggregated" else slot.group,  # type: ignore[arg-type]
        group=slot.group, worker_index=slot.worker_index, rank=w.rank, node_index=w.node_index,
        gpus=gpus, ports=dict(w.ports), env=env, argv=tuple(argv), tier=TIER_WORKER, health=health,
        url=url, bootstrap_port=w.ports.get("bootstrap", 0),
    )  # fmt: skip


def _readiness(cfg: RootConfig) -> Readiness:
    expected = {
        ("worker" if g == "aggregated" else g): group_config(cfg, g).workers
        for g in active_groups(cfg)
    }
    r = cfg.readiness
    return Readiness(
        frontend_kind=cfg.frontend.kind,
        frontend_url=f"http://{node_ip(0)}:{cfg.frontend.http_port}",
        ready_path=frontends.ready_path(cfg),
        model=cfg.model.served_name or cfg.model.path,
        expected=expected,
        timeout_s=r.timeout_s,
        interval_s=r.interval_s,
        canary=r.canary,
        canary_max_tokens=r.canary_max_tokens,
        serve_failures=r.serve_failures,
        serve_check_s=r.serve_check_s,
    )


def slurm_request(cfg: RootConfig, num_nodes: int) -> SlurmRequest:
    """The allocation for `num_nodes` nodes (validation checks its #SBATCH values)."""
    c = cfg.cluster
    return SlurmRequest(
        job_name=cfg.launcher.job_name or f"orch-{deployment_name(cfg)}",
        nodes=num_nodes,
        gpus_per_node=c.gpus_per_node,
        time_limit_min=c.time_limit_min,
        partition=c.partition,
        account=c.account,
        qos=c.qos,
        exclusive=c.exclusive,
        gpu_directive=c.gpu_directive,
        signal_before_limit_s=cfg.launcher.signal_before_limit_s,
        sbatch_extra=tuple(c.sbatch_extra),
        srun_extra=tuple(c.srun_extra),
        setup=tuple(c.setup),
        container_image=c.container_image,
        container_mounts=tuple(c.container_mounts),
    )


def _prepare(cfg: RootConfig) -> dict[str, str]:
    """Files the driver creates before starting processes."""
    if cfg.engine.kind == "mocker" and not cfg.engine.mocker_model_dir:
        return {"tiny_model_dir": engines.mocker_model_dir(cfg)}
    return {}
