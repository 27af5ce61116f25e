"""The frontend registry: one module per frontend behind `orchestrator.frontends.base.Frontend`.

Adding a frontend = one module here with a `FRONTEND`, one line below, and
conf/frontend/<kind>.yaml; engines name the frontends they work with (`Engine.frontends`).
Frontend modules import core, config.schema, the plan model, runtime.hooks and health (their
plugins run in the driver) and the launcher facts.
"""

from __future__ import annotations

from orchestrator.frontends import dynamo, sglang_router, smg
from orchestrator.frontends.base import Frontend, Head

FRONTENDS: dict[str, Frontend] = {
    f.kind: f for f in (dynamo.FRONTEND, sglang_router.FRONTEND, smg.FRONTEND)
}


def get_frontend(kind: str) -> Frontend:
    """The frontend called `kind` (KeyError listing the known ones otherwise)."""
    try:
        return FRONTENDS[kind]
    except KeyError:
        raise KeyError(f"unknown frontend {kind!r}; known: {', '.join(FRONTENDS)}") from None


__all__ = ["FRONTENDS", "Frontend", "Head", "get_frontend"]
