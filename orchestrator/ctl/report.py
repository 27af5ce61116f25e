"""`ctl report RUN_DIR|SWEEP_DIR` -> one self-contained HTML file (report.html in the directory):
no network, no scripts, no CDN; pictures are inline SVG, the sweep's Pareto plot an embedded
PNG. Sections: summary, timeline per run, benchmark table, serving metrics, errors with their
log tails and known failure markers, fingerprint."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

from orchestrator.core.errors import OrchestratorError
from orchestrator.ctl.diff import flatten
from orchestrator.ctl.ls import Run, find_runs, load_runs
from orchestrator.ctl.report_autoscale import autoscale_html
from orchestrator.observe import prom
from orchestrator.observe.scrape import read_records
from orchestrator.observe.timeline_svg import parse_time, run_svg, series_svg
from orchestrator.rundir import Phase, RunDir
from orchestrator.runtime import logscan

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:22px}h2{font-size:18px;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:28px}
h3{font-size:15px}table{border-collapse:collapse;margin:8px 0}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:right}th{background:#f5f5f5;text-align:left}
td.l,th.l{text-align:left}pre{background:#f7f7f7;padding:8px;overflow-x:auto;font-size:12px}
.bad{color:#b52b27;font-weight:bold}.ok{color:#2d7a2d;font-weight:bold}
svg.timeline text,svg.series text{font:11px sans-serif}svg.timeline .phase{stroke:#555;stroke-dasharray:3 3;fill:#555}
svg.timeline text.phase{stroke:none}.hint{color:#b52b27}img{max-width:100%}
"""
BENCH_COLUMNS = (
    ("point", "point"),
    ("concurrency", "c"),
    ("isl", "ISL"),
    ("osl", "OSL"),
    ("output_tok_s", "tok/s"),
    ("output_tok_s_per_gpu", "tok/s/GPU"),
    ("tok_s_per_user", "tok/s/user"),
    ("ttft_p50_ms", "TTFT p50 ms"),
    ("ttft_p99_ms", "TTFT p99 ms"),
    ("itl_p50_ms", "ITL p50 ms"),
    ("error_rate", "errors"),
    ("valid", "valid"),
)
# benchmark=lm_eval rows: one per task and metric.
ACCURACY_COLUMNS = (
    ("task", "task"),
    ("metric", "metric"),
    ("filter", "filter"),
    ("value", "value"),
    ("stderr", "stderr"),
    ("samples", "documents"),
    ("valid", "valid"),
    ("invalid_reason", "why invalid"),
)


def _cell(value: Any) -> str:
    """A table cell, numbers right-aligned."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f'<td class="l">{escape("-" if value is None else str(value))}</td>'
    return f"<td>{value:.2f}</td>" if isinstance(value, float) else f"<td>{value}</td>"


def table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """An HTML table of `rows` (first column left-aligned)."""
    head = "".join(f"<th>{escape(t)}</th>" for _, t in columns)
    body = "".join("<tr>" + "".join(_cell(r.get(k)) for k, _ in columns) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _points(run_dir: Path) -> list[dict[str, Any]]:
    path = RunDir(run_dir).results_dir / "points.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def _bench_tables(points: list[dict[str, Any]]) -> str:
    """The load points' table and the accuracy rows' table (each only when it has rows)."""
    load = [p for p in points if "task" not in p]
    accuracy = [p for p in points if "task" in p]
    parts = [table(load, BENCH_COLUMNS)] if load else []
    parts += [table(accuracy, ACCURACY_COLUMNS)] if accuracy else []
    return "".join(parts) or "<p>no benchmark points</p>"


def log_starts(run: Run) -> dict[str, float]:
    """When each process's log begins (its first timestamp), for the timeline."""
    out = {}
    for name, entry in run.state.processes.items():
        path = Path(entry.get("log") or RunDir(run.path).log(name))
        try:
            with path.open(errors="replace") as fh:
                t = parse_time(logscan.ANSI.sub("", fh.read(4096)))
        except OSError:
            t = None
        if t is not None:
            out[name] = t
    return out


