"""Rules of `frontend.placement=here` and `serve.*` (rollover), and the launch-time address of
the frontend on this host. Pure rules; `resolve_host` is the one look at this machine, made
before planning (like the launcher's resolution), so the plan itself stays pure."""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import socket

from orchestrator.config.schema import PLACEMENTS, RootConfig
from orchestrator.core.errors import InvalidConfig, Issue
from orchestrator.frontends import get_frontend
from orchestrator.launchers import submits_jobs

HOST = re.compile(
    r"^[A-Za-z0-9][A-Za-z0-9.:-]*$"
)  # an address or a DNS name, nothing a shell reads


def serve_issues(cfg: RootConfig) -> list[Issue]:
    """Every problem of the placement and rollover settings."""
    f, s = cfg.frontend, cfg.serve
    if not f.placement_known:
        return [
            Issue(
                "frontend.placement",
                repr(f.placement),
                "unknown value",
                f"use one of: {', '.join(PLACEMENTS)}",
            )
        ]
    issues = _numbers(cfg)
    if f.placed_in_job:
        if s.rollover:
            issues.append(
                Issue(
                    "serve.rollover",
                    "true",
                    "rollover needs the frontend outside the "
                    "job that expires (the endpoint would end with it)",
                    "add frontend.placement=here (and frontend.host=<address the "
                    "compute nodes reach>)",
                )
            )
        return issues
    return issues + _here_issues(cfg)


def _here_issues(cfg: RootConfig) -> list[Issue]:
    f = cfg.frontend
    issues = get_frontend(f.kind).attach_issues(cfg)
    if not submits_jobs(cfg.launcher.kind):
        issues.append(
            Issue(
                "launcher.kind",
                cfg.launcher.kind,
                "with frontend.placement=here the "
                "workers run in Slurm jobs attached to this host's frontend",
                "use launcher=sbatch or launcher=submitit (or auto where sbatch is on PATH)",
            )
        )
    if cfg.benchmark.kind != "none":
        issues.append(
            Issue(
                "benchmark.kind",
                cfg.benchmark.kind,
                "benchmarks run inside the job (frontend.placement=job) only",
                "benchmark the endpoint from here with aiperf, or drop frontend.placement=here",
            )
        )
    if f.host and (not HOST.match(f.host) or _loopback(f.host)):
        issues.append(_host_issue(f.host, "is not an address the compute nodes can reach"))
    return issues


def _numbers(cfg: RootConfig) -> list[Issue]:
    s, limit_s = cfg.serve, cfg.cluster.time_limit_min * 60
    issues = []
    lead_s, signal_s = s.rollover_lead_min * 60, cfg.launcher.signal_before_limit_s
    if s.rollover_lead_min < 0 or (s.rollover_lead_min and not signal_s < lead_s < limit_s):
        issues.append(
            Issue(
                "serve.rollover_lead_min",
                f"{s.rollover_lead_min:g}",
                f"must be 0 (measured) or lie between the stop signal "
                f"(launcher.signal_before_limit_s={signal_s}) and the time limit "
                f"(cluster.time_limit_min={cfg.cluster.time_limit_min})",
                "a replacement must serve before the old workers are told to stop: "
                f"e.g. serve.rollover_lead_min={max(signal_s * 2, 60) / 60:g}",
            )
        )
    if cfg.frontend.placed_here and not 0 <= s.signal_hold_s < signal_s:
        issues.append(
            Issue(
                "serve.signal_hold_s",
                f"{s.signal_hold_s:g}",
                "a worker job told to "
                f"stop {signal_s} s before its limit (launcher.signal_before_limit_s) "
                "must end before the limit",
                f"use 0 <= serve.signal_hold_s < {signal_s}, "
                "or raise launcher.signal_before_limit_s",
            )
        )
    if s.rollover_margin_s < 0:
        issues.append(
            Issue(
                "serve.rollover_margin_s",
                f"{s.rollover_margin_s:g}",
                "must be >= 0",
                "e.g. serve.rollover_margin_s=60",
            )
        )
    if s.rollover_attempts < 1:
        issues.append(
            Issue(
                "serve.rollover_attempts",
                str(s.rollover_attempts),
                "must be >= 1",
                "e.g. serve.rollover_attempts=3",
            )
        )
    return issues


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _host_issue(found: str, problem: str) -> Issue:
    return Issue(
        "frontend.host",
        found,
        problem,
        "set frontend.host=<an address of this host that "
        "the compute nodes reach> (on the testbed: 10.77.0.1, the bridge)",
    )


def resolve_host(cfg: RootConfig) -> RootConfig:
    """`cfg` with frontend.host set: given, or this host's address for its hostname. Raises
    InvalidConfig when that is a loopback address (compute nodes cannot reach it) or unknown."""
    if not cfg.frontend.placed_here or cfg.frontend.host:
        return cfg
    name = socket.gethostname()
    try:
        address = socket.gethostbyname(name)
    except OSError as exc:
        raise InvalidConfig(
            [_host_issue("", f"this host's name {name!r} does not resolve ({exc})")]
        ) from exc
    if _loopback(address):
        raise InvalidConfig(
            [
                _host_issue(
                    "", f"this host's name {name!r} resolves to {address}, a loopback address"
                )
            ]
        )
    return dataclasses.replace(cfg, frontend=dataclasses.replace(cfg.frontend, host=address))
