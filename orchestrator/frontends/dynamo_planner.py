"""autoscale=dynamo_planner: NVIDIA Dynamo's own planner (`python -m dynamo.planner`, ai-dynamo
1.6.1) as a head process next to the Dynamo frontend, with `environment: virtual` so that its
decisions are published through the Dynamo runtime for our driver to carry out
(orchestrator.elastic.autoscale). Here: the planner's configuration, its process, the rules of the
`autoscale` keys, and the AutoscalePlan the driver reads. Its configuration is checked by the
planner's own pydantic model before submission (frontends/planner_check.py)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from orchestrator.config.schema import RootConfig
from orchestrator.core.errors import Issue
from orchestrator.core.tools import Tool, tool_or_default
from orchestrator.frontends.base import Head
from orchestrator.launchers import submits_jobs
from orchestrator.plan.groups import gpus_per_worker
from orchestrator.plan.model import TIER_FRONTEND, AutoscalePlan, Process
from orchestrator.plan.placeholders import RUN_DIR, node_ip

KINDS = ("off", "dynamo_planner")
TARGETS = ("throughput", "latency", "load", "sla")  # PlannerConfig.optimization_target
PROCESS = "planner"
GROUP = "planner"  # its restart policy follows frontend.restart (orchestrator.plan.restart)
# Its working directory: the planner writes ./planner_reports and reads ./profiling_results by
# default (PlannerConfig.report_output_dir, profile_results_dir), so it runs in a folder of
# the run directory that it may write, next to the configuration it is started with.
WORK_DIR = f"{RUN_DIR}/planner"
PYTHON = Tool(command="", venv_path="planner/bin/python")  # install.sh --with-planner
# Writes the configuration ($1) into its folder ($2), enters it, then becomes the planner run
# by the interpreter $3 (exec: the driver's signals reach it). Golden-tested, shellcheck clean.
START_SCRIPT = (
    'mkdir -p -- "$2" && printf "%s\\n" "$1" >"$2/planner.json" && cd -- "$2" && '
    'exec "$3" -m dynamo.planner --config "$2/planner.json"'
)
# PlannerConfig fields that the `autoscale` keys (or the run) set: not through autoscale.args.
OWN_FIELDS = {
    "environment": "the run (virtual: our driver carries the decisions out)",
    "namespace": "frontend.namespace",
    "mode": "deployment.mode",
    "backend": "engine",
    "model_name": "model.served_name",
    "optimization_target": "autoscale.optimization_target",
    "ttft_ms": "autoscale.ttft_ms",
    "itl_ms": "autoscale.itl_ms",
    "min_endpoint": "autoscale.min_prefill / autoscale.min_decode",
    "prefill_min_endpoint": "autoscale.min_prefill",
    "decode_min_endpoint": "autoscale.min_decode",
    "max_gpu_budget": "autoscale.max_gpus",
    "load_adjustment_interval_seconds": "autoscale.interval_s",
    "prefill_engine_num_gpu": "prefill.tp (the worker's GPUs)",
    "decode_engine_num_gpu": "decode.tp (the worker's GPUs)",
}


def planner_python(cfg: RootConfig) -> str:
    """autoscale.python, else install.sh's .venvs/planner interpreter (its path even when it is
    missing, so that the check's refusal names it)."""
    return tool_or_default(PYTHON, explicit=cfg.autoscale.python)


def gpu_budget(cfg: RootConfig) -> int:
    """autoscale.max_gpus, or (0) the GPUs of the maxima: every prefill and decode at its bound."""
    a = cfg.autoscale
    if a.max_gpus:
        return a.max_gpus
    return gpus_at(cfg, a.max_prefill, a.max_decode)


def gpus_at(cfg: RootConfig, prefill: int, decode: int) -> int:
    """GPUs that `prefill` prefill and `decode` decode workers hold."""
    return prefill * gpus_per_worker(cfg, "prefill") + decode * gpus_per_worker(cfg, "decode")


