"""The driver's side of staging (orchestrator.plan.stage): one srun step over the worker nodes runs
orchestrator.runtime.stage on each, in parallel; with `sbcast`, node 0 packs one tar of the model
first and Slurm broadcasts it to the nodes that need a copy. Progress goes to state.json's
`stage` entry (ctl status, watch) while the step runs; the result is the local path the workers
are given instead of model.path.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from orchestrator.core.effects import CommandRunner
from orchestrator.core.errors import OrchestratorError
from orchestrator.plan.model import Plan
from orchestrator.plan.stage import StageSpec, staged_path
from orchestrator.runtime.node_report import parse_report, srun_prefix
from orchestrator.runtime.stage import NODE_NAME

POLL_S = 1.0
WORKER_ROLES = ("prefill", "decode", "worker")
Record = Callable[[dict[str, Any]], None]


class StageFailed(OrchestratorError):
    """A node could not stage the model; nothing was started."""


def _reports(stdout: str) -> dict[str, dict[str, Any]]:
    out = {}
    for line in stdout.splitlines():
        item = parse_report(line)
        if item is not None:
            out[str(item["host"])] = item
    return out


class Stager:
    """One staging of `spec` for a run: the commands, their progress, the reports."""

    def __init__(
        self,
        spec: StageSpec,
        *,
        source: str,
        dest: str,
        job_id: str,
        run_dir: Path,
        runner: CommandRunner,
        record: Record,
    ) -> None:
        self.spec, self.source, self.dest, self.job_id = spec, source, dest, job_id
        self.runner, self.record = runner, record
        self.progress_dir = run_dir / "stage"
        self.progress_dir.mkdir(exist_ok=True)
        self.entry: dict[str, Any] = {
            "method": spec.method,
            "source": source,
            "dest": dest,
            "status": "running",
            "started_at": time.time(),
            "nodes": {},
        }

    def argv(self, *extra: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "orchestrator.runtime.stage",
            "--source",
            self.source,
            "--dest",
            self.dest,
            "--progress-dir",
            str(self.progress_dir),
            *extra,
        ]

    def run(self, hosts: Sequence[str], *extra: str, timeout_s: float) -> dict[str, dict[str, Any]]:
        """The stage command on `hosts` at once; their reports (raises naming failing nodes)."""
        result: list[Any] = []
        argv = [*srun_prefix(self.job_id, hosts, "stage"), *self.argv(*extra)]
        thread = threading.Thread(
            target=lambda: result.append(self.runner.run(argv, timeout=timeout_s))
        )
        thread.start()
        while thread.is_alive():
            thread.join(POLL_S)
            self._progress()
        res = result[0]
        reports = _reports(res.stdout)
        failed = [f"{h}: {r['error']}" for h, r in reports.items() if r.get("error")]
        failed += [
            f"{h}: no report (exit {res.returncode}: {res.stderr.strip()[-300:]})"
            for h in hosts
            if h not in reports and self.job_id
        ]
        if failed:
            self.entry.update(status="failed", error="; ".join(failed))
            self.record(self.entry)
            raise StageFailed(
                "staging the model to node-local disk failed before any worker "
                "started:\n  " + "\n  ".join(failed)
            )
        return reports

    def _progress(self) -> None:
        """state.json's per-node progress from the nodes' progress files."""
        for path in self.progress_dir.glob("*.json"):
            try:
                p = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            self.entry["nodes"][p["host"]] = f"{p['done'] / 1e9:.2f}/{p['total'] / 1e9:.2f} GB"
        self.record(self.entry)

    def done(self, reports: Mapping[str, Mapping[str, Any]]) -> None:
        for host, r in reports.items():
            self.entry["nodes"][host] = r["status"] + (
                f" {r['seconds']:.1f} s" if r["seconds"] else ""
            )
        self.entry.update(status="done", seconds=round(time.time() - self.entry["started_at"], 3))
        self.record(self.entry)


def pack(source: str, tar: Path) -> Path:
    """One uncompressed tar of the model directory (weights do not compress; symlinks of a Hub
    snapshot followed)."""
    tar.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tar, "w", dereference=True) as archive:
        for path in sorted(Path(source).rglob("*")):
            if path.is_file():
                archive.add(path, arcname=str(path.relative_to(source)))
    return tar


def _sbcast(stager: Stager, hosts: Sequence[str], *, timeout_s: float) -> dict[str, dict[str, Any]]:
    """Check every node; pack once on node 0, broadcast to the nodes that need it, unpack there,
    then remove the tars."""
    # sbcast writes one path on every node (no %N): the tar goes next to the copies.
    tar = stager.dest.replace(NODE_NAME, "") + ".tar"
    checks = stager.run(hosts, "--check", "--tar", tar, timeout_s=timeout_s)
    needed = [h for h in hosts if checks[h]["status"] == "needed"]
    if not needed:
        return checks
    packed = pack(stager.source, Path(stager.dest.replace(NODE_NAME, hosts[0]) + ".src.tar"))
    try:
        started = time.time()
        argv = ["sbcast", f"--jobid={stager.job_id}", "--force", str(packed), tar]
        res = stager.runner.run(argv, timeout=timeout_s)
        if res.returncode:
            raise StageFailed(
                f"sbcast of {packed} failed (exit {res.returncode}): {res.stderr.strip()[-300:]}"
            )
        stager.entry["sbcast_s"] = round(time.time() - started, 3)
        return {**checks, **stager.run(needed, "--tar", tar, timeout_s=timeout_s)}
    finally:
        packed.unlink(missing_ok=True)
        stager.runner.run(
            [*srun_prefix(stager.job_id, needed, "stage"), "rm", "-f", tar], timeout=120
        )


def _copy(stager: Stager, hosts: Sequence[str], *, timeout_s: float) -> dict[str, dict[str, Any]]:
    """Check every node first (a node short of space refuses before any node writes), then copy
    on the nodes that need it, each reading the shared filesystem."""
    if not stager.job_id:  # launcher=local: one node, whose copy checks its space itself
        return stager.run(hosts, timeout_s=timeout_s)
    checks = stager.run(hosts, "--check", timeout_s=timeout_s)
    needed = [h for h in hosts if checks[h]["status"] == "needed"]
    return {**checks, **(stager.run(needed, timeout_s=timeout_s) if needed else {})}


def before_workers(
    spec: StageSpec,
    *,
    source: str,
    hosts: Sequence[str],
    job_id: str,
    run_dir: Path,
    env: Mapping[str, str],
    timeout_s: float,
    runner: CommandRunner,
    record: Record,
    say: Callable[[str], None],
) -> str:
    """Stage on every worker node; the local path the workers load from."""
    local_dir = spec.local_dir or env.get("TMPDIR") or "/tmp"
    dest = staged_path(local_dir, spec.name)
    nodes = [hosts[i] for i in spec.nodes] if job_id else list(hosts[:1])
    say(f"stage: {source} -> {dest} on {len(nodes)} node(s) ({spec.method})")
    stager = Stager(
        spec, source=source, dest=dest, job_id=job_id, run_dir=run_dir, runner=runner, record=record
    )
    if spec.method == "sbcast" and job_id:
        reports = _sbcast(stager, nodes, timeout_s=timeout_s)
    else:
        reports = _copy(stager, nodes, timeout_s=timeout_s)
    stager.done(reports)
    states = ", ".join(f"{host} {r['status']}" for host, r in reports.items())
    say(f"stage: {states} in {stager.entry['seconds']:.1f} s")
    return dest


def use_staged(plan: Plan, dest: str, hosts: Sequence[str]) -> Plan:
    """The bound plan with the workers loading the staged copy: `--model-path` of every worker
    process becomes `dest` (the served model name stays: it is passed on its own)."""
    procs = []
    for proc in plan.processes:
        argv = list(proc.argv)
        if proc.role in WORKER_ROLES and "--model-path" in argv:
            argv[argv.index("--model-path") + 1] = dest.replace(NODE_NAME, hosts[proc.node_index])
        procs.append(dataclasses.replace(proc, argv=tuple(argv)))
    return dataclasses.replace(plan, processes=tuple(procs))
