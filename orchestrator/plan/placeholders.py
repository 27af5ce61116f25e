"""Late-bound placeholders: values unknown while planning (node addresses, job id, run dir).

Tokens look like `{node_ip:1}`, `{node_host:0}`, `{port:20010}`, `{job_id}`, `{run_dir}`. A
`{port:N}` is port N of the job's port block: the plan is made for block 0, and the driver adds
the job's offset (`ports.port_offset_for_job`), so the plan never changes inside the job. Only
these names are placeholders, so JSON in engine arguments (`{"publisher": ...}`) is left alone. Binding replaces
every token or raises `UnresolvedPlaceholder`: nothing unknown silently survives (unlike
`string.Template.safe_substitute`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence

from orchestrator.core.errors import UnresolvedPlaceholder
from orchestrator.plan.model import Plan, Process, Readiness
from orchestrator.plan.ports import block_size

PLACEHOLDER = re.compile(r"\{(node_ip|node_host|port|job_id|run_dir)(?::(\d+))?\}")


def node_ip(index: int) -> str:
    """Placeholder for the address of node `index` of the allocation (resolved on that node)."""
    return f"{{node_ip:{index}}}"


def node_host(index: int) -> str:
    """Placeholder for the hostname of node `index` of the allocation."""
    return f"{{node_host:{index}}}"


def port_ref(port: int) -> str:
    """Placeholder for planned port `port` (block 0) shifted into the job's port block."""
    return f"{{port:{port}}}"


RUN_DIR = "{run_dir}"
JOB_ID = "{job_id}"


@dataclasses.dataclass(frozen=True)
class Bindings:
    """Concrete values for the placeholders of one run."""

    node_ips: tuple[str, ...]
    node_hosts: tuple[str, ...]
    job_id: str
    run_dir: str
    port_offset: int = 0  # the job's port block (0 for local runs and checks)

    def lookup(self, name: str, index: str | None) -> str | None:
        """The value of one token, or None when it cannot be resolved."""
        if name in ("job_id", "run_dir"):
            return getattr(self, name) if index is None else None
        if name == "port":
            return None if index is None else str(int(index) + self.port_offset)
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


PORT_STAND_IN = 20000  # first port of a renumbered command line (any valid port would do)


def renumbered(texts: Sequence[str]) -> list[str]:
    """`texts` with node indices and ports renumbered in order of first appearance (node 0, 1,
    ...; ports PORT_STAND_IN, +1, ...): two command lines equal up to which node and which port
    block they use come out equal, and values equal inside one command line stay equal."""
    numbers: dict[tuple[str, str], int] = {}

    def renumber(match: re.Match[str]) -> str:
        name, index = match.group(1), match.group(2)
        if index is None:
            return match.group(0)
        kind = "port" if name == "port" else "node"
        number = numbers.setdefault((kind, index), sum(k == kind for k, _ in numbers))
        return f"{{{name}:{number + PORT_STAND_IN if kind == 'port' else number}}}"

    return [PLACEHOLDER.sub(renumber, text) for text in texts]


def _bind_process(proc: Process, bindings: Bindings, shift: Callable[[int], int]) -> Process:
    health = proc.health
    if health is not None:
        health = dataclasses.replace(
            health,
            url=bind_text(health.url, bindings),
            serve_url=bind_text(health.serve_url, bindings),
        )
    return dataclasses.replace(
        proc,
        argv=tuple(bind_text(a, bindings) for a in proc.argv),
        env={k: bind_text(v, bindings) for k, v in proc.env.items()},
        ports={k: shift(v) for k, v in proc.ports.items()},
        health=health,
        url=bind_text(proc.url, bindings),
        bootstrap_port=shift(proc.bootstrap_port) if proc.bootstrap_port else 0,
    )


def shift_port(plan: Plan, port: int, offset: int) -> int:
    """Planned port `port` in the port block at `offset`. Ports outside the plan's block (the
    frontend's http_port) are fixed: validation keeps them out of every job's block."""
    top = plan.port_base + block_size(plan.gpus_per_node, plan.workers_per_gpu)
    return port + offset if plan.port_base <= port < top else port


def bind_plan(plan: Plan, bindings: Bindings) -> Plan:
    """A copy of `plan` with every placeholder replaced by its concrete value and every planned
    port moved into the job's port block (`bindings.port_offset`)."""

    def shift(port: int) -> int:
        return shift_port(plan, port, bindings.port_offset)

    readiness: Readiness = dataclasses.replace(
        plan.readiness,
        frontend_url=bind_text(plan.readiness.frontend_url, bindings),
        replica_urls=tuple(bind_text(u, bindings) for u in plan.readiness.replica_urls),
    )
    bench = plan.benchmark
    if bench is not None:
        clients = tuple(_bind_process(c, bindings, shift) for c in bench.clients)
        bench = dataclasses.replace(bench, clients=clients)
    return dataclasses.replace(
        plan,
        port_offset=bindings.port_offset,
        processes=tuple(_bind_process(p, bindings, shift) for p in plan.processes),
        readiness=readiness,
        prepare={k: bind_text(v, bindings) for k, v in plan.prepare.items()},
        benchmark=bench,
    )
