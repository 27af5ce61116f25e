"""`ctl scale RUN_DIR decode.workers=N [prefill.workers=M]`: attach worker jobs to a running run.

A scale-up submits one more worker job holding only the new workers (orchestrator.rundir.jobs,
orchestrator.elastic.workerjobs: its own run directory RUN_DIR/attached/<n>/, run by the normal
driver): its plan has no frontend or discovery of its own and joins the run's. It is planned
from what the run saved, without composing the config again: config.json (the run's config as
launched) with the new counts, validated as at launch, the new workers planned from index
`running` on (orchestrator.plan.build.attached_plan, as a placement=here run's worker job is)
and joined to the run like its worker jobs (`joined`).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from orchestrator.config.schema import RootConfig, WorkerGroupConfig, config_to_dict
from orchestrator.config.validate import validate
from orchestrator.core.effects import CommandRunner, SubprocessRunner
from orchestrator.core.errors import InvalidConfig, Issue, OrchestratorError
from orchestrator.elastic.scale_down import current_counts
from orchestrator.elastic.workerjobs import joined, submit_job
from orchestrator.engines import get_engine
from orchestrator.frontends import get_frontend
from orchestrator.launchers import Facts, Materials, get_launcher
from orchestrator.launchers.rundir import git_sha
from orchestrator.plan.build import attached_plan
from orchestrator.plan.model import TIER_WORKER, Plan, WorkerJobPlan
from orchestrator.rundir import Phase, RunDir, WorkerJob

GROUPS = ("prefill", "decode", "aggregated")
# Overrides of the run that the job's record (launch.json, script header) must not repeat: where
# and how the run was launched, the counts the request replaces.
NOT_INHERITED = (
    "run_dir",
    "wait",
    "dry_run",
    "launcher.job_name",
    *(f"{g}.workers" for g in GROUPS),
)


@dataclass(frozen=True, slots=True)
class ScaleRequest:
    """Worker counts per group, and the TP of the new workers when given (`decode.tp=8`)."""

    counts: dict[str, int]
    tp: dict[str, int]

    def overrides(self) -> list[str]:
        """As Hydra overrides."""
        return [
            *(f"{g}.workers={n}" for g, n in self.counts.items()),
            *(f"{g}.tp={n}" for g, n in self.tp.items()),
        ]


def parse_request(items: Sequence[str]) -> ScaleRequest:
    """`decode.workers=4 [decode.tp=8]` ...; InvalidConfig names every bad item."""
    request = ScaleRequest({}, {})
    issues: list[Issue] = []
    for item in items:
        key, sep, value = item.partition("=")
        group, _, field = key.partition(".")
        if not sep or group not in GROUPS or field not in ("workers", "tp"):
            issues.append(
                Issue(
                    key or item,
                    repr(item),
                    "ctl scale only changes worker counts (and the TP of the new workers)",
                    "use prefill.workers=N, decode.workers=N or aggregated.workers=N",
                )
            )
        elif not value.isdigit() or int(value) < 1:
            issues.append(
                Issue(
                    key,
                    repr(value),
                    f"{field} must be at least 1",
                    "give a whole number >= 1 (ctl stop removes every worker)",
                )
            )
        else:
            (request.counts if field == "workers" else request.tp)[group] = int(value)
    if not request.counts and not issues:
        issues.append(
            Issue(
                "scale",
                " ".join(items) or "nothing",
                "no worker count given",
                "e.g. decode.workers=2",
            )
        )
    if issues:
        raise InvalidConfig(issues)
    return request


def worker_env(bound: Plan) -> dict[str, str]:
    """The environment a running worker got (discovery endpoints and namespace, bound)."""
    worker = next((p for p in bound.processes if p.tier == TIER_WORKER), None)
    if worker is None:
        raise OrchestratorError("the run has no workers to copy the discovery settings from")
    return dict(worker.env)


def scale_overrides(run_dir: Path, request: ScaleRequest) -> list[str]:
    """The run's launch overrides with the request's (and nothing about where it ran)."""
    given = [o.partition("=")[0] for o in request.overrides()]
    kept = [
        o
        for o in RunDir(run_dir).launch().overrides
        if o.lstrip("+~").partition("=")[0] not in (*NOT_INHERITED, *given)
    ]
    return [*kept, *request.overrides()]


def saved_config(run_dir: Path) -> RootConfig:
    """config.json as the typed config (OmegaConf onto the schema; no Hydra composition)."""
    try:
        obj = OmegaConf.to_object(
            OmegaConf.merge(OmegaConf.structured(RootConfig), RunDir(run_dir).config())
        )
    except OmegaConfBaseException as exc:
        raise OrchestratorError(f"cannot read {RunDir(run_dir).config_file}: {exc}") from exc
    assert isinstance(obj, RootConfig)
    return obj


def scaled_config(cfg: RootConfig, request: ScaleRequest) -> RootConfig:
    """`cfg` with the request's counts and TPs, and nothing about where the run was launched
    (the job's name is its own: `<run's default>-attached`)."""
    groups: dict[str, WorkerGroupConfig] = {}
    for group in (*request.counts, *request.tp):
        old = groups.get(group) or getattr(cfg, group)
        groups[group] = dataclasses.replace(
            old, workers=request.counts.get(group, old.workers), tp=request.tp.get(group, old.tp)
        )
    launcher = dataclasses.replace(cfg.launcher, job_name="")
    return dataclasses.replace(cfg, launcher=launcher, run_dir="", wait=False, **groups)  # type: ignore[arg-type]


def scale_up(
    run_dir: Path, request: ScaleRequest, runner: CommandRunner | None = None
) -> WorkerJob:
    """Plan the worker job for the workers `request` adds and submit it (the one worker-job
    path); InvalidConfig naming every problem (as at launch, the engine's own parser included)
    before anything is created."""
    cfg = scaled_config(saved_config(run_dir), request)
    bound = RunDir(run_dir).bound_plan()
    # frontend.placement=here: the run (launcher `here`) has no workers of its own; its worker
    # jobs are submitted with its serve plan's launcher and join through their environment.
    launcher = get_launcher(
        bound.serve.launcher if bound.serve else RunDir(run_dir).launch().launcher
    )
    have = current_counts(run_dir)
    issues = scale_up_issues(cfg, launcher, have, request)
    if issues:
        raise InvalidConfig(issues)
    job = WorkerJobPlan(heartbeat_timeout_s=cfg.launcher.heartbeat_timeout_s)
    url = bound.readiness.frontend_url
    env = worker_env(bound.serve.workers if bound.serve else bound)
    plan = attached_plan(cfg, have, env, frontend_url=url, job=job)
    (issues,) = get_engine(cfg.engine.kind).check_argvs([(cfg, plan)])
    if issues:
        raise InvalidConfig(issues)
    overrides = tuple(scale_overrides(run_dir, request))
    materials = Materials(
        python=sys.executable, overrides=overrides, git_sha=git_sha(), cwd=os.getcwd()
    )
    plan = launcher.place(joined(plan, run_dir, bound), materials)
    return submit_job(
        run_dir,
        plan,
        launcher.materialize(plan, materials),
        config=config_to_dict(cfg),
        runner=runner or SubprocessRunner(),
        overrides=overrides,
    )


def scale_up_issues(
    cfg: RootConfig, launcher: Facts, have: Mapping[str, int], request: ScaleRequest
) -> list[Issue]:
    """Every problem of the scaled config (as at launch) and of scaling this run."""
    issues = validate(cfg) + get_frontend(cfg.frontend.kind).attach_issues(cfg)
    if not launcher.submits_job:
        fix = "start the run with launcher=sbatch or launcher=submitit"
        issues.append(Issue("launcher", launcher.kind, "attached workers run in a Slurm job", fix))
    if all(n == have.get(g, 0) for g, n in request.counts.items()):
        asked = ", ".join(f"{g}.workers={n}" for g, n in request.counts.items())
        issues.append(
            Issue("scale", asked, "the run already has these workers", "give a larger count")
        )
    return issues


def check_ready(run_dir: Path, phase: str) -> None:
    """Only a serving run takes more workers (its frontend and discovery must be up). A
    rollover in progress needs no check: a job and its copy count once (WorkerJobs.holding)."""
    if phase != Phase.READY:
        said, fix = (
            f"the run is {phase or 'not started'}",
            "scale a run once `ctl status` says ready",
        )
        raise InvalidConfig([Issue("RUN_DIR", str(run_dir), said, fix)])
