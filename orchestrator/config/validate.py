"""Whole-config validation before anything is submitted: every problem at once, each with the key,
the value found and the fix (`validate` returns them; `check` raises one InvalidConfig)."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path

from orchestrator.bench.evals import eval_issues
from orchestrator.bench.spec import BENCHMARK_KINDS, TOOLS, aiperf_binary, estimate_s
from orchestrator.config.domains import domain_issues
from orchestrator.config.schema import RootConfig
from orchestrator.config.serve import serve_issues
from orchestrator.config.validate_groups import DEPLOYMENT_MODES, group_issues, topology_issues
from orchestrator.core.errors import InvalidConfig, Issue
from orchestrator.engines import ENGINES, get_engine
from orchestrator.frontends import FRONTENDS, get_frontend
from orchestrator.frontends.dynamo_planner import autoscale_issues
from orchestrator.frontends.pair import pair_issues
from orchestrator.launchers import CONFIG_KINDS
from orchestrator.plan import build
from orchestrator.plan.fetch import fetch_issues
from orchestrator.plan.model import RESTART_MODES
from orchestrator.plan.ports import highest_port
from orchestrator.plan.sharing import sharing_issues
from orchestrator.plan.stage import stage_issues
from orchestrator.slurm.request import LAUNCH_PER, PER_NODE, SAFE_DIRECTIVE

GPU_DIRECTIVES = ("gpus-per-node", "gres")
IP_SOURCES = ("hostname", "interface")
DRY_RUN_VALUES = ("false", "true", "json")
SECRET_KEY = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|CREDENTIAL", re.IGNORECASE)


def check(cfg: RootConfig) -> None:
    """Raise `InvalidConfig` listing every problem of `cfg`; return if there is none."""
    issues = validate(cfg)
    if issues:
        raise InvalidConfig(issues)


def validate(cfg: RootConfig) -> list[Issue]:
    """Every problem of `cfg`. Checks that need a sane shape run only when the shape is sane."""
    issues = (
        _kinds(cfg) + _model(cfg) + group_issues(cfg) + _ports(cfg) + _timing(cfg) + _secrets(cfg)
    )
    issues += _run_dir_mode(cfg.cluster.run_dir_mode)
    issues += _slurm_values(cfg) + _benchmark(cfg) + _restarts(cfg) + serve_issues(cfg)
    issues += sharing_issues(cfg) + fetch_issues(cfg, os.environ) + autoscale_issues(cfg)
    issues += stage_issues(
        cfg, loads_model=cfg.engine.kind not in ENGINES or get_engine(cfg.engine.kind).loads_model
    )
    named = {i.key for i in issues}  # a key a specific rule already reports once is enough
    issues += [i for i in domain_issues(cfg) if i.key not in named]
    if not issues:
        issues += topology_issues(cfg)
    return issues


def _choice(key: str, value: str, valid: Iterable[str]) -> list[Issue]:
    valid = tuple(valid)
    if value in valid:
        return []
    return [Issue(key, repr(value), "unknown value", f"use one of: {', '.join(valid)}")]


def _kinds(cfg: RootConfig) -> list[Issue]:
    return (
        _choice("engine.kind", cfg.engine.kind, ENGINES)
        + _choice("frontend.kind", cfg.frontend.kind, FRONTENDS)
        + _choice("launcher.kind", cfg.launcher.kind, CONFIG_KINDS)
        + _choice("deployment.mode", cfg.deployment.mode, DEPLOYMENT_MODES)
        + _choice("cluster.gpu_directive", cfg.cluster.gpu_directive, GPU_DIRECTIVES)
        + _choice("cluster.ip_source", cfg.cluster.ip_source, IP_SOURCES)
        + _choice("cluster.launch_per", cfg.cluster.launch_per, LAUNCH_PER)
        + _agent_container(cfg)
        + _choice("dry_run", cfg.dry_run_mode(), DRY_RUN_VALUES)
        + _choice("benchmark.kind", cfg.benchmark.kind, BENCHMARK_KINDS)
        + _combination(cfg)
    )


def _agent_container(cfg: RootConfig) -> list[Issue]:
    """The node agent runs with the driver's interpreter, which a pyxis container lacks."""
    if cfg.cluster.launch_per != PER_NODE or not cfg.cluster.container_image:
        return []
    return [
        Issue(
            "cluster.launch_per",
            PER_NODE,
            "the node agent runs with the orchestrator's "
            "own interpreter, which the container of cluster.container_image does not "
            "have",
            "set cluster.launch_per=process with a container image",
        )
    ]


def _combination(cfg: RootConfig) -> list[Issue]:
    """The engine names the frontends its workers can join; the frontend's own rules."""
    if cfg.engine.kind not in ENGINES or cfg.frontend.kind not in FRONTENDS:
        return []
    issues = get_frontend(cfg.frontend.kind).validate(cfg)
    issues += pair_issues(cfg, lambda binary: shutil.which(binary) is not None)
    partners = get_engine(cfg.engine.kind).frontends
    if cfg.frontend.kind not in partners:
        issues.append(
            Issue(
                "frontend.kind",
                cfg.frontend.kind,
                f"cannot front engine={cfg.engine.kind}: its workers register only "
                f"with {' or '.join(partners)}",
                f"set frontend={partners[0]}",
            )
        )
    return issues


