"""The domain of every scalar schema key that has one (pure; `orchestrator.config.validate` reports
these with every other problem). Kinds with a registry (engine, frontend, benchmark, launcher)
are checked in validate.py; cross-field rules there too."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from orchestrator.config.schema import RootConfig
from orchestrator.core.errors import Issue

# SGLang 0.5.21's --disaggregation-transfer-backend choices
# (sglang/srt/arg_groups/choices.py DISAGG_TRANSFER_BACKEND_CHOICES; Dynamo 1.6.1 pins it).
TRANSFER_BACKENDS = ("nixl", "mooncake", "mooncake_tcp", "mori", "ascend", "fake")
GROUPS = ("prefill", "decode", "aggregated")
# An engine flag name as a mapping key: `mem-fraction-static`, no leading dashes, no value.
ARG_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
# Flags the orchestrator derives from other keys: set there, not in `args` (a second copy on
# the command line would silently win or lose depending on its position: argparse keeps the
# last one).
MANAGED_FLAGS: Mapping[str, str] = {
    "model-path": "model.path",
    "served-model-name": "model.served_name",
    "revision": "model.revision",
    "tp": "<group>.tp",
    "tp-size": "<group>.tp",
    "dp-size": "<group>.dp",
    "ep-size": "<group>.ep",
    "enable-dp-attention": "<group>.dp_attention",
    "disaggregation-mode": "deployment.mode",
    "disaggregation-transfer-backend": "engine.transfer_backend",
    "trust-remote-code": "model.trust_remote_code",
    "skip-tokenizer-init": "model.skip_tokenizer_init",
    "host": "(planned: the node address)",
    "port": "(planned)",
    "nccl-port": "(planned)",
    "disaggregation-bootstrap-port": "(planned)",
    "dist-init-addr": "(planned)",
    "nnodes": "(placement)",
    "node-rank": "(placement)",
}


@dataclass(frozen=True, slots=True)
class Bound:
    """`key` must be >= low (or > low when `strict`)."""

    key: str
    low: float
    strict: bool = False
    fix: str = ""


BOUNDS = (
    Bound("model.tp", 1, fix="set model.tp to the default TP of a worker, e.g. 8"),
    Bound("cluster.time_limit_min", 1, fix="set cluster.time_limit_min, e.g. 240"),
    Bound("launcher.stop_grace_s", 0, strict=True, fix="set launcher.stop_grace_s=20"),
    Bound("launcher.signal_before_limit_s", 0, fix="set launcher.signal_before_limit_s=120"),
    # Drivers beat every 5 s (runtime/heartbeat.py): a shorter timeout stops a healthy run's
    # attached jobs.
    Bound(
        "launcher.heartbeat_timeout_s",
        5,
        strict=True,
        fix="set launcher.heartbeat_timeout_s=60 (more than the 5 s heartbeat period)",
    ),
    Bound("readiness.canary_max_tokens", 1, fix="set readiness.canary_max_tokens=8"),
    Bound("readiness.serve_failures", 0, fix="set readiness.serve_failures=3 (0 disables)"),
    Bound("readiness.serve_check_s", 0, strict=True, fix="set readiness.serve_check_s=30"),
    Bound("engine.mocker_speedup_ratio", 0, strict=True, fix="set engine.mocker_speedup_ratio=10"),
    Bound("benchmark.duration_estimate_min", 0, fix="set 0 to estimate it from the points"),
    Bound("benchmark.seed", 0, fix="set benchmark.seed=42"),
    *(Bound(f"{g}.workers", 0, fix=f"set {g}.workers to 0 or more") for g in GROUPS),
    *(Bound(f"{g}.tp", 0, fix=f"set {g}.tp to 0 (model.tp) or a TP size") for g in GROUPS),
)


def _get(cfg: RootConfig, key: str) -> Any:
    value: Any = cfg
    for part in key.split("."):
        value = getattr(value, part)
    return value


def bound_issues(cfg: RootConfig) -> list[Issue]:
    """Counts and timings outside the range that makes sense."""
    issues = []
    for b in BOUNDS:
        value = _get(cfg, b.key)
        if value > b.low or (value == b.low and not b.strict):
            continue
        need = f"must be {'above' if b.strict else 'at least'} {b.low:g}"
        issues.append(Issue(b.key, f"{value:g}", need, b.fix))
    return issues


def transfer_backend_issues(cfg: RootConfig) -> list[Issue]:
    """The KV transfer backend is one SGLang knows."""
    backend = cfg.engine.transfer_backend
    if backend in TRANSFER_BACKENDS:
        return []
    return [
        Issue(
            "engine.transfer_backend",
            repr(backend),
            "unknown KV transfer backend",
            f"use one of: {', '.join(TRANSFER_BACKENDS)}",
        )
    ]


def _owner(where: str, name: str) -> str:
    """The key that sets a managed flag, for the group `where` belongs to."""
    group = where.split(".")[0]
    return MANAGED_FLAGS[name].replace("<group>", group if group in GROUPS else "prefill/decode")


def args_issues(where: str, args: Mapping[str, Any]) -> list[Issue]:
    """Flag names of one `args` mapping: well-formed and not derived from another key."""
    issues = []
    for name, value in args.items():
        key = f"{where}.{name}"
        if not ARG_NAME.match(name):
            issues.append(
                Issue(
                    key,
                    repr(name),
                    "not a flag name",
                    "name the flag without dashes: "
                    f"{where}.{name.lstrip('-') or 'mem-fraction-static'}=VALUE",
                )
            )
        elif name in MANAGED_FLAGS and value is not None:
            issues.append(
                Issue(
                    key,
                    str(value),
                    f"--{name} is set by the orchestrator",
                    f"set {_owner(where, name)} instead",
                )
            )
        elif isinstance(value, dict):
            issues.append(
                Issue(
                    key,
                    str(value),
                    "a flag value cannot be a mapping",
                    "use a scalar, true for a bare flag, or a list",
                )
            )
    return issues


def offline_issues(cfg: RootConfig) -> list[Issue]:
    """A local model (offline) whose frontend parses with a tiktoken encoding needs a local copy
    of it; the directory must be absolute (it is looked at on every node)."""
    t = cfg.cluster.tiktoken_dir
    if t and not t.startswith("/"):
        return [
            Issue(
                "cluster.tiktoken_dir",
                repr(t),
                "must be an absolute path (every node checks it)",
                "give the shared directory's absolute path",
            )
        ]
    if cfg.model.tiktoken_encoding and cfg.model.path.startswith("/") and not t:
        enc = cfg.model.tiktoken_encoding
        return [
            Issue(
                "cluster.tiktoken_dir",
                "''",
                f"model.path is a local directory (offline: "
                f"HF_HUB_OFFLINE=1) and {cfg.model.name or 'the model'} needs the {enc} "
                "tiktoken encoding to parse reasoning and tool calls, which would be "
                "downloaded (and parsing silently breaks without network)",
                f"download {enc}.tiktoken into a shared directory and set "
                "cluster.tiktoken_dir to it",
            )
        ]
    return []


def domain_issues(cfg: RootConfig) -> list[Issue]:
    """Every per-key domain problem of `cfg`."""
    issues = bound_issues(cfg) + transfer_backend_issues(cfg) + offline_issues(cfg)
    layers = [("model.args", cfg.model.args), ("engine.args", cfg.engine.args)]
    layers += [(f"{g}.args", getattr(cfg, g).args) for g in GROUPS]
    for where, args in layers:
        issues += args_issues(where, args)
    return issues