def errors_html(run: Run) -> str:
    """The run's error with its tail, and known failure markers in every process log."""
    parts = []
    if run.state.error:
        parts.append(
            f'<p class="bad">{escape(run.state.error.splitlines()[0])}</p>'
            f"<pre>{escape(run.state.error)}</pre>"
        )
    for name, entry in run.state.processes.items():
        log = Path(entry.get("log") or RunDir(run.path).log(name))
        found = logscan.hints(logscan.read_tail(log))
        if found:
            items = "".join(f"<li>{escape(h)}</li>" for h in found)
            parts.append(
                f'<p class="hint">known failure markers in {escape(name)} '
                f"({escape(str(log))}):</p><ul>{items}</ul>"
            )
        for restart in entry.get("restarts") or []:
            at = restart.get("at")
            when = (
                time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))
                if isinstance(at, (int, float))
                else at
            )
            parts.append(
                f"<p>{escape(name)} restarted at {escape(str(when))} (exit "
                f"{escape(str(restart.get('exit_code')))})</p>"
                f"<pre>{escape(str(restart.get('tail', '')))}</pre>"
            )
    return "".join(parts) or '<p class="ok">no errors</p>'


def serving_charts(records: Sequence[dict[str, Any]]) -> str:
    """Output tokens/s and requests in flight over time, from the frontend's scrapes."""
    by_target = prom.per_target([r for r in records if r.get("role") == "frontend" and r.get("ok")])
    charts = []
    for name, front in by_target.items():
        rates = [
            (float(b["t"]) - float(front[0]["t"]), prom.frontend_rates(a, b))
            for a, b in zip(front, front[1:], strict=False)
        ]
        tok = [(t, r["output_tok_s"]) for t, r in rates if r["output_tok_s"] is not None]
        flight = [(t, r["in_flight"]) for t, r in rates if r["in_flight"] is not None]
        # A frontend pair: one pair of charts per replica, named.
        of = f" ({name})" if len(by_target) > 1 else ""
        charts.append(
            series_svg(tok, f"output tok/s{of}") + series_svg(flight, f"in flight{of}", "#d9534f")
        )
    return "".join(charts)


def metrics_html(run_dir: Path) -> str:
    """Charts of the frontend's throughput, then per scraped target: samples and the last
    value of the headline series."""
    records = read_records(run_dir)
    if not records:
        return "<p>no metrics scraped (results/metrics.jsonl)</p>"
    by_target: dict[str, list[dict[str, Any]]] = {}
    for rec in records:
        by_target.setdefault(str(rec.get("target")), []).append(rec)
    rows = []
    for target, recs in by_target.items():
        ok = [r for r in recs if r.get("ok")]
        last = ok[-1]["values"] if ok else {}
        headline = {
            k: v
            for k, v in last.items()
            if k.endswith(
                (
                    "requests_total",
                    "_reqs",
                    "token_usage",
                    "inflight_requests",
                    "output_tokens_total",
                )
            )
        }
        rows.append(
            {
                "target": target,
                "url": recs[-1].get("url"),
                "scrapes": len(recs),
                "ok": len(ok),
                "last": ", ".join(f"{k}={v:g}" for k, v in headline.items())
                or (recs[-1].get("error") or "-"),
            }
        )
    cols = (
        ("target", "target"),
        ("url", "url"),
        ("scrapes", "scrapes"),
        ("ok", "ok"),
        ("last", "last values"),
    )
    return serving_charts(records) + table(rows, cols)


def fingerprint_html(fingerprint: dict[str, Any]) -> str:
    """The fingerprint as a key/value table (nested keys dotted)."""
    if not fingerprint:
        return "<p>none (fingerprint.json is written once the driver has the nodes)</p>"
    flat = flatten(fingerprint)
    rows = [
        {"key": k, "value": v if not isinstance(v, list) else " ".join(map(str, v))}
        for k, v in flat.items()
    ]
    return table(rows, (("key", "key"), ("value", "value")))