def _model(cfg: RootConfig) -> list[Issue]:
    issues = []
    if not cfg.model.path:
        issues.append(
            Issue(
                "model.path",
                "''",
                "no model selected",
                "choose one with +model=gpt_oss_120b or set model.path",
            )
        )
    if cfg.cluster.ip_source == "interface" and not cfg.cluster.network_interface:
        issues.append(
            Issue(
                "cluster.network_interface",
                "''",
                "ip_source=interface needs an interface",
                "set cluster.network_interface, e.g. ib0",
            )
        )
    if cfg.cluster.gpus_per_node < 1:
        issues.append(
            Issue(
                "cluster.gpus_per_node",
                str(cfg.cluster.gpus_per_node),
                "must be at least 1",
                "set the GPUs each node has, e.g. 8",
            )
        )
    return issues


def _ports(cfg: RootConfig) -> list[Issue]:
    c, http = cfg.cluster, cfg.frontend.http_port
    issues = []
    if not 1 <= http <= 65535:
        issues.append(
            Issue("frontend.http_port", str(http), "out of range", "use a port in 1-65535")
        )
    if c.port_job_blocks < 1:
        issues.append(
            Issue(
                "cluster.port_job_blocks",
                str(c.port_job_blocks),
                "must be at least 1",
                "set cluster.port_job_blocks=16",
            )
        )
        return issues
    top = highest_port(
        c.port_base,
        gpus_per_node=max(c.gpus_per_node, 1),
        job_blocks=c.port_job_blocks,
        workers_per_gpu=cfg.deployment.workers_per_gpu,
    )
    # Engines may accept less than 65535 (Dynamo reads DYN_SYSTEM_PORT as a signed 16-bit int).
    engine = get_engine(cfg.engine.kind) if cfg.engine.kind in ENGINES else None
    limit, why = (engine.max_port, engine.max_port_reason) if engine else (65535, "")
    if c.port_base < 1024 or top > limit:
        issues.append(
            Issue(
                "cluster.port_base",
                str(c.port_base),
                f"planned ports would span "
                f"{c.port_base}-{top}, outside 1024-{limit}" + (f" ({why})" if why else ""),
                "lower cluster.port_base or cluster.port_job_blocks",
            )
        )
    elif c.exclusive and c.port_base <= http <= top:  # shared nodes: a port of the block instead
        issues.append(
            Issue(
                "frontend.http_port",
                str(http),
                f"inside the worker port range {c.port_base}-{top}",
                "use a port outside it, or move cluster.port_base",
            )
        )
    return issues


def _timing(cfg: RootConfig) -> list[Issue]:
    r, limit_s = cfg.readiness, cfg.cluster.time_limit_min * 60
    issues = []
    if r.timeout_s <= 0 or r.interval_s <= 0:
        issues.append(
            Issue(
                "readiness.timeout_s",
                f"{r.timeout_s:g} (interval_s={r.interval_s:g})",
                "must be positive",
                "set readiness.timeout_s=3600 readiness.interval_s=1",
            )
        )
    bench_s = estimate_s(cfg.benchmark)
    # The driver is told to stop signal_before_limit_s before the limit (--signal=B:TERM@...).
    early = cfg.launcher.signal_before_limit_s
    needed = r.timeout_s + bench_s + early
    if limit_s < needed:
        how = "" if cfg.benchmark.duration_estimate_min else ", from the load points"
        issues.append(
            Issue(
                "cluster.time_limit_min",
                str(cfg.cluster.time_limit_min),
                f"shorter than the readiness deadline ({r.timeout_s:g} s) plus the "
                f"benchmark estimate ({bench_s / 60:.0f} min{how}) plus the stop signal "
                f"{early} s before the limit",
                f"set cluster.time_limit_min>={int(needed // 60) + 1} or lower readiness.timeout_s",
            )
        )
    return issues


def _secrets(cfg: RootConfig) -> list[Issue]:
    envs: list[tuple[str, dict[str, str]]] = [
        ("model.env", cfg.model.env),
        ("engine.env", cfg.engine.env),
        ("frontend.env", cfg.frontend.env),
        ("prefill.env", cfg.prefill.env),
        ("decode.env", cfg.decode.env),
        ("aggregated.env", cfg.aggregated.env),
    ]
    return [
        Issue(
            f"{where}.{key}",
            "<hidden>",
            "looks like a secret; it would be written into the plan, scripts and logs",
            f"remove it and export {key} in the shell you launch from: every process inherits it",
        )
        for where, env in envs
        for key in env
        if SECRET_KEY.search(key)
    ]


def _run_dir_mode(value: str) -> list[Issue]:
    """An octal mode that keeps the run the owner's: full access for the owner, no write for
    anyone else (who could then stop, scale or steer it through its control files)."""
    try:
        mode = int(value, 8)
    except ValueError:
        mode = -1
    if 0 <= mode <= 0o777 and mode & 0o700 == 0o700 and not mode & 0o022:
        return []
    return [
        Issue(
            "cluster.run_dir_mode",
            repr(value),
            "not an octal mode with rwx for you and no write for group or others",
            "use 0700 (only you) or 0750 (your group reads)",
        )
    ]


