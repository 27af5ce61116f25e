#!/usr/bin/env python3
"""Measure `ctl scale` up and down on the Slurm testbed (not a test: prints numbers).

For each frontend it launches a 1P1D run (engine=mocker with Dynamo and etcd discovery, or the
SGLang test double behind sglang-router), starts a steady request loop through the run's
frontend (client threads, each one chat at a time) and then, `--repeat` times:
- `ctl scale RUN_DIR decode.workers=2`: an attached job with one more decode worker, split into
    prepare  command start -> job submitted (ctl: config, plan, sbatch; state.json `submitted`)
    queue    submitted -> the attached job's driver started (its attempt's `t`: Slurm queueing,
             job launch, the interpreter's start; `slurm_queue_s`: sacct Submit -> Start, whole s)
    start    driver started -> the new worker's health URL first answered 200 (polled here
             every 10 ms from plan.bound.json, independently of the driver); `setup_s` of it:
             driver started -> `starting` (preflight srun step, binding the plan)
    ours     worker healthy -> attached job `ready`: the driver's detection, registration
             (router: POST /workers), the frontend gate and the canary(ies); goal <= 0.5 s
             (`ours_driver_s`: from the driver's own healthy_at, i.e. without its poll delay)
    return   `ready` -> ctl returns (its follower polls state.json every 0.5 s)
    e2e      command start -> command returns
  then keeps the loop going for at least 10 requests and until the new worker served one of
  them (`new_worker_served` of `serve_requests`: its /metrics, or the double's record file);
- `ctl scale RUN_DIR decode.workers=1`: `down_cmd_s` command start -> returns, `down_ended_s`
  command start -> the attached job ended (state.json done, no process left, Slurm job over);
  of it `down_prepare_s` command start -> the attached job's `stopping` (ctl: config, checks,
  scancel --batch) and `down_drain_s` `stopping` -> `done` (deregister, drain, stop the worker);
- the loop's requests (total, failed; goal 0 failed) during the scale-up and the scale-down.
Finally `ctl stop` (always) and a wait until no process of the run is left.

Usage: python benchmarks/scale.py [--repeat 3] [--frontend dynamo|router|both] [--clients 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.loadgen import Load, wait  # noqa: E402  (after the sys.path insert)
from orchestrator.core.effects import SubprocessRunner  # noqa: E402  (after the sys.path insert)
from orchestrator.slurm.client import SlurmClient  # noqa: E402
from tests.e2e import engine_processes, nothing_left, state  # noqa: E402

COMMON = [
    "+model=gpt_oss_120b",
    "cluster=testbed",
    "readiness.timeout_s=120",
    "cluster.time_limit_min=15",
    "launcher=submitit",
]
DOUBLE = REPO / "tests" / "doubles" / "sglang_test_double.py"
SETUPS = {
    "dynamo": ["engine=mocker", "frontend.discovery=etcd"],
    "router": ["engine=sglang", "frontend=sglang_router", f"engine.python={DOUBLE}"],
}
UP = (
    "prepare_s",
    "queue_s",
    "slurm_queue_s",
    "start_s",
    "setup_s",
    "ours_s",
    "ours_driver_s",
    "return_s",
    "e2e_s",
)
DOWN = ("down_prepare_s", "down_drain_s", "down_cmd_s", "down_ended_s")
COUNTS = (
    "up_requests",
    "up_failed",
    "down_requests",
    "down_failed",
    "serve_requests",
    "new_worker_served",
)
SERVE_REQUESTS = 10  # loop requests between the scale-up and the scale-down, at least
SESSION = requests.Session()
SESSION.trust_env = False  # testbed addresses: never through a proxy
SLURM = SlurmClient(SubprocessRunner())


def ctl(*args: str) -> subprocess.CompletedProcess[str]:
    """`python -m orchestrator.ctl ARGS` to completion."""
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.ctl", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
        timeout=300,
    )


def launch(frontend: str, run_dir: Path, record: Path) -> None:
    """Start the 1P1D run and wait until it serves (the CLI returns at `ready`)."""
    extra = [f"+engine.env.SGLANG_DOUBLE_RECORD={record}"] if frontend == "router" else []
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
        raise SystemExit(f"launch failed: {res.stderr[-2000:]}")


def watch_health(adir: Path, stop: threading.Event, healthy_at: dict[str, float]) -> None:
    """Record when each worker's health URL (from plan.bound.json) first answers 200."""
    urls: dict[str, str] = {}
    while not stop.is_set():
        if not urls and (adir / "plan.bound.json").exists():
            try:
                plan = json.loads((adir / "plan.bound.json").read_text())
            except ValueError:  # written atomically; only guards a foreign writer
                plan = {"processes": []}
            urls = {p["name"]: p["health"]["url"] for p in plan["processes"] if p["health"]}
        for name, url in urls.items():
            if name not in healthy_at and _ok(url):
                healthy_at[name] = time.time()
        time.sleep(0.01)


