"""Deployment sweeps: `python -m orchestrator -m KEY=a,b ...` -> one Slurm job per point.

Comma lists (and Hydra's range()/glob()) are expanded with Hydra's own override parser into the
cartesian product of points. Every point is composed and validated before anything is submitted
(any problem: exit 2, nothing submitted). Each point is then launched through the normal path
with wait=false, so each job gets its own node count, and the command returns once all are
submitted. The sweep directory holds manifest.json (point -> run directories -> job ids) and
runs/<name>-<hash>/ per attempt. Re-running the same command on the same sweep_dir submits only
points without a valid benchmark result that are not queued or running (resume).

Sweep-only keys: `sweep_dir=DIR` (default outputs/sweeps/<UTC time>-<model>) and
`sweep.baseline=aggregated` (adds, per distinct GPU count, an aggregated deployment with the same
number of worker GPUs and the prefill TP).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.api import Planned, Prepared, check_argvs, materialized, plan_many
from orchestrator.bench.sweepdir import MANIFEST, load_manifest, point_statuses
from orchestrator.config.load import quote_override_value
from orchestrator.config.schema import RootConfig
from orchestrator.effects import CommandRunner, SubprocessRunner
from orchestrator.errors import InvalidConfig, Issue, OrchestratorError
from orchestrator.launchers.rundir import git_sha
from orchestrator.launchers.select import Site
from orchestrator.plan import build
from orchestrator.runtime.state import now_iso, read_state, write_json_atomic
from orchestrator.slurm.client import SlurmClient

SWEEP_KEYS = ("sweep_dir", "sweep.baseline")
BASELINES = ("", "aggregated")
# Keys a baseline point drops from the disaggregated point it mirrors.
TOPOLOGY_PREFIXES = ("prefill.", "decode.", "aggregated.", "deployment")


@dataclass(frozen=True)
class SweepPoint:
    """One deployment of the sweep: the overrides that compose it and what varies."""

    overrides: tuple[str, ...]
    label: str  # the swept values, e.g. "prefill.workers=2 decode.workers=1"
    baseline: bool = False

    @property
    def key(self) -> str:
        """Identity in the manifest: the sorted overrides (their order does not matter)."""
        return " ".join(sorted(self.overrides))


# A validated point (config, plan and request), and its manifest entry once triaged.
PreparedPoint = tuple[SweepPoint, Prepared]
Todo = tuple[SweepPoint, Prepared, dict[str, Any]]


# --- expansion (pure) ------------------------------------------------------------------------
def expand(overrides: Sequence[str]) -> tuple[list[SweepPoint], dict[str, str]]:
    """Points (cartesian product of every sweep override, in command-line order) and the
    sweep-only options. Uses hydra-core 1.3's override grammar: `a=1,2`, `a=range(1,4)`, quoting."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except Exception as exc:  # hydra raises OverrideParseException (a plain Exception subclass)
        raise InvalidConfig(
            [
                Issue(
                    "overrides",
                    " ".join(overrides),
                    str(exc).splitlines()[0],
                    "check the override syntax (KEY=VALUE, KEY=a,b for a sweep)",
                )
            ]
        ) from exc
    options: dict[str, str] = {}
    axes: list[list[tuple[str, str]]] = []  # per override: [(override, label part)]
    for o in parsed:
        key = o.get_key_element()
        if key.lstrip("+~") in SWEEP_KEYS:
            options[key.lstrip("+~")] = str(o.value())
        elif o.is_sweep_override():
            axes.append(
                [(f"{key}={v}", f"{key.lstrip('+~')}={v}") for v in o.sweep_string_iterator()]
            )
        else:
            axes.append([(o.input_line or f"{key}={o.value()}", "")])
    points = []
    for combo in itertools.product(*axes):
        label = " ".join(part for _, part in combo if part)
        points.append(SweepPoint(overrides=tuple(ov for ov, _ in combo), label=label))
    return _unique(points), options


