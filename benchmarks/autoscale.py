#!/usr/bin/env python3
"""Autoscaling with Dynamo's planner against static deployments, on the Slurm testbed with the
mocker (not a test: prints numbers). Issue 21, deliverable 5.

One seeded load ramp, the same for every arm: concurrency 1 -> `--peak` -> 1 (a triangle over
`--minutes`), client k sending while k < the concurrency of that moment; every request a
streamed chat whose prompt length and output length come from a generator seeded by
(`--seed`, client, request number). Arms (each a fresh run, stopped after its ramp):
  static_min  1P1D, autoscale=off
  static_max  the bounds' maxima (`--max-prefill` P, `--max-decode` D), autoscale=off
  autoscaled  autoscale=dynamo_planner from 1P1D within the same bounds
Per arm: requests, failed, the share meeting both targets (TTFT <= --ttft-ms and mean ITL <=
--itl-ms), GPU-seconds held during the ramp (each Slurm job of the run from its driver's start
to its end, times the GPUs of its workers, clipped to the ramp), and for `autoscaled` every
planner decision with its decision -> serving time (state.json autoscale_decisions).

Usage: python benchmarks/autoscale.py [--minutes 10] [--peak 24] [--arms static_min,...]
       [--set HYDRA_OVERRIDE ...] [--autoscale-set HYDRA_OVERRIDE ...] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.loadgen import MODEL, stop_run  # noqa: E402  (after the sys.path insert)
from orchestrator.rundir import RunDir  # noqa: E402
from orchestrator.rundir.jobs import WorkerJobs  # noqa: E402
from tests.e2e import state  # noqa: E402

COMMON = [
    "+model=gpt_oss_120b",
    "engine=mocker",
    "cluster=testbed",
    "model.tp=1",  # one (fake) GPU per worker: GPU-seconds count workers, jobs fit a shared testbed
    "launcher=submitit",
    "readiness.timeout_s=180",
    "cluster.time_limit_min=30",
    "frontend.discovery=etcd",
]


@dataclass
class Outcome:
    """One request: when it was sent, time to first token, mean gap between tokens, error."""

    sent: float
    ttft_s: float | None
    itl_s: float | None
    error: str


def concurrency(t: float, minutes: float, peak: int) -> int:
    """The ramp: 1 at the start and the end, `peak` in the middle."""
    x = min(max(t / (minutes * 60), 0.0), 1.0)
    return max(1, round(1 + (peak - 1) * (1 - abs(2 * x - 1))))


def one_request(session: requests.Session, url: str, rng: random.Random) -> Outcome:
    """A streamed chat of seeded size; its TTFT and mean ITL from the chunks' arrival."""
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hello " * rng.randint(50, 300)}],
        "max_tokens": rng.randint(100, 400),
        "stream": True,
    }
    sent = time.time()
    times: list[float] = []
    try:
        with session.post(f"{url}/v1/chat/completions", json=body, timeout=300, stream=True) as r:
            if r.status_code != 200:
                return Outcome(sent, None, None, f"HTTP {r.status_code}: {r.text[:120]}")
            for line in r.iter_lines(decode_unicode=True):
                if line and line.startswith("data: ") and line != "data: [DONE]":
                    choices = json.loads(line[6:]).get("choices") or [{}]
                    if choices[0].get("delta", {}).get("content"):
                        times.append(time.time())
    except (requests.RequestException, ValueError) as exc:
        return Outcome(sent, None, None, f"{type(exc).__name__}: {exc}"[:160])
    if not times:
        return Outcome(sent, None, None, "no tokens")
    itl = (times[-1] - times[0]) / (len(times) - 1) if len(times) > 1 else 0.0
    return Outcome(sent, times[0] - sent, itl, "")


