#!/usr/bin/env python3
"""Soak a rollover on the Slurm testbed under load (not a test: prints numbers).

Launches `frontend.placement=here serve.rollover=true` with `cluster.time_limit_min=2`: the
frontend (and etcd) run on this host under a detached driver, the workers in Slurm jobs that
it lists in RUN_DIR/attached.json (one entry per job: job_id, run_dir, workers, submitted_at,
generation 1, 2, ..., replaces = the job id it replaces, ready_at, drain_at, removed_at). A
steady request loop (client threads, one chat at a time each) runs through the frontend until
`--rollovers` replacements served and the jobs they replaced ended; then `ctl stop` (always)
and a wait until no process of the run is left. Printed:
- requests sent and failed (goal 0), also per rollover window (replacement submitted -> old job
  ended);
- requests served by each generation: Dynamo mocker: its workers'
  `dynamo_component_requests_total` (generate endpoint), polled here every 0.2 s while they
  live (the last value before a worker exits; canaries included); sglang-router + the SGLang
  test double: the double's record file, one line per request, mapped to a generation by the
  worker's host:port in that job's plan.bound.json and the job's lifetime;
- per rollover: submit -> replacement ready (its own state.json `ready`; `queue_s` of it:
  submit -> its driver started, i.e. Slurm's queueing and the job's launch), ready -> old job
  ended (the old job's state.json `done`), and what the run's driver recorded (ready_at,
  drain_at, removed_at: seen on its tick, so later).

Usage: python benchmarks/rollover_soak.py [--frontend dynamo|router] [--rollovers 2]
       [--clients 2] [--timeout-s 600] [OVERRIDE ...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.loadgen import Load, wait  # noqa: E402  (after the sys.path insert)
from tests.e2e import nothing_left, state  # noqa: E402  (after the sys.path insert)

HOST = "10.77.0.1"  # the testbed bridge: the address the compute nodes reach this host on
COMMON = [
    "+model=gpt_oss_120b",
    "cluster=testbed",
    "frontend.placement=here",
    f"frontend.host={HOST}",
    "serve.rollover=true",
    "cluster.time_limit_min=2",
    "serve.rollover_lead_min=1.5",
    "launcher.signal_before_limit_s=30",
    "serve.signal_hold_s=20",
    "readiness.timeout_s=60",
    "launcher=submitit",
]
DOUBLE = REPO / "tests" / "doubles" / "sglang_test_double.py"
SETUPS = {
    "dynamo": ["engine=mocker", "frontend.discovery=etcd"],
    "router": ["engine=sglang", "frontend=sglang_router", f"engine.python={DOUBLE}"],
}
SESSION = requests.Session()
SESSION.trust_env = False  # testbed addresses: never through a proxy


def attached(run_dir: Path) -> list[dict[str, Any]]:
    """RUN_DIR/attached.json ([] before the first worker job)."""
    try:
        return list(json.loads((run_dir / "attached.json").read_text()))
    except (FileNotFoundError, ValueError):
        return []


def phase_t(job_dir: str, phase: str) -> float | None:
    """When the job's own driver entered `phase` (its state.json timeline), or None."""
    return next(
        (t["t"] for t in state(Path(job_dir)).get("timeline", []) if t["phase"] == phase), None
    )


def driver_started(job_dir: str) -> float | None:
    """When the job's driver started (its latest attempt): the end of Slurm's queueing."""
    attempts = state(Path(job_dir)).get("attempts") or [{}]
    value = attempts[-1].get("t")
    return float(value) if value else None


def drain_at(entry: Mapping[str, Any]) -> float | None:
    """When the run's driver asked the job to drain (the lead's name first, the brief's next)."""
    value = entry.get("drain_at") or entry.get("drained_at")
    return float(value) if value else None


def workers_of(job_dir: str) -> list[dict[str, Any]]:
    """The probed worker processes of a started job (plan.bound.json; [] before it started)."""
    try:
        bound = json.loads((Path(job_dir) / "plan.bound.json").read_text())
    except (FileNotFoundError, ValueError):
        return []
    return [p for p in bound["processes"] if p.get("health")]


