"""The `ctl` subcommands that let a user see runs: watch, ls, report, diff (registered into
orchestrator.ctl's parser; each lives in its own module)."""

from __future__ import annotations

import argparse
from pathlib import Path

from orchestrator.core.errors import OrchestratorError
from orchestrator.rundir import RunDir

COMMANDS = ("watch", "ls", "report", "diff")


class NotARunDir(OrchestratorError):
    """A path given to ctl is neither a run nor a sweep directory (bad input: exit 2)."""

    exit_code = 2


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the subcommands to ctl's parser."""
    p = sub.add_parser("watch", help="live view of a run or sweep (q quits)")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR|SWEEP_DIR")
    p.add_argument("--plain", action="store_true", help="print lines as they change (no TTY UI)")
    p = sub.add_parser("ls", help="one line per run under DIR")
    p.add_argument("run_dir", type=Path, nargs="?", default=Path("outputs"), metavar="DIR")
    p = sub.add_parser("report", help="write a self-contained HTML report")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR|SWEEP_DIR")
    p.add_argument("-o", "--output", type=Path, default=None, help="default: DIR/report.html")
    p = sub.add_parser("diff", help="config and fingerprint differences of two runs")
    p.add_argument("run_dir", type=Path, metavar="RUN_A")
    p.add_argument("run_b", type=Path, metavar="RUN_B")


def _is_run_or_sweep(path: Path) -> None:
    if not RunDir(path).is_run() and not (path / "manifest.json").exists():
        raise NotARunDir(
            f"{path} is neither a run directory (no launch.json) nor a sweep "
            "directory (no manifest.json)"
        )


def run(args: argparse.Namespace) -> int:
    """Run one of COMMANDS; raises OrchestratorError on bad input."""
    if args.cmd == "watch":
        from orchestrator.ctl.watch import watch

        _is_run_or_sweep(args.run_dir)
        return watch(args.run_dir, tty_out=False if args.plain else None)
    if args.cmd == "ls":
        from orchestrator.core.effects import SubprocessRunner
        from orchestrator.ctl.ls import ls_lines
        from orchestrator.slurm.client import SlurmClient

        print("\n".join(ls_lines(args.run_dir, SlurmClient(SubprocessRunner()))))
        return 0
    if args.cmd == "report":
        from orchestrator.ctl.report import report

        _is_run_or_sweep(args.run_dir)
        print(report(args.run_dir, args.output))
        return 0
    from orchestrator.ctl.diff import diff

    for path in (args.run_dir, args.run_b):
        _is_run_or_sweep(path)
    print(diff(args.run_dir, args.run_b))
    return 0
