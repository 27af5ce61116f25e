"""The per-process timeline of a run as an inline SVG picture (pure: data in, markup out).

Each process is one row: starting (launched -> its own health passed), healthy (-> the
deployment is ready), serving (-> teardown begins), stopping (-> the run ended), with a mark
for each restart and a cross where it exited; the run's phases are vertical lines.
"""

from __future__ import annotations

import calendar
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Any

COLOURS = {
    "starting": "#f0ad4e",
    "healthy": "#5bc0de",
    "serving": "#5cb85c",
    "benchmark": "#9b59b6",
    "stopping": "#999999",
    "failed": "#d9534f",
}
ISO = re.compile(r"(\d{4}-\d\d-\d\d)[T ](\d\d:\d\d:\d\d)(\.\d+)?")
ROW_H, LABEL_W, WIDTH = 22, 120, 900


@dataclass
class Row:
    """One process: coloured segments (start, end, kind) and marks (t, label)."""

    name: str
    segments: list[tuple[float, float, str]] = field(default_factory=list)
    marks: list[tuple[float, str]] = field(default_factory=list)


def parse_time(text: str) -> float | None:
    """Epoch seconds of the first `YYYY-MM-DD[T ]HH:MM:SS[.fff]` in `text` (read as UTC, as
    Dynamo's tracing writes it and SGLang does in UTC containers)."""
    match = ISO.search(text)
    if not match:
        return None
    base = calendar.timegm(time.strptime(f"{match[1]} {match[2]}", "%Y-%m-%d %H:%M:%S"))
    return base + float(match[3] or 0)


def _phase_times(state: Mapping[str, Any]) -> dict[str, float]:
    """First time of each phase (the last attempt's, when Slurm re-ran the driver)."""
    out: dict[str, float] = {}
    for entry in state.get("timeline", []):
        if entry.get("phase") == "starting":
            out = {}
        out.setdefault(str(entry.get("phase")), float(entry.get("t", 0)))
    return out


def _when(value: Any) -> float | None:
    if isinstance(value, (int, float)):
        return float(value)
    return parse_time(str(value)) if value else None


def _plausible(log_start: float | None, starting: float | None, end: float) -> float | None:
    """A log's first timestamp when it fits the run (SGLang writes local time, which may not be
    UTC; a reused log may be older); else the time the driver entered `starting`."""
    if log_start is not None and starting is not None and starting - 60 <= log_start <= end:
        return log_start
    return starting if starting is not None else log_start


def rows(state: Mapping[str, Any], started: dict[str, float], now: float) -> list[Row]:
    """Timeline rows of every process; `started`: when each process's log begins."""
    phases = _phase_times(state)
    ready = phases.get("ready")
    stopping = phases.get("stopping")
    end = phases.get("done") or phases.get("failed") or now
    out = []
    for name, entry in state.get("processes", {}).items():
        row = Row(name)
        if entry.get("role") == "benchmark":
            # A benchmark client runs once the deployment is ready, until teardown begins.
            begin = _plausible(started.get(name), ready, end) or ready or end
            row.segments.append((begin, max(begin, stopping or end), "benchmark"))
            out.append(row)
            continue
        begin = _plausible(started.get(name), phases.get("starting"), end) or end
        healthy = _when(entry.get("healthy_at"))
        marks: list[tuple[str, float | None]] = [
            ("starting", begin),
            ("healthy", healthy),
            ("serving", ready),
            ("stopping", stopping),
        ]
        points = [(kind, t) for kind, t in marks if t is not None and t >= begin]
        points.sort(key=lambda p: p[1])
        for (kind, t), nxt in zip(points, [p[1] for p in points[1:]] + [end], strict=True):
            row.segments.append((t, max(t, nxt), kind))
        for restart in entry.get("restarts") or []:
            when = _when(restart.get("at"))
            if when is not None:
                row.marks.append((when, f"restart (exit {restart.get('exit_code')})"))
        if entry.get("state") in ("exited", "unhealthy") and entry.get("exit_code") not in (
            0,
            None,
        ):
            row.marks.append((end, f"exited {entry.get('exit_code')}"))
        out.append(row)
    return out


