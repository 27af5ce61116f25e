"""Preflight: before any worker starts, every node checks the paths the plan needs there (model
directory with config.json and weights, container image, tiktoken file), all nodes at once in
one srun step (seconds), like the address probe (orchestrator.runtime.nodes). Any failure stops
the run before anything was started, each named by node and path.

`python -m orchestrator.runtime.preflight --hosts h0,h1 --checks JSON` is what runs on a node:
it finds its own index by hostname and prints one JSON line {"host", "failures": [...]}.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from orchestrator.core.effects import CommandRunner
from orchestrator.core.errors import OrchestratorError
from orchestrator.plan.preflight import WEIGHT_PATTERNS, PathCheck
from orchestrator.runtime.node_report import srun_prefix

FIXES = {
    "model_dir": "copy the model to that path on every node, or point model.path at it",
    "container_image": "put the image file there (shared filesystem) or fix cluster.container_image",
    "tiktoken": "put o200k_base.tiktoken (openaipublic.blob.core.windows.net/encodings) there, "
    "or fix cluster.tiktoken_dir",
}


def check_path(check: PathCheck) -> str:
    """'' when `check` holds on this machine, else what is wrong with its path."""
    path = Path(check.path)
    if check.kind != "model_dir":
        return "" if path.is_file() else f"{check.path} ({check.key}) is not a file"
    if not path.is_dir():
        return f"model directory {check.path} ({check.key}) does not exist"
    if not (path / "config.json").is_file():
        return f"model directory {check.path} ({check.key}) has no config.json"
    if not any(next(path.glob(p), None) for p in WEIGHT_PATTERNS):
        return (
            f"model directory {check.path} ({check.key}) has no weights "
            f"({', '.join(WEIGHT_PATTERNS)})"
        )
    return ""


def node_failures(checks: Sequence[PathCheck], node: int) -> list[str]:
    """What fails on node `node` (each with its fix)."""
    found = [(c, check_path(c)) for c in checks if node in c.nodes]
    return [f"{problem} ({FIXES[c.kind]})" for c, problem in found if problem]


def parse_report(stdout: str) -> dict[str, list[str]]:
    """Node JSON lines -> {host: failures}; srun chatter is ignored."""
    out: dict[str, list[str]] = {}
    for line in stdout.splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict) and isinstance(item.get("host"), str):
            out[item["host"]] = [str(f) for f in item.get("failures", [])]
    return out


def raise_failures(failures: dict[str, list[str]], hosts: Sequence[str]) -> None:
    """One OrchestratorError naming every failing node (index and host) and path."""
    lines = [f"node {i} ({h}): {f}" for i, h in enumerate(hosts) for f in failures.get(h, [])]
    if lines:
        raise OrchestratorError(
            "preflight failed before any worker started:\n  " + "\n  ".join(lines)
        )


def run_local(checks: Sequence[PathCheck], host: str = "localhost") -> None:
    """The checks of node 0 on this machine (launcher=local)."""
    raise_failures({host: node_failures(checks, 0)}, [host])


def run_on_nodes(
    runner: CommandRunner,
    checks: Sequence[PathCheck],
    *,
    job_id: str,
    hosts: Sequence[str],
    python: str,
) -> None:
    """All nodes' checks in one srun step; raises naming node and path on any failure."""
    if not checks:
        return
    payload = json.dumps([asdict(c) for c in checks])
    argv = [
        *srun_prefix(job_id, hosts, "preflight"),
        python,
        "-m",
        "orchestrator.runtime.preflight",
        "--hosts",
        ",".join(hosts),
        "--checks",
        payload,
    ]
    res = runner.run(argv, timeout=120)
    found = parse_report(res.stdout)
    missing = [h for h in hosts if h not in found]
    if missing:
        raise OrchestratorError(
            f"preflight did not run on {', '.join(missing)} (exit "
            f"{res.returncode}): {res.stderr.strip()[-500:]}"
        )
    raise_failures(found, hosts)


def main(argv: Sequence[str] | None = None) -> int:
    """Check this node's paths and print {"host", "failures"} as one JSON line."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--hosts", required=True, help="the allocation's hosts in node order")
    parser.add_argument("--checks", required=True, help="JSON list of PathCheck")
    args = parser.parse_args(argv)
    host = socket.gethostname()
    hosts = args.hosts.split(",")
    checks = [PathCheck(**{**c, "nodes": tuple(c["nodes"])}) for c in json.loads(args.checks)]
    node = hosts.index(host) if host in hosts else -1
    failures = node_failures(checks, node) if node >= 0 else [f"{host} is not in {args.hosts}"]
    print(json.dumps({"host": host, "failures": failures}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
