"""Model sources written as URIs, resolved right after composition: `model.path=hf:ORG/NAME[@REV]`
is the Hub repository ORG/NAME at REV, fetched once before the workers start (orchestrator.plan.fetch)."""

from __future__ import annotations

import dataclasses

from orchestrator.config.schema import RootConfig
from orchestrator.core.errors import Issue

HF_PREFIX = "hf:"


def resolve_hf_path(cfg: RootConfig) -> tuple[RootConfig, list[Issue]]:
    """`model.path=hf:ORG/NAME[@REV]` -> model.path=ORG/NAME, model.revision=REV, model.fetch=true
    (applied right after composition, so every later step sees a plain HF id)."""
    m = cfg.model
    if not m.path.startswith(HF_PREFIX):
        return cfg, []
    repo, _, revision = m.path[len(HF_PREFIX) :].partition("@")
    if m.revision and revision and m.revision != revision:
        return cfg, [
            Issue(
                "model.path",
                m.path,
                f"names revision {revision} but model.revision={m.revision}",
                "give the revision once",
            )
        ]
    model = dataclasses.replace(m, path=repo, revision=revision or m.revision, fetch=True)
    return dataclasses.replace(cfg, model=model), []