def timeline_html(run: Run, now: float) -> str:
    """The start-up (to ready) and the whole run, as two pictures: a 20-minute load would be a
    sliver of a day of serving."""
    starts = log_starts(run)
    whole = run_svg(run.state.data, starts, now)
    ready = run.state.reached(Phase.READY)
    if ready is None:
        return whole
    startup = run_svg(run.state.data, starts, now, until=ready + 1.0)
    return f"<p>start-up, until ready:</p>{startup}<p>the whole run:</p>{whole}"


def run_section(run: Run, now: float, *, level: int = 2) -> str:
    """Summary, timeline, benchmark, metrics, errors and fingerprint of one run."""
    st, h = run.state, f"h{level}"
    phase_class = "ok" if run.view.phase in (Phase.DONE, Phase.READY) else "bad"
    summary = (
        f'<p>phase <span class="{phase_class}">{escape(run.view.phase)}</span>'
        f"{' (' + escape(run.view.why) + ')' if run.view.why else ''}; job "
        f"{escape(st.job_id or '-')}; launcher "
        f"{escape(run.launch.launcher or '-')}; nodes "
        f"{escape(', '.join(st.data.get('nodes', [])) or '-')}; frontend "
        f"{escape(st.frontend_url or '-')}; reason "
        f"{escape(st.reason or '-')}</p>"
    )
    points = _points(run.path)
    bench = _bench_tables(points)
    fp = fingerprint_html(_read_json(RunDir(run.path).fingerprint_file))
    title = f"{st.data.get('name') or run.path.name} ({run.path.name})"
    scaling = autoscale_html(st.data, read_records(run.path), now)
    if scaling:
        scaling = f'<h3 class="section-autoscale">Autoscaling</h3>{scaling}'
    return (
        f'<section class="run"><{h}>{escape(title)}</{h}>{summary}'
        f'<h3 class="section-timeline">Timeline</h3>{timeline_html(run, now)}'
        f'<h3 class="section-benchmark">Benchmark</h3>{bench}{scaling}'
        f'<h3 class="section-metrics">Metrics</h3>{metrics_html(run.path)}'
        f'<h3 class="section-errors">Errors</h3>{errors_html(run)}'
        f'<h3 class="section-fingerprint">Fingerprint</h3>{fp}</section>'
    )


def pareto_img(sweep_dir: Path) -> str:
    """The sweep's Pareto plot embedded as base64 (made by `ctl collect`; made here if absent)."""
    png = sweep_dir / "pareto.png"
    if not png.exists():
        try:
            from orchestrator.sweep.sweepdir import collect

            collect(sweep_dir)
        except OrchestratorError as exc:
            return f"<p>no Pareto plot: {escape(str(exc))}</p>"
    data = base64.b64encode(png.read_bytes()).decode()
    return f'<img id="pareto" alt="Pareto plot" src="data:image/png;base64,{data}">'


def page(title: str, body: str) -> str:
    """The HTML document."""
    generated = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}'
        f"</title><style>{CSS}</style></head><body><h1>{escape(title)}</h1>"
        f"<p>generated {generated} by orchestrator ctl report</p>{body}</body></html>"
    )


def report(path: Path, out: Path | None = None) -> Path:
    """Write the report of a run or a sweep directory; returns the file written."""
    now = time.time()
    if (path / "manifest.json").exists():
        runs = load_runs(find_runs(path), None)
        sweep_rows = [
            {
                "run": r.path.name,
                "phase": r.view.phase,
                "job": r.state.data.get("job_id"),
                "points": len(_points(r.path)),
            }
            for r in runs
        ]
        cols = (("run", "run"), ("phase", "phase"), ("job", "job"), ("points", "points"))
        body = (
            f'<h2 id="pareto-plot">Pareto plot</h2>{pareto_img(path)}'
            f'<h2 id="points">Points</h2>{table(sweep_rows, cols)}'
            + "".join(run_section(r, now, level=2) for r in runs)
        )
        title = f"Sweep {path.name}"
    elif RunDir(path).is_run():
        run = load_runs([path], None)[0]
        body, title = run_section(run, now), f"Run {path.name}"
    else:
        raise OrchestratorError(
            f"{path} is neither a run directory (launch.json) nor a sweep directory (manifest.json)"
        )
    target = out or RunDir(path).report_file
    target.write_text(page(title, body))
    return target
