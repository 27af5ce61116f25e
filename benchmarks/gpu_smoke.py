#!/usr/bin/env python3
"""Real SGLang on a GPU through the orchestrator (not a test: prints numbers).

For a P/D deployment (1 prefill + 1 decode, sglang-router) and an aggregated one, both on GPU 0
(P/D: `deployment.workers_per_gpu=2`) with the tiny random-weight Llama (orchestrator.tiny.model):
- launch -> engine ready: from the driver's `starting` phase to each worker's own "The server is
  fired up and ready to roll!" line, seen by polling its log every 10 ms (independent of us);
- engine ready -> healthy: to the driver's `healthy_at` for that worker;
- last engine ready -> orchestrator ready: the orchestrator's overhead, canary included
  (goal <= 0.5 s plus one canary); the canary alone: `workers_healthy_at` -> `ready`;
- first-token latency (p50, p90) and output tokens/s at a few concurrencies (streamed chats);
- stop -> GPU memory back to its idle level (nvidia-smi every 0.1 s).

Usage (on the GPU machine, the wheelhouse installed): python benchmarks/gpu_smoke.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from orchestrator.tiny.model import TinyModelSpec, ensure_tiny_model  # noqa: E402  (sys.path)
from tests.gpu import deploy  # noqa: E402

READY_LINE = "ready to roll"
LAYOUTS = {
    "P/D": [
        "cluster.gpus_per_node=1",
        "prefill.tp=1",
        "decode.tp=1",
        "deployment.workers_per_gpu=2",
    ],
    "aggregated": ["cluster.gpus_per_node=1", "deployment=aggregated", "aggregated.tp=1"],
}


def watch_logs(run_dir: Path, stop: threading.Event, seen: dict[str, float]) -> None:
    """Record when each worker log first holds SGLang's own ready line."""
    while not stop.is_set():
        for log in (run_dir / "logs").glob("*.log") if (run_dir / "logs").exists() else ():
            name = log.stem
            if name not in seen and READY_LINE in log.read_text(errors="replace"):
                seen[name] = time.time()
        time.sleep(0.01)


def streamed(url: str, max_tokens: int) -> tuple[float, float, int]:
    """One streamed chat: (time to first token, total time, output tokens)."""
    body = {
        "model": deploy.MODEL,
        "messages": [{"role": "user", "content": "Tell me a story"}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
        "ignore_eos": True,
    }
    t0, first, tokens = time.time(), 0.0, 0
    with requests.post(f"{url}/v1/chat/completions", json=body, stream=True, timeout=120) as resp:
        for line in resp.iter_lines(decode_unicode=True):
            if not line or not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if not first and (chunk.get("choices") or [{}])[0].get("delta", {}).get("content"):
                first = time.time() - t0
            tokens = (chunk.get("usage") or {}).get("completion_tokens", tokens)
    return first, time.time() - t0, tokens


def sweep(url: str, concurrency: int, requests_each: int, max_tokens: int) -> dict[str, float]:
    """`concurrency` clients, `requests_each` streamed chats each."""
    results: list[tuple[float, float, int]] = []

    def client() -> None:
        for _ in range(requests_each):
            results.append(streamed(url, max_tokens))

    t0 = time.time()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.time() - t0
    ttft = sorted(r[0] for r in results)
    return {
        "ttft_p50_ms": 1000 * statistics.median(ttft),
        "ttft_p90_ms": 1000 * ttft[int(0.9 * (len(ttft) - 1))],
        "tokens_per_s": sum(r[2] for r in results) / wall,
    }


def startup(dep: deploy.Deployment, seen: dict[str, float]) -> dict[str, Any]:
    """Per-worker launch -> engine ready -> healthy, and the orchestrator's overhead."""
    st = dep.wait_ready()
    phases = {t["phase"]: t["t"] for t in st["timeline"]}
    workers = {n: p for n, p in st["processes"].items() if p["role"] != "frontend"}
    out: dict[str, Any] = {}
    for name, entry in sorted(workers.items()):
        out[f"{name}: launch -> engine ready (s)"] = seen[name] - phases["starting"]
        out[f"{name}: engine ready -> healthy (s)"] = entry["healthy_at"] - seen[name]
    out["last engine ready -> orchestrator ready (s)"] = phases["ready"] - max(seen.values())
    out["  of which the canary (s)"] = phases["ready"] - st["workers_healthy_at"]
    return out


def measure(name: str, overrides: list[str], tmp: Path, args: argparse.Namespace) -> dict:
    """One layout: start, load at each concurrency, stop; its numbers."""
    idle = deploy.gpu_memory_used_mib()[0]
    stop, seen = threading.Event(), {}
    with deploy.deployment(name.replace("/", ""), overrides, tmp) as dep:
        watcher = threading.Thread(target=watch_logs, args=(dep.run_dir, stop, seen), daemon=True)
        watcher.start()
        row = startup(dep, seen)
        stop.set()
        for c in args.concurrency:
            for key, value in sweep(dep.url, c, args.requests, args.max_tokens).items():
                row[f"c={c} {key}"] = value
        t0 = time.time()
        dep.stop()
        deploy_wait_idle(idle)
        row["stop -> GPU memory idle (s)"] = time.time() - t0
    return row


def deploy_wait_idle(idle: int) -> None:
    """Poll nvidia-smi until GPU 0 is back to `idle` (+64 MiB)."""
    deadline = time.time() + 120
    while deploy.gpu_memory_used_mib()[0] > idle + 64:
        if time.time() > deadline:
            raise SystemExit("GPU memory not released within 120 s")
        time.sleep(0.1)


def main() -> int:
    """Measure both layouts and print one table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concurrency", type=int, nargs="*", default=[1, 4, 16])
    ap.add_argument("--requests", type=int, default=8, help="requests per client per level")
    ap.add_argument("--max-tokens", type=int, default=64)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="gpu-smoke-"))
    model = ensure_tiny_model(tmp / "tiny-llama", TinyModelSpec())
    common = [
        *deploy.base_overrides(model),
        "engine=sglang",
        "frontend=sglang_router",
        *deploy.SGLANG_ARGS,
    ]
    rows = {name: measure(name, [*common, *extra], tmp, args) for name, extra in LAYOUTS.items()}
    keys = list(dict.fromkeys(k for r in rows.values() for k in r))
    print(f"{'metric':<48}" + "".join(f"{n:>12}" for n in rows))
    for key in keys:
        cells = "".join(f"{rows[n][key]:12.2f}" if key in rows[n] else f"{'-':>12}" for n in rows)
        print(f"{key:<48}{cells}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