def _slurm_values(cfg: RootConfig) -> list[Issue]:
    """Values written into #SBATCH lines (by our script or by submitit), which Slurm does not
    shell-parse: a space or quote there would silently change or split the option."""
    req = build.slurm_request(cfg, num_nodes=1)
    # The job name comes from the first of these that is set.
    sources = [
        ("launcher.job_name", cfg.launcher.job_name),
        ("name", cfg.name),
        ("model.name", cfg.model.name),
        ("model.path", cfg.model.path),
    ]
    job_key, job_value = next(((k, v) for k, v in sources if v), sources[0])
    checks = [(job_key, job_value, f"--job-name={req.job_name}")]
    checks += [
        (f"cluster.{k}", getattr(req, k), f"--{k}={getattr(req, k)}")
        for k in ("partition", "account", "qos")
        if getattr(req, k)
    ]
    checks += [("cluster.sbatch_extra", opt, opt) for opt in req.sbatch_extra]
    return [
        Issue(
            key,
            repr(value),
            f"cannot be written as the #SBATCH option {opt!r}",
            "use --long-option=value with no spaces, quotes, backslashes, $ or backticks",
        )
        for key, value, opt in checks
        if not SAFE_DIRECTIVE.match(opt)
    ]


def _benchmark(cfg: RootConfig) -> list[Issue]:
    """Load points and client settings (only when a benchmark is configured)."""
    b = cfg.benchmark
    if b.kind not in TOOLS:
        return []
    if b.kind == "lm_eval":
        return eval_issues(cfg)
    issues = []
    if not b.points:
        issues.append(
            Issue(
                "benchmark.points",
                "[]",
                f"benchmark={b.kind} needs at least one load point",
                "set benchmark.points=[{concurrency:8,isl:1024,osl:1024}]",
            )
        )
    for i, p in enumerate(b.points):
        for key, value, low in (
            ("concurrency", p.concurrency, 1),
            ("isl", p.isl, 1),
            ("osl", p.osl, 1),
            ("requests", p.requests, 0),
            ("warmup", p.warmup, -1),
        ):
            if value < low:
                issues.append(
                    Issue(
                        f"benchmark.points[{i}].{key}",
                        str(value),
                        f"must be at least {low}",
                        f"set {key} to {low} or more",
                    )
                )
    if not 0 <= b.max_error_rate <= 1:
        issues.append(
            Issue(
                "benchmark.max_error_rate",
                f"{b.max_error_rate:g}",
                "is a fraction",
                "use a value in 0-1, e.g. 0.05 for 5 %",
            )
        )
    if b.requests_per_concurrency < 1 or b.point_timeout_s <= 0:
        issues.append(
            Issue(
                "benchmark.requests_per_concurrency",
                f"{b.requests_per_concurrency} (point_timeout_s={b.point_timeout_s:g})",
                "must be positive",
                "set benchmark.requests_per_concurrency=10 benchmark.point_timeout_s=3600",
            )
        )
    binary = aiperf_binary(b)
    # Checked only for a path on the shared filesystem (inside a container it may differ).
    on_host = b.kind == "aiperf" and not cfg.cluster.container_image and binary.startswith("/")
    if on_host and not Path(binary).exists():
        issues.append(
            Issue(
                "benchmark.binary",
                binary,
                "does not exist",
                "run scripts/install.sh --with-aiperf, or set benchmark.binary",
            )
        )
    return issues


def _restarts(cfg: RootConfig) -> list[Issue]:
    """Restart modes per group and the shared limits (deployment.*)."""
    modes = [
        (f"{g}.restart", build.group_config(cfg, g).restart)
        for g in ("prefill", "decode", "aggregated")
    ] + [("frontend.restart", cfg.frontend.restart)]
    issues = [i for key, mode in modes for i in _choice(key, mode, RESTART_MODES)]
    d = cfg.deployment
    if d.max_restarts < 0:
        issues.append(
            Issue(
                "deployment.max_restarts",
                str(d.max_restarts),
                "must not be negative",
                "set deployment.max_restarts=3 (0 = never restart)",
            )
        )
    for key, value in (
        ("restart_window_s", d.restart_window_s),
        ("restart_backoff_s", d.restart_backoff_s),
    ):
        if value <= 0:
            issues.append(
                Issue(
                    f"deployment.{key}",
                    f"{value:g}",
                    "must be positive",
                    f"set deployment.{key} to a number of seconds above 0",
                )
            )
    if d.restart_backoff_max_s < d.restart_backoff_s:
        issues.append(
            Issue(
                "deployment.restart_backoff_max_s",
                f"{d.restart_backoff_max_s:g}",
                f"below deployment.restart_backoff_s={d.restart_backoff_s:g}",
                f"set it to {d.restart_backoff_s:g} or more (default 60)",
            )
        )
    return issues
