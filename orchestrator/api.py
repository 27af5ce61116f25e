"""The library entry the CLI and the sweep both call: compose -> validate -> plan -> request.

`prepare` does everything that needs no cluster and raises `InvalidConfig` (exit 2) before
anything is created; `dry_run` renders what `launch` (orchestrator.launchers.launch) executes.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from omegaconf import OmegaConf

from orchestrator.config.load import compose_checked, config_to_dict
from orchestrator.config.schema import RootConfig
from orchestrator.engines import get_engine
from orchestrator.errors import InvalidConfig
from orchestrator.launchers.requests import LaunchRequest, materialize
from orchestrator.launchers.rundir import git_sha
from orchestrator.launchers.select import Site, resolve_launcher
from orchestrator.plan.build import build_plan
from orchestrator.plan.model import Plan
from orchestrator.render.dryrun import render_json, render_text
from orchestrator.validate import check, validate

# Overrides that change what the command does, not what it launches: left out of the request
# (the script header), so a dry-run and the real launch of one command render the same script.
NOT_LAUNCHED = ("dry_run", "wait", "debug")


@dataclass(frozen=True, slots=True)
class Prepared:
    """A validated launch: config, plan (built once), launcher kind and its request."""

    cfg: RootConfig
    launcher: str  # submitit | sbatch | local | allocation (inside salloc/sbatch)
    plan: Plan
    request: LaunchRequest
    overrides: tuple[str, ...]


def launched_overrides(overrides: Sequence[str]) -> list[str]:
    """`overrides` without the ones in NOT_LAUNCHED."""
    return [o for o in overrides if o.lstrip("+~").partition("=")[0] not in NOT_LAUNCHED]


def prepare(overrides: Sequence[str], site: Site) -> Prepared:
    """Compose and validate the config, build the plan, check every engine argv with the
    engine's own parser, and materialize the launch request for this site."""
    cfg, unknown = compose_checked(overrides)
    issues = unknown + validate(cfg)
    if issues:
        raise InvalidConfig(issues)
    launcher = resolve_launcher(cfg.launcher.kind, site)
    cfg = dataclasses.replace(cfg, launcher=dataclasses.replace(cfg.launcher, kind=launcher))
    check(cfg)  # again: some rules depend on the resolved launcher (local = one node)
    plan = build_plan(cfg)
    issues = get_engine(cfg.engine.kind).check_argv(cfg, plan)
    if issues:
        raise InvalidConfig(issues)
    kind = "allocation" if launcher != "local" and site.allocation_job_id else launcher
    request = materialize(plan, kind, python=sys.executable,
                          overrides=launched_overrides(overrides), git_sha=git_sha(),
                          cwd=os.getcwd())  # fmt: skip
    return Prepared(cfg=cfg, launcher=kind, plan=plan, request=request, overrides=tuple(overrides))


def dry_run(prepared: Prepared) -> str:
    """The dry-run output (text or JSON per cfg.dry_run): the plan and the request as executed."""
    if prepared.cfg.dry_run_mode() == "json":
        return render_json(prepared.plan, prepared.request)
    yaml = OmegaConf.to_yaml(OmegaConf.create(config_to_dict(prepared.cfg)))
    return render_text(prepared.plan, prepared.request, overrides=prepared.overrides,
                       config_yaml=yaml)  # fmt: skip
