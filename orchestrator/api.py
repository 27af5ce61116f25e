"""The library entry the CLI and the sweep both call: compose -> validate -> plan -> request.

`prepare` does everything that needs no cluster and raises `InvalidConfig` (exit 2) before
anything is created; `dry_run` renders what `launch` (orchestrator.launch) executes.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from omegaconf import OmegaConf

from orchestrator.config.load import Composed, compose_configs
from orchestrator.config.schema import RootConfig, config_to_dict
from orchestrator.config.serve import resolve_host
from orchestrator.config.validate import check, validate
from orchestrator.core.errors import InvalidConfig, Issue
from orchestrator.engines import get_engine
from orchestrator.frontends.planner_check import planner_issues_many
from orchestrator.launchers import LaunchRequest, Materials, get_launcher
from orchestrator.launchers.rundir import git_sha
from orchestrator.launchers.select import Site, placed_launcher, resolve_launcher
from orchestrator.plan.build import build_plan
from orchestrator.plan.model import Plan
from orchestrator.render.dryrun import render_json, render_text

# Overrides that change what the command does, not what it launches: left out of the request
# (the script header), so a dry-run and the real launch of one command render the same script.
NOT_LAUNCHED = ("dry_run", "wait", "debug")


@dataclass(frozen=True, slots=True)
class Prepared:
    """A validated launch: config, plan (built once), launcher kind and its request."""

    cfg: RootConfig
    launcher: str  # the kind of the launcher that runs it (orchestrator.launchers)
    plan: Plan
    request: LaunchRequest
    overrides: tuple[str, ...]


def launched_overrides(overrides: Sequence[str]) -> list[str]:
    """`overrides` without the ones in NOT_LAUNCHED."""
    return [o for o in overrides if o.lstrip("+~").partition("=")[0] not in NOT_LAUNCHED]


def prepare(overrides: Sequence[str], site: Site) -> Prepared:
    """Compose and validate the config, build the plan, check every engine argv with the
    engine's own parser, and materialize the launch request for this site."""
    (result,) = prepare_many([overrides], site)
    if isinstance(result, InvalidConfig):
        raise result
    return result


def prepare_many(
    override_lists: Sequence[Sequence[str]], site: Site
) -> list[Prepared | InvalidConfig]:
    """`prepare` of each override list (a sweep's points): the same steps and the same result
    per list, with one Hydra initialization and one engine argv check for all of them."""
    planned = plan_many(override_lists, site)
    ok = [p for p in planned if isinstance(p, Planned)]
    checked = dict(zip(map(id, ok), check_argvs(ok), strict=True))
    sha = git_sha() if ok else ""
    out: list[Prepared | InvalidConfig] = []
    for item in planned:
        if isinstance(item, InvalidConfig):
            out.append(item)
        elif checked[id(item)]:
            out.append(InvalidConfig(checked[id(item)]))
        else:
            out.append(materialized(item, site, sha))
    return out


@dataclass(frozen=True, slots=True)
class Planned:
    """A composed, validated config with its plan (before the engine argv check)."""

    cfg: RootConfig
    launcher: str  # the resolved launcher kind
    plan: Plan
    overrides: tuple[str, ...]


def plan_many(override_lists: Sequence[Sequence[str]], site: Site) -> list[Planned | InvalidConfig]:
    """Compose (one Hydra initialization), validate and plan each override list."""
    composed = compose_configs(override_lists)
    return [
        item if isinstance(item, InvalidConfig) else _planned(item, overrides, site)
        for item, overrides in zip(composed, override_lists, strict=True)
    ]


def _planned(composed: Composed, overrides: Sequence[str], site: Site) -> Planned | InvalidConfig:
    cfg, unknown = composed
    try:
        issues = unknown + validate(cfg)  # keys added with `+` that the schema lacks, and the rest
        if issues:
            raise InvalidConfig(issues)
        launcher = resolve_launcher(cfg.launcher.kind, site)
        cfg = dataclasses.replace(cfg, launcher=dataclasses.replace(cfg.launcher, kind=launcher))
        cfg = resolve_host(cfg)  # placement=here: the address this host's frontend binds
        check(cfg)  # again: some rules depend on the resolved launcher (local = one node)
    except InvalidConfig as exc:
        return exc
    return Planned(cfg=cfg, launcher=launcher, plan=build_plan(cfg), overrides=tuple(overrides))


def check_argvs(planned: Sequence[Planned]) -> list[list[Issue]]:
    """Every engine's own parser over the argvs of `planned` (one batched call per engine kind),
    and the planner's own model over its configuration."""
    issues: dict[int, list[Issue]] = {}
    for kind in dict.fromkeys(p.cfg.engine.kind for p in planned):
        same = [p for p in planned if p.cfg.engine.kind == kind]
        # frontend.placement=here: the engine argvs are those of the worker jobs.
        found = get_engine(kind).check_argvs(
            [(p.cfg, p.plan.serve.workers if p.plan.serve else p.plan) for p in same]
        )
        issues.update(zip(map(id, same), found, strict=True))
    # autoscale: the planner's configuration, checked by the planner's own model.
    planners = planner_issues_many([p.cfg for p in planned])
    return [issues[id(p)] + more for p, more in zip(planned, planners, strict=True)]


def materialized(planned: Planned, site: Site, sha: str) -> Prepared:
    """The launch request of a planned, checked config for this site."""
    here = planned.cfg.frontend.placed_here
    launcher = get_launcher(placed_launcher(planned.launcher, site, frontend_here=here))
    materials = Materials(
        python=sys.executable,
        git_sha=sha,
        cwd=os.getcwd(),
        overrides=launched_overrides(planned.overrides),
    )
    plan = launcher.place(planned.plan, materials)  # where its driver runs (and its worker jobs)
    return Prepared(
        cfg=planned.cfg,
        launcher=launcher.kind,
        plan=plan,
        request=launcher.materialize(plan, materials),
        overrides=planned.overrides,
    )


def dry_run(prepared: Prepared) -> str:
    """The dry-run output (text or JSON per cfg.dry_run): the plan and the request as executed."""
    if prepared.cfg.dry_run_mode() == "json":
        return render_json(prepared.plan, prepared.request)
    yaml = OmegaConf.to_yaml(OmegaConf.create(config_to_dict(prepared.cfg)))
    return render_text(
        prepared.plan, prepared.request, overrides=prepared.overrides, config_yaml=yaml
    )