def _ok(url: str) -> bool:
    try:
        return SESSION.get(url, timeout=0.5).status_code == 200
    except requests.RequestException:
        return False


def scale_up(run_dir: Path) -> tuple[dict[str, float], str, Path]:
    """`ctl scale RUN_DIR decode.workers=2`, timed; (measures, attached job id, its directory)."""
    stop, healthy_at = threading.Event(), dict[str, float]()
    t0 = time.time()
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.ctl", "scale", str(run_dir), "decode.workers=2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    assert proc.stdout is not None
    job_id, adir = proc.stdout.readline().strip(), Path(proc.stdout.readline().strip())
    watcher = threading.Thread(target=watch_health, args=(adir, stop, healthy_at), daemon=True)
    watcher.start()
    out, err = proc.communicate(timeout=300)
    t_end = time.time()
    stop.set()
    watcher.join()
    if proc.returncode != 0 or not job_id:
        raise SystemExit(f"ctl scale up failed ({proc.returncode}): {out}{err[-2000:]}")
    return up_measures(state(adir), t0, t_end, healthy_at, job_id), job_id, adir


def up_measures(
    st: dict[str, Any], t0: float, t_end: float, healthy_at: dict[str, float], job_id: str
) -> dict[str, float]:
    """The scale-up's split, from the attached job's state.json and the watcher's times."""
    phases = {t["phase"]: t["t"] for t in st["timeline"]}
    driver_started = st["attempts"][-1]["t"]  # the driver's first act in the job
    driver_healthy = max(p["healthy_at"] for p in st["processes"].values())
    # The watcher sees every worker the driver saw unless it lost the race to read the plan.
    seen = len(healthy_at) == len(st["processes"])
    healthy = max(healthy_at.values()) if seen else driver_healthy
    return {
        "prepare_s": phases["submitted"] - t0,
        "queue_s": driver_started - phases["submitted"],
        "slurm_queue_s": slurm_queue(job_id),
        "start_s": healthy - driver_started,
        "setup_s": phases["starting"] - driver_started,
        "ours_s": phases["ready"] - healthy,
        "ours_driver_s": phases["ready"] - driver_healthy,
        "return_s": t_end - phases["ready"],
        "e2e_s": t_end - t0,
    }


def slurm_queue(job_id: str) -> float:
    """Slurm's own Submit -> Start of the job (sacct: whole seconds, the controller's clock)."""
    res = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-o", "Submit,Start", "-j", job_id],
        capture_output=True,
        text=True,
        check=False,
    )
    submit, _, start = res.stdout.strip().splitlines()[0].partition("|")
    fmt = "%Y-%m-%dT%H:%M:%S"
    return time.mktime(time.strptime(start, fmt)) - time.mktime(time.strptime(submit, fmt))


def served_by(frontend: str, adir: Path, record: Path) -> int:
    """Requests the attached job's decode worker served (Dynamo: its generate endpoint's
    `dynamo_component_requests_total`; router: the double's record lines of that name)."""
    plan = json.loads((adir / "plan.bound.json").read_text())
    workers = [p for p in plan["processes"] if p["health"]]
    if frontend == "router":
        lines = record.read_text().splitlines() if record.exists() else []
        names = {p["name"] for p in workers}
        # Names come back with a later attached job (decode-1 again): count this job's pids.
        pids = {p.pid for p in engine_processes(adir, "sglang.launch_server")}
        return sum(
            1 for line in lines if (r := json.loads(line))["name"] in names and r["pid"] in pids
        )
    total = 0
    for p in workers:
        text = SESSION.get(p["health"]["url"].replace("/health", "/metrics"), timeout=5).text
        total += sum(
            int(float(line.rsplit(" ", 1)[1]))
            for line in text.splitlines()
            if line.startswith("dynamo_component_requests_total{")
            and 'dynamo_endpoint="generate"' in line
        )
    return total


def scale_down(run_dir: Path, job_id: str, adir: Path) -> dict[str, float]:
    """`ctl scale RUN_DIR decode.workers=1`, timed until it returns and until the job ended."""
    t0 = time.time()
    res = ctl("scale", str(run_dir), "decode.workers=1")
    t_cmd = time.time()
    if res.returncode != 0 or f"attached job {job_id}" not in res.stdout:
        raise SystemExit(f"ctl scale down failed ({res.returncode}): {res.stdout}{res.stderr}")

    def ended() -> bool:
        return (
            state(adir).get("phase") == "done"
            and nothing_left(adir)
            and not SLURM.state(job_id).live
        )

    wait(ended, 60, f"attached job {job_id} ended", interval=0.05)
    t_ended = time.time()
    phases = {t["phase"]: t["t"] for t in state(adir)["timeline"]}
    return {
        "down_prepare_s": phases["stopping"] - t0,
        "down_drain_s": phases["done"] - phases["stopping"],
        "down_cmd_s": t_cmd - t0,
        "down_ended_s": t_ended - t0,
    }


