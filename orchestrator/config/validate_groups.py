"""The shape of a deployment's worker groups: counts, TP/DP/EP and GPU fit per group, equal TP
where the engines need it, and (once everything else is sane) the topology against the cluster."""

from __future__ import annotations

from orchestrator.config.schema import RootConfig
from orchestrator.core.errors import Issue
from orchestrator.engines import get_engine
from orchestrator.launchers import runs_on_one_machine
from orchestrator.plan import build
from orchestrator.plan.consistency import role_consistency

DEPLOYMENT_MODES = ("disaggregated", "aggregated")


def group_issues(cfg: RootConfig) -> list[Issue]:
    active = build.active_groups(cfg) if cfg.deployment.mode in DEPLOYMENT_MODES else ()
    issues: list[Issue] = []
    for group in ("prefill", "decode", "aggregated"):
        g = build.group_config(cfg, group)
        if group not in active:
            if g.workers and cfg.deployment.mode in DEPLOYMENT_MODES:
                issues.append(
                    Issue(
                        f"{group}.workers",
                        str(g.workers),
                        f"not used in deployment.mode={cfg.deployment.mode}",
                        f"set {group}.workers=0 or pick the other deployment",
                    )
                )
            continue
        issues += _group_shape(cfg, group)
    if cfg.deployment.mode == "disaggregated" and min(build.tp_of(cfg, g) for g in active) >= 1:
        issues += _equal_tp(cfg)
    return issues


def _group_shape(cfg: RootConfig, group: str) -> list[Issue]:
    g = build.group_config(cfg, group)
    issues = []
    if g.workers < 1:
        issues.append(
            Issue(
                f"{group}.workers",
                str(g.workers),
                f"a {cfg.deployment.mode} deployment needs at least one {group} worker",
                f"set {group}.workers=1 or more",
            )
        )
    for key, value in (("tp", build.tp_of(cfg, group)), ("dp", g.dp), ("ep", g.ep)):
        if value < 1:
            issues.append(
                Issue(f"{group}.{key}", str(value), "must be at least 1", f"set {group}.{key}=1")
            )
    if g.gpus_per_worker < 0:
        issues.append(
            Issue(
                f"{group}.gpus_per_worker",
                str(g.gpus_per_worker),
                "must not be negative",
                f"set {group}.gpus_per_worker=0 to derive it from tp x dp",
            )
        )
    if issues or cfg.cluster.gpus_per_node < 1:
        return issues
    return _gpu_fit(cfg, group)


def _gpu_fit(cfg: RootConfig, group: str) -> list[Issue]:
    parallel = _parallel_mode(cfg, group)
    if parallel:
        return parallel
    gpus, per_node = build.gpus_per_worker(cfg, group), cfg.cluster.gpus_per_node
    key = f"{group}.gpus_per_worker"
    if gpus < per_node and per_node % gpus:
        divisors = ", ".join(str(d) for d in range(1, per_node + 1) if per_node % d == 0)
        return [
            Issue(
                key,
                str(gpus),
                f"must divide cluster.gpus_per_node={per_node}",
                f"use {divisors} GPUs per worker (via {group}.tp / {group}.dp)",
            )
        ]
    if gpus > per_node and gpus % per_node:
        return [
            Issue(
                key,
                str(gpus),
                f"spans nodes but is not a multiple of cluster.gpus_per_node={per_node}",
                f"use {per_node * (gpus // per_node + 1)} or {per_node * (gpus // per_node)}",
            )
        ]
    return []


def _parallel_mode(cfg: RootConfig, group: str) -> list[Issue]:
    """DP attention splits the TP group (dp divides tp; GPUs = tp), DP replicas multiply it
    (GPUs = tp x dp); EP shards the experts over the worker's GPUs (ep divides them)."""
    g, tp = build.group_config(cfg, group), build.tp_of(cfg, group)
    need = build.mode_gpus(cfg, group)
    mode = (
        f"{group}.tp={tp} with {group}.dp_attention=true"
        if g.dp_attention
        else f"{group}.tp={tp} x {group}.dp={g.dp}"
    )
    if g.dp_attention and tp % g.dp:
        return [
            Issue(
                f"{group}.dp",
                str(g.dp),
                f"with {group}.dp_attention=true dp must divide "
                f"{group}.tp={tp} (SGLang splits the TP group into dp attention ranks)",
                f"set {group}.dp to a divisor of {tp}, or {group}.dp_attention=false "
                "for dp replicas",
            )
        ]
    if g.gpus_per_worker and g.gpus_per_worker != need:
        return [
            Issue(
                f"{group}.gpus_per_worker",
                str(g.gpus_per_worker),
                f"does not match the parallel mode: {mode} = {need} GPUs",
                f"set {group}.gpus_per_worker=0 (derived) or {need}",
            )
        ]
    if need % g.ep:
        return [
            Issue(
                f"{group}.ep",
                str(g.ep),
                f"must divide the worker's {need} GPUs ({mode})",
                f"set {group}.ep to a divisor of {need}, e.g. {need}",
            )
        ]
    return []


def _equal_tp(cfg: RootConfig) -> list[Issue]:
    p, d = build.tp_of(cfg, "prefill"), build.tp_of(cfg, "decode")
    if not cfg.model.requires_equal_pd_tp or p == d:
        return []
    return [
        Issue(
            "prefill.tp",
            f"{p} (decode.tp={d})",
            f"{cfg.model.name or cfg.model.path} needs equal prefill and decode TP: SGLang "
            "rejects different P/D TP sizes for non-MLA SWA hybrid models (sglang #38552)",
            f"set prefill.tp={d} or decode.tp={p}",
        )
    ]


def topology_issues(cfg: RootConfig) -> list[Issue]:
    slots = build.place(cfg)
    issues = get_engine(cfg.engine.kind).validate(cfg, slots)
    issues += role_consistency(cfg, build.deployment_plan(cfg))
    nodes = max(n for s in slots for n, _ in s.ranks) + 1 if slots else 1
    if runs_on_one_machine(cfg.launcher.kind) and nodes > 1:
        issues.append(
            Issue(
                "launcher.kind",
                cfg.launcher.kind,
                f"the plan needs {nodes} nodes and the local launcher runs on this machine only",
                "use launcher=submitit or launcher=sbatch, or a smaller topology",
            )
        )
    return issues
