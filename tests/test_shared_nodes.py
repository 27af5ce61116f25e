"""Deployments that share a node (cluster.exclusive=false): Slurm is asked only for the GPUs the
plan uses, the frontend gets a port of the job's block (so two frontends on one node differ, and
the URL the run records is the real one), and planned GPUs map onto the job's own GPU ids."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from orchestrator.config.schema import RootConfig
from orchestrator.config.validate import validate
from orchestrator.plan.model import Plan
from orchestrator.plan.placeholders import Bindings, bind_plan
from orchestrator.run.entry import Allocation, allocation_issues, bound_plan, job_port_offset
from orchestrator.runtime.nodes import parse_node_lines
from orchestrator.slurm.request import sbatch_directives, submitit_parameters

SHARED = ("cluster.exclusive=false",)
FOUR_GPUS = ("deployment=aggregated", "aggregated.workers=1")  # one TP4 worker


def bound(plan: Plan, job_id: str) -> Plan:
    ips = ("10.0.0.1",) * plan.num_nodes
    offset = job_port_offset(plan, job_id)
    return bind_plan(
        plan,
        Bindings(
            node_ips=ips,
            node_hosts=("node1",) * plan.num_nodes,
            job_id=job_id,
            run_dir="/r",
            port_offset=offset,
        ),
    )


def test_a_shared_cluster_asks_only_for_the_gpus_the_plan_uses(
    plan_of: Callable[..., Plan],
) -> None:
    shared = plan_of(*SHARED, *FOUR_GPUS)
    assert shared.slurm.gpus_per_node == 4 and not shared.slurm.exclusive
    assert "--gpus-per-node=4" in sbatch_directives(shared.slurm)
    assert submitit_parameters(shared.slurm)["gpus_per_node"] == 4
    gres = plan_of(*SHARED, *FOUR_GPUS, "cluster.gpu_directive=gres")
    assert "--gres=gpu:4" in sbatch_directives(gres.slurm)
    # Whole nodes on an exclusive cluster, as before.
    exclusive = plan_of(*FOUR_GPUS)
    assert exclusive.slurm.gpus_per_node == 8 and "--exclusive" in sbatch_directives(
        exclusive.slurm
    )


def test_an_uneven_layout_asks_the_most_any_node_uses(plan_of: Callable[..., Plan]) -> None:
    # decode-0 + prefill-0 fill node 0 (8 GPUs), prefill-1 uses 4 of node 1.
    plan = plan_of(*SHARED, "prefill.workers=2")
    assert plan.num_nodes == 2 and plan.slurm.gpus_per_node == 8
    assert plan_of(*SHARED, "prefill.tp=2", "decode.tp=2").slurm.gpus_per_node == 4


def test_two_frontends_on_one_node_get_their_jobs_ports(plan_of: Callable[..., Plan]) -> None:
    plan = plan_of(*SHARED, *FOUR_GPUS)
    frontend = plan.process("frontend")
    planned = frontend.ports["http"]
    assert plan.port_base <= planned < plan.port_base + 110  # inside the job's block
    assert f"{{port:{planned}}}" in frontend.argv and "8000" not in frontend.argv
    a, b = bound(plan, "127"), bound(plan, "128")
    port_a, port_b = a.process("frontend").ports["http"], b.process("frontend").ports["http"]
    assert port_a != port_b
    for run, port in ((a, port_a), (b, port_b)):
        assert run.readiness.frontend_url == f"http://10.0.0.1:{port}"  # what state.json records
        front = run.process("frontend")
        assert front.argv[front.argv.index("--http-port") + 1] == str(port)
        assert front.health is not None and front.health.url == f"http://10.0.0.1:{port}/health"
    # An exclusive node keeps frontend.http_port: a URL that stays the same.
    fixed = bound(plan_of(*FOUR_GPUS), "127")
    assert fixed.readiness.frontend_url == "http://10.0.0.1:8000"


def test_router_frontend_too(plan_of: Callable[..., Plan]) -> None:
    plan = plan_of(*SHARED, *FOUR_GPUS, "engine=sglang", "frontend=sglang_router")
    front = plan.process("frontend")
    assert (
        set(front.ports) == {"http", "metrics"}
        and front.ports["metrics"] == front.ports["http"] + 1
    )
    assert front.argv[front.argv.index("--port") + 1] == f"{{port:{front.ports['http']}}}"


def test_validation_keeps_ports_in_range(compose: Callable[..., RootConfig]) -> None:
    ok = compose("+model=gpt_oss_120b", *SHARED, "frontend.http_port=20005")
    assert validate(ok) == []  # the block's own port is used instead
    high = compose("+model=gpt_oss_120b", *SHARED, "cluster.port_base=32000")
    assert [i.key for i in validate(high)] == ["cluster.port_base"]


def test_planned_gpus_become_the_jobs_gpu_ids(plan_of: Callable[..., Plan], tmp_path: Path) -> None:
    plan = plan_of(*SHARED, *FOUR_GPUS)
    # Slurm 22.05 without device cgroups: the second job on a node sees GPUs 4-7.
    alloc = Allocation("128", ("node1",), ("10.0.0.1",), ((),), 0, (("4", "5", "6", "7"),))
    run = bound_plan(plan, alloc, tmp_path)
    assert run.process("aggregated-0").env["CUDA_VISIBLE_DEVICES"] == "4,5,6,7"
    same = bound_plan(plan, Allocation("128", ("node1",), ("10.0.0.1",), ((),), 0, ()), tmp_path)
    assert same.process("aggregated-0").env["CUDA_VISIBLE_DEVICES"] == "0,1,2,3"


def test_an_allocation_with_the_requested_gpus_fits(plan_of: Callable[..., Plan]) -> None:
    plan = plan_of(*SHARED, *FOUR_GPUS)
    env = {"SLURM_JOB_ID": "5", "SLURM_JOB_NUM_NODES": "1", "SLURM_GPUS_ON_NODE": "4"}
    assert allocation_issues(plan, env) == []
    assert allocation_issues(plan, {**env, "SLURM_GPUS_ON_NODE": "2"})


def test_each_node_reports_the_jobs_gpu_ids() -> None:
    line = '{"host": "node1", "ip": "10.77.0.11", "busy": [], "gpus": ["4", "5", "6", "7"]}'
    (info,) = parse_node_lines(f"srun: Step created for StepId=5.0\n{line}\n").values()
    assert info.gpus == ("4", "5", "6", "7")
