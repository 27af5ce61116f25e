"""Several workers on one GPU (`deployment.workers_per_gpu` > 1): each worker's planned part of
its GPUs' memory, the `--mem-fraction-static` that gives it that part, and the start order.

Why an order, and not only a fraction: SGLang measures the GPU memory free when it starts,
before loading its weights (`pre_model_load_memory`), and later sizes its KV pool as
`free_now - pre_model_load_memory * (1 - mem_fraction_static)` (SGLang 0.5.15
`model_runner.py` init_torch_distributed + `model_runner_kv_cache_mixin.py`
_profile_available_bytes; 0.5.21 `distributed/bootstrap.py` measure_pre_model_load_memory +
`mem_cache/kv_cache_configurator.py` _profile_available_bytes). So the fraction is of the memory
free at *its own* start, and everything resident when it profiles, another worker's weights and
KV cache included, is charged against it. Two workers started together both measure the whole
GPU; the first to profile takes its part and the second finds it gone (measured on an H100 with
0.25 each: decode 4.9 M tokens, prefill 4,160). Hence workers sharing a GPU start one after
another, each once the workers before it on its GPUs are healthy, and worker k gets its part of
what the earlier ones left:

    fraction_k = share_k / (1 - sum of the shares started before it on its GPUs)

so that fraction_k x free_at_start_k = share_k x M (M: the memory free before the first one;
a little less in practice, as the earlier workers' CUDA contexts and graphs sit outside their
shares: a later worker gets slightly less, never more). A worker restarted while the others run
sees all of them resident: its restart fraction is share / (1 - the others' shares).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from orchestrator.config.schema import RootConfig
from orchestrator.core.errors import Issue
from orchestrator.engines import ENGINES, get_engine
from orchestrator.plan.groups import active_groups, gpus_per_worker, group_config
from orchestrator.plan.placement import WorkerSlot

SlotKey = tuple[str, int]  # (group, worker_index)


@dataclass(frozen=True, slots=True, kw_only=True)
class GpuShare:
    """One shared worker's part of its GPUs and how it is started."""

    share: float  # of each of its GPUs' memory (free before any worker): weights + KV cache
    start_fraction: float  # --mem-fraction-static at its planned start
    restart_fraction: float  # the same, when it restarts while the others run
    start_after: tuple[SlotKey, ...]  # started (and healthy) before it on its GPUs


def slot_name(key: SlotKey) -> str:
    """Process name of a worker's rank 0 (shared workers are single-node)."""
    return f"{key[0]}-{key[1]}"


def _floor3(value: float) -> float:
    """Three decimals, rounded down: a worker never gets more than planned."""
    return math.floor(value * 1000 + 1e-9) / 1000


def _residents(slots: Sequence[WorkerSlot]) -> dict[tuple[int, int], list[SlotKey]]:
    """The workers on each (node, GPU), in placement (= start) order."""
    out: dict[tuple[int, int], list[SlotKey]] = {}
    for slot in slots:
        for node, gpus in slot.ranks:
            for gpu in gpus:
                out.setdefault((node, gpu), []).append((slot.group, slot.worker_index))
    return out


def gpu_shares(
    slots: Sequence[WorkerSlot], weights: Mapping[str, float], limit: float
) -> dict[SlotKey, GpuShare]:
    """Shares of the workers whose GPUs hold more than one worker: `limit` of each GPU split by
    the groups' `weights` (a worker on several GPUs takes its smallest part of any of them)."""
    residents = _residents(slots)
    parts: dict[SlotKey, float] = {}
    gpus_of: dict[SlotKey, list[tuple[int, int]]] = {}
    for where, keys in residents.items():
        total = sum(weights[g] for g, _ in keys)
        for key in keys:
            part = limit * weights[key[0]] / total
            parts[key] = min(parts.get(key, part), part)
            gpus_of.setdefault(key, []).append(where)
    out: dict[SlotKey, GpuShare] = {}
    for key, places in gpus_of.items():
        if all(len(residents[p]) == 1 for p in places):
            continue  # alone on its GPUs: the engine's own default
        out[key] = _share(key, parts, [residents[p] for p in places])
    return out


def _share(key: SlotKey, parts: Mapping[SlotKey, float], gpus: list[list[SlotKey]]) -> GpuShare:
    # SGLang with TP > 1 takes the smallest free memory of its ranks: the busiest GPU counts.
    before = max(sum(parts[k] for k in keys[: keys.index(key)]) for keys in gpus)
    others = max(sum(parts[k] for k in keys if k != key) for keys in gpus)
    earlier = dict.fromkeys(k for keys in gpus for k in keys[: keys.index(key)])  # start order
    share = _floor3(parts[key])
    return GpuShare(
        share=share,
        start_fraction=_floor3(parts[key] / (1 - before)),
        restart_fraction=_floor3(parts[key] / (1 - others)),
        start_after=tuple(earlier),
    )


