"""The seed's shape on a multi-GPU node (issue 27): tensor-parallel prefill and decode workers on
their own GPUs, KV moved between GPUs by NIXL, through sglang-router (and Dynamo where it is
installed). Each layout is skipped, with the reason, on a machine with fewer GPUs than it needs.

For each layout: ready; greedy answers equal those of an aggregated deployment of the same TP;
kill -9 of one tensor-parallel rank of decode-0 restarts the whole worker in place; stop leaves
every GPU at its idle memory. NVLink multicast stays off on shared hosts (NCCL_NVLS_ENABLE=0 and
friends must reach every worker: checked in each worker's environment).
"""

from __future__ import annotations

import importlib.util
import os
import signal
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import e2e
from tests.gpu import deploy

# NVLink multicast can take a shared host's GPUs out of service (the GPU machines' notes): these
# must be in every worker's environment there.
NO_MULTICAST = {
    "NCCL_NVLS_ENABLE": "0",
    "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
    "NVSHMEM_DISABLE_NVLS": "1",
}


@dataclass(frozen=True)
class Layout:
    name: str
    gpus: int
    tp: int  # of every worker (and of the aggregated reference)
    overrides: tuple[str, ...]


LAYOUTS = (
    # The seed: decode TP4 on GPUs 0-3, prefill TP4 on GPUs 4-7 of one 8-GPU node.
    Layout("seed-tp4", 8, 4, ("cluster.gpus_per_node=8", "prefill.tp=4", "decode.tp=4")),
    Layout(
        "2p2d-tp1",
        4,
        1,
        (
            "cluster.gpus_per_node=4",
            "prefill.workers=2",
            "decode.workers=2",
            "prefill.tp=1",
            "decode.tp=1",
        ),
    ),
    Layout("1p1d-tp2", 4, 2, ("cluster.gpus_per_node=4", "prefill.tp=2", "decode.tp=2")),
)
STACKS = {
    "sglang_router": ("engine=sglang", "frontend=sglang_router"),
    "dynamo": ("engine=dynamo_sglang", "frontend=dynamo"),
}


def _skip_reason(layout: Layout, stack: str) -> str:
    have = deploy.gpu_count()
    if have < layout.gpus:
        return f"{layout.name} needs {layout.gpus} GPUs, this machine has {have}"
    if stack == "dynamo" and importlib.util.find_spec("dynamo") is None:
        return "Dynamo is not installed (its wheelhouse target)"
    return ""


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(c) for c in text.split()]


def _tp_rank(leader: int, rank: int) -> int:
    """The scheduler process of TP rank `rank` under a worker's server (SGLang names it
    `sglang::scheduler_TP<rank>` through setproctitle)."""
    todo, found = [leader], []
    while todo:
        pid = todo.pop()
        todo += _children(pid)
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        if f"scheduler_TP{rank}" in cmd:
            found.append(pid)
    assert found, f"no scheduler_TP{rank} under {leader}"
    return found[0]


@pytest.mark.parametrize("stack", sorted(STACKS))
@pytest.mark.parametrize("layout", LAYOUTS, ids=[lay.name for lay in LAYOUTS])
def test_layout_serves_restarts_and_stops(
    layout: Layout, stack: str, tiny_llama: Path, tmp_path: Path
) -> None:
    if reason := _skip_reason(layout, stack):
        pytest.skip(reason)
    idle = deploy.gpu_memory_used_mib()
    base = [*deploy.base_overrides(tiny_llama), *STACKS[stack], *deploy.SGLANG_ARGS]
    aggregated = [
        f"cluster.gpus_per_node={layout.tp}",
        "deployment=aggregated",
        f"aggregated.tp={layout.tp}",
    ]
    with deploy.deployment("agg", [*base, *aggregated], tmp_path) as agg:
        agg.wait_ready()
        want = deploy.answers(agg.url)
    with deploy.deployment(
        "pd", [*base, "model.tp=" + str(layout.tp), *layout.overrides], tmp_path
    ) as pd:
        pd.wait_ready()
        assert deploy.answers(pd.url) == want
        for proc in e2e.engine_processes(pd.run_dir, "-m"):
            assert NO_MULTICAST.items() <= proc.env.items() or not _on_shared_host(), proc.argv
        before = len(pd.state()["processes"]["decode-0"].get("restarts", []))
        leader = pd.leader_pid("decode-0")
        os.kill(_tp_rank(leader, layout.tp - 1), signal.SIGKILL)

        def restarted() -> bool:
            entry = pd.state()["processes"]["decode-0"]
            return len(entry.get("restarts", [])) > before and entry.get("state") == "healthy"

        e2e.wait_for(restarted, timeout=600, what="decode-0 restarted as a whole", interval=0.5)
        assert deploy.answers(pd.url) == want
        pd.stop()
        assert pd.state()["phase"] == "done" and e2e.nothing_left(pd.run_dir)
    e2e.wait_for(
        lambda: all(u <= i + 64 for u, i in zip(deploy.gpu_memory_used_mib(), idle, strict=True)),
        timeout=60,
        what="every GPU back to idle",
    )


def _on_shared_host() -> bool:
    """The lent GPU machines set these in the environment the orchestrator runs in."""
    return all(os.environ.get(k) == v for k, v in NO_MULTICAST.items())
