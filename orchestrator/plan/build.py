"""config -> plan: pure functions, no I/O. The plan is built once per launch, saved as plan.json
and run as it is by the in-allocation driver, which only binds the placeholders ({node_ip:N},
{port:N}, {run_dir}, ...) with what the job knows (`placeholders.bind_plan`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

from orchestrator.bench.spec import benchmark_plan
from orchestrator.config.schema import RootConfig
from orchestrator.engines import Engine, get_engine
from orchestrator.engines.base import WorkerProcess
from orchestrator.frontends import Head, get_frontend
from orchestrator.frontends.dynamo_planner import autoscale_plan, with_planner
from orchestrator.plan.fetch import fetch_spec, hf_env
from orchestrator.plan.groups import (
    active_groups,
    deployment_name,
    gpus_per_worker,
    group_config,
    mode_gpus,
    place,
    tp_of,
)
from orchestrator.plan.model import (
    TIER_WORKER,
    HealthProbe,
    MetricsPlan,
    Plan,
    Process,
    Readiness,
    ServePlan,
    SlurmRequest,
    WorkerJobPlan,
)
from orchestrator.plan.placeholders import JOB_ID, RUN_DIR, Bindings, bind_text
from orchestrator.plan.placement import GroupShape, WorkerSlot, nodes_used, place_workers
from orchestrator.plan.ports import PortAllocator
from orchestrator.plan.preflight import offline_env, preflight_checks
from orchestrator.plan.restart import restart_policy
from orchestrator.plan.sharing import GpuShare, plan_shares, slot_name
from orchestrator.plan.stage import stage_spec

__all__ = [
    "active_groups",
    "attached_plan",
    "build_plan",
    "deployment_name",
    "gpus_requested",
    "gpus_per_worker",
    "here_plan",
    "mode_gpus",
    "group_config",
    "place",
    "slurm_request",
    "tp_of",
]


def build_plan(cfg: RootConfig) -> Plan:
    """The complete plan of a validated config, for port block 0 (see `Plan`)."""
    plan = here_plan(cfg) if cfg.frontend.placed_here else deployment_plan(cfg)
    return dataclasses.replace(
        plan,
        benchmark=benchmark_plan(cfg, plan),
        metrics=metrics_plan(cfg),
        autoscale=autoscale_plan(cfg),
    )


def metrics_plan(cfg: RootConfig) -> MetricsPlan | None:
    """Scraping settings (None: metrics.enabled=false)."""
    m = cfg.metrics
    if not m.enabled:
        return None
    return MetricsPlan(interval_s=m.interval_s, max_bytes=int(m.max_mb * 1_000_000))


def deployment_plan(cfg: RootConfig) -> Plan:
    """The plan without its benchmark (what the benchmark's plan hash is computed on)."""
    slots = place(cfg)
    num_nodes = nodes_used(slots)
    ports = PortAllocator(cfg.cluster.port_base, 0)
    head = with_planner(cfg, get_frontend(cfg.frontend.kind).head(cfg, ports, num_nodes))
    engine = get_engine(cfg.engine.kind)
    workers = _placed_workers(cfg, engine, slots, ports, head)
    return Plan(
        name=deployment_name(cfg),
        num_nodes=num_nodes,
        gpus_per_node=cfg.cluster.gpus_per_node,
        port_base=cfg.cluster.port_base,
        port_job_blocks=cfg.cluster.port_job_blocks,
        port_offset=0,
        processes=_identified(cfg, head.processes + workers),
        readiness=_readiness(cfg, _frontend_url(head), _replica_urls(head)),
        slurm=slurm_request(cfg, num_nodes, gpus_per_node=gpus_requested(cfg, slots)),
        ip_source=cfg.cluster.ip_source,
        network_interface=cfg.cluster.network_interface,
        stop_grace_s=cfg.launcher.stop_grace_s,
        prepare=engine.prepare(cfg),
        preflight=preflight_checks(cfg, slots, num_nodes, loads_model=engine.loads_model),
        workers_per_gpu=cfg.deployment.workers_per_gpu,
        fetch=fetch_spec(cfg),
        stage=stage_spec(cfg, tuple(sorted({n for s in slots for n, _ in s.ranks}))),
    )


def attached_plan(
    cfg: RootConfig,
    first: Mapping[str, int],
    worker_env: Mapping[str, str],
    *,
    frontend_url: str,
    job: WorkerJobPlan,
) -> Plan:
    """The plan of an attached job (`ctl scale`): only the workers of `cfg` from index
    `first[group]` on (named decode-1, decode-2, ... after the running ones), on nodes of their
    own, with no frontend or discovery service: they join the running run's frontend through
    `worker_env` (its real discovery addresses) and `frontend_url`."""
    shapes = [
        GroupShape(
            group=g,
            workers=group_config(cfg, g).workers - first.get(g, 0),
            gpus_per_worker=gpus_per_worker(cfg, g),
        )
        for g in active_groups(cfg)
        if group_config(cfg, g).workers > first.get(g, 0)
    ]
    placed = place_workers(
        shapes,
        gpus_per_node=cfg.cluster.gpus_per_node,
        separate_groups=cfg.deployment.separate_nodes,
        workers_per_gpu=cfg.deployment.workers_per_gpu,
    )
    slots = [
        dataclasses.replace(s, worker_index=s.worker_index + first.get(s.group, 0)) for s in placed
    ]
    num_nodes = nodes_used(slots)
    ports = PortAllocator(cfg.cluster.port_base, 0)
    # The head is planned only for its discovery kind and env keys; its processes run elsewhere.
    planned = get_frontend(cfg.frontend.kind).head(cfg, PortAllocator(cfg.cluster.port_base, 0), 1)
    head = Head(
        processes=[],
        worker_env={k: worker_env[k] for k in planned.worker_env if k in worker_env},
        discovery=planned.discovery,
    )
    engine = get_engine(cfg.engine.kind)
    workers = _placed_workers(cfg, engine, slots, ports, head)
    return Plan(
        name=f"{deployment_name(cfg)}-attached",
        num_nodes=num_nodes,
        gpus_per_node=cfg.cluster.gpus_per_node,
        port_base=cfg.cluster.port_base,
        port_job_blocks=cfg.cluster.port_job_blocks,
        port_offset=0,
        processes=_identified(cfg, workers),
        # The frontend's gate counts every worker it serves with: the run's and these (cfg's totals).
        readiness=_readiness(cfg, frontend_url),
        slurm=dataclasses.replace(
            slurm_request(cfg, num_nodes, gpus_per_node=gpus_requested(cfg, slots)),
            job_name=f"{slurm_request(cfg, 1).job_name}-attached",
        ),
        ip_source=cfg.cluster.ip_source,
        network_interface=cfg.cluster.network_interface,
        stop_grace_s=cfg.launcher.stop_grace_s,
        prepare=engine.prepare(cfg),
        preflight=preflight_checks(cfg, slots, num_nodes, loads_model=engine.loads_model),
        job=job,
        workers_per_gpu=cfg.deployment.workers_per_gpu,
    )


def here_plan(cfg: RootConfig) -> Plan:
    """frontend.placement=here: the frontend and its discovery on this host (node 0, address
    frontend.host, resolved at launch), and the plan of one worker job that joins them. The
    worker plan is made with the head's real addresses: its own {node_ip:N} are its nodes."""
    ports = PortAllocator(cfg.cluster.port_base, 0)
    head = with_planner(cfg, get_frontend(cfg.frontend.kind).head(cfg, ports, 1))
    here = Bindings(
        node_ips=(cfg.frontend.host,),
        node_hosts=(cfg.frontend.host,),
        job_id=JOB_ID,
        run_dir=RUN_DIR,
    )
    url = bind_text(_frontend_url(head), here)
    # The template of each worker job: the run it joins is set per job (runtime/workerjobs.py).
    job = WorkerJobPlan(
        heartbeat_timeout_s=cfg.launcher.heartbeat_timeout_s, hold_s=cfg.serve.signal_hold_s
    )
    workers = attached_plan(
        cfg,
        {},
        {k: bind_text(v, here) for k, v in head.worker_env.items()},
        frontend_url=url,
        job=job,
    )
    s = cfg.serve
    serve = ServePlan(
        host=cfg.frontend.host,
        workers=workers,
        rollover=s.rollover,
        lead_s=s.rollover_lead_min * 60,
        margin_s=s.rollover_margin_s,
        attempts=s.rollover_attempts,
        signal_before_limit_s=cfg.launcher.signal_before_limit_s,
    )
    return Plan(
        name=deployment_name(cfg),
        num_nodes=1,
        gpus_per_node=cfg.cluster.gpus_per_node,
        port_base=cfg.cluster.port_base,
        port_job_blocks=cfg.cluster.port_job_blocks,
        port_offset=0,
        processes=_identified(cfg, head.processes),
        readiness=_readiness(cfg, _frontend_url(head), _replica_urls(head)),
        slurm=slurm_request(cfg, 1, gpus_per_node=0),
        ip_source=cfg.cluster.ip_source,
        network_interface=cfg.cluster.network_interface,
        stop_grace_s=cfg.launcher.stop_grace_s,
        prepare=get_engine(cfg.engine.kind).prepare(cfg),
        serve=serve,
    )


def _identified(cfg: RootConfig, processes: Iterable[Process]) -> tuple[Process, ...]:
    """`processes` with their identity env and their group's restart policy (every plan's last step)."""
    return tuple(
        dataclasses.replace(_with_identity(cfg, p), restart=restart_policy(cfg, p.group))
        for p in processes
    )


def _with_identity(cfg: RootConfig, proc: Process) -> Process:
    """Every process knows its run and its name (log prefixes, cleanup tools, tests); the
    frontend and the workers get the offline environment (orchestrator.plan.preflight)."""
    offline = {**offline_env(cfg), **hf_env(cfg)} if proc.role not in ("infra",) else {}
    env = {
        **offline,
        **proc.env,
        "ORCHESTRATOR_RUN_DIR": RUN_DIR,
        "ORCHESTRATOR_PROCESS": proc.name,
    }
    return dataclasses.replace(proc, env=env)


def _placed_workers(
    cfg: RootConfig, engine: Engine, slots: list[WorkerSlot], ports: PortAllocator, head: Head
) -> list[Process]:
    """Every placed worker's processes; workers sharing GPUs get their part of the memory."""
    shares = plan_shares(cfg, slots)
    procs = [p for slot in slots for p in _worker_processes(cfg, engine, slot, ports, head)]
    return [_shared(p, shares.get((p.group, p.worker_index)), engine.memory_flag) for p in procs]


def _shared(proc: Process, share: GpuShare | None, flag: str) -> Process:
    """`proc` with its GPU share (orchestrator.plan.sharing): the memory flag for its planned
    start (after the workers before it on its GPUs), another for a restart while they run.
    An engine without GPU memory (the mocker) shares GPUs without either."""
    if share is None or not flag:
        return proc
    restart = share.restart_fraction
    return dataclasses.replace(
        proc,
        argv=(*proc.argv, f"--{flag}", f"{share.start_fraction:g}"),
        gpu_share=share.share,
        start_after=tuple(slot_name(k) for k in share.start_after),
        restart_args=(f"--{flag}", f"{restart:g}") if restart != share.start_fraction else (),
    )


def _worker_processes(
    cfg: RootConfig, engine: Engine, slot: WorkerSlot, ports: PortAllocator, head: Head
) -> list[Process]:
    g = group_config(cfg, slot.group)
    nnodes = len(slot.ranks)
    procs: list[Process] = []
    leader_ports: dict[str, int] = {}
    for rank, (node, gpus) in enumerate(slot.ranks):
        own = ports.allocate(node, engine.worker_ports(slot.group, rank, nnodes))
        leader_ports = own if rank == 0 else leader_ports
        w = WorkerProcess(
            group=slot.group,
            tp=tp_of(cfg, slot.group),
            dp=g.dp,
            ep=g.ep,
            dp_attention=g.dp_attention,
            node_index=node,
            rank=rank,
            nnodes=nnodes,
            leader_node=slot.ranks[0][0],
            ports=own,
            leader_ports=leader_ports,
            group_extra_args=tuple(g.extra_args),
        )
        procs.append(_worker_process(cfg, engine, slot, w, gpus, head))
    return procs


def _worker_process(
    cfg: RootConfig,
    engine: Engine,
    slot: WorkerSlot,
    w: WorkerProcess,
    gpus: tuple[int, ...],
    head: Head,
) -> Process:
    env = {**head.worker_env, "CUDA_VISIBLE_DEVICES": ",".join(str(g) for g in gpus)}
    env.update(engine.env(cfg, w))
    env.update({**cfg.model.env, **cfg.engine.env, **group_config(cfg, slot.group).env})
    name = f"{slot.group}-{slot.worker_index}" + (f"-rank{w.rank}" if w.rank else "")
    health = engine.health_url(w)
    probe = HealthProbe(url=health, serve_url=engine.serve_health_url(w)) if health else None
    return Process(
        name=name,
        role="worker" if slot.group == "aggregated" else slot.group,  # type: ignore[arg-type]
        group=slot.group,
        worker_index=slot.worker_index,
        rank=w.rank,
        node_index=w.node_index,
        gpus=gpus,
        ports=dict(w.ports),
        env=env,
        argv=tuple(engine.argv(cfg, w, head.discovery)),
        tier=TIER_WORKER,
        health=probe,
        url=engine.worker_url(w),
        bootstrap_port=w.ports.get("bootstrap", 0),
    )


def _frontend_url(head: Head) -> str:
    """The URL users get as planned (its port may be a `{port:N}` of the job's block): the
    proxy's in front of a frontend pair, else the frontend's."""
    return head.url or next(p.url for p in head.processes if p.role == "frontend")


def _replica_urls(head: Head) -> tuple[str, ...]:
    """Each frontend's own URL when a proxy serves them (the gate asks every one)."""
    return tuple(p.url for p in head.processes if p.role == "frontend") if head.url else ()


def _readiness(cfg: RootConfig, frontend_url: str, replica_urls: tuple[str, ...] = ()) -> Readiness:
    groups = active_groups(cfg)
    expected = {
        ("worker" if g == "aggregated" else g): group_config(cfg, g).workers for g in groups
    }
    r = cfg.readiness
    return Readiness(
        frontend_kind=cfg.frontend.kind,
        frontend_url=frontend_url,
        ready_path=get_frontend(cfg.frontend.kind).ready_path(cfg),
        model=cfg.model.served_name or cfg.model.path,
        expected=expected,
        timeout_s=r.timeout_s,
        interval_s=r.interval_s,
        canary=r.canary,
        canary_max_tokens=r.canary_max_tokens,
        serve_failures=r.serve_failures,
        serve_check_s=r.serve_check_s,
        replica_urls=replica_urls,
    )


def gpus_requested(cfg: RootConfig, slots: list[WorkerSlot]) -> int:
    """GPUs per node to ask Slurm for. Exclusive cluster: the whole node. Otherwise only what
    the plan uses, so that small deployments can share a node: `--gpus-per-node` (and
    `--gres=gpu:N`) asks the same count on every node, so an uneven layout (8 GPUs on node 0,
    4 on node 1) asks the most any node uses (8 on both)."""
    if cfg.cluster.exclusive:
        return cfg.cluster.gpus_per_node
    used: dict[int, set[int]] = {}
    for slot in slots:
        for node, gpus in slot.ranks:
            used.setdefault(node, set()).update(gpus)  # a GPU shared by workers counts once
    return max((len(g) for g in used.values()), default=0)


def slurm_request(
    cfg: RootConfig, num_nodes: int, *, gpus_per_node: int | None = None
) -> SlurmRequest:
    """The allocation for `num_nodes` nodes with `gpus_per_node` GPUs each (default: the
    node's; validation checks its #SBATCH values)."""
    c = cfg.cluster
    return SlurmRequest(
        job_name=cfg.launcher.job_name or f"orch-{deployment_name(cfg)}",
        nodes=num_nodes,
        gpus_per_node=c.gpus_per_node if gpus_per_node is None else gpus_per_node,
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
        launch_per=c.launch_per,
    )