def one_cycle(frontend: str, run_dir: Path, record: Path, load: Load) -> dict[str, Any]:
    """Scale up by one decode worker, let it serve, scale back down; the numbers of it."""
    t_up = time.time()
    up, job_id, adir = scale_up(run_dir)
    t_served = time.time()
    before = served_by(frontend, adir, record)  # the attached job's own canaries included

    def serving() -> bool:
        return (
            load.window(t_served, time.time())[0] >= SERVE_REQUESTS
            and served_by(frontend, adir, record) > before
        )

    wait(serving, 60, "requests of the loop on the new decode worker", interval=0.2)
    served = served_by(frontend, adir, record) - before
    t_down = time.time()
    serve_n = load.window(t_served, t_down)[0]
    down = scale_down(run_dir, job_id, adir)
    t_ended = t_down + down["down_ended_s"]
    up_n, up_failed = load.window(t_up, t_served)
    down_n, down_failed = load.window(t_down, t_ended)
    return {
        **up,
        **down,
        "up_requests": up_n,
        "up_failed": len(up_failed),
        "down_requests": down_n,
        "down_failed": len(down_failed),
        "serve_requests": serve_n,
        "new_worker_served": served,
        "failures": [*up_failed, *down_failed],
    }


def one_frontend(frontend: str, repeat: int, clients: int) -> list[dict[str, Any]]:
    """Launch the run, `repeat` scale cycles under load, always stop it and wait until no
    process of it (or of its attached jobs, in RUN_DIR/attached/) is left."""
    tmp = Path(tempfile.mkdtemp(prefix="orch-scale-"))
    run_dir, record = tmp / "run", tmp / "requests.jsonl"
    rows: list[dict[str, Any]] = []
    try:
        launch(frontend, run_dir, record)
        with Load(state(run_dir)["frontend_url"], clients) as load:
            wait(lambda: len(load.done) >= 5, 30, "5 requests before the first scale-up")
            for i in range(repeat):
                rows.append(one_cycle(frontend, run_dir, record, load))
                print(
                    f"{frontend} cycle {i + 1}: "
                    + ", ".join(
                        f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                        for k, v in rows[-1].items()
                    ),
                    flush=True,
                )
            t_end = time.time()
        total, failed = load.window(0.0, t_end + 60)
        print(f"{frontend}: loop requests {total}, failed {len(failed)} {failed[:5]}", flush=True)
    finally:
        print(f"{frontend}: ctl stop -> {ctl('stop', str(run_dir)).stdout.strip()}", flush=True)
        wait(lambda: nothing_left(run_dir), 120, f"no process of {run_dir} left", interval=0.2)
    return rows


def table(name: str, rows: list[dict[str, Any]]) -> None:
    """min / median / max of every measure."""
    print(f"\n{name}: {len(rows)} scale cycles")
    print(f"{'measure':<20}{'min':>9}{'median':>9}{'max':>9}")
    for key in (*UP, *DOWN, *COUNTS):
        v = [float(r[key]) for r in rows]
        fmt = "9.0f" if key in COUNTS else "9.3f"
        print(f"{key:<20}{min(v):{fmt}}{statistics.median(v):{fmt}}{max(v):{fmt}}")


def summary(results: dict[str, list[dict[str, Any]]]) -> None:
    """Medians side by side; failed requests summed."""
    names = list(results)
    print("\nsummary (median; failed and requests: sums over all cycles)")
    print(f"{'measure':<20}" + "".join(f"{n:>10}" for n in names))
    for key in (*UP, *DOWN):
        print(
            f"{key:<20}"
            + "".join(f"{statistics.median(r[key] for r in results[n]):10.3f}" for n in names)
        )
    for key in ("up_requests", "up_failed", "down_requests", "down_failed"):
        print(f"{key:<20}" + "".join(f"{sum(r[key] for r in results[n]):10d}" for n in names))
    ours = {n: max(r["ours_s"] for r in results[n]) for n in names}
    print(
        "ours_s <= 0.5 s (worst cycle): "
        + ", ".join(f"{n} {'yes' if v <= 0.5 else 'NO'} ({v:.3f})" for n, v in ours.items())
    )


def main() -> None:
    """Run the frontends asked for, then print the tables."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="scale-up/down cycles per frontend")
    ap.add_argument("--frontend", choices=[*sorted(SETUPS), "both"], default="both")
    ap.add_argument("--clients", type=int, default=2, help="request-loop threads")
    args = ap.parse_args()
    names = sorted(SETUPS) if args.frontend == "both" else [args.frontend]
    results = {n: one_frontend(n, args.repeat, args.clients) for n in names}
    for name, rows in results.items():
        table(name, rows)
        for why in sorted({w for r in rows for w in r["failures"]}):
            print(f"  failed: {why}")
    summary(results)


if __name__ == "__main__":
    main()
