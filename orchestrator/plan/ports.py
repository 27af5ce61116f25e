"""Deterministic ports: one slot of PORT_STRIDE ports per process on its node, one block per job.

Every process on a node gets its own slot, so ports never collide on a node; the whole layout is
shifted by `port_offset`, derived from the Slurm job id, so two jobs sharing a node differ too.
Fixed ports are planned for everything SGLang/Dynamo would otherwise pick at random or default
(SGLang's bootstrap 8998 collided with Dynamo services in srt-slurm; free-port probing for
--nccl-port races when workers start together).
"""

from __future__ import annotations

from collections import defaultdict

PORT_STRIDE = 10
INFRA_SLOTS = 3  # etcd, the frontend and a benchmark client on node 0


def block_size(gpus_per_node: int, workers_per_gpu: int = 1) -> int:
    """Ports one job may use on one node: a slot per worker process it can hold (one per GPU
    with TP1 workers, `workers_per_gpu` per GPU when they share) plus the infra slots."""
    return PORT_STRIDE * (gpus_per_node * max(workers_per_gpu, 1) + INFRA_SLOTS)


def port_offset_for_job(
    job_id: str, *, gpus_per_node: int, job_blocks: int, workers_per_gpu: int = 1
) -> int:
    """Offset of this job's port block; 0 when there is no job id (local runs, dry-run)."""
    digits = "".join(ch for ch in job_id.split("_")[0] if ch.isdigit())
    if not digits:
        return 0
    return (int(digits) % job_blocks) * block_size(gpus_per_node, workers_per_gpu)


def highest_port(
    port_base: int, *, gpus_per_node: int, job_blocks: int, workers_per_gpu: int = 1
) -> int:
    """The highest port any job can be given."""
    return port_base + job_blocks * block_size(gpus_per_node, workers_per_gpu) - 1


class PortAllocator:
    """Hands out slots per node in call order; pure and deterministic."""

    def __init__(self, port_base: int, port_offset: int) -> None:
        self._base = port_base + port_offset
        self._next_slot: dict[int, int] = defaultdict(int)

    def allocate(self, node_index: int, names: list[str]) -> dict[str, int]:
        """Ports named `names` for one new process on `node_index`."""
        if len(names) > PORT_STRIDE:
            raise ValueError(f"a process can have at most {PORT_STRIDE} planned ports: {names}")
        slot = self._next_slot[node_index]
        self._next_slot[node_index] += 1
        first = self._base + slot * PORT_STRIDE
        return {name: first + i for i, name in enumerate(names)}