def _unique(points: list[SweepPoint]) -> list[SweepPoint]:
    seen: set[str] = set()
    return [p for p in points if not (p.key in seen or seen.add(p.key))]  # type: ignore[func-returns-value]


def worker_gpus(cfg: RootConfig) -> int:
    """GPUs held by the workers of a deployment (the per-GPU normalization of the results)."""
    return sum(
        build.group_config(cfg, g).workers * build.gpus_per_worker(cfg, g)
        for g in build.active_groups(cfg)
    )


def baseline_point(point: SweepPoint, cfg: RootConfig) -> SweepPoint | None:
    """The aggregated deployment with the worker GPUs of disaggregated `point` (None when the
    GPUs do not split into whole aggregated workers of the prefill TP)."""
    if cfg.deployment.mode != "disaggregated":
        return None
    tp = build.tp_of(cfg, "prefill")
    gpus = worker_gpus(cfg)
    per_worker = tp * cfg.aggregated.dp
    if gpus % per_worker:
        return None
    keep = [o for o in point.overrides if not o.lstrip("+~").startswith(TOPOLOGY_PREFIXES)]
    extra = [
        "deployment=aggregated",
        f"aggregated.workers={gpus // per_worker}",
        f"aggregated.tp={tp}",
    ]
    return SweepPoint(
        overrides=tuple(keep + extra),
        label=f"aggregated x{gpus // per_worker} ({gpus} GPUs)",
        baseline=True,
    )


