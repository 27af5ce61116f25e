"""`ctl report`'s autoscaling section (autoscale=dynamo_planner): serving workers per role over
time (state.json `autoscale_history`) above the frontend's request rate, mean TTFT and mean ITL
(results/metrics.jsonl) on the same time axis, then every planner decision: what it asked, what
was done, how long until the target served, and the planner's own reason."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from orchestrator.observe import prom
from orchestrator.observe.timeline_svg import series_svg

COLOURS = {"prefill": "#8e44ad", "decode": "#337ab7"}
DECISION_COLUMNS = (
    ("decision", "decision"),
    ("when", "at"),
    ("asked", "planner asked"),
    ("target", "target"),
    ("status", "outcome"),
    ("took_s", "-> serving s"),
    ("done", "what was done"),
    ("why", "planner's reason"),
)


def steps(
    history: Sequence[Mapping[str, Any]], group: str, end: float
) -> list[tuple[float, float]]:
    """Serving workers of `group` as a step line: each change at its time, held until `end`."""
    out: list[tuple[float, float]] = []
    for entry in history:
        n = float(entry["counts"].get(group, 0))
        if out:
            out.append((float(entry["at"]), out[-1][1]))
        out.append((float(entry["at"]), n))
    if out:
        out.append((max(end, out[-1][0]), out[-1][1]))
    return out


def frontend_series(records: Sequence[Mapping[str, Any]]) -> dict[str, list[tuple[float, float]]]:
    """Request rate, mean TTFT and mean ITL per scrape interval, by absolute time (the first
    frontend's scrapes; a pair's replicas each see part of the load)."""
    fronts = prom.per_target([r for r in records if r.get("role") == "frontend" and r.get("ok")])
    out: dict[str, list[tuple[float, float]]] = {"req/s": [], "TTFT ms": [], "ITL ms": []}
    for front in list(fronts.values())[:1]:
        for a, b in zip(front, front[1:], strict=False):
            t = float(b["t"])
            values = (
                ("req/s", prom.frontend_rates(a, b)["requests_per_s"]),
                ("TTFT ms", prom.mean_ms(a, b, prom.TTFT)),
                ("ITL ms", prom.mean_ms(a, b, prom.ITL)),
            )
            for key, value in values:
                if value is not None:
                    out[key].append((t, value))
    return out


def autoscale_html(
    state: Mapping[str, Any], records: Sequence[Mapping[str, Any]], now: float
) -> str:
    """The section ('' for a run without autoscaling)."""
    history, decisions = state.get("autoscale_history", []), state.get("autoscale_decisions", [])
    if not history and not decisions:
        return ""
    series = frontend_series(records)
    times = [float(e["at"]) for e in history] + [t for s in series.values() for t, _ in s]
    end = max(times) if times else now
    span = (min(times), end) if times else None
    charts = [
        series_svg(steps(history, g, end), f"{g} workers serving", COLOURS[g], span)
        for g in COLOURS
    ]
    charts += [series_svg(points, key, "#d9534f", span) for key, points in series.items()]
    rows = [decision_row(d) for d in decisions]
    head = "".join(f"<th>{escape(t)}</th>" for _, t in DECISION_COLUMNS)
    body = "".join(
        "<tr>" + "".join(f'<td class="l">{escape(str(r[k]))}</td>' for k, _ in DECISION_COLUMNS)
        for r in rows
    )
    return "".join(charts) + f"<table><tr>{head}</tr>{body}</table>"


def decision_row(entry: Mapping[str, Any]) -> dict[str, Any]:
    """One planner decision as a table row."""
    asked = entry.get("asked", {})
    return {
        "decision": entry["decision"],
        "when": time.strftime("%H:%M:%S", time.localtime(entry["at"])),
        "asked": ", ".join(f"{g} {'-' if n < 0 else n}" for g, n in asked.items()),
        "target": ", ".join(f"{g} {n}" for g, n in entry["target"].items()),
        "status": entry["status"] + (f": {entry['detail']}" if entry.get("detail") else ""),
        "took_s": entry.get("took_s", "-"),
        "done": "; ".join(entry.get("actions", [])) or "nothing (already there)",
        "why": entry.get("why") or "-",
    }
