"""The deployment side of Dynamo's planner (`environment: virtual`), as a small child process
of the run's driver: `python -I planner_link.py NAMESPACE`, run with an interpreter that has
ai-dynamo (the planner's own), never imported by the driver.

Why a child process: `dynamo._core.VirtualConnectorClient` is Rust-backed and async (it needs
a DistributedRuntime on an asyncio loop, connected to the run's etcd); the driver is plain,
synchronous Python that may run without Dynamo installed. This file imports only the standard
library at module level, so it runs as a script from any checkout or installed package.

Protocol, one JSON object per line:
- stdout: each unacknowledged decision once, `{"id": N, "prefill": P, "decode": D}` (-1: the
  planner did not set that count);
- stdin: `{"complete": N}` acknowledges decision N (`VirtualConnectorClient.complete`); the
  next decision is read only after that (Dynamo 1.6.1's planner publishes none before it);
- stderr: what went wrong (the driver keeps it in logs/planner-link.log).
The environment is the driver's: ETCD_ENDPOINTS and ETCD_AUTH_* (the run's secrets),
DYN_DISCOVERY_BACKEND and DYN_REQUEST_PLANE (read by the runtime as by every Dynamo process).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any


def decision_line(decision: Any) -> str:
    """A PlannerDecision as the protocol's stdout line."""
    return json.dumps(
        {
            "id": int(decision.decision_id),
            "prefill": int(decision.num_prefill_workers),
            "decode": int(decision.num_decode_workers),
        }
    )


async def serve(namespace: str) -> None:
    """Hand each unacknowledged decision to the driver, acknowledge it when told (until stdin
    closes: the driver is gone)."""
    from dynamo._core import VirtualConnectorClient
    from dynamo.runtime import DistributedRuntime

    loop = asyncio.get_running_loop()
    runtime = DistributedRuntime(
        loop,
        os.environ.get("DYN_DISCOVERY_BACKEND", "etcd"),
        os.environ.get("DYN_REQUEST_PLANE", "tcp"),
    )
    client = VirtualConnectorClient(runtime, namespace)
    while True:
        # wait() returns at once for a decision published before we started (ids persist in
        # etcd): a restarted driver gets the last unacknowledged decision again.
        await client.wait()
        decision = await client.get()
        print(decision_line(decision), flush=True)
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                runtime.shutdown()
                return
            # decision_id is set by ai-dynamo 1.6.1 but missing from its _core.pyi.
            if json.loads(line).get("complete") == decision.decision_id:  # type: ignore[attr-defined]
                await client.complete(decision)
                break


def main() -> int:
    """`python -I planner_link.py NAMESPACE`."""
    if len(sys.argv) != 2:
        sys.stderr.write("usage: planner_link.py NAMESPACE\n")
        return 2
    asyncio.run(serve(sys.argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