def svg(timeline: Sequence[Row], phases: dict[str, float], t0: float, t1: float) -> str:
    """The picture: one row per process, time on the x axis (seconds from t0)."""
    span = max(t1 - t0, 1.0)
    scale = (WIDTH - LABEL_W - 20) / span
    top = 22  # room for three label heights above the first row
    height = top + ROW_H * (len(timeline) + 2) + 10

    def x(t: float) -> float:
        return LABEL_W + (t - t0) * scale

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'role="img" aria-label="process timeline" class="timeline">'
    ]
    for i, row in enumerate(timeline):
        y = top + ROW_H * (i + 1)
        parts.append(f'<text x="4" y="{y + 14}" class="label">{escape(row.name)}</text>')
        for start, end, kind in row.segments:
            w = max((end - start) * scale, 1.0)
            parts.append(
                f'<rect x="{x(start):.1f}" y="{y + 3}" width="{w:.1f}" height="{ROW_H - 6}" '
                f'fill="{COLOURS.get(kind, "#ccc")}"><title>{escape(row.name)}: {kind} '
                f"{end - start:.1f} s</title></rect>"
            )
        for t, label in row.marks:
            colour = COLOURS["failed"]
            parts.append(
                f'<circle cx="{x(t):.1f}" cy="{y + ROW_H / 2}" r="5" fill="{colour}">'
                f"<title>{escape(row.name)}: {escape(label)}</title></circle>"
            )
    bottom = top + ROW_H * (len(timeline) + 1)
    for i, (phase, t) in enumerate(phases.items()):
        # Phases often come seconds apart on a long axis: alternate label heights.
        label_y = top + ROW_H - 8 - (i % 3) * 10
        anchor = ' text-anchor="end"' if x(t) > WIDTH - 80 else ""  # keep it inside the picture
        parts.append(
            f'<line x1="{x(t):.1f}" y1="{top + ROW_H - 4}" x2="{x(t):.1f}" y2="{bottom}" '
            f'class="phase"/><text x="{x(t) + 2:.1f}" y="{label_y}" class="phase"{anchor}>'
            f"{escape(phase)}</text>"
        )
    parts.append(
        f'<text x="{LABEL_W}" y="{bottom + 16}" class="axis">0 s</text>'
        f'<text x="{WIDTH - 20}" y="{bottom + 16}" text-anchor="end" class="axis">'
        f"{span:.1f} s</text>"
    )
    legend_x = LABEL_W + 60
    for kind, colour in COLOURS.items():
        parts.append(
            f'<rect x="{legend_x}" y="{bottom + 6}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{legend_x + 14}" y="{bottom + 15}" class="axis">{kind}</text>'
        )
        legend_x += 85
    parts.append("</svg>")
    return "".join(parts)


def clip(timeline: Sequence[Row], until: float) -> list[Row]:
    """The rows cut at `until` (the start-up picture)."""
    out = []
    for row in timeline:
        segments = [(a, min(b, until), k) for a, b, k in row.segments if a < until]
        out.append(Row(row.name, segments, [(t, m) for t, m in row.marks if t <= until]))
    return out


def run_svg(
    state: Mapping[str, Any], started: dict[str, float], now: float, until: float | None = None
) -> str:
    """The timeline picture of one run's state.json (cut at `until` when given)."""
    timeline = rows(state, started, now)
    phases = _phase_times(state)
    if until is not None:
        timeline = clip(timeline, until)
        phases = {p: t for p, t in phases.items() if t <= until}
    times = [t for r in timeline for s in r.segments for t in s[:2]] + list(phases.values())
    if not times:
        return '<p class="empty">no process started</p>'
    return svg(timeline, phases, min(times), max(times))


def series_svg(
    points: Sequence[tuple[float, float]],
    label: str,
    colour: str = "#337ab7",
    span: tuple[float, float] | None = None,
) -> str:
    """A small line chart of (seconds, value) points, e.g. output tokens/s while serving;
    `span`: the time axis (charts drawn one above the other share it)."""
    if len(points) < 2:
        return ""
    w, h, pad = WIDTH, 120, 30
    t0, t1 = span or (points[0][0], points[-1][0])
    top = max(v for _, v in points) or 1.0
    xs = [LABEL_W + (t - t0) / max(t1 - t0, 1e-9) * (w - LABEL_W - 20) for t, _ in points]
    ys = [h - pad - v / top * (h - 2 * pad) for _, v in points]
    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys, strict=True))
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img" '
        f'aria-label="{escape(label)}" class="series"><text x="4" y="{pad}" class="label">'
        f'{escape(label)}</text><text x="4" y="{pad + 14}" class="axis">max {top:.1f}</text>'
        f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{path}"/>'
        f'<line x1="{LABEL_W}" y1="{h - pad}" x2="{w - 20}" y2="{h - pad}" stroke="#999"/>'
        f'<text x="{LABEL_W}" y="{h - 10}" class="axis">0 s</text><text x="{w - 20}" '
        f'y="{h - 10}" text-anchor="end" class="axis">{t1 - t0:.1f} s</text></svg>'
    )
