"""What every frontend provides (one module per frontend, see `orchestrator.frontends`)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from orchestrator.config.schema import RootConfig
from orchestrator.core.effects import HttpClient
from orchestrator.core.errors import Issue
from orchestrator.plan.model import Plan, Process, Readiness
from orchestrator.plan.placeholders import port_ref
from orchestrator.plan.ports import PortAllocator

if TYPE_CHECKING:
    from orchestrator.runtime.health import Verdict
    from orchestrator.runtime.hooks import DriverView


@dataclass(frozen=True, slots=True)
class Head:
    """What a frontend puts on node 0, and what its workers need to find it."""

    processes: list[Process]  # infrastructure and the frontend itself, in start order
    worker_env: dict[str, str] = field(default_factory=dict)  # e.g. Dynamo's discovery variables
    discovery: str = ""  # Dynamo discovery backend for worker argv ('' for none)
    url: str = ""  # the URL users get when it is not the frontend's (a proxy's, frontends/pair.py)


@dataclass(frozen=True, slots=True)
class Routes:
    """One look at what a frontend routes to. Workers are named by the frontend's own key for
    them (`Frontend.worker_keys`): Dynamo's instance id, a router's worker URL.

    `listed`: per plan role ("prefill", "decode", "worker"), the workers the frontend has as
    routable; `routed`: the workers it has sent requests to (evidence that its routing, not
    only its discovery, has them)."""

    listed: Mapping[str, frozenset[str]]
    routed: frozenset[str]

    def empty_roles(self, roles: Sequence[str]) -> list[str]:
        """The `roles` the frontend has no worker of (a request needing one fails now)."""
        return [r for r in roles if not self.listed.get(r)]

    def routes_to(self, key: str) -> bool:
        """Whether the frontend lists the worker `key` and has sent it requests."""
        return key in self.routed and any(key in keys for keys in self.listed.values())


def http_port(
    cfg: RootConfig, ports: PortAllocator, extra: Sequence[str] = ()
) -> tuple[str, dict[str, int]]:
    """The frontend's HTTP port as written in its argv and URLs, and its planned ports (`http`
    and the `extra` names, one slot on node 0; every frontend takes that slot, so worker ports
    do not move when the frontend changes).

    On an exclusive cluster (whole nodes per job) it is the fixed `frontend.http_port`, a URL
    that stays the same from run to run. When nodes may be shared (`cluster.exclusive=false`)
    two jobs' frontends can land on one node, and the second would find 8000 taken: there it is
    the slot's first port, a `{port:N}` placeholder the driver shifts into the job's port block
    like every worker port (the bound URL is the one state.json and the progress output show).
    A frontend placed on this host (frontend.placement=here) is alone there: the fixed port."""
    # frontend.placement=here: on this host, alone: the fixed port as well.
    fixed = cfg.cluster.exclusive or cfg.frontend.placed_here
    own = ports.allocate(0, [*(() if fixed else ("http",)), *extra])
    if fixed:
        return str(cfg.frontend.http_port), {"http": cfg.frontend.http_port, **own}
    return port_ref(own["http"]), own


def no_request_plane_tls(cfg: RootConfig) -> list[Issue]:
    """frontend.request_plane_tls is Dynamo's (its TCP request plane); a router talks HTTP."""
    if not cfg.frontend.request_plane_tls:
        return []
    return [
        Issue(
            "frontend.request_plane_tls",
            "true",
            f"frontend={cfg.frontend.kind} has no "
            "Dynamo request plane (it sends HTTP to the workers)",
            "drop it, or use frontend=dynamo",
        )
    ]


def client_key_issues(cfg: RootConfig, environ: Mapping[str, str] | None = None) -> list[Issue]:
    """frontend.api_key_env names a variable that is set, non-empty, where you launch (the
    key is read there and kept in RUN_DIR/secrets; the config holds only the name)."""
    name = cfg.frontend.api_key_env
    if not name:
        return []
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
        return [
            Issue(
                "frontend.api_key_env",
                repr(name),
                "not an environment variable name (the key itself must not be in the config)",
                "export MY_API_KEY=... where you launch and set frontend.api_key_env=MY_API_KEY",
            )
        ]
    if not (os.environ if environ is None else environ).get(name, "").strip():
        return [
            Issue(
                "frontend.api_key_env",
                name,
                f"${name} is not set or empty here",
                f"export {name}=<the key clients must send> before launching, or "
                "drop frontend.api_key_env (the endpoint stays open)",
            )
        ]
    return []


class Frontend(Protocol):
    """One frontend: its processes, its readiness gate, how workers join it, its own rules."""

    kind: str

    def head(self, cfg: RootConfig, ports: PortAllocator, num_nodes: int) -> Head:
        """The processes on node 0 (planned ports from `ports`)."""
        ...

    def ready_path(self, cfg: RootConfig) -> str:
        """The path of the frontend's own readiness gate."""
        ...

    def validate(self, cfg: RootConfig) -> list[Issue]:
        """Rules of this frontend."""
        ...

    def attach_issues(self, cfg: RootConfig) -> list[Issue]:
        """Why workers of another Slurm job cannot join a run of `cfg` (`ctl scale`)."""
        ...

    def registration_lines(self, plan: Plan) -> list[str]:
        """Dry-run lines saying how workers join (empty when they join by themselves)."""
        ...

    def lock_lines(self, plan: Plan) -> list[str]:
        """Which locks the run's control plane has (dry-run and `ctl status`; secrets shown as
        placeholders)."""
        ...

    def ready(self, http: HttpClient, readiness: Readiness) -> Verdict:
        """One look at the readiness gate (runtime; every expected worker counted)."""
        ...

    def attach(self, driver: DriverView) -> None:
        """Add the frontend's runtime hooks to the driver (e.g. worker registration)."""
        ...

    def routes(self, http: HttpClient, url: str, readiness: Readiness) -> Routes:
        """One look at what the frontend at `url` routes to (HttpError when it does not
        answer); the driver releases an old worker only once its replacement is routed."""
        ...

    def worker_keys(self, proc: Process, record: Mapping[str, Any]) -> list[str]:
        """The frontend's keys of worker `proc` ([] while not known yet), from the process's
        entry in its driver's state.json (`record`)."""
        ...
