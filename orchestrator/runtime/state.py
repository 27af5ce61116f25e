"""The run's state file (state.json): phase, timeline, job id, frontend URL, per-process state.

Written atomically (temp file + rename) so readers on other machines never see half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

PHASES = ("submitted", "starting", "ready", "stopping", "done", "failed")
STATE_FILE = "state.json"


def now_iso() -> str:
    """Wall-clock timestamp with milliseconds, UTC."""
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to `path` via a temp file in the same directory and an atomic rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2)
        fh.write("\n")
    os.replace(tmp, path)


def read_state(run_dir: Path) -> dict[str, Any]:
    """The state of a run ({} when the driver has not written one yet)."""
    try:
        data = json.loads((run_dir / STATE_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def run_ended(run_dir: Path) -> bool:
    """Whether the run in `run_dir` recorded its end (done or failed)."""
    return read_state(run_dir).get("phase") in ("done", "failed")


class StateFile:
    """The driver's (or launcher's) view of state.json; every change is written at once."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / STATE_FILE
        self.data: dict[str, Any] = read_state(run_dir) or {
            "phase": "",
            "timeline": [],
            "processes": {},
        }

    def update(self, **fields: Any) -> None:
        """Set top-level fields and write."""
        self.data.update(fields)
        self._write()

    def phase(self, phase: str, **fields: Any) -> None:
        """Enter `phase` (recorded in the timeline with a timestamp)."""
        assert phase in PHASES, phase
        self.data["phase"] = phase
        self.data.setdefault("timeline", []).append(
            {"phase": phase, "at": now_iso(), "t": time.time()}
        )
        self.update(**fields)

    def process(self, name: str, **fields: Any) -> None:
        """Merge `fields` into the entry of process `name`."""
        self.data.setdefault("processes", {}).setdefault(name, {}).update(fields)
        self._write()

    def _write(self) -> None:
        write_json_atomic(self.path, self.data)


ROLE_ORDER = ("infra", "frontend", "prefill", "decode", "worker")


def progress_line(state: dict[str, Any]) -> str:
    """`starting: frontend 1/1 prefill 0/2 decode 2/2` from the per-process entries."""
    counts: dict[str, list[int]] = {}
    for entry in state.get("processes", {}).values():
        if not entry.get("probed") or entry.get("state") == "removed":  # scale-down: gone
            continue
        have_want = counts.setdefault(entry.get("role", "?"), [0, 0])
        have_want[1] += 1
        have_want[0] += entry.get("state") == "healthy"
    parts = [f"{role} {counts[role][0]}/{counts[role][1]}" for role in ROLE_ORDER if role in counts]
    bench = state.get("benchmark")
    if isinstance(bench, dict) and "of" in bench:
        parts.append(
            f"benchmark {bench.get('done', 0)}/{bench['of']} points ({bench.get('status', '')})"
        )
    degraded = state.get("degraded") or []
    # A run launched here has no phase until its detached driver writes one.
    phase = (state.get("phase") or "launching") + (
        f" DEGRADED ({', '.join(degraded)} restarting)" if degraded else ""
    )
    return f"{phase}: {' '.join(parts) or 'no processes yet'}"
