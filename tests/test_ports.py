"""Ports: unique per node, inside the job's block, and disjoint between jobs sharing a node."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest

from orchestrator.config.schema import RootConfig
from orchestrator.plan.build import build_plan
from orchestrator.plan.model import Plan
from orchestrator.plan.placeholders import Bindings, bind_plan
from orchestrator.plan.ports import block_size, highest_port, port_offset_for_job
from tests.topologies import IDS, TOPOLOGIES

TP1_8P8D = ("prefill.tp=1", "decode.tp=1", "prefill.workers=8", "decode.workers=8")
assert TP1_8P8D in TOPOLOGIES


def planned(cfg: RootConfig, offset: int = 0) -> Plan:
    """The plan as the driver binds it for a job whose port block is at `offset`."""
    plan = build_plan(cfg)
    ips = tuple(f"10.0.0.{i + 1}" for i in range(plan.num_nodes))
    hosts = tuple(f"node{i}" for i in range(plan.num_nodes))
    return bind_plan(plan, Bindings(ips, hosts, "1", "/run", port_offset=offset))


def ports_by_node(plan: Plan) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for proc in plan.processes:
        out.setdefault(proc.node_index, []).extend(proc.ports.values())
    return out


def worker_ports(plan: Plan) -> list[int]:
    """Every planned port except the fixed frontend HTTP port."""
    return [
        port
        for proc in plan.processes
        for name, port in proc.ports.items()
        if not (proc.role == "frontend" and name == "http")
    ]


@pytest.mark.parametrize("overrides", TOPOLOGIES, ids=IDS)
@pytest.mark.parametrize("job_id", ["", "7", "123456_3"])
def test_no_port_is_shared_on_a_node_and_all_stay_in_the_job_block(
    compose: Callable[..., RootConfig], overrides: tuple[str, ...], job_id: str
) -> None:
    cfg = compose("+model=gpt_oss_120b", *overrides)
    c = cfg.cluster
    blocks = {"gpus_per_node": c.gpus_per_node, "job_blocks": c.port_job_blocks}
    offset = port_offset_for_job(job_id, **blocks)
    plan = planned(cfg, offset)
    for node, ports in ports_by_node(plan).items():
        dup = [p for p, n in Counter(ports).items() if n > 1]
        assert not dup, f"node {node}: ports {dup} planned twice"
    first = c.port_base + offset
    last = first + block_size(c.gpus_per_node) - 1
    top = highest_port(c.port_base, gpus_per_node=c.gpus_per_node, job_blocks=c.port_job_blocks)
    for port in worker_ports(plan):
        assert first <= port <= last <= top


@pytest.mark.parametrize("overrides", TOPOLOGIES, ids=IDS)
def test_ports_in_argv_and_env_are_the_planned_ones(
    compose: Callable[..., RootConfig], overrides: tuple[str, ...]
) -> None:
    """A port the engine is told to use must be one this process owns (else two could collide)."""
    plan = planned(compose("+model=gpt_oss_120b", *overrides))
    for proc in plan.processes:
        own = {str(p) for p in proc.ports.values()}
        argv = proc.argv
        for opt in ("--nccl-port", "--port", "--http-port", "--prometheus-port"):
            if opt not in argv:
                continue
            if proc.rank and opt == "--port":
                # Node ranks >= 1 serve no HTTP; they repeat the leader's value.
                leader = plan.process(proc.name.rsplit("-rank", 1)[0])
                assert argv[argv.index(opt) + 1] == str(leader.ports["http"]), proc.name
            else:
                assert argv[argv.index(opt) + 1] in own, (proc.name, opt)
        if "DYN_SYSTEM_PORT" in proc.env:
            assert proc.env["DYN_SYSTEM_PORT"] in own


def test_frontend_http_port_is_fixed(compose: Callable[..., RootConfig]) -> None:
    cfg = compose("+model=gpt_oss_120b", "+experiment=gpt_oss_2p2d")
    for offset in (0, port_offset_for_job("5", gpus_per_node=8, job_blocks=16)):
        plan = planned(cfg, offset)
        front = plan.process("frontend")
        assert front.ports["http"] == 8000
        assert front.argv[front.argv.index("--http-port") + 1] == "8000"
        assert plan.readiness.frontend_url == "http://10.0.0.1:8000"


def test_router_frontend_http_port_is_fixed(compose: Callable[..., RootConfig]) -> None:
    cfg = compose("+model=gpt_oss_120b", "engine=sglang", "frontend=sglang_router")
    front = planned(cfg, 330).process("frontend")
    assert front.ports["http"] == 8000
    assert front.argv[front.argv.index("--port") + 1] == "8000"


@pytest.mark.parametrize(("a", "b"), [("1", "2"), ("100", "101"), ("15", "16"), ("4242", "4243_7")])
def test_two_jobs_get_disjoint_port_ranges(
    compose: Callable[..., RootConfig], a: str, b: str
) -> None:
    cfg = compose("+model=gpt_oss_120b", *TP1_8P8D)
    c = cfg.cluster
    offsets = [
        port_offset_for_job(j, gpus_per_node=8, job_blocks=c.port_job_blocks) for j in (a, b)
    ]
    assert offsets[0] != offsets[1]
    sets = [set(worker_ports(planned(cfg, o))) for o in offsets]
    assert sets[0] and sets[1] and not sets[0] & sets[1]
    # Whole blocks are disjoint too, not just the ports this topology happens to use.
    ranges = sorted((o, o + block_size(8)) for o in offsets)
    assert ranges[0][1] <= ranges[1][0]


def test_job_ids_equal_mod_blocks_share_a_block_and_missing_id_is_zero() -> None:
    kw = {"gpus_per_node": 8, "job_blocks": 16}
    assert port_offset_for_job("3", **kw) == port_offset_for_job("19", **kw)
    assert port_offset_for_job("", **kw) == 0
    assert port_offset_for_job("0", **kw) == 0


def test_highest_port_bounds_every_job(compose: Callable[..., RootConfig]) -> None:
    cfg = compose("+model=gpt_oss_120b", *TP1_8P8D)  # the most processes per node, and etcd
    c = cfg.cluster
    top = highest_port(c.port_base, gpus_per_node=c.gpus_per_node, job_blocks=c.port_job_blocks)
    last_job = str(c.port_job_blocks - 1)
    offset = port_offset_for_job(last_job, gpus_per_node=8, job_blocks=c.port_job_blocks)
    plan = planned(cfg, offset)
    assert any(p.name == "etcd" for p in plan.processes)
    assert max(worker_ports(plan)) <= top
    assert top <= 32767  # Dynamo 1.6 parses DYN_SYSTEM_PORT as a signed 16-bit integer
