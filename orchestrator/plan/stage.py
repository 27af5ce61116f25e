"""Stage to node-local disk (pure: the spec, its checks, the path the workers get; the copying is
orchestrator.runtime.stage).

`model.stage=node_local`: before the workers start, every worker node copies the model directory
(model.path, or the snapshot model.fetch downloaded) to `<cluster.local_dir>/orchestrator-models/
<name>` once per model revision, all nodes in parallel, and the workers load it from there: N
nodes loading 65-700 GB each from one shared filesystem at once saturate it, a local NVMe does
not. `model.stage_method`: `copy` (every node reads the shared filesystem in parallel) or
`sbcast` (node 0 packs one tar, Slurm's sbcast broadcasts it over its tree, each node unpacks).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from orchestrator.config.schema import RootConfig
from orchestrator.core.errors import Issue

STAGE_MODES = ("none", "node_local")
STAGE_METHODS = ("copy", "sbcast")
STAGED_DIR = "orchestrator-models"


@dataclass(frozen=True, slots=True, kw_only=True)
class StageSpec:
    """What the stage step copies where."""

    source: str  # the model directory on the shared filesystem; "" = the fetched snapshot
    local_dir: str  # cluster.local_dir; "" = $TMPDIR or /tmp on the node
    name: str  # the staged directory's name under <local_dir>/orchestrator-models
    method: str  # copy | sbcast
    nodes: tuple[int, ...]  # the nodes whose workers load the model


def stage_name(cfg: RootConfig) -> str:
    """A directory name for the model (its revision is in the manifest, not the name: a new
    revision replaces the old copy instead of filling the disk)."""
    base = cfg.model.name or cfg.model.path.rstrip("/").split("/")[-1] or "model"
    return re.sub(r"[^A-Za-z0-9._-]", "_", base)


def stage_spec(cfg: RootConfig, worker_nodes: tuple[int, ...]) -> StageSpec | None:
    """The stage step of this config (None unless model.stage=node_local)."""
    if cfg.model.stage != "node_local":
        return None
    return StageSpec(
        source="" if cfg.model.fetch else cfg.model.path,
        local_dir=cfg.cluster.local_dir,
        name=stage_name(cfg),
        method=cfg.model.stage_method,
        nodes=worker_nodes,
    )


def staged_path(local_dir: str, name: str) -> str:
    """Where a node keeps its copy."""
    return f"{local_dir.rstrip('/')}/{STAGED_DIR}/{name}"


def stage_issues(cfg: RootConfig, *, loads_model: bool) -> list[Issue]:
    """model.stage and its method, the source, the local directory, an engine that loads the
    model (`loads_model`: the mocker does not)."""
    m, issues = cfg.model, []
    for key, value, valid in (
        ("model.stage", m.stage, STAGE_MODES),
        ("model.stage_method", m.stage_method, STAGE_METHODS),
    ):
        if value not in valid:
            fix = f"use one of: {', '.join(valid)}"
            issues.append(Issue(key, repr(value), "unknown value", fix))
    if m.stage != "node_local":
        return issues
    if cfg.cluster.local_dir and not cfg.cluster.local_dir.startswith("/"):
        fix = "e.g. cluster.local_dir=/local/nvme (default: $TMPDIR or /tmp)"
        issues.append(
            Issue("cluster.local_dir", cfg.cluster.local_dir, "must be an absolute path", fix)
        )
    return issues + [
        Issue("model.stage", "node_local", why, fix) for why, fix in _refusals(cfg, loads_model)
    ]


def _refusals(cfg: RootConfig, loads_model: bool) -> list[tuple[str, str]]:
    """Why node_local staging cannot work for this config, each with its fix."""
    m, out = cfg.model, []
    if not (m.fetch or m.path.startswith("/")):
        why = (
            f"stages a model directory, and model.path={m.path} is neither a directory nor fetched"
        )
        out.append((why, "set model.path=/shared/models/NAME or model.path=hf:ORG/NAME"))
    if not loads_model:
        why = f"engine={cfg.engine.kind} loads no model"
        out.append((why, "drop model.stage, or use an engine that loads weights"))
    if cfg.cluster.container_image:
        why = "the staged copy is outside the container"
        out.append((why, "mount cluster.local_dir into the container, or drop model.stage"))
    return out
