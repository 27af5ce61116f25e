"""Watchdog of the local launcher: kills every process group of a driver once the driver is gone.

Run as a script (`python reaper.py LABEL`) by `LocalBackend` and by the node agent
(nodeagent.py), in its own session (terminal signals do not reach it). It reads `+PGID` (started) / `-PGID` (gone) lines from the driver on
stdin; when stdin ends -- the driver exited, or died whatever killed it: SIGKILL, the OOM killer,
a crash -- it SIGKILLs every group still listed (after a clean teardown, none is). Linux's parent-death signal set in each child
kills only that child (it is not inherited by grandchildren, and engines spawn helpers such as
tokenizer or scheduler processes); the group kill covers everything they spawned.

Standard library only: it must start without the orchestrator on sys.path.
"""

from __future__ import annotations

import os
import signal
import sys


def main() -> int:
    """Track groups until stdin closes, then kill what is left."""
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)  # only the end of stdin means "the driver is gone"
    groups: set[int] = set()
    for line in sys.stdin:
        word = line.strip()
        if word[1:].isdigit():
            (groups.add if word[0] == "+" else groups.discard)(int(word[1:]))
    for pgid in groups:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
