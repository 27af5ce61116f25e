"""The link between the run's driver and Dynamo's planner (orchestrator.elastic.decisions,
planner_link.py) against the real thing: etcd and ai-dynamo 1.6.1's VirtualConnectorCoordinator
(what the planner publishes through with `environment: virtual`), no planner needed. A decision
published before the link starts is handed over at once (a restarted driver resumes it), the
coordinator sees it acknowledged only after complete(), and the next decision follows."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from orchestrator.elastic.decisions import LINK_SCRIPT, Decision, PlannerLink
from tests.e2e import free_port, wait_for

pytestmark = [
    pytest.mark.engines,
    pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd is not installed"),
]

# The planner's side, as dynamo/planner/connectors/virtual.py drives it: one command a line.
COORDINATOR = """
import asyncio, sys
from dynamo._core import VirtualConnectorCoordinator
from dynamo.runtime import DistributedRuntime

async def main():
    runtime = DistributedRuntime(asyncio.get_running_loop(), "etcd", "tcp")
    coord = VirtualConnectorCoordinator(runtime, "dynamo", 1, 60, 60)
    await coord.async_init()
    for line in sys.stdin:
        op, *args = line.split()
        if op == "decide":
            await coord.update_scaling_decision(int(args[0]), int(args[1]))
            print(coord.read_state().decision_id, flush=True)
        else:
            print(await coord.is_scaling_ready(), flush=True)

asyncio.run(main())
"""


class Coordinator:
    """The planner's publishing side in a child process (ai-dynamo's Python)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", COORDINATOR],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            text=True,
        )

    def ask(self, line: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def etcd_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A real etcd on free loopback ports; the environment a Dynamo process gets for it."""
    client, peer = free_port(), free_port()
    url = f"http://127.0.0.1:{client}"
    etcd = subprocess.Popen(
        [
            "etcd",
            f"--data-dir={tmp_path / 'etcd'}",
            f"--listen-client-urls={url}",
            f"--advertise-client-urls={url}",
            f"--listen-peer-urls=http://127.0.0.1:{peer}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        env = {**os.environ, "ETCD_ENDPOINTS": url, "DYN_DISCOVERY_BACKEND": "etcd"}
        wait_for(lambda: healthy(f"{url}/health"), timeout=20, what="etcd")
        yield env
    finally:
        etcd.kill()
        etcd.wait()


def healthy(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).json().get("health") == "true"
    except (requests.RequestException, ValueError):
        return False


def next_decision(link: PlannerLink) -> Decision:
    return wait_for(link.poll, timeout=30, what="a decision through the link")


def test_decisions_reach_the_driver_and_are_acknowledged_through_the_link(
    etcd_env: dict[str, str], tmp_path: Path
) -> None:
    coord = Coordinator(etcd_env)
    argv = [sys.executable, "-I", str(LINK_SCRIPT), "dynamo"]
    link = PlannerLink(argv, etcd_env, tmp_path / "planner-link.log")
    try:
        first = int(coord.ask("decide 1 3"))  # published before the link (the driver) starts
        assert next_decision(link) == Decision(first, 1, 3)
        assert coord.ask("ready") == "False"  # not acknowledged yet
        link.close()  # the driver restarts: the unacknowledged decision comes again
        link = PlannerLink(argv, etcd_env, tmp_path / "planner-link.log")
        got = next_decision(link)
        assert got == Decision(first, 1, 3)
        link.complete(got)
        wait_for(lambda: coord.ask("ready") == "True", timeout=20, what="the acknowledgement")
        second = int(coord.ask("decide 1 2"))
        assert next_decision(link) == Decision(second, 1, 2) and second == first + 1
    finally:
        link.close()
        coord.close()
