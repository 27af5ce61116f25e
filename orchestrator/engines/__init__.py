"""The engine registry: one module per worker engine behind `orchestrator.engines.base.Engine`.

Adding an engine = one module here with an `ENGINE`, one line below, and conf/engine/<kind>.yaml.
Engine modules import core, config.schema and the plan model only.
"""

from __future__ import annotations

from orchestrator.engines import dynamo_sglang, mocker, sglang
from orchestrator.engines.base import Engine

ENGINES: dict[str, Engine] = {
    e.kind: e for e in (dynamo_sglang.ENGINE, sglang.ENGINE, mocker.ENGINE)
}


def get_engine(kind: str) -> Engine:
    """The engine called `kind` (KeyError listing the known ones otherwise)."""
    try:
        return ENGINES[kind]
    except KeyError:
        raise KeyError(f"unknown engine {kind!r}; known: {', '.join(ENGINES)}") from None


__all__ = ["ENGINES", "Engine", "get_engine"]
