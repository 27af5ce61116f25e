"""`python -m orchestrator.ctl status|logs|stop|scale|collect|watch|ls|report|diff ...`: parse,
call one subcommand module, map errors to exit codes. `status`, `collect` and `stop` of a sweep
directory go to orchestrator.sweep."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from orchestrator.core.errors import OrchestratorError
from orchestrator.ctl import see
from orchestrator.ctl.logs import logs
from orchestrator.ctl.scale import scale
from orchestrator.ctl.status import status
from orchestrator.ctl.stop import check_control, stop


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry."""
    parser = argparse.ArgumentParser(prog="python -m orchestrator.ctl")
    sub = parser.add_subparsers(dest="cmd", required=True)
    for cmd in ("status", "logs", "stop", "collect"):
        p = sub.add_parser(cmd)
        p.add_argument("run_dir", type=Path, metavar="SWEEP_DIR" if cmd == "collect" else "RUN_DIR")
        if cmd == "logs":
            p.add_argument("name", nargs="?")
            p.add_argument("-n", "--lines", type=int, default=50)
    p = sub.add_parser("scale", help="attach a job with more workers to a running run")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("counts", nargs="*", metavar="GROUP.workers=N")
    p.add_argument(
        "--no-wait",
        action="store_true",
        help="return once a scale-up's job is submitted (a scale-down always waits)",
    )
    see.register(sub)
    args = parser.parse_args(argv)
    try:
        if args.cmd in see.COMMANDS:
            return see.run(args)
        if args.cmd in ("stop", "scale"):
            check_control(args.run_dir)
        if args.cmd == "scale":
            return scale(args.run_dir, args.counts, wait=not args.no_wait)
        if args.cmd in ("status", "collect", "stop") and (args.run_dir / "manifest.json").exists():
            from orchestrator.sweep import sweepdir

            views = {"status": sweepdir.status, "collect": sweepdir.collect, "stop": sweepdir.stop}
            print(views[args.cmd](args.run_dir))
        elif args.cmd == "collect":
            raise OrchestratorError(f"{args.run_dir} is not a sweep directory (no manifest.json)")
        elif args.cmd == "status":
            text, code = status(args.run_dir)
            print(text)
            return code
        elif args.cmd == "logs":
            print(logs(args.run_dir, args.name, args.lines))
        else:
            print(stop(args.run_dir))
    except OrchestratorError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
