"""Metrics plugin: while the deployment serves (and benchmarks), scrape the frontend's and each
worker's Prometheus endpoint every `metrics.interval_s` into results/metrics.jsonl.

Attached like the benchmark step (an `on_ready` hook starting a thread, a `before_stop` hook
ending it), through the driver's narrow view. One line per target and scrape:
`{"t", "at", "target", "role", "url", "ok", "values"|"error"}`, values compacted by
`prom.compact` (families summed over labels, no histogram buckets). The file is bounded: past
`max_bytes` it becomes metrics.1.jsonl (replacing the previous one) and a new file starts.

Where the metrics are (per component): Dynamo's frontend serves `/metrics` on its HTTP port and
Dynamo workers (and the mocker) on their system port (`DYN_SYSTEM_PORT`), i.e. next to their
`/health`; sglang-router on its own `--prometheus-port` (the process's `metrics` port); SGLang's
`launch_server` on its HTTP port (only with `--enable-metrics`; without it the target answers
404, recorded once per scrape as an error).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from orchestrator.core.effects import HttpClient, HttpError, RequestsHttp
from orchestrator.observe import prom
from orchestrator.plan.model import MetricsPlan, Plan
from orchestrator.rundir import RunDir
from orchestrator.rundir.layout import METRICS_FILE
from orchestrator.runtime.hooks import DriverView
from orchestrator.runtime.processes import Running
from orchestrator.runtime.state import now_iso

SCRAPE_TIMEOUT_S = 5.0
# Workers scraped per interval, in turn: every worker every interval cost the driver ~1 ms of
# CPU per scrape, 768 workers every 10 s most of its 8 % of a core while serving (issue 22).
# Past this many, each worker is scraped every ceil(workers / WORKERS_PER_ROUND) intervals;
# the frontend (the deployment's totals) every interval.
WORKERS_PER_ROUND = 32


@dataclass(frozen=True)
class Target:
    """One metrics endpoint: the process it belongs to and its URL."""

    name: str
    role: str
    url: str


def targets(plan: Plan) -> list[Target]:
    """The bound plan's metrics endpoints: a process's `metrics` port when it has one, else the
    host and port of its health probe (rank 0 of multi-node workers only: one engine each)."""
    out = []
    for proc in plan.processes:
        if proc.health is None or proc.rank != 0:
            continue
        parts = urlsplit(proc.health.url)
        netloc = parts.netloc
        if "metrics" in proc.ports:
            netloc = f"{netloc.rpartition(':')[0]}:{proc.ports['metrics']}"
        out.append(Target(proc.name, proc.role, f"{parts.scheme}://{netloc}/metrics"))
    return out


def next_round(found: Sequence[Target], cursor: int) -> tuple[list[Target], int]:
    """The targets of one scrape round, starting at worker `cursor`, and the next cursor."""
    always = [t for t in found if t.role == "frontend"]
    workers = [t for t in found if t.role != "frontend"]
    if len(workers) <= WORKERS_PER_ROUND:
        return list(found), 0
    turn = [workers[(cursor + i) % len(workers)] for i in range(WORKERS_PER_ROUND)]
    return always + turn, (cursor + WORKERS_PER_ROUND) % len(workers)


def scrape(http: HttpClient, target: Target) -> dict[str, Any]:
    """One record of `target` (ok with its compacted values, or the error)."""
    record: dict[str, Any] = {
        "t": time.time(),
        "at": now_iso(),
        "target": target.name,
        "role": target.role,
        "url": target.url,
    }
    try:
        resp = http.get(target.url, timeout=SCRAPE_TIMEOUT_S)
    except HttpError as exc:
        return {**record, "ok": False, "error": str(exc)}
    if resp.status != 200:
        return {**record, "ok": False, "error": f"HTTP {resp.status}"}
    return {**record, "ok": True, "values": prom.compact(resp.body)}


class MetricsFile:
    """results/metrics.jsonl, appended line by line, rotated past `max_bytes`."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path, self.max_bytes = path, max_bytes

    def append(self, records: Sequence[dict[str, Any]]) -> None:
        """Append `records`; rotate first when the file is already over its bound."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and self.path.stat().st_size >= self.max_bytes:
            self.path.replace(self.path.with_name("metrics.1.jsonl"))
        with self.path.open("a") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in records)


class Scraper:
    """The `on_ready` / `before_stop` hook pair running the scrape loop in a thread."""

    def __init__(self, metrics: MetricsPlan, http: HttpClient | None = None) -> None:
        self.metrics = metrics
        self.http = http
        self.done = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self, driver: DriverView) -> None:
        """Begin scraping (on_ready: before the benchmark, which blocks the driver)."""
        found = targets(driver.plan)
        if not found:
            return
        out = MetricsFile(RunDir(driver.run_dir).metrics_file, self.metrics.max_bytes)
        # Its own HTTP session: requests' Session is not meant to be shared across threads.
        http = self.http or RequestsHttp()
        self.thread = threading.Thread(
            target=self._loop, args=(http, found, out), daemon=True, name="metrics-scraper"
        )
        self.thread.start()

    def stop(self, _driver: DriverView) -> None:
        """End the loop (before_stop: the endpoints are about to go away)."""
        self.done.set()
        if self.thread is not None:
            self.thread.join(timeout=SCRAPE_TIMEOUT_S + 1)

    def _loop(self, http: HttpClient, found: list[Target], out: MetricsFile) -> None:
        cursor = 0
        while not self.done.is_set():
            batch, cursor = next_round(found, cursor)
            out.append([scrape(http, t) for t in batch])
            # A floor: metrics.interval_s=0 must not turn into a busy loop against the endpoints.
            if self.done.wait(max(self.metrics.interval_s, 0.1)):
                return


def record_healthy_at(driver: DriverView, running: Running) -> None:
    """`healthy_at` in the process's state.json entry (the report's timeline)."""
    driver.state.process(running.proc.name, healthy_at=time.time())


def attach_metrics(driver: DriverView, metrics: MetricsPlan | None) -> None:
    """Scrape while serving (not when the plan has no metrics section); record when each
    process became healthy for the timeline either way."""
    driver.on_process_healthy.append(record_healthy_at)
    if metrics is None:
        return
    scraper = Scraper(metrics)
    driver.on_ready.append(scraper.start)
    driver.before_stop.append(scraper.stop)


def read_records(run_dir: Path) -> list[dict[str, Any]]:
    """Every complete record of results/metrics.jsonl (older rotated file first)."""
    records = []
    for name in ("metrics.1.jsonl", METRICS_FILE):
        path = RunDir(run_dir).metrics_file.with_name(name)
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue  # a line the scraper is writing right now
    return records


def point_summary(run_dir: Path, start: float, end: float) -> dict[str, Any]:
    """Per worker role, mean and max of the engine gauges scraped in [start, end]
    (`{"decode": {"kv_cache_usage": {"mean", "max"}, ...}, "samples": N}`); {} without any."""
    by_role: dict[str, dict[str, list[float]]] = {}
    samples = 0
    for rec in read_records(run_dir):
        if not rec.get("ok") or not start <= float(rec.get("t", 0)) <= end:
            continue
        gauges = prom.engine_gauges(rec["values"])
        if gauges:
            samples += 1
        for key, value in gauges.items():
            by_role.setdefault(rec.get("role", "?"), {}).setdefault(key, []).append(value)
    if not samples:
        return {}
    summary: dict[str, Any] = {
        role: {k: {"mean": round(sum(v) / len(v), 4), "max": max(v)} for k, v in gauges.items()}
        for role, gauges in by_role.items()
    }
    return {**summary, "samples": samples}
