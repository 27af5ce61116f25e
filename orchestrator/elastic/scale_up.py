"""`ctl scale RUN_DIR decode.workers=N [prefill.workers=M]`: attach worker jobs to a running run.

A scale-up submits one more Slurm job holding only the new workers (its own run directory,
RUN_DIR/attached/<n>/, run by the normal driver): its plan has no frontend or discovery of its
own and points its workers at the run's (orchestrator.plan.build.attached_plan). The attached
jobs are listed in RUN_DIR/attached.json (the run's driver owns state.json and rewrites it whole,
so a second writer there would be overwritten).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestrator.api import Prepared, launched_overrides, prepare
from orchestrator.core.effects import CommandRunner, SubprocessRunner
from orchestrator.core.errors import InvalidConfig, Issue, OrchestratorError
from orchestrator.elastic.attached import load_bound, rollover_in_progress, update_attached
from orchestrator.elastic.scale_down import current_counts
from orchestrator.elastic.workerjobs import job_groups, new_job_dir, with_files
from orchestrator.frontends import get_frontend
from orchestrator.launchers import Materials, get_launcher
from orchestrator.launchers.rundir import git_sha, write_run_files
from orchestrator.launchers.select import Site
from orchestrator.plan.build import attached_plan
from orchestrator.plan.model import TIER_WORKER, Plan
from orchestrator.rundir import Phase, RunDir

GROUPS = ("prefill", "decode", "aggregated")
# Overrides of the run that the attached job must not repeat: where and how it was launched.
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
        return [*(f"{g}.workers={n}" for g, n in self.counts.items()),
                *(f"{g}.tp={n}" for g, n in self.tp.items())]  # fmt: skip


def parse_request(items: Sequence[str]) -> ScaleRequest:
    """`decode.workers=4 [decode.tp=8]` ...; InvalidConfig names every bad item."""
    request = ScaleRequest({}, {})
    issues: list[Issue] = []
    for item in items:
        key, sep, value = item.partition("=")
        group, _, field = key.partition(".")
        if not sep or group not in GROUPS or field not in ("workers", "tp"):
            issues.append(Issue(key or item, repr(item), "ctl scale only changes worker counts "
                                "(and the TP of the new workers)", "use prefill.workers=N, "
                                "decode.workers=N or aggregated.workers=N"))  # fmt: skip
        elif not value.isdigit() or int(value) < 1:
            issues.append(Issue(key, repr(value), f"{field} must be at least 1",
                                "give a whole number >= 1 (ctl stop removes every worker)"))  # fmt: skip
        else:
            (request.counts if field == "workers" else request.tp)[group] = int(value)
    if not request.counts and not issues:
        issues.append(Issue("scale", " ".join(items) or "nothing", "no worker count given",
                            "e.g. decode.workers=2"))  # fmt: skip
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
    kept = [o for o in RunDir(run_dir).launch().overrides
            if o.lstrip("+~").partition("=")[0] not in (*NOT_INHERITED, *given)]  # fmt: skip
    return [*kept, *request.overrides()]


def plan_scale_up(run_dir: Path, counts: Mapping[str, int], prepared: Prepared) -> Plan:
    """The attached plan for the workers `counts` adds to the run (InvalidConfig if none)."""
    issues = get_frontend(prepared.cfg.frontend.kind).attach_issues(prepared.cfg)
    if not get_launcher(prepared.launcher).submits_job:
        issues.append(Issue("launcher", prepared.launcher, "attached workers run in a Slurm job",
                            "start the run with launcher=sbatch or launcher=submitit"))  # fmt: skip
    bound = load_bound(run_dir)
    have = current_counts(run_dir)
    if all(n == have.get(g, 0) for g, n in counts.items()):
        issues.append(Issue("scale", ", ".join(f"{g}.workers={n}" for g, n in counts.items()),
                            "the run already has these workers", "give a larger count"))  # fmt: skip
    if issues:
        raise InvalidConfig(issues)
    plan = attached_plan(prepared.cfg, have, worker_env(bound),
                         frontend_url=bound.readiness.frontend_url, attach_to=str(run_dir))  # fmt: skip
    # The run's own prepared files (the mocker's tiny model): Dynamo's frontend keeps the model
    # card of the first workers and rejects later ones whose card differs ("Rejected
    # incompatible workers", seen on the testbed when the path differed).
    return with_files(plan, bound.prepare)


def submit_attached(
    run_dir: Path, prepared: Prepared, plan: Plan, runner: CommandRunner | None = None
) -> tuple[str, Path]:
    """Create RUN_DIR/attached/<n>/, submit its job, list it in attached.json."""
    adir = new_job_dir(run_dir)
    overrides = launched_overrides(prepared.overrides)
    launcher = get_launcher(prepared.launcher)
    materials = Materials(python=sys.executable, overrides=overrides, git_sha=git_sha(),
                          cwd=os.getcwd())  # fmt: skip
    plan = launcher.place(plan, materials)
    request = launcher.materialize(plan, materials).bind(str(adir))
    state = write_run_files(adir, prepared.cfg, plan, launcher=launcher.kind,
                            overrides=overrides, request=request.to_dict())  # fmt: skip
    job_id = request.submit(adir, runner or SubprocessRunner())
    state.phase(Phase.SUBMITTED, job_id=job_id)
    workers = [p.name for p in plan.processes]
    entry = {"job_id": job_id, "run_dir": str(adir), "workers": workers, "groups": job_groups(plan),
             "submitted_at": state.data["timeline"][-1]["t"]}  # fmt: skip
    update_attached(run_dir, lambda entries: [*entries, entry])
    return job_id, adir


def check_ready(run_dir: Path, phase: str) -> None:
    """Only a serving run takes more workers (its frontend and discovery must be up)."""
    if phase != Phase.READY:
        raise InvalidConfig([Issue("RUN_DIR", str(run_dir), f"the run is {phase or 'not started'}",
                                   "scale a run once `ctl status` says ready")])  # fmt: skip
    moving = rollover_in_progress(run_dir)
    if moving:  # both jobs hold the same workers for a moment: counts would be doubled
        raise InvalidConfig([Issue("RUN_DIR", str(run_dir), f"a rollover is in progress ({moving})",
                                   "scale once it is over (ctl status: the old job ended)")])  # fmt: skip


def prepare_scale(run_dir: Path, request: ScaleRequest, site: Site) -> Prepared:
    """The run's config composed again with the request, validated as at launch (engine
    argvs included), before anything is submitted."""
    return prepare(scale_overrides(run_dir, request), site)