def planner_config(cfg: RootConfig) -> dict[str, Any]:
    """The planner's whole configuration (PlannerConfig), `autoscale.args` last."""
    a = cfg.autoscale
    own: dict[str, Any] = {
        "environment": "virtual",
        # The planner reads the workers' forward-pass metrics and model card by backend; the
        # mocker publishes them as `mocker` (engines.md, the planner with environment: virtual).
        "backend": "mocker" if cfg.engine.kind == "mocker" else "sglang",
        "mode": "disagg",
        "namespace": cfg.frontend.namespace,
        # The workers' --model-name / --served-model-name, lowercased as the planner matches it.
        "model_name": (cfg.model.served_name or cfg.model.path).lower(),
        "optimization_target": a.optimization_target,
        "ttft_ms": a.ttft_ms,
        "itl_ms": a.itl_ms,
        "load_adjustment_interval_seconds": a.interval_s,
        "prefill_min_endpoint": a.min_prefill,
        "decode_min_endpoint": a.min_decode,
        "max_gpu_budget": gpu_budget(cfg),
        "prefill_engine_num_gpu": gpus_per_worker(cfg, "prefill"),
        "decode_engine_num_gpu": gpus_per_worker(cfg, "decode"),
        # No bootstrap data (AI Configurator / GPU sweeps): load-based scaling needs none.
        "pre_deployment_sweeping_mode": "none",
        # Its defaults open unauthenticated ports on the node (control API 9086, dashboard
        # 8080, PlannerConfig/defaults.py): 0 disables each; no daily HTML report either.
        "control_api_port": 0,
        "metric_reporting_prometheus_port": 0,
        "live_dashboard_port": 0,
        "report_interval_hours": None,
    }
    return {**own, **a.args}


def planner_process(cfg: RootConfig, env: dict[str, str]) -> Process:
    """The planner on node 0 (next to the frontend; on this host with placement=here), with
    the frontend's discovery environment. etcd's credentials reach it like every Dynamo
    process's: from the driver's environment (RUN_DIR/secrets), never in argv or the plan."""
    ip = node_ip(0)
    text = json.dumps(planner_config(cfg), sort_keys=True)
    argv = ("bash", "-c", START_SCRIPT, "orchestrator-planner", text, WORK_DIR, planner_python(cfg))
    full_env = {
        **env,
        "PYTHONUNBUFFERED": "1",
        # The planner reads decisions' state and the workers' metrics through the runtime:
        # TCP requests, ZMQ events (SUB to each worker's PUB advertised in discovery), no NATS.
        "DYN_REQUEST_PLANE": "tcp",
        "DYN_EVENT_PLANE": "zmq",
        # It serves `<namespace>.Planner.generate`: advertise the node address, as workers do.
        "DYN_TCP_RPC_HOST": ip,
        "DYN_EVENT_PLANE_HOST": ip,
        **cfg.autoscale.env,
    }
    return Process(
        name=PROCESS,
        role="infra",
        group=GROUP,
        worker_index=0,
        rank=0,
        node_index=0,
        gpus=(),
        ports={},
        env=full_env,
        argv=argv,
        tier=TIER_FRONTEND,
    )


def with_planner(cfg: RootConfig, head: Head) -> Head:
    """`head` and, with autoscale, the planner after its frontend (it reads what they read)."""
    if not cfg.autoscale.enabled:
        return head
    planner = planner_process(cfg, head.worker_env)
    return dataclasses.replace(head, processes=[*head.processes, planner])


def autoscale_plan(cfg: RootConfig) -> AutoscalePlan | None:
    """What the driver's executor needs (None: autoscale=off)."""
    a = cfg.autoscale
    if not a.enabled:
        return None
    return AutoscalePlan(
        process=PROCESS,
        namespace=cfg.frontend.namespace,
        min_prefill=a.min_prefill,
        max_prefill=a.max_prefill,
        min_decode=a.min_decode,
        max_decode=a.max_decode,
        max_gpus=gpu_budget(cfg),
        pending_timeout_s=a.pending_timeout_s,
    )


def autoscale_issues(cfg: RootConfig) -> list[Issue]:
    """Every problem of the `autoscale` keys and of what the planner needs around it."""
    a = cfg.autoscale
    if a.kind not in KINDS:
        return [
            Issue(
                "autoscale.kind", repr(a.kind), "unknown value", f"use one of: {', '.join(KINDS)}"
            )
        ]
    if not a.enabled:
        return []
    return _surroundings(cfg) + _target(cfg) + _bounds(cfg) + _numbers(cfg) + _args(cfg)