def ramp(url: str, args: argparse.Namespace) -> tuple[float, float, list[Outcome]]:
    """Run the ramp through `url`: (start, end, every request's outcome)."""
    out: list[Outcome] = []
    start = time.time()
    end = start + args.minutes * 60

    def client(k: int) -> None:
        session = requests.Session()
        session.trust_env = False  # testbed addresses: never through a proxy
        n = 0
        while time.time() < end:
            if k >= concurrency(time.time() - start, args.minutes, args.peak):
                time.sleep(0.2)
                continue
            out.append(one_request(session, url, random.Random(f"{args.seed}-{k}-{n}")))
            n += 1

    threads = [threading.Thread(target=client, args=(k,)) for k in range(args.peak)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return start, time.time(), out


def job_gpu_seconds(job_dir: Path, start: float, end: float) -> float:
    """GPUs of the job's workers times the time its driver ran within [start, end]."""
    st = RunDir(job_dir).state()
    times = {e["phase"]: float(e["t"]) for e in st.data.get("timeline", [])}
    began = times.get("starting")
    if began is None:
        return 0.0
    over = max(times.values()) if st.ended else end
    try:
        plan = RunDir(job_dir).bound_plan()
    except Exception:  # noqa: BLE001 (a job that never bound held nothing)
        return 0.0
    gpus = sum(len(p.gpus) for p in plan.processes)
    return gpus * max(0.0, min(over, end) - max(began, start))


def gpu_seconds(run_dir: Path, start: float, end: float) -> float:
    """The run's own job and every attached job."""
    jobs = [Path(j.run_dir) for j in WorkerJobs(run_dir).read()]
    return sum(job_gpu_seconds(d, start, end) for d in [run_dir, *jobs])


def arm_overrides(arm: str, args: argparse.Namespace) -> list[str]:
    """What each arm launches."""
    if arm == "static_min":
        return ["prefill.workers=1", "decode.workers=1"]
    if arm == "static_max":
        return [f"prefill.workers={args.max_prefill}", f"decode.workers={args.max_decode}"]
    return [
        *args.autoscale_set,
        "autoscale=dynamo_planner",
        f"autoscale.max_prefill={args.max_prefill}",
        f"autoscale.max_decode={args.max_decode}",
        f"autoscale.interval_s={args.interval_s}",
        f"autoscale.ttft_ms={args.ttft_ms}",
        f"autoscale.itl_ms={args.itl_ms}",
    ]


def run_arm(arm: str, args: argparse.Namespace, base: Path) -> dict[str, Any]:
    """Launch, ramp, measure, stop."""
    run_dir = base / arm
    cmd = [sys.executable, "-m", "orchestrator", *COMMON, *arm_overrides(arm, args), *args.set]
    launched = subprocess.run(
        [*cmd, f"run_dir={run_dir}"], cwd=REPO, capture_output=True, text=True, check=False
    )
    if launched.returncode != 0:
        raise SystemExit(f"{arm}: launch failed: {launched.stderr[-2000:]}")
    try:
        start, end, out = ramp(state(run_dir)["frontend_url"], args)
        held = gpu_seconds(run_dir, start, end)
        decisions = state(run_dir).get("autoscale_decisions", [])
    finally:
        stop_run(run_dir, REPO, 120)
    good = [
        o
        for o in out
        if not o.error
        and o.ttft_s is not None
        and o.ttft_s * 1000 <= args.ttft_ms
        and (o.itl_s or 0) * 1000 <= args.itl_ms
    ]
    return {
        "arm": arm,
        "requests": len(out),
        "failed": len([o for o in out if o.error]),
        "errors": sorted({o.error for o in out if o.error})[:3],
        "meeting_targets": round(len(good) / max(1, len(out)), 4),
        "gpu_seconds": round(held, 1),
        "decisions": [
            {k: d.get(k) for k in ("decision", "target", "status", "took_s")} for d in decisions
        ],
    }


def main() -> None:
    """Every arm in turn, one JSON line each, then a Markdown table."""
    p = argparse.ArgumentParser()
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--peak", type=int, default=24)
    p.add_argument("--seed", type=int, default=21)
    p.add_argument("--ttft-ms", type=float, default=500.0)
    p.add_argument("--itl-ms", type=float, default=50.0)
    p.add_argument("--max-prefill", type=int, default=1)
    p.add_argument("--max-decode", type=int, default=3)
    p.add_argument("--interval-s", type=int, default=5)
    p.add_argument("--arms", default="static_min,static_max,autoscaled")
    # Extra Hydra overrides for every arm, e.g. a slower mocker so that 1P1D misses the targets
    # at the peak: --set +engine.args.decode-speedup-ratio=0.1 --set +engine.args.max-num-seqs=8
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    # Overrides of the autoscaled arm only (its planner's mode and thresholds), e.g.
    # --autoscale-set autoscale.optimization_target=load
    # --autoscale-set +autoscale.args.decode_scale_up_kv_rate=70
    p.add_argument("--autoscale-set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--keep", type=Path, help="keep the arms' run directories under this path")
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="autoscale-bench-") as tmp:
        base = args.keep or Path(tmp)
        for arm in args.arms.split(","):
            rows.append(run_arm(arm, args, base))
            print(json.dumps(rows[-1]), flush=True)
    print("\n| arm | requests | failed | meeting TTFT and ITL | GPU-seconds |")
    print("|---|---|---|---|---|")
    for r in rows:
        share = f"{100 * r['meeting_targets']:.1f} %"
        print(f"| {r['arm']} | {r['requests']} | {r['failed']} | {share} | {r['gpu_seconds']} |")
    for r in rows:
        for d in r["decisions"]:
            print(
                f"{r['arm']}: decision {d['decision']} -> {d['target']} {d['status']} {d['took_s']} s"
            )


if __name__ == "__main__":
    main()
