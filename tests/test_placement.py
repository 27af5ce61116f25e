"""Placement: which node and GPUs each worker process gets (compose -> build_plan)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest

from orchestrator.plan.model import Plan, Process
from orchestrator.plan.placement import GroupShape, place_workers
from tests.topologies import IDS, TOPOLOGIES

PlanOf = Callable[..., Plan]


def workers(plan: Plan, group: str) -> list[Process]:
    return [p for p in plan.processes if p.group == group]


def where(plan: Plan, name: str) -> tuple[int, tuple[int, ...]]:
    proc = plan.process(name)
    return proc.node_index, proc.gpus


def flag(argv: tuple[str, ...], name: str) -> str:
    """The value following `name` in argv (fails the test when the flag is absent)."""
    assert name in argv, f"{name} missing from {argv}"
    return argv[argv.index(name) + 1]


def test_reference_topology_decode_0_3_prefill_4_7_one_node(plan_of: PlanOf) -> None:
    plan = plan_of()
    assert plan.num_nodes == 1 and plan.slurm.nodes == 1
    assert where(plan, "decode-0") == (0, (0, 1, 2, 3))
    assert where(plan, "prefill-0") == (0, (4, 5, 6, 7))
    assert plan.process("frontend").node_index == 0
    assert [p.name for p in plan.processes] == ["frontend", "decode-0", "prefill-0"]
    assert plan.process("decode-0").env["CUDA_VISIBLE_DEVICES"] == "0,1,2,3"
    assert plan.process("prefill-0").env["CUDA_VISIBLE_DEVICES"] == "4,5,6,7"


def test_2p2d_tp4_fills_two_nodes(plan_of: PlanOf) -> None:
    plan = plan_of("+experiment=gpt_oss_2p2d")
    assert plan.num_nodes == 2 and plan.slurm.nodes == 2
    assert where(plan, "decode-0") == (0, (0, 1, 2, 3))
    assert where(plan, "decode-1") == (0, (4, 5, 6, 7))
    assert where(plan, "prefill-0") == (1, (0, 1, 2, 3))
    assert where(plan, "prefill-1") == (1, (4, 5, 6, 7))
    assert plan.readiness.expected == {"decode": 2, "prefill": 2}


def test_tp8_workers_take_one_whole_node_each(plan_of: PlanOf) -> None:
    plan = plan_of("prefill.tp=8", "decode.tp=8")
    assert plan.num_nodes == 2
    assert where(plan, "decode-0") == (0, tuple(range(8)))
    assert where(plan, "prefill-0") == (1, tuple(range(8)))
    assert flag(plan.process("decode-0").argv, "--tp") == "8"
    assert "--nnodes" not in plan.process("decode-0").argv


def test_worker_spanning_two_nodes_is_one_process_per_node(plan_of: PlanOf) -> None:
    plan = plan_of("prefill.tp=16", "decode.tp=16")
    assert plan.num_nodes == 4
    for group, nodes in (("decode", (0, 1)), ("prefill", (2, 3))):
        procs = workers(plan, group)
        assert [p.name for p in procs] == [f"{group}-0", f"{group}-0-rank1"]
        assert [p.node_index for p in procs] == list(nodes)
        assert all(p.gpus == tuple(range(8)) for p in procs)
        leader = procs[0]
        addr = f"{{node_ip:{nodes[0]}}}:{{port:{leader.ports['dist_init']}}}"  # bound in the job
        for rank, proc in enumerate(procs):
            assert proc.rank == rank
            assert flag(proc.argv, "--tp") == "16"
            assert flag(proc.argv, "--dist-init-addr") == addr
            assert flag(proc.argv, "--nnodes") == "2"
            assert flag(proc.argv, "--node-rank") == str(rank)
        # Only the leader is probed and registered; the follower has no rendezvous port of its own.
        assert leader.health is not None and procs[1].health is None
        assert "dist_init" not in procs[1].ports
    # The rendezvous port is not used by any other process of the leader's node.
    node0 = [port for p in plan.processes if p.node_index == 0 for port in p.ports.values()]
    assert node0.count(plan.process("decode-0").ports["dist_init"]) == 1
    # Readiness counts workers, not processes.
    assert plan.readiness.expected == {"decode": 1, "prefill": 1}
    assert plan.slurm.nodes == 4


def test_spanning_prefill_keeps_one_bootstrap_port(plan_of: PlanOf) -> None:
    plan = plan_of("prefill.tp=16", "decode.tp=16")
    leader, follower = workers(plan, "prefill")
    port = f"{{port:{leader.ports['bootstrap']}}}"
    assert flag(leader.argv, "--disaggregation-bootstrap-port") == port
    assert flag(follower.argv, "--disaggregation-bootstrap-port") == port


def test_eight_tp1_workers_per_node_are_contiguous(plan_of: PlanOf) -> None:
    plan = plan_of("prefill.tp=1", "decode.tp=1", "prefill.workers=8", "decode.workers=8")
    assert plan.num_nodes == 2
    for i in range(8):
        assert where(plan, f"decode-{i}") == (0, (i,))
        assert where(plan, f"prefill-{i}") == (1, (i,))


def test_tp1_groups_share_a_node_without_gaps(plan_of: PlanOf) -> None:
    plan = plan_of("prefill.tp=1", "decode.tp=1", "prefill.workers=5", "decode.workers=11")
    assert plan.num_nodes == 2
    assert [where(plan, f"decode-{i}") for i in range(11)] == [(0, (i,)) for i in range(8)] + [
        (1, (i,)) for i in range(3)
    ]
    assert [where(plan, f"prefill-{i}") for i in range(5)] == [(1, (i,)) for i in range(3, 8)]


def test_mixed_group_sizes(plan_of: PlanOf) -> None:
    plan = plan_of(
        "model.requires_equal_pd_tp=false", "decode.tp=2", "decode.workers=5", "prefill.workers=3"
    )
    assert [where(plan, f"decode-{i}") for i in range(5)] == [
        (0, (0, 1)),
        (0, (2, 3)),
        (0, (4, 5)),
        (0, (6, 7)),
        (1, (0, 1)),
    ]
    # A TP4 prefill packs after the TP2 decode on node 1; the next one does not fit in the
    # 2 GPUs left there and starts node 2.
    assert where(plan, "prefill-0") == (1, (2, 3, 4, 5))
    assert where(plan, "prefill-1") == (2, (0, 1, 2, 3))
    assert where(plan, "prefill-2") == (2, (4, 5, 6, 7))
    assert plan.num_nodes == 3


def test_whole_node_worker_after_small_ones_takes_a_fresh_node(plan_of: PlanOf) -> None:
    plan = plan_of("model.requires_equal_pd_tp=false", "decode.tp=2", "prefill.tp=8")
    assert where(plan, "decode-0") == (0, (0, 1))
    assert where(plan, "prefill-0") == (1, tuple(range(8)))


def test_separate_nodes_keeps_groups_apart(plan_of: PlanOf) -> None:
    plan = plan_of("deployment.separate_nodes=true", "prefill.workers=3")
    assert where(plan, "decode-0") == (0, (0, 1, 2, 3))
    assert [where(plan, f"prefill-{i}") for i in range(3)] == [
        (1, (0, 1, 2, 3)),
        (1, (4, 5, 6, 7)),
        (2, (0, 1, 2, 3)),
    ]
    assert plan.num_nodes == 3 and plan.slurm.nodes == 3
    assert plan_of("prefill.workers=3").num_nodes == 2  # packed, without the flag


def test_separate_nodes_after_a_full_node_does_not_skip_a_node(plan_of: PlanOf) -> None:
    plan = plan_of("deployment.separate_nodes=true", "decode.workers=2")
    assert where(plan, "decode-1") == (0, (4, 5, 6, 7))
    assert where(plan, "prefill-0") == (1, (0, 1, 2, 3))
    assert plan.num_nodes == 2


def test_aggregated_mode(plan_of: PlanOf) -> None:
    plan = plan_of("deployment=aggregated", "aggregated.workers=3")
    aggs = workers(plan, "aggregated")
    assert [(p.name, p.role) for p in aggs] == [(f"aggregated-{i}", "worker") for i in range(3)]
    assert [where(plan, p.name) for p in aggs] == [
        (0, (0, 1, 2, 3)),
        (0, (4, 5, 6, 7)),
        (1, (0, 1, 2, 3)),
    ]
    assert not workers(plan, "prefill") and not workers(plan, "decode")
    assert all("--disaggregation-mode" not in p.argv for p in aggs)
    assert plan.readiness.expected == {"worker": 3}
    assert plan.name == "gpt-oss-120b-a3"


@pytest.mark.parametrize("overrides", TOPOLOGIES, ids=IDS)
def test_no_gpu_is_given_twice_and_every_gpu_exists(
    plan_of: PlanOf, overrides: tuple[str, ...]
) -> None:
    plan = plan_of(*overrides)
    used = Counter((p.node_index, g) for p in plan.processes for g in p.gpus)
    assert all(count == 1 for count in used.values()), used
    assert all(0 <= g < plan.gpus_per_node and 0 <= n < plan.num_nodes for n, g in used)
    for p in plan.processes:
        if p.gpus:
            assert p.env["CUDA_VISIBLE_DEVICES"] == ",".join(map(str, p.gpus))
            assert p.gpus == tuple(range(p.gpus[0], p.gpus[-1] + 1)), "GPU ranges are contiguous"
    assert plan.slurm.nodes == plan.num_nodes == max(p.node_index for p in plan.processes) + 1


def test_place_workers_does_not_modify_its_input() -> None:
    shapes = [GroupShape(group="decode", workers=2, gpus_per_worker=4)]
    before = list(shapes)
    first = place_workers(shapes, gpus_per_node=8, separate_groups=False)
    assert shapes == before
    assert place_workers(shapes, gpus_per_node=8, separate_groups=False) == first