def _surroundings(cfg: RootConfig) -> list[Issue]:
    """A Dynamo frontend with etcd, disaggregated workers, a launcher that submits jobs."""
    out = []
    if cfg.frontend.kind != "dynamo":
        out.append(
            Issue(
                "frontend.kind",
                cfg.frontend.kind,
                "Dynamo's planner reads the workers through the Dynamo runtime and publishes its "
                "decisions there; only a Dynamo frontend's workers are in it",
                "use frontend=dynamo, or autoscale=off",
            )
        )
    elif cfg.frontend.discovery == "file":
        out.append(
            Issue(
                "frontend.discovery",
                "file",
                "the planner's decisions and the attached jobs' workers meet in etcd (file "
                "discovery does not cross hosts)",
                "drop frontend.discovery=file (auto uses etcd with autoscale)",
            )
        )
    if not submits_jobs(cfg.launcher.kind):
        out.append(
            Issue(
                "launcher.kind",
                cfg.launcher.kind,
                "decisions are carried out by attached Slurm jobs, which this launcher cannot submit",
                "use launcher=sbatch or launcher=submitit (or auto where sbatch is on PATH)",
            )
        )
    if cfg.deployment.mode != "disaggregated":
        out.append(
            Issue(
                "deployment.mode",
                cfg.deployment.mode,
                "the planner is run in its disagg mode (prefill and decode counts)",
                "use deployment=disaggregated, or autoscale=off",
            )
        )
    return out


def _target(cfg: RootConfig) -> list[Issue]:
    """optimization_target, as the planner names them (sla's perf model is checked with the
    planner's own interpreter, planner_check.py)."""
    t = cfg.autoscale.optimization_target
    if t in TARGETS:
        return []
    return [
        Issue(
            "autoscale.optimization_target",
            repr(t),
            "unknown value",
            f"use one of: {', '.join(TARGETS)}",
        )
    ]


def _bounds(cfg: RootConfig) -> list[Issue]:
    """min <= start <= max per role (the planner's floors are >= 1); the budget holds the start."""
    a, out = cfg.autoscale, []
    for role, lo, hi, start in (
        ("prefill", a.min_prefill, a.max_prefill, cfg.prefill.workers),
        ("decode", a.min_decode, a.max_decode, cfg.decode.workers),
    ):
        if lo < 1:
            out.append(
                Issue(
                    f"autoscale.min_{role}",
                    str(lo),
                    "the planner keeps at least one worker of each role (PlannerConfig: >= 1)",
                    f"set autoscale.min_{role}=1 or more",
                )
            )
        if hi < lo:
            out.append(
                Issue(
                    f"autoscale.max_{role}",
                    str(hi),
                    f"below autoscale.min_{role}={lo}",
                    f"set autoscale.max_{role}>={lo}",
                )
            )
        elif not lo <= start <= hi:
            out.append(
                Issue(
                    f"{role}.workers",
                    str(start),
                    f"outside the bounds [{lo}, {hi}] of autoscale.min_{role}/max_{role} (a run "
                    "starts within them; decisions, and so `ctl scale`'s counts, are clipped to them)",
                    f"use {role}.workers={min(max(start, lo), hi)}, or move the bound",
                )
            )
    return out + _budget(cfg)


def _budget(cfg: RootConfig) -> list[Issue]:
    a = cfg.autoscale
    if a.max_gpus < 0:
        return [
            Issue(
                "autoscale.max_gpus",
                str(a.max_gpus),
                "negative",
                "use 0 (the maxima's GPUs) or more",
            )
        ]
    start = gpus_at(cfg, cfg.prefill.workers, cfg.decode.workers)
    floor = gpus_at(cfg, a.min_prefill, a.min_decode)
    if a.max_gpus and max(start, floor) > a.max_gpus:
        return [
            Issue(
                "autoscale.max_gpus",
                str(a.max_gpus),
                f"below the GPUs of the starting workers ({start}) or of the minima ({floor})",
                f"set autoscale.max_gpus={max(start, floor)} or more, or 0 (the maxima's GPUs)",
            )
        ]
    return []


def _numbers(cfg: RootConfig) -> list[Issue]:
    a, out = cfg.autoscale, []
    for key, value in (
        ("interval_s", a.interval_s),
        ("pending_timeout_s", a.pending_timeout_s),
        ("ttft_ms", a.ttft_ms),
        ("itl_ms", a.itl_ms),
    ):
        if value <= 0:
            out.append(Issue(f"autoscale.{key}", str(value), "must be positive", "use a value > 0"))
    return out


def _args(cfg: RootConfig) -> list[Issue]:
    """autoscale.args holds only fields no other key sets (the rest is the planner's check)."""
    return [
        Issue(
            f"autoscale.args.{k}",
            repr(v),
            "set by the run, not through autoscale.args",
            f"use {OWN_FIELDS[k]}" if k != "environment" else "drop it",
        )
        for k, v in cfg.autoscale.args.items()
        if k in OWN_FIELDS
    ]