class MockerCounts:
    """Polls every live worker's generate-request counter; keeps the last value per worker."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir, self.stop = run_dir, threading.Event()
        self.last: dict[tuple[int, str, str], int] = {}  # (generation, worker, role) -> served
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self.stop.is_set():
            for entry in attached(self.run_dir):
                if entry.get("removed_at"):
                    continue
                for proc in workers_of(entry["run_dir"]):
                    n = self._served(proc["health"]["url"])
                    if n is not None:
                        key = (int(entry.get("generation", 0)), proc["name"], proc["role"])
                        self.last[key] = n
            self.stop.wait(0.2)

    @staticmethod
    def _served(health_url: str) -> int | None:
        try:
            text = SESSION.get(health_url.replace("/health", "/metrics"), timeout=1).text
        except requests.RequestException:
            return None
        return sum(
            int(float(line.rsplit(" ", 1)[1]))
            for line in text.splitlines()
            if line.startswith("dynamo_component_requests_total{")
            and 'dynamo_endpoint="generate"' in line
        )

    def per_generation(self) -> dict[int, dict[str, int]]:
        """Requests served per generation and role (canaries included)."""
        out: dict[int, dict[str, int]] = {}
        for (gen, _, role), n in self.last.items():
            out.setdefault(gen, {})[role] = out.get(gen, {}).get(role, 0) + n
        return out


def router_counts(run_dir: Path, record: Path) -> dict[int, dict[str, int]]:
    """Requests per generation and mode (prefill, decode: a disaggregated request is one line
    of each) from the test double's record file: a line belongs to the job
    whose bound plan has its host:port and that lived when it was written (a later job on the
    same node may get the same port block)."""
    spans = []
    for entry in attached(run_dir):
        begin = phase_t(entry["run_dir"], "starting") or 0.0
        end = phase_t(entry["run_dir"], "done") or phase_t(entry["run_dir"], "failed") or 1e18
        for proc in workers_of(entry["run_dir"]):
            netloc = proc["health"]["url"].split("//", 1)[1].split("/", 1)[0]
            spans.append((netloc, begin, end, int(entry.get("generation", 0))))
    out: dict[int, dict[str, int]] = {}
    lines = record.read_text().splitlines() if record.exists() else []
    for line in lines:
        r = json.loads(line)
        netloc = f"{r['host']}:{r['port']}"
        gen = next((g for n, b, e, g in spans if n == netloc and b <= r["t"] <= e), -1)
        per = out.setdefault(gen, {})  # generation -1: no job matched (should not happen)
        per[r["mode"]] = per.get(r["mode"], 0) + 1
    return out


def rollovers_done(run_dir: Path, n: int) -> bool:
    """Whether `n` replacements are ready and the jobs they replaced have ended."""
    entries = attached(run_dir)
    by_id = {e["job_id"]: e for e in entries}
    done = [
        e
        for e in entries
        if e.get("replaces")
        and e.get("ready_at")
        and by_id.get(e["replaces"], {}).get("removed_at")
    ]
    return len(done) >= n


def rollover_rows(run_dir: Path, load: Load) -> list[dict[str, Any]]:
    """One row per replacement: its timings and the loop's requests while it happened."""
    entries = attached(run_dir)
    by_id = {e["job_id"]: e for e in entries}
    rows = []
    for new in (e for e in entries if e.get("replaces")):
        old = by_id.get(new["replaces"], {})
        ready = phase_t(new["run_dir"], "ready")
        old_done = phase_t(old["run_dir"], "done") if old else None
        sent, failed = load.window(new["submitted_at"], old_done or time.time())
        rows.append(
            {
                "generation": new.get("generation"),
                "job": new["job_id"],
                "replaces": new["replaces"],
                "reason": new.get("reason", ""),
                "submit_to_ready_s": between(new["submitted_at"], ready),
                "queue_s": between(new["submitted_at"], driver_started(new["run_dir"])),
                "ready_to_old_ended_s": between(ready, old_done),
                "ready_seen_after_s": between(ready, new.get("ready_at")),
                "ready_to_drain_asked_s": between(ready, drain_at(old)),
                "ready_to_removed_s": between(ready, old.get("removed_at")),
                "requests": sent,
                "failed": len(failed),
                "why": sorted(set(failed)),
            }
        )
    return rows


def between(start: float | None, end: float | None) -> float | None:
    """end - start, or None when either is not recorded (yet)."""
    return float(end) - float(start) if start and end else None


def launch(frontend: str, run_dir: Path, record: Path, overrides: list[str]) -> None:
    """Start the run; the CLI returns once the frontend serves with the first worker job."""
    extra = [f"+engine.env.SGLANG_DOUBLE_RECORD={record}"] if frontend == "router" else []
    extra += overrides
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator",
            *COMMON,
            *SETUPS[frontend],
            *extra,
            f"run_dir={run_dir}",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
        timeout=300,
    )
    if res.returncode != 0:
        raise SystemExit(f"launch failed ({res.returncode}): {res.stderr[-3000:]}")


