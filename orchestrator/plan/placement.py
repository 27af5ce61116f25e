"""Pack workers onto nodes: fewest nodes, contiguous GPU ranges, multi-node workers on whole nodes."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupShape:
    """What placement needs to know about one worker group."""

    group: str  # prefill | decode | aggregated
    workers: int
    gpus_per_worker: int


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerSlot:
    """Where one worker runs: one (node, GPUs) pair per node rank."""

    group: str
    worker_index: int
    ranks: tuple[tuple[int, tuple[int, ...]], ...]


@dataclass
class _Cursor:
    node: int = 0
    gpu: int = 0

    def next_fresh_node(self) -> None:
        if self.gpu:
            self.node += 1
            self.gpu = 0


def place_workers(
    shapes: list[GroupShape],
    *,
    gpus_per_node: int,
    separate_groups: bool,
    workers_per_gpu: int = 1,
) -> list[WorkerSlot]:
    """Place the groups in order on nodes 0, 1, ...

    Workers smaller than a node are packed on contiguous GPU ranges and groups may share a node
    (as in the single-node gpt-oss reference: decode on GPUs 0-3, prefill on 4-7) unless
    `separate_groups`. A worker larger than a node takes `gpus_per_worker / gpus_per_node`
    whole nodes, one process per node. Validation guarantees that `gpus_per_worker` divides, or
    is a multiple of, `gpus_per_node`. With `workers_per_gpu` > 1 GPUs are shared
    (`place_shared`).
    """
    if workers_per_gpu > 1:
        return place_shared(
            shapes,
            gpus_per_node=gpus_per_node,
            separate_groups=separate_groups,
            seats=workers_per_gpu,
        )
    cursor = _Cursor()
    slots: list[WorkerSlot] = []
    for shape in shapes:
        if separate_groups:
            cursor.next_fresh_node()
        for index in range(shape.workers):
            ranks = _place_one(cursor, shape.gpus_per_worker, gpus_per_node)
            slots.append(WorkerSlot(group=shape.group, worker_index=index, ranks=ranks))
    return slots


def _place_one(
    cursor: _Cursor, gpus: int, gpus_per_node: int
) -> tuple[tuple[int, tuple[int, ...]], ...]:
    if gpus >= gpus_per_node:
        cursor.next_fresh_node()
        span = gpus // gpus_per_node
        ranks = tuple((cursor.node + r, tuple(range(gpus_per_node))) for r in range(span))
        cursor.node += span
        return ranks
    if cursor.gpu + gpus > gpus_per_node:
        cursor.next_fresh_node()
    placed = ((cursor.node, tuple(range(cursor.gpu, cursor.gpu + gpus))),)
    cursor.gpu += gpus
    if cursor.gpu == gpus_per_node:
        cursor.node, cursor.gpu = cursor.node + 1, 0
    return placed


def place_shared(
    shapes: list[GroupShape], *, gpus_per_node: int, separate_groups: bool, seats: int
) -> list[WorkerSlot]:
    """Up to `seats` workers per GPU, filling each GPU range before the next: 1 decode + 1
    prefill of one GPU each, 2 seats -> both on GPU 0 (not one per GPU). A worker takes the
    first range aligned to its size whose GPUs all have a free seat; ranges never straddle
    nodes (validation keeps shared workers within one node and of one size)."""
    used: dict[tuple[int, int], int] = {}
    slots: list[WorkerSlot] = []
    first_node = 0
    for shape in shapes:
        if separate_groups and used:
            first_node = max(node for node, _ in used) + 1
        width = min(shape.gpus_per_worker, gpus_per_node)
        for index in range(shape.workers):
            node, gpus = _free_range(used, first_node, width, gpus_per_node, seats)
            for gpu in gpus:
                used[(node, gpu)] = used.get((node, gpu), 0) + 1
            slots.append(WorkerSlot(group=shape.group, worker_index=index, ranks=((node, gpus),)))
    return slots


def _free_range(
    used: dict[tuple[int, int], int], node: int, width: int, gpus_per_node: int, seats: int
) -> tuple[int, tuple[int, ...]]:
    """The first (node, GPUs) range of `width` GPUs from `node` on with a seat free on each."""
    while True:
        for start in range(0, gpus_per_node - width + 1, width):
            gpus = tuple(range(start, start + width))
            if all(used.get((node, g), 0) < seats for g in gpus):
                return node, gpus
        node += 1


def nodes_used(slots: list[WorkerSlot]) -> int:
    """Number of nodes the placed workers need (at least 1: the frontend lives on node 0)."""
    return max((node for slot in slots for node, _ in slot.ranks), default=0) + 1
