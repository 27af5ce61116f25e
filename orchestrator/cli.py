"""`python -m orchestrator [overrides]`: parse, call one library function, map errors to exit codes."""

from __future__ import annotations

import dataclasses
import sys
import traceback
from collections.abc import Sequence

from omegaconf import OmegaConf

from orchestrator.bench.spec import planned_clients
from orchestrator.config.load import compose_config, config_to_dict, debug_requested
from orchestrator.config.schema import RootConfig
from orchestrator.errors import InvalidConfig, OrchestratorError
from orchestrator.launchers.select import Site, resolve_launcher
from orchestrator.plan.build import build_plan
from orchestrator.plan.placeholders import RUN_DIR
from orchestrator.render.dryrun import render_json, render_text
from orchestrator.sglang_check import check_sglang_argv
from orchestrator.validate import check

USAGE = """usage: python -m orchestrator [-m] [KEY=VALUE ...]

  +model=gpt_oss_120b          pick a model (model/<name>.yaml, packaged or your own)
  prefill.workers=2 decode.tp=8 cluster.gpus_per_node=4 ...   override any config key
  engine=dynamo_sglang|sglang|mocker  frontend=dynamo|sglang_router
  launcher=auto|submitit|sbatch|local  deployment=disaggregated|aggregated
  dry_run=true|json            print the plan and the Slurm request; start nothing
  wait=false                   return right after submission
  benchmark=aiperf|sglang_bench  run load points once ready (benchmark.points=[...])
  -m                           sweep: one job per combination of comma-separated values
                               (sweep_dir=DIR to resume; sweep.baseline=aggregated)

Later: python -m orchestrator.ctl status|logs|stop RUN_DIR, status|collect SWEEP_DIR
"""


def prepare(overrides: Sequence[str], site: Site) -> tuple[RootConfig, str]:
    """Compose and validate; return the config with its launcher resolved for this site."""
    cfg = compose_config(overrides)
    check(cfg)
    launcher = resolve_launcher(cfg.launcher.kind, site)
    cfg = dataclasses.replace(cfg, launcher=dataclasses.replace(cfg.launcher, kind=launcher))
    check(cfg)  # again: some rules depend on the resolved launcher (local = one node)
    check_sglang_argv(cfg, build_plan(cfg))  # SGLang's own parser, before anything is submitted
    return cfg, launcher


def dry_run(cfg: RootConfig, launcher: str, overrides: Sequence[str]) -> str:
    """The dry-run output for `cfg` (text or JSON per cfg.dry_run)."""
    plan = build_plan(cfg)
    # Benchmark clients start only once the deployment is ready, but belong in the picture.
    clients = planned_clients(cfg, plan, RUN_DIR)
    plan = dataclasses.replace(plan, processes=plan.processes + clients)
    if cfg.dry_run_mode() == "json":
        return render_json(plan, launcher, python=sys.executable, overrides=overrides)
    yaml = OmegaConf.to_yaml(OmegaConf.create(config_to_dict(cfg)))
    return render_text(plan, launcher, python=sys.executable, overrides=overrides, config_yaml=yaml)


def run(argv: Sequence[str]) -> int:
    """Entry point body; returns the exit code."""
    args = list(argv)
    if any(a in ("-h", "--help") for a in args):
        sys.stdout.write(USAGE)
        return 0
    sweep = "-m" in args or "--multirun" in args
    overrides = [a for a in args if a not in ("-m", "--multirun")]
    if sweep:
        from orchestrator.sweep import run_sweep

        return run_sweep(overrides, Site.detect())
    cfg, launcher = prepare(overrides, Site.detect())
    if cfg.dry_run_mode() != "false":
        sys.stdout.write(dry_run(cfg, launcher, overrides))
        return 0
    from orchestrator.launchers.launch import launch

    return launch(cfg, launcher, overrides)


def main(argv: Sequence[str] | None = None) -> int:
    """Run and turn OrchestratorError into a message and exit code (2 for bad input)."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        return run(args)
    except OrchestratorError as exc:
        if debug_requested(args):
            traceback.print_exc()
        sys.stderr.write(f"error: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130


__all__ = ["InvalidConfig", "dry_run", "main", "prepare", "run"]