def stop(run_dir: Path) -> None:
    """`ctl stop` (the detached driver stops its worker jobs first), then nothing left: no
    process mentions the run directory and no worker job is still in Slurm's queue."""
    res = subprocess.run(
        [sys.executable, "-m", "orchestrator.ctl", "stop", str(run_dir)],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
        timeout=300,
    )
    print(f"ctl stop -> {res.returncode}: {res.stdout.strip()} {res.stderr.strip()[-500:]}")
    jobs = [e["job_id"] for e in attached(run_dir) if e.get("job_id")]

    def gone() -> bool:
        listed = subprocess.run(
            ["squeue", "-h", "-o", "%i", "-j", ",".join(jobs)],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
        return nothing_left(run_dir) and not (set(listed) & set(jobs))

    wait(gone, 120, f"no process of {run_dir} and none of jobs {jobs} left")


def report(
    rows: list[dict[str, Any]], served: dict[int, dict[str, int]], load: Load, t_end: float
) -> None:
    """The tables."""
    total, failed = load.window(0.0, t_end + 60)
    start = min((d[0] for d in load.done), default=t_end)
    rate = total / max(t_end - start, 1e-9)
    print(f"\nrequests sent {total}, failed {len(failed)} (goal 0), {rate:.1f} requests/s")
    for why in sorted(set(failed)):
        print(f"  failed: {why}")
    for sent, answered, why in [d for d in list(load.done) if d[2]][:20]:
        print(f"  failed request sent {sent:.3f}, answered {answered:.3f}: {why}")
    print("\nrequests served per generation and role (worker-side counts; canaries included)")
    for gen in sorted(served):
        print(
            f"  generation {gen:>2}: "
            + ", ".join(f"{k} {v}" for k, v in sorted(served[gen].items()))
        )
    decode = sum(per.get("decode", 0) for per in served.values())
    print(f"  decode sum: {decode}  (loop requests answered ok: {total - len(failed)})")
    keys = [
        "generation",
        "job",
        "replaces",
        "submit_to_ready_s",
        "queue_s",
        "ready_to_old_ended_s",
        "ready_seen_after_s",
        "ready_to_drain_asked_s",
        "ready_to_removed_s",
        "requests",
        "failed",
    ]
    print("\nrollovers (times in s; *_seen/_asked/_removed: as the run's driver recorded them)")
    print("  ".join(f"{k:>{len(k)}}" for k in keys))
    for r in rows:
        print("  ".join(f"{_cell(r[k]):>{len(k)}}" for k in keys) + f"  ({r['reason']})")
        for why in r["why"]:
            print(f"    failed in this rollover: {why}")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def main() -> None:
    """Launch, soak through the rollovers under load, stop, print."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frontend", choices=sorted(SETUPS), default="dynamo")
    ap.add_argument("--rollovers", type=int, default=2)
    ap.add_argument("--clients", type=int, default=2, help="request-loop threads")
    ap.add_argument("--timeout-s", type=float, default=600, help="for all the rollovers")
    ap.add_argument(
        "overrides",
        nargs="*",
        help="more overrides, e.g. frontend.http_port=8100 "
        "(the frontend binds this host's ports: another run here may hold 8000)",
    )
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="orch-soak-"))
    run_dir, record = tmp / "run", tmp / "requests.jsonl"
    print(f"run directory: {run_dir}", flush=True)
    counts = MockerCounts(run_dir)
    try:
        launch(args.frontend, run_dir, record, args.overrides)
        if args.frontend == "dynamo":
            counts.thread.start()
        with Load(state(run_dir)["frontend_url"], args.clients) as load:
            try:
                wait(
                    lambda: rollovers_done(run_dir, args.rollovers),
                    args.timeout_s,
                    f"{args.rollovers} rollovers",
                    interval=1.0,
                )
            except SystemExit as exc:  # the numbers so far are still worth printing
                print(f"{exc}; reporting what happened", flush=True)
            t_end = time.time()
        rows = rollover_rows(run_dir, load)
    finally:
        stop(run_dir)
        counts.stop.set()
    served = (
        counts.per_generation() if args.frontend == "dynamo" else router_counts(run_dir, record)
    )
    report(rows, served, load, t_end)


if __name__ == "__main__":
    main()
