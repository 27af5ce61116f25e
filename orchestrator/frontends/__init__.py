"""The frontend registry: one module per frontend behind `orchestrator.frontends.base.Frontend`.

Adding a frontend = one module here with a `FRONTEND`, one line below, and
conf/frontend/<kind>.yaml; engines name the frontends they work with (`Engine.frontends`).
Each answers what it routes to (`Frontend.routes`: dynamo_routes, router_attach).
Dynamo's planner (autoscale=dynamo_planner) is a head process next to the Dynamo frontend:
dynamo_planner.py plans it, planner_check.py checks its configuration with its own model.
Frontend modules import core, config.schema, the plan model, runtime.hooks and health (their
plugins run in the driver) and the launcher facts.
"""

from __future__ import annotations

from orchestrator.frontends import dynamo, sglang_router, smg
from orchestrator.frontends.base import Frontend, Head
from orchestrator.plan.model import Plan
from orchestrator.rundir.secrets import NAMES, SECRETS_DIR, placeholder

FRONTENDS: dict[str, Frontend] = {
    f.kind: f for f in (dynamo.FRONTEND, sglang_router.FRONTEND, smg.FRONTEND)
}


def get_frontend(kind: str) -> Frontend:
    """The frontend called `kind` (KeyError listing the known ones otherwise)."""
    try:
        return FRONTENDS[kind]
    except KeyError:
        raise KeyError(f"unknown frontend {kind!r}; known: {', '.join(FRONTENDS)}") from None


def lock_lines(plan: Plan) -> list[str]:
    """Every lock of a run of `plan`, secrets as placeholders."""
    shared = (
        f"secrets: generated at launch into RUN_DIR/{SECRETS_DIR}/ (0700, files 0600: "
        f"{', '.join(placeholder(n) for n in NAMES)}); handed to processes through the "
        "driver's environment, never in plans, scripts, argv or logs"
    )
    return [shared, *get_frontend(plan.readiness.frontend_kind).lock_lines(plan)]


__all__ = ["FRONTENDS", "Frontend", "Head", "get_frontend", "lock_lines"]
