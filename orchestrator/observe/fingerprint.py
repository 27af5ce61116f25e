"""fingerprint.json: what a run ran on, so runs weeks apart can be compared (`ctl diff`).

Written by the driver once the plan is bound: the orchestrator's version and git SHA (recorded
at submission in launch.json), a hash of the resolved config, the Slurm version and the node
list; per node, probed on the node itself in parallel and bounded to `PROBE_TIMEOUT_S`: GPU
model and driver (nvidia-smi when present), the engine packages as the processes' own
interpreter sees them (the probe runs through the same backend as the workers: the same srun
step options, so inside the container when there is one), and the container image.
"""

from __future__ import annotations

import hashlib
import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orchestrator
from orchestrator.core.effects import SubprocessRunner
from orchestrator.plan.model import TIER_INFRA, Plan, Process
from orchestrator.rundir import LaunchRecord, RunDir, write_json_atomic
from orchestrator.runtime.processes import Backend, LocalBackend, Running
from orchestrator.runtime.state import now_iso

PROBE_TIMEOUT_S = 15.0
MARK = "ORCHESTRATOR-FINGERPRINT "
# Distribution names (not engine kinds): one string, so no kind-like constant appears here.
PACKAGES = tuple(
    "ai-dynamo ai-dynamo-runtime sglang sglang-router torch flashinfer-python nixl transformers "
    "aiperf".split()
)

# Runs on each node under the engine's interpreter; standard library only, never fails.
PROBE = f"""
import json, platform, socket, subprocess, sys
from importlib import metadata
versions = {{}}
for name in {PACKAGES!r}:
    try:
        versions[name] = metadata.version(name)
    except Exception:
        pass
gpus = []
try:
    out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                         capture_output=True, text=True, timeout=5).stdout
    gpus = [dict(zip(("model", "driver"), [x.strip() for x in l.split(",")])) for l in out.splitlines() if l.strip()]
except Exception:
    pass
print({MARK!r} + json.dumps({{"host": socket.gethostname(), "python": sys.executable,
      "python_version": platform.python_version(), "packages": versions, "gpus": gpus}}), flush=True)
"""


def config_hash(run_dir: Path) -> str:
    """sha256 of the resolved config (config.json, keys sorted), first 16 hex digits."""
    data = RunDir(run_dir).config_or_none()
    if data is None:
        return ""
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _interpreter(plan: Plan, node: int) -> str:
    """The interpreter the node's processes run (argv[0] of its first Python process)."""
    for proc in plan.processes:
        if proc.node_index == node and proc.argv and "python" in Path(proc.argv[0]).name:
            return proc.argv[0]
    return "python3"


def probe_process(plan: Plan, node: int) -> Process:
    """The probe of node `node`, shaped like any other process of the plan."""
    return Process(
        name=f"fingerprint-{node}",
        role="infra",
        group="infra",
        worker_index=0,
        rank=0,
        node_index=node,
        gpus=(),
        ports={},
        env={},
        argv=(_interpreter(plan, node), "-c", PROBE),
        tier=TIER_INFRA,
    )


def parse_probe(output: str) -> dict[str, Any] | None:
    """The probe's JSON line from its output (None when it printed none)."""
    for line in reversed(output.splitlines()):
        if MARK in line:
            try:
                data = json.loads(line.split(MARK, 1)[1])
            except ValueError:
                return None
            return data if isinstance(data, dict) else None
    return None


def probe_nodes(plan: Plan, backend: Backend, out_dir: Path) -> list[dict[str, Any]]:
    """Every node's probe, started together; what has not answered by the deadline is killed
    and reported as `{"error": ...}`."""
    started: list[Running] = []
    for node in range(plan.num_nodes):
        started.append(backend.start(probe_process(plan, node), out_dir / f"node{node}.log"))
    deadline = time.monotonic() + PROBE_TIMEOUT_S
    while time.monotonic() < deadline and any(r.poll() is None for r in started):
        threading.Event().wait(0.1)
    late = [r for r in started if r.poll() is None]
    if late:
        backend.signal(late, signal.SIGKILL)
    nodes = []
    for node, r in enumerate(started):
        found = parse_probe(r.log.read_text(errors="replace")) if r.log.exists() else None
        nodes.append({"node": node, "host": r.host, **(found or {"error": _why(r, late)})})
    return nodes


def _why(running: Running, late: list[Running]) -> str:
    if running in late:
        return f"no answer within {PROBE_TIMEOUT_S:g} s (see {running.log})"
    return f"probe exited with code {running.exit_code} (see {running.log})"


def slurm_version(backend: Backend) -> str:
    """`srun --version` ('' for local runs or when Slurm does not answer)."""
    if isinstance(backend, LocalBackend):
        return ""
    done = SubprocessRunner().run(["srun", "--version"], timeout=5)
    return done.stdout.strip() if done.returncode == 0 else ""


def fingerprint(run_dir: Path, plan: Plan, backend: Backend) -> dict[str, Any]:
    """The whole fingerprint of a bound plan's run (probes the nodes)."""
    launch = RunDir(run_dir).launch_or_none() or LaunchRecord(launcher="")
    state = RunDir(run_dir).state()
    return {
        "written_at": now_iso(),
        "orchestrator": {
            "version": orchestrator.__version__,
            "git_sha": launch.git_sha,
            "python": sys.version.split()[0],
        },
        "config_hash": config_hash(run_dir),
        "overrides": list(launch.overrides),
        "launcher": launch.launcher,
        "slurm_version": slurm_version(backend),
        "job_id": state.job_id,
        "node_list": state.data.get("nodes", []),
        "container_image": plan.slurm.container_image,
        "nodes": probe_nodes(plan, backend, run_dir / "fingerprint"),
    }


def write_fingerprint(run_dir: Path, plan: Plan, backend: Backend) -> None:
    """fingerprint.json of the run (a failure to probe is recorded, never raised)."""
    try:
        data = fingerprint(run_dir, plan, backend)
    except Exception as exc:  # a fingerprint must never fail the deployment
        data = {"written_at": now_iso(), "error": f"{type(exc).__name__}: {exc}"}
    write_json_atomic(RunDir(run_dir).fingerprint_file, data)


def start_fingerprint(run_dir: Path, plan: Plan, backend: Backend) -> threading.Thread:
    """`write_fingerprint` in a daemon thread, so that readiness does not wait for it."""
    thread = threading.Thread(
        target=write_fingerprint, args=(run_dir, plan, backend), daemon=True, name="fingerprint"
    )
    thread.start()
    return thread
