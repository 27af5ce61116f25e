"""Late-bound placeholders and the plan's JSON contract (plan_to_dict / plan_from_dict)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable

import pytest

from orchestrator.core.errors import UnresolvedPlaceholder
from orchestrator.plan.model import Plan, plan_from_dict, plan_to_dict
from orchestrator.plan.placeholders import PLACEHOLDER, Bindings, bind_plan, bind_text
from tests.topologies import TOPOLOGIES

PlanOf = Callable[..., Plan]
TWO_NODES = Bindings(
    node_ips=("10.0.0.1", "10.0.0.2"),
    node_hosts=("gpu01", "gpu02"),
    job_id="4242",
    run_dir="/scratch/run 1",
)


def all_text(plan: Plan) -> list[str]:
    """Every string of the plan that may hold a placeholder."""
    out = [plan.readiness.frontend_url, *plan.prepare.values()]
    for p in plan.processes:
        out += [*p.argv, *p.env.values(), p.url, p.health.url if p.health else ""]
    return out


@pytest.mark.parametrize(
    ("text", "bound"),
    [
        ("{node_ip:1}:5000", "10.0.0.2:5000"),
        ("--nodelist={node_host:0}", "--nodelist=gpu01"),
        ("job-{job_id}.log", "job-4242.log"),
        ("{run_dir}/etcd", "/scratch/run 1/etcd"),
        (
            '{"publisher":"zmq","endpoint":"tcp://{node_ip:0}:1"}',
            '{"publisher":"zmq","endpoint":"tcp://10.0.0.1:1"}',
        ),
        ('{"publisher":"zmq"}', '{"publisher":"zmq"}'),
        ("{other}{node_ip}x", None),
        ("{}", "{}"),
    ],
)
def test_bind_text(text: str, bound: str | None) -> None:
    if bound is None:
        with pytest.raises(UnresolvedPlaceholder, match=r"\{node_ip\}"):
            bind_text(text, TWO_NODES)
    else:
        assert bind_text(text, TWO_NODES) == bound


@pytest.mark.parametrize("token", ["{node_ip:2}", "{node_host:7}", "{node_ip}", "{job_id:0}"])
def test_unknown_index_or_shape_raises(token: str) -> None:
    with pytest.raises(UnresolvedPlaceholder, match=token.replace("{", r"\{").replace("}", r"\}")):
        bind_text(f"x {token} y", TWO_NODES)


def test_bound_values_are_not_rescanned() -> None:
    odd = dataclasses.replace(TWO_NODES, run_dir="/a/{job_id}/\\1")
    assert bind_text("{run_dir}", odd) == "/a/{job_id}/\\1"


def test_bind_plan_replaces_every_placeholder(plan_of: PlanOf) -> None:
    mocker = (
        "engine=mocker",
        "prefill.tp=1",
        "decode.tp=1",
        "prefill.workers=7",
        "decode.workers=9",
    )
    assert mocker in TOPOLOGIES  # composed once for the session
    plan = plan_of(*mocker)
    assert any(PLACEHOLDER.search(t) for t in all_text(plan))
    bound = bind_plan(plan, TWO_NODES)
    assert not [t for t in all_text(bound) if PLACEHOLDER.search(t)]
    prefill = bound.process("prefill-1")
    assert prefill.node_index == 1 and prefill.env["DYN_TCP_RPC_HOST"] == "10.0.0.2"
    assert bound.process("etcd").argv[bound.process("etcd").argv.index("--data-dir") + 1] == (
        "/scratch/run 1/secrets/etcd"
    )
    assert bound.prepare["tiny_model_dir"] == "/scratch/run 1/tiny-model"
    assert bound.readiness.frontend_url == "http://10.0.0.1:8000"
    assert bound.process("decode-0").health is not None
    assert bound.process("decode-0").health.url.startswith("http://10.0.0.1:")
    # The input plan is not modified.
    assert plan.process("prefill-1").env["DYN_TCP_RPC_HOST"] == "{node_ip:1}"


def test_bind_plan_with_too_few_nodes_raises(plan_of: PlanOf) -> None:
    one_node = dataclasses.replace(TWO_NODES, node_ips=("10.0.0.1",), node_hosts=("gpu01",))
    with pytest.raises(UnresolvedPlaceholder, match=r"\{node_ip:1\}"):
        bind_plan(plan_of("+experiment=gpt_oss_2p2d"), one_node)


def test_json_engine_args_survive_binding(plan_of: PlanOf) -> None:
    arg = '{"publisher":"zmq","topic":"kv-events"}'
    plan = plan_of(f"prefill.extra_args=[--kv-events-config,'{arg}']")
    bound = bind_plan(plan, TWO_NODES)
    assert bound.process("prefill-0").argv[-2:] == ("--kv-events-config", arg)


@pytest.mark.parametrize(
    "overrides",
    [
        *TOPOLOGIES,
        ("cluster.sbatch_extra=['--constraint=h100']", "cluster.container_mounts=['/a']"),
    ],
)
def test_plan_round_trips_through_json(plan_of: PlanOf, overrides: tuple[str, ...]) -> None:
    plan = plan_of(*overrides)
    data = json.loads(json.dumps(plan_to_dict(plan)))
    assert plan_from_dict(data) == plan
    assert json.loads(json.dumps(plan_to_dict(plan_from_dict(data)))) == data
