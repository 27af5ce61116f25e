"""Late-bound placeholders: values unknown while planning (node addresses, job id, run dir).

Tokens look like `{node_ip:1}`, `{node_host:0}`, `{job_id}`, `{run_dir}`. Only these names are
placeholders, so JSON in engine arguments (`{"publisher": ...}`) is left alone. Binding replaces
every token or raises `UnresolvedPlaceholder`: nothing unknown silently survives (unlike
`string.Template.safe_substitute`).
"""

from __future__ import annotations

import dataclasses
import re

from orchestrator.errors import UnresolvedPlaceholder
from orchestrator.plan.model import HealthProbe, Plan, Process, Readiness

PLACEHOLDER = re.compile(r"\{(node_ip|node_host|job_id|run_dir)(?::(\d+))?\}")


def node_ip(index: int) -> str:
    """Placeholder for the address of node `index` of the allocation (resolved on that node)."""
    return f"{{node_ip:{index}}}"


def node_host(index: int) -> str:
    """Placeholder for the hostname of node `index` of the allocation."""
    return f"{{node_host:{index}}}"


RUN_DIR = "{run_dir}"


@dataclasses.dataclass(frozen=True)
class Bindings:
    """Concrete values for the placeholders of one run."""

    node_ips: tuple[str, ...]
    node_hosts: tuple[str, ...]
    job_id: str
    run_dir: str

    def lookup(self, name: str, index: str | None) -> str | None:
        """The value of one token, or None when it cannot be resolved."""
        if name in ("job_id", "run_dir"):
            return getattr(self, name) if index is None else None
        values = self.node_ips if name == "node_ip" else self.node_hosts
        if index is None or int(index) >= len(values):
            return None
        return values[int(index)]


def bind_text(text: str, bindings: Bindings) -> str:
    """Replace every placeholder in `text`; raise `UnresolvedPlaceholder` for any unknown one."""

    def replace(match: re.Match[str]) -> str:
        value = bindings.lookup(match.group(1), match.group(2))
        if value is None:
            raise UnresolvedPlaceholder(f"no value for placeholder {match.group(0)} in {text!r}")
        return value

    return PLACEHOLDER.sub(replace, text)


def _bind_process(proc: Process, bindings: Bindings) -> Process:
    health = proc.health
    if health is not None:
        health = HealthProbe(
            url=bind_text(health.url, bindings), expect_status=health.expect_status
        )
    return dataclasses.replace(
        proc,
        argv=tuple(bind_text(a, bindings) for a in proc.argv),
        env={k: bind_text(v, bindings) for k, v in proc.env.items()},
        health=health,
        url=bind_text(proc.url, bindings),
    )


def bind_plan(plan: Plan, bindings: Bindings) -> Plan:
    """A copy of `plan` with every placeholder replaced by its concrete value."""
    readiness: Readiness = dataclasses.replace(
        plan.readiness, frontend_url=bind_text(plan.readiness.frontend_url, bindings)
    )
    return dataclasses.replace(
        plan,
        processes=tuple(_bind_process(p, bindings) for p in plan.processes),
        readiness=readiness,
        prepare={k: bind_text(v, bindings) for k, v in plan.prepare.items()},
    )
