"""Deployment sweeps: `python -m orchestrator -m KEY=a,b ...` -> one Slurm job per point.

Comma lists (and Hydra's range()/glob()) are expanded with Hydra's own override parser into the
cartesian product of points. Every point is composed and validated before anything is submitted
(any problem: exit 2, nothing submitted). Each point is then launched through the normal path
with wait=false, so each job gets its own node count, and the command returns once all are
submitted. The sweep directory holds manifest.json (point -> run directories -> job ids) and
runs/<name>-<hash>/ per attempt. Re-running the same command on the same sweep_dir submits only
points without a valid benchmark result that are not queued or running (resume).

Sweep-only keys: `sweep_dir=DIR` (default outputs/sweeps/<UTC time>-<model>),
`sweep.baseline=aggregated` (adds, per distinct GPU count, an aggregated deployment with the same
number of worker GPUs and the prefill TP) and `sweep.max_in_flight=N` (at most N points queued
or running: each job waits, through a Slurm dependency, for the job N places before it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from orchestrator.api import Planned, Prepared, check_argvs, materialized, plan_many
from orchestrator.config.load import quote_override_value
from orchestrator.config.schema import RootConfig
from orchestrator.core.effects import CommandRunner, SubprocessRunner
from orchestrator.core.errors import InvalidConfig, Issue, OrchestratorError
from orchestrator.launchers import runs_on_one_machine
from orchestrator.launchers.rundir import git_sha
from orchestrator.launchers.select import Site
from orchestrator.rundir import RunDir, write_json_atomic
from orchestrator.runtime.state import now_iso
from orchestrator.slurm.client import SlurmClient
from orchestrator.sweep.points import (
    SWEEP_KEYS,
    SweepPoint,
    baseline_point,
    expand,
    point_names,
    worker_gpus,
)
from orchestrator.sweep.sweepdir import MANIFEST, load_manifest, point_statuses

__all__ = ["SWEEP_KEYS", "SweepPoint", "baseline_point", "expand", "run_sweep", "worker_gpus"]
BASELINES = ("", "aggregated")


# A validated point (config, plan and request), and its manifest entry once triaged.
PreparedPoint = tuple[SweepPoint, Prepared]
Todo = tuple[SweepPoint, Prepared, dict[str, Any]]


# --- validation ------------------------------------------------------------------------------
def _sweep_issues(cfg: RootConfig, launcher: str, site: Site) -> list[Issue]:
    issues = []
    if runs_on_one_machine(launcher):
        issues.append(
            Issue(
                "launcher.kind",
                launcher,
                "a sweep submits one Slurm job per point; local "
                "points would all start on this machine at once",
                "run where sbatch is available, or set launcher=submitit|sbatch",
            )
        )
    if site.allocation_job_id:
        issues.append(
            Issue(
                "SLURM_JOB_ID",
                site.allocation_job_id,
                "inside an allocation a launch runs in the foreground instead of submitting",
                "run the sweep from a login node",
            )
        )
    if cfg.benchmark.kind == "none":
        issues.append(
            Issue(
                "benchmark.kind",
                "none",
                "a sweep point without a benchmark has no result and serves until its time limit",
                "add benchmark=aiperf, benchmark=sglang_bench or benchmark=lm_eval",
            )
        )
    if cfg.run_dir:
        issues.append(
            Issue(
                "run_dir",
                cfg.run_dir,
                "each point gets its own run directory",
                "set sweep_dir=DIR instead",
            )
        )
    return issues


def validate_points(points: list[SweepPoint], site: Site, baseline: str) -> list[PreparedPoint]:
    """Compose, validate and plan every point (and its baseline) as a single launch would
    (orchestrator.api: one Hydra initialization, one engine argv check for all points); raise
    one InvalidConfig naming the point of every problem."""
    if baseline not in BASELINES:
        raise InvalidConfig(
            [Issue("sweep.baseline", baseline, "unknown value", "use sweep.baseline=aggregated")]
        )
    planned = _planned(points, site)
    if baseline:
        seen = {p.key for p in points}
        extra = [
            baseline_point(point, ready.cfg)
            for point, ready in planned
            if isinstance(ready, Planned) and not point.baseline
        ]
        fresh = [b for b in extra if b is not None and not (b.key in seen or seen.add(b.key))]  # type: ignore[func-returns-value]
        planned += _planned(fresh, site)
    ok = [(point, ready) for point, ready in planned if isinstance(ready, Planned)]
    argv_issues = check_argvs([ready for _, ready in ok])
    issues = [
        _named(point, i)
        for point, ready in planned
        if isinstance(ready, InvalidConfig)
        for i in ready.issues
    ]
    for (point, ready), found in zip(ok, argv_issues, strict=True):
        issues += [_named(point, i) for i in found + _sweep_issues(ready.cfg, ready.launcher, site)]
    if issues:
        raise InvalidConfig(issues)
    sha = git_sha()
    return [(point, materialized(ready, site, sha)) for point, ready in ok]


def _planned(
    points: list[SweepPoint], site: Site
) -> list[tuple[SweepPoint, Planned | InvalidConfig]]:
    results = plan_many([list(p.overrides) for p in points], site)
    return list(zip(points, results, strict=True))


def _named(point: SweepPoint, issue: Issue) -> Issue:
    """`issue` with the point it belongs to in front of its key."""
    return dataclasses.replace(issue, key=f"[{point.label}] {issue.key}")


def _entry(
    manifest: dict[str, Any], point: SweepPoint, ready: Prepared, name: str
) -> dict[str, Any]:
    for entry in manifest["points"]:
        if entry["key"] == point.key:
            return entry  # type: ignore[no-any-return]
    entry = {
        "key": point.key,
        "label": point.label or name,
        "overrides": list(point.overrides),
        "swept": dict(point.swept),
        "baseline": point.baseline,
        "name": name,
        "deployment": ready.plan.name,
        "nodes": ready.plan.num_nodes,
        "gpus": worker_gpus(ready.cfg),
        "runs": [],
    }
    manifest["points"].append(entry)
    return entry


def _new_run_dir(sweep_dir: Path, entry: dict[str, Any]) -> Path:
    digest = hashlib.sha256(entry["key"].encode()).hexdigest()[:6]
    attempt = len(entry["runs"]) + 1
    name = f"{entry['name']}-{digest}" + (f"-r{attempt}" if attempt > 1 else "")
    return sweep_dir / "runs" / name


def max_in_flight(options: dict[str, str]) -> int:
    """`sweep.max_in_flight` (0: no limit)."""
    value = options.get("sweep.max_in_flight", "0")
    if not value.isdigit():
        raise InvalidConfig(
            [
                Issue(
                    "sweep.max_in_flight",
                    value,
                    "must be a whole number",
                    "set sweep.max_in_flight=N (N >= 1), or 0 for no limit",
                )
            ]
        )
    return int(value)


# --- submission ------------------------------------------------------------------------------
def default_sweep_dir(cfg: RootConfig) -> Path:
    """outputs/sweeps/<UTC time>-<model name>."""
    model = cfg.model.name or cfg.model.path.rstrip("/").split("/")[-1] or "model"
    return Path("outputs") / "sweeps" / f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{model}"


def _submit(point: SweepPoint, ready: Prepared, run_dir: Path, runner: CommandRunner) -> str:
    """Launch one point with wait=false; its job id (launch's stdout goes to our stderr)."""
    from orchestrator.launch import launch

    overrides = (*point.overrides, f"run_dir={quote_override_value(str(run_dir))}", "wait=false")
    cfg = dataclasses.replace(ready.cfg, run_dir=str(run_dir), wait=False)
    with contextlib.redirect_stdout(sys.stderr):
        code = launch(dataclasses.replace(ready, cfg=cfg, overrides=overrides), runner)
    if code:
        raise OrchestratorError(f"submitting {point.label} failed (exit {code}); see {run_dir}")
    return RunDir(run_dir).state().job_id


def _say(message: str) -> None:
    sys.stderr.write(f"[sweep] {message}\n")


def waits_for(window: Sequence[str], limit: int) -> str:
    """What the next job waits for, given the jobs queued or running before it in order
    (`window`): the one `limit` places before it, so that each of `limit` chains has one job in
    flight at a time (never more than `limit` queued or running); '' without a limit."""
    return window[-limit] if limit and len(window) >= limit else ""


def run_sweep(overrides: Sequence[str], site: Site, runner: CommandRunner | None = None) -> int:
    """Validate every point, then submit the points that need a job; print the sweep directory."""
    runner = runner or SubprocessRunner()
    points, options = expand(overrides)
    prepared, limit = _validated(points, site, options)
    first_cfg = prepared[0][1].cfg
    sweep_dir = (
        Path(options.get("sweep_dir") or default_sweep_dir(first_cfg)).expanduser().resolve()
    )
    manifest = load_manifest(sweep_dir)
    plan_lines, todo, active = _triage(prepared, manifest, sweep_dir, runner)
    if first_cfg.dry_run_mode() != "false":
        header = f"sweep {sweep_dir}: {len(prepared)} point(s), {len(todo)} to submit"
        sys.stdout.write(header + (f", at most {limit} in flight" if limit else "") + "\n")
        sys.stdout.write(
            "".join(f"  {line}\n" for line in plan_lines + _holds(todo, active, limit))
        )
        return 0
    sweep_dir.mkdir(parents=True, exist_ok=True)
    manifest.setdefault("invocations", []).append({"at": now_iso(), "overrides": list(overrides)})
    write_json_atomic(sweep_dir / MANIFEST, manifest)
    for line in plan_lines:
        _say(line)
    window = list(active)
    for item in todo:
        window.append(_submit_recorded(sweep_dir, manifest, item, waits_for(window, limit), runner))
    _say(
        f"{len(todo)} job(s) submitted, {len(prepared) - len(todo)} skipped"
        + (f", at most {limit} in flight" if limit else "")
        + f"; status: python -m orchestrator.ctl status {sweep_dir}"
    )
    print(sweep_dir, flush=True)
    return 0


def _holds(todo: Sequence[Todo], active: Sequence[str], limit: int) -> list[str]:
    """Dry-run lines saying which point waits for which (a job still in flight, or a point
    submitted before it)."""
    window, lines = list(active), []
    for _, _, entry in todo:
        after = waits_for(window, limit)
        lines += [f"{entry['name']} waits for {after}"] if after else []
        window.append(entry["name"])
    return lines


def _validated(
    points: list[SweepPoint], site: Site, options: dict[str, str]
) -> tuple[list[PreparedPoint], int]:
    """Every point validated and the in-flight limit, or one InvalidConfig with all problems."""
    try:
        limit, issues = max_in_flight(options), []
    except InvalidConfig as exc:
        limit, issues = 0, list(exc.issues)
    try:
        prepared = validate_points(points, site, options.get("sweep.baseline", ""))
    except InvalidConfig as exc:
        raise InvalidConfig(issues + list(exc.issues)) from exc
    if issues:
        raise InvalidConfig(issues)
    return prepared, limit


def _triage(
    prepared: Sequence[PreparedPoint],
    manifest: dict[str, Any],
    sweep_dir: Path,
    runner: CommandRunner,
) -> tuple[list[str], list[Todo], list[str]]:
    """One plan line per point (submit, or skip and why), the points to submit (new or failed:
    a valid, queued or running point is left alone on re-run), and the job ids of the points
    queued or running now (they count against sweep.max_in_flight)."""
    plan_lines, todo, active = [], [], []
    names = point_names([ready.plan.name for _, ready in prepared], [p for p, _ in prepared])
    entries = [
        _entry(manifest, p, ready, name) for (p, ready), name in zip(prepared, names, strict=True)
    ]
    statuses = point_statuses(sweep_dir, entries, SlurmClient(runner))  # one batched query
    for (point, ready), entry, status in zip(prepared, entries, statuses, strict=True):
        action = "submit" if status["status"] in ("new", "failed") else f"skip ({status['status']})"
        plan_lines.append(
            f"{action:<15} {entry['name']:<32} {entry['nodes']} node(s) {entry['gpus']:>3} GPUs  "
            f"{point.label}"
        )
        if action == "submit":
            todo.append((point, ready, entry))
        elif status["status"] == "active":
            active.append(status["job_id"])
    return plan_lines, todo, active


def _submit_recorded(
    sweep_dir: Path, manifest: dict[str, Any], item: Todo, after: str, runner: CommandRunner
) -> str:
    """Submit one point into a fresh run directory (held until job `after` ended, if any),
    writing the manifest before (an interrupted sweep still knows the dir) and after (the job
    id); the job id."""
    point, ready, entry = item
    run_dir = _new_run_dir(sweep_dir, entry)
    run = {
        "run_dir": str(run_dir.relative_to(sweep_dir)),
        "job_id": "",
        "submitted_at": now_iso(),
        "after": after,
    }
    entry["runs"].append(run)
    write_json_atomic(sweep_dir / MANIFEST, manifest)
    held = dataclasses.replace(ready, request=ready.request.after_job(after))
    run["job_id"] = _submit(point, held, run_dir, runner)
    write_json_atomic(sweep_dir / MANIFEST, manifest)
    waits = f" (waits for job {after})" if after else ""
    _say(f"submitted {entry['name']} ({point.label}): job {run['job_id']}{waits}, {run_dir}")
    return str(run["job_id"])
