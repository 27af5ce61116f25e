"""Prefill and decode must agree on what the KV transfer and the frontend assume (pure).

SGLang checks some of these only at run time, once the first request moves KV from a prefill
to a decode worker ("Page size mismatch", srt-slurm users lost whole queued jobs to it); others
never fail loudly (a different model revision or KV dtype corrupts the transferred cache, a
different served name splits the model in two for the frontend). Compared on the planned
command lines, so a flag from any layer (model, engine, role, `args` or `extra_args`) counts,
and the last copy of a flag wins as in argparse.
"""

from __future__ import annotations

from collections.abc import Sequence

from orchestrator.config.schema import RootConfig
from orchestrator.core.errors import Issue
from orchestrator.plan.model import Plan

DEFAULT = "(engine default)"
# (flags naming the same setting, what it is, the key that sets it for both roles).
AGREED: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (("--page-size",), "KV page size", "model.args.page-size"),
    (("--kv-cache-dtype",), "KV-cache dtype", "model.args.kv-cache-dtype"),
    (("--model-path",), "model path", "model.path"),
    (("--revision",), "model revision", "model.revision"),
    (("--served-model-name", "--model-name"), "served model name", "model.served_name"),
    (("--disaggregation-transfer-backend",), "KV transfer backend", "engine.transfer_backend"),
)


def flag_value(argv: Sequence[str], names: Sequence[str]) -> str:
    """The value the last of `names` gets in `argv` (`--f v` or `--f=v`), else DEFAULT."""
    value = DEFAULT
    for i, word in enumerate(argv):
        flag, eq, inline = word.partition("=")
        if flag not in names:
            continue
        if eq:
            value = inline
        elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            value = argv[i + 1]
    return value


def source_key(cfg: RootConfig, group: str, flag: str, fallback: str) -> str:
    """The config key that most likely set `flag` for `group` (its own layers first)."""
    name = flag.lstrip("-")
    role = getattr(cfg, group)
    layers = (
        (f"{group}.args", role.args, role.extra_args),
        ("engine.args", cfg.engine.args, cfg.engine.extra_args),
        ("model.args", cfg.model.args, cfg.model.extra_args),
    )
    for where, args, extra in layers:
        if args.get(name) not in (None, False):
            return f"{where}.{name}"
        if any(a == flag or a.startswith(flag + "=") for a in extra):
            return where.replace(".args", ".extra_args")
    return fallback


def role_consistency(cfg: RootConfig, plan: Plan) -> list[Issue]:
    """One Issue per setting on which the prefill and decode leaders' argv differ."""
    leaders = {p.role: p for p in plan.processes if p.role in ("prefill", "decode") and not p.rank}
    if len(leaders) < 2:
        return []
    issues = []
    for names, what, fallback in AGREED:
        values = {role: flag_value(leaders[role].argv, names) for role in ("prefill", "decode")}
        if values["prefill"] == values["decode"]:
            continue
        keys = {role: source_key(cfg, role, names[0], fallback) for role in values}
        key = keys["prefill"] if keys["prefill"] != fallback else keys["decode"]
        issues.append(
            Issue(
                key,
                f"prefill {values['prefill']}, decode {values['decode']}",
                f"prefill and decode must use the same {what} ({names[0]}): the KV "
                "cache moves between them as is (SGLang fails at the first transfer, "
                "e.g. 'Page size mismatch')",
                f"set it once for both roles ({fallback}) or give "
                f"{keys['prefill']} and {keys['decode']} the same value",
            )
        )
    return issues
