"""Worker groups of a config: which are active, their TP and GPUs, the deployment's name, and
where their workers are placed (pure)."""

from __future__ import annotations

from orchestrator.config.schema import RootConfig, WorkerGroupConfig
from orchestrator.plan.placement import GroupShape, WorkerSlot, place_workers

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


def mode_gpus(cfg: RootConfig, group: str) -> int:
    """GPUs one worker of `group` needs by its parallel mode: TP with DP attention (the dp
    attention ranks live inside the TP group), else TP x DP (dp replicas of the TP group)."""
    g = group_config(cfg, group)
    return tp_of(cfg, group) * (1 if g.dp_attention else g.dp)


def gpus_per_worker(cfg: RootConfig, group: str) -> int:
    """GPUs of one worker: explicit (validation makes it equal `mode_gpus`), else `mode_gpus`."""
    return group_config(cfg, group).gpus_per_worker or mode_gpus(cfg, group)


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
        workers_per_gpu=cfg.deployment.workers_per_gpu,
    )