# --- validation ------------------------------------------------------------------------------
def _sweep_issues(cfg: RootConfig, launcher: str, site: Site) -> list[Issue]:
    issues = []
    if launcher == "local":
        issues.append(
            Issue(
                "launcher.kind",
                "local",
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
                "add benchmark=aiperf or benchmark=sglang_bench",
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
        extra = [baseline_point(point, ready.cfg) for point, ready in planned
                 if isinstance(ready, Planned) and not point.baseline]  # fmt: skip
        fresh = [b for b in extra if b is not None and not (b.key in seen or seen.add(b.key))]  # type: ignore[func-returns-value]
        planned += _planned(fresh, site)
    ok = [(point, ready) for point, ready in planned if isinstance(ready, Planned)]
    argv_issues = check_argvs([ready for _, ready in ok])
    issues = [_named(point, i) for point, ready in planned if isinstance(ready, InvalidConfig)
              for i in ready.issues]  # fmt: skip
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


def _entry(manifest: dict[str, Any], point: SweepPoint, ready: Prepared) -> dict[str, Any]:
    for entry in manifest["points"]:
        if entry["key"] == point.key:
            return entry  # type: ignore[no-any-return]
    cfg, plan = ready.cfg, ready.plan
    entry = {
        "key": point.key,
        "label": point.label or plan.name,
        "overrides": list(point.overrides),
        "baseline": point.baseline,
        "name": plan.name,
        "nodes": plan.num_nodes,
        "gpus": worker_gpus(cfg),
        "runs": [],
    }
    manifest["points"].append(entry)
    return entry


def _new_run_dir(sweep_dir: Path, entry: dict[str, Any]) -> Path:
    digest = hashlib.sha256(entry["key"].encode()).hexdigest()[:6]
    attempt = len(entry["runs"]) + 1
    name = f"{entry['name']}-{digest}" + (f"-r{attempt}" if attempt > 1 else "")
    return sweep_dir / "runs" / name


# --- submission ------------------------------------------------------------------------------
def default_sweep_dir(cfg: RootConfig) -> Path:
    """outputs/sweeps/<UTC time>-<model name>."""
    model = cfg.model.name or cfg.model.path.rstrip("/").split("/")[-1] or "model"
    return Path("outputs") / "sweeps" / f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{model}"


def _submit(point: SweepPoint, ready: Prepared, run_dir: Path) -> str:
    """Launch one point with wait=false; its job id (launch's stdout goes to our stderr)."""
    from orchestrator.launchers.launch import launch

    overrides = (*point.overrides, f"run_dir={quote_override_value(str(run_dir))}", "wait=false")
    cfg = dataclasses.replace(ready.cfg, run_dir=str(run_dir), wait=False)
    with contextlib.redirect_stdout(sys.stderr):
        code = launch(dataclasses.replace(ready, cfg=cfg, overrides=overrides))
    if code:
        raise OrchestratorError(f"submitting {point.label} failed (exit {code}); see {run_dir}")
    return str(read_state(run_dir).get("job_id", ""))


def _say(message: str) -> None:
    sys.stderr.write(f"[sweep] {message}\n")


def run_sweep(overrides: Sequence[str], site: Site, runner: CommandRunner | None = None) -> int:
    """Validate every point, then submit the points that need a job; print the sweep directory."""
    runner = runner or SubprocessRunner()
    points, options = expand(overrides)
    prepared = validate_points(points, site, options.get("sweep.baseline", ""))
    first_cfg = prepared[0][1].cfg
    sweep_dir = (
        Path(options.get("sweep_dir") or default_sweep_dir(first_cfg)).expanduser().resolve()
    )
    manifest = load_manifest(sweep_dir)
    plan_lines, todo = _triage(prepared, manifest, sweep_dir, runner)
    if first_cfg.dry_run_mode() != "false":
        sys.stdout.write(f"sweep {sweep_dir}: {len(prepared)} point(s), {len(todo)} to submit\n")
        sys.stdout.write("".join(f"  {line}\n" for line in plan_lines))
        return 0
    sweep_dir.mkdir(parents=True, exist_ok=True)
    manifest.setdefault("invocations", []).append({"at": now_iso(), "overrides": list(overrides)})
    write_json_atomic(sweep_dir / MANIFEST, manifest)
    for line in plan_lines:
        _say(line)
    for item in todo:
        _submit_recorded(sweep_dir, manifest, item)
    _say(
        f"{len(todo)} job(s) submitted, {len(prepared) - len(todo)} skipped; "
        f"status: python -m orchestrator.ctl status {sweep_dir}"
    )
    print(sweep_dir, flush=True)
    return 0


def _triage(
    prepared: Sequence[PreparedPoint],
    manifest: dict[str, Any],
    sweep_dir: Path,
    runner: CommandRunner,
) -> tuple[list[str], list[Todo]]:
    """One plan line per point (submit, or skip and why) and the points to submit: those that
    are new or failed (a valid, queued or running point is left alone on re-run)."""
    plan_lines, todo = [], []
    entries = [_entry(manifest, point, ready) for point, ready in prepared]
    statuses = point_statuses(sweep_dir, entries, SlurmClient(runner))  # one batched query
    for (point, ready), entry, status in zip(prepared, entries, statuses, strict=True):
        action = "submit" if status["status"] in ("new", "failed") else f"skip ({status['status']})"
        plan_lines.append(
            f"{action:<15} {entry['name']:<24} {entry['nodes']} node(s) {entry['gpus']:>3} GPUs  "
            f"{point.label}"
        )
        if action == "submit":
            todo.append((point, ready, entry))
    return plan_lines, todo


def _submit_recorded(sweep_dir: Path, manifest: dict[str, Any], item: Todo) -> None:
    """Submit one point into a fresh run directory, writing the manifest before (an interrupted
    sweep still knows the dir) and after (the job id)."""
    point, ready, entry = item
    run_dir = _new_run_dir(sweep_dir, entry)
    run = {
        "run_dir": str(run_dir.relative_to(sweep_dir)),
        "job_id": "",
        "submitted_at": now_iso(),
    }
    entry["runs"].append(run)
    write_json_atomic(sweep_dir / MANIFEST, manifest)
    run["job_id"] = _submit(point, ready, run_dir)
    write_json_atomic(sweep_dir / MANIFEST, manifest)
    _say(f"submitted {entry['name']} ({point.label}): job {run['job_id']}, {run_dir}")
