"""`python -m orchestrator [overrides]`: parse, call one library function, map errors to exit codes."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Sequence

from orchestrator.api import dry_run, prepare
from orchestrator.config.load import debug_requested
from orchestrator.core.errors import InvalidConfig, OrchestratorError
from orchestrator.launchers.select import Site

USAGE = """usage: python -m orchestrator [-m] [KEY=VALUE ...]

  +model=gpt_oss_120b          pick a model (model/<name>.yaml, packaged or your own)
  prefill.workers=2 decode.tp=8 cluster.gpus_per_node=4 ...   override any config key
  engine=dynamo_sglang|sglang|mocker  frontend=dynamo|sglang_router
  launcher=auto|submitit|sbatch|local  deployment=disaggregated|aggregated
  dry_run=true|json            print the plan and the Slurm request; start nothing
  wait=false                   return right after submission
  benchmark=aiperf|sglang_bench  run load points once ready (benchmark.points=[...])
  benchmark=lm_eval            accuracy evals once ready (benchmark.tasks=[gsm8k] benchmark.limit=N)
  -m                           sweep: one job per combination of comma-separated values
                               (sweep_dir=DIR to resume; sweep.baseline=aggregated;
                               sweep.max_in_flight=N: at most N points queued or running)

Later: python -m orchestrator.ctl status|logs|stop RUN_DIR, status|collect|stop SWEEP_DIR
"""


def run(argv: Sequence[str]) -> int:
    """Entry point body; returns the exit code."""
    args = list(argv)
    if any(a in ("-h", "--help") for a in args):
        sys.stdout.write(USAGE)
        return 0
    sweep = "-m" in args or "--multirun" in args
    overrides = [a for a in args if a not in ("-m", "--multirun")]
    if sweep:
        from orchestrator.sweep.run import run_sweep

        return run_sweep(overrides, Site.detect())
    prepared = prepare(overrides, Site.detect())
    if prepared.cfg.dry_run_mode() != "false":
        sys.stdout.write(dry_run(prepared))
        return 0
    from orchestrator.launch import launch

    return launch(prepared)


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
