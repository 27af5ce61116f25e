"""What autoscale=dynamo_planner shows (orchestrator.elastic.autoscale records it in state.json):
why the planner decided (its own log line), serving workers per group over time, and the
`ctl status` / `ctl watch` lines. Reads only; no planning."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchestrator.elastic.decisions import Decision

TAIL_BYTES = 256 * 1024  # of the planner's log: its last [summary] lines
HISTORY_KEPT = 2000  # serving-count changes kept in state.json
SERVING = "healthy"
# Dynamo 1.6.1's planner logs one summary per adjustment interval (planner/core/base.py):
# "[summary] SCALE_UP | current: prefill=1 decode=1 | recommended: prefill=1 decode=2 (delta:
# +0 / +1) | load_reason=... throughput_reason=... | est_ttft=...ms est_itl=...ms"
SUMMARY = re.compile(r"\[summary\] (?P<action>[A-Z_]+) \|.*")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def planner_reason(log: Path, decision: Decision) -> str:
    """The planner's own last summary line that recommends the decision's counts (its reason:
    load_reason=..., est_ttft/est_itl), or the last summary at all; '' without its log."""
    try:
        with log.open("rb") as fh:
            fh.seek(max(0, log.stat().st_size - TAIL_BYTES))
            text = ANSI.sub("", fh.read().decode(errors="replace"))
    except OSError:
        return ""
    summaries = [m.group(0) for m in SUMMARY.finditer(text) if m.group("action") != "HOLD"]
    wanted = [f"prefill={decision.prefill}", f"decode={decision.decode}"]
    for line in reversed(summaries):
        recommended = line.partition("recommended:")[2]
        if all(w in recommended or w.endswith("=-1") for w in wanted):
            return line.strip()
    return summaries[-1].strip() if summaries else ""


def serving_counts_of(state: Mapping[str, Any]) -> dict[str, int]:
    """Healthy workers per group, as the run's driver mirrors them (state.json `workers`)."""
    counts: dict[str, int] = {}
    for w in state.get("workers", []):
        if w.get("state") == SERVING and "-rank" not in str(w.get("name")):
            counts[w["group"]] = counts.get(w["group"], 0) + 1
    return counts


def serving_history(state: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """state.json `autoscale_history` with one more entry when the serving counts changed
    (None: unchanged, nothing to write)."""
    history = list(state.get("autoscale_history", []))
    counts = serving_counts_of(state)
    if history and history[-1]["counts"] == counts:
        return None
    return [*history, {"at": time.time(), "counts": counts}][-HISTORY_KEPT:]


def autoscale_lines(state: Mapping[str, Any]) -> list[str]:
    """`ctl status` / `ctl watch`: the last decision (when, what, why, what was done)."""
    last = state.get("autoscale")
    if not last:
        return []
    when = time.strftime("%H:%M:%S", time.localtime(last["at"]))
    target = ", ".join(f"{g} {n}" for g, n in last["target"].items())
    took = f" in {last['took_s']:g} s" if "took_s" in last else ""
    outcome = {"done": f"done{took}", "unmet": f"cannot be met{took}: {last.get('detail', '')}"}
    lines = [
        f"autoscale: planner decision {last['decision']} at {when}: {target} -> "
        + outcome.get(last["status"], "carrying out")
    ]
    lines += [f"  {note}" for note in last.get("notes", [])]
    if last.get("why"):
        lines.append(f"  why: {last['why']}")
    lines += [f"  did: {a}" for a in last.get("actions", [])]
    serving = serving_counts_of(state)
    if serving and last["status"] == "done" and serving != last["target"]:
        now = ", ".join(f"{g} {n}" for g, n in serving.items())
        lines.append(
            f"  serving now: {now} (ctl scale by hand or a lost job since: Dynamo 1.6.1's "
            "planner holds its next decision until the counts match its target again)"
        )
    return lines
