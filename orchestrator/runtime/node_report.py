"""The one-JSON-line report of a step that runs on nodes (fetch, stage): written by the node,
parsed by the driver out of srun's output."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from typing import Any


def print_report(run: Callable[[], dict[str, Any]], failure: type[Exception]) -> int:
    """Print {"host", ...what `run` returned} or {"host", "error"}; the exit code (1: failure)."""
    host = socket.gethostname()
    try:
        report = run()
    except failure as exc:
        print(json.dumps({"host": host, "error": str(exc)}), flush=True)
        return 1
    print(json.dumps({"host": host, **report}), flush=True)
    return 0


def parse_report(stdout: str) -> dict[str, Any] | None:
    """The last report line in `stdout` (srun chatter and progress bars ignored)."""
    for line in reversed(stdout.splitlines()):
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict) and "host" in item:
            return item
    return None