def plan_shares(cfg: RootConfig, slots: Sequence[WorkerSlot]) -> dict[SlotKey, GpuShare]:
    """`gpu_shares` of a config's placed workers (none unless workers_per_gpu > 1)."""
    if cfg.deployment.workers_per_gpu <= 1:
        return {}
    weights = {g: group_config(cfg, g).memory_weight for g in active_groups(cfg)}
    return gpu_shares(slots, weights, cfg.deployment.shared_memory_fraction)


def sharing_issues(cfg: RootConfig) -> list[Issue]:
    """What GPU sharing cannot do: every problem, each with its key, value and fix."""
    d = cfg.deployment
    if d.workers_per_gpu < 1:
        return [
            Issue(
                "deployment.workers_per_gpu",
                str(d.workers_per_gpu),
                "must be at least 1",
                "set deployment.workers_per_gpu=1 (a GPU per worker) or 2 and more",
            )
        ]
    if d.workers_per_gpu == 1:
        return []
    issues = []
    if not 0 < d.shared_memory_fraction < 1:
        issues.append(
            Issue(
                "deployment.shared_memory_fraction",
                f"{d.shared_memory_fraction:g}",
                "is the fraction of a shared GPU's memory for all its workers' weights "
                "and KV caches together",
                "use a value in (0, 1), e.g. 0.8",
            )
        )
    groups = active_groups(cfg) if d.mode in ("disaggregated", "aggregated") else ()
    for group in groups:
        issues += _group_issues(cfg, group)
    issues += _memory_flag_conflicts(cfg, groups)
    sizes = {g: gpus_per_worker(cfg, g) for g in groups if group_config(cfg, g).workers}
    if len(set(sizes.values())) > 1:
        found = ", ".join(f"{g}={n}" for g, n in sizes.items())
        issues.append(
            Issue(
                "deployment.workers_per_gpu",
                f"{d.workers_per_gpu} (GPUs per worker: {found})",
                "workers sharing GPUs must all use the same number of GPUs "
                "(each GPU's memory is split between the same workers)",
                "give prefill and decode the same tp x dp, or deployment.workers_per_gpu=1",
            )
        )
    return issues


def _group_issues(cfg: RootConfig, group: str) -> list[Issue]:
    g, per_node = group_config(cfg, group), max(cfg.cluster.gpus_per_node, 1)
    issues = []
    if g.memory_weight <= 0:
        issues.append(
            Issue(
                f"{group}.memory_weight",
                f"{g.memory_weight:g}",
                "must be positive",
                f"set {group}.memory_weight=1 (an equal part of a shared GPU)",
            )
        )
    if gpus_per_worker(cfg, group) > per_node:
        issues.append(
            Issue(
                f"{group}.tp",
                str(gpus_per_worker(cfg, group)),
                f"a worker sharing GPUs must fit on one node (cluster.gpus_per_node="
                f"{cfg.cluster.gpus_per_node}): multi-node workers do not share",
                f"use at most {per_node} GPUs per {group} worker, or deployment.workers_per_gpu=1",
            )
        )
    return issues


def _memory_flag_conflicts(cfg: RootConfig, groups: Sequence[str]) -> list[Issue]:
    """A user's own memory flag would replace the planned split (argparse: the last copy wins)
    and, being a fraction of the memory free at each start, starve the later worker."""
    flag = get_engine(cfg.engine.kind).memory_flag if cfg.engine.kind in ENGINES else ""
    if not flag:
        return []  # an engine that holds no GPU memory (the mocker)
    layers = [
        ("model", cfg.model.args, cfg.model.extra_args),
        ("engine", cfg.engine.args, cfg.engine.extra_args),
    ]
    layers += [(g, group_config(cfg, g).args, group_config(cfg, g).extra_args) for g in groups]
    found = [
        (f"{where}.args.{flag}", str(args[flag]))
        for where, args, _ in layers
        if args.get(flag) not in (None, False)
    ]
    found += [
        (f"{where}.extra_args", arg)
        for where, _, extra in layers
        for arg in extra
        if arg.split("=")[0] == f"--{flag}"
    ]
    return [
        Issue(
            key,
            value,
            f"conflicts with deployment.workers_per_gpu="
            f"{cfg.deployment.workers_per_gpu}: the plan sets each shared worker's --{flag} "
            "from its part of the GPU",
            "remove it; split the GPU with <group>.memory_weight "
            "and deployment.shared_memory_fraction",
        )
        for key, value in found
    ]
