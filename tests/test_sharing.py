"""Several workers on one GPU (deployment.workers_per_gpu): placement, each worker's planned part
of the GPU's memory and its --mem-fraction-static, the start order, restarts, validation, ports
and the dry-run; SGLang's and Dynamo's own parsers accept the flags."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.config.schema import RootConfig
from orchestrator.config.validate import validate
from orchestrator.core.effects import SubprocessRunner
from orchestrator.engines import dynamo_check, sglang_check
from orchestrator.plan.build import build_plan, gpus_requested
from orchestrator.plan.groups import place
from orchestrator.plan.model import Plan, Process, plan_from_dict, plan_to_dict
from orchestrator.plan.placement import GroupShape, place_shared
from orchestrator.plan.sharing import gpu_shares
from orchestrator.runtime.restarts import gpu_neighbours, shared_restart

REPO = Path(__file__).resolve().parent.parent
Compose = Callable[..., RootConfig]
SGLANG = ("engine=sglang", "frontend=sglang_router")
ONE_GPU = (
    "+model=llama_3_3_70b",
    "launcher=local",
    "cluster.gpus_per_node=1",
    "prefill.tp=1",
    "decode.tp=1",
    "deployment.workers_per_gpu=2",
)


def flag(argv: tuple[str, ...], name: str) -> str:
    """The value of the last copy of `name` in argv (argparse: the last one wins)."""
    assert name in argv, f"{name} missing from {argv}"
    return argv[len(argv) - 1 - argv[::-1].index(name) + 1]


def plan(compose: Compose, *overrides: str) -> Plan:
    return build_plan(compose(*ONE_GPU, *overrides))


# --- placement -----------------------------------------------------------------------------------
def test_one_gpu_holds_prefill_and_decode_with_cuda_visible_devices_from_the_plan(
    compose: Compose,
) -> None:
    p = plan(compose, *SGLANG)
    assert p.num_nodes == 1 and p.workers_per_gpu == 2
    for name in ("decode-0", "prefill-0"):
        assert p.process(name).node_index == 0 and p.process(name).gpus == (0,)
        assert p.process(name).env["CUDA_VISIBLE_DEVICES"] == "0"
    assert validate(compose(*ONE_GPU, *SGLANG, "model.path=/m")) == []


def test_shared_placement_fills_each_gpu_before_the_next() -> None:
    shapes = [
        GroupShape(group="decode", workers=3, gpus_per_worker=2),
        GroupShape(group="prefill", workers=3, gpus_per_worker=2),
    ]
    slots = place_shared(shapes, gpus_per_node=4, separate_groups=False, seats=2)
    got = [(s.group, s.worker_index, s.ranks) for s in slots]
    assert got == [
        ("decode", 0, ((0, (0, 1)),)),
        ("decode", 1, ((0, (0, 1)),)),
        ("decode", 2, ((0, (2, 3)),)),
        ("prefill", 0, ((0, (2, 3)),)),
        ("prefill", 1, ((1, (0, 1)),)),
        ("prefill", 2, ((1, (0, 1)),)),
    ]
    apart = place_shared(shapes, gpus_per_node=4, separate_groups=True, seats=2)
    assert [s.ranks for s in apart if s.group == "prefill"] == [
        ((1, (0, 1)),),
        ((1, (0, 1)),),
        ((1, (2, 3)),),
    ]


def test_default_layout_is_unchanged(compose: Compose) -> None:
    cfg = compose(
        "+model=gpt_oss_120b",
        "prefill.workers=3",
        "decode.workers=2",
        "decode.tp=2",
        "prefill.tp=2",
    )
    shared_off = dataclasses.replace(cfg.deployment, workers_per_gpu=1, shared_memory_fraction=0.5)
    assert place(cfg) == place(dataclasses.replace(cfg, deployment=shared_off))
    data = plan_to_dict(build_plan(cfg))
    assert "workers_per_gpu" not in data
    assert not any({"gpu_share", "start_after", "restart_args"} & set(p) for p in data["processes"])


# --- memory shares, start order, restarts --------------------------------------------------------
def test_each_worker_gets_its_part_whatever_the_start_order(compose: Compose) -> None:
    p = plan(compose, *SGLANG)
    decode, prefill = p.process("decode-0"), p.process("prefill-0")
    assert decode.gpu_share == prefill.gpu_share == 0.4  # 0.8 of the GPU, split evenly
    # decode starts first: 0.4 of the free memory; prefill once decode is healthy: 0.4 of the
    # whole is 0.666 of the 0.6 decode left (SGLang's fraction is of the memory free at start).
    assert flag(decode.argv, "--mem-fraction-static") == "0.4" and decode.start_after == ()
    assert flag(prefill.argv, "--mem-fraction-static") == "0.666"
    assert prefill.start_after == ("decode-0",) and prefill.restart_args == ()
    # decode restarted while prefill runs: 0.4 of the whole is 0.666 of what prefill leaves.
    assert decode.restart_args == ("--mem-fraction-static", "0.666")
    assert plan_from_dict(plan_to_dict(p)) == p


def test_memory_weights_split_the_gpu(compose: Compose) -> None:
    p = plan(compose, *SGLANG, "decode.memory_weight=3", "deployment.shared_memory_fraction=0.8")
    decode, prefill = p.process("decode-0"), p.process("prefill-0")
    assert (decode.gpu_share, prefill.gpu_share) == (0.6, 0.2)
    assert flag(prefill.argv, "--mem-fraction-static") == "0.5"  # 0.2 of the 0.4 decode left
    assert decode.restart_args == ("--mem-fraction-static", "0.75")  # 0.6 of the 0.8 left


def test_small_aggregated_workers_start_one_after_another(compose: Compose) -> None:
    p = plan(
        compose,
        *SGLANG,
        "deployment=aggregated",
        "aggregated.workers=4",
        "aggregated.tp=1",
        "deployment.workers_per_gpu=4",
    )
    workers = [p.process(f"aggregated-{i}") for i in range(4)]
    assert {w.gpus for w in workers} == {(0,)}
    assert [w.gpu_share for w in workers] == [0.2] * 4
    fractions = [flag(w.argv, "--mem-fraction-static") for w in workers]
    assert fractions == ["0.2", "0.25", "0.333", "0.5"]
    assert [w.start_after for w in workers] == [
        (),
        ("aggregated-0",),
        ("aggregated-0", "aggregated-1"),
        ("aggregated-0", "aggregated-1", "aggregated-2"),
    ]


def test_a_worker_alone_on_its_gpu_keeps_the_engines_default() -> None:
    shapes = [GroupShape(group="aggregated", workers=3, gpus_per_worker=1)]
    slots = place_shared(shapes, gpus_per_node=2, separate_groups=False, seats=2)
    shares = gpu_shares(slots, {"aggregated": 1.0}, 0.8)
    assert set(shares) == {("aggregated", 0), ("aggregated", 1)}  # aggregated-2 has GPU 1 alone


@pytest.mark.parametrize("engine", [("engine=dynamo_sglang",), ("engine=mocker",)])
def test_dynamo_takes_the_flag_and_the_mocker_shares_without_memory(
    compose: Compose, engine: tuple[str, ...]
) -> None:
    p = plan(compose, *engine)
    decode, prefill = p.process("decode-0"), p.process("prefill-0")
    assert decode.gpus == prefill.gpus == (0,)
    if engine == ("engine=mocker",):  # no GPU memory: no flag, no order
        assert "--mem-fraction-static" not in prefill.argv and prefill.start_after == ()
    else:
        assert flag(prefill.argv, "--mem-fraction-static") == "0.666"


def _proc(plan_: Plan, name: str) -> Process:
    return plan_.process(name)


def test_restarts_wait_for_the_workers_planned_before_and_size_from_what_runs(
    compose: Compose,
) -> None:
    p = plan(compose, *SGLANG)
    decode, prefill = _proc(p, "decode-0"), _proc(p, "prefill-0")
    assert gpu_neighbours(p.processes, decode) == ["prefill-0"]
    # prefill restarts only once decode is healthy, with its planned fraction.
    assert shared_restart(p.processes, prefill, set()) is None
    assert shared_restart(p.processes, prefill, {"decode-0"}) == prefill
    # decode with prefill up: the restart fraction (the last copy of the flag wins)...
    again = shared_restart(p.processes, decode, {"prefill-0"})
    assert again is not None and flag(again.argv, "--mem-fraction-static") == "0.666"
    # ...and with prefill down too: as planned (prefill then waits for it).
    assert shared_restart(p.processes, decode, set()) == decode


# --- validation, ports, Slurm request ------------------------------------------------------------
def test_every_sharing_problem_at_once(compose: Compose) -> None:
    cfg = compose(
        *ONE_GPU,
        *SGLANG,
        "model.path=/m",
        "decode.tp=2",
        "prefill.memory_weight=0",
        "deployment.shared_memory_fraction=1.5",
        "+engine.args.mem-fraction-static=0.3",
        "prefill.extra_args=['--mem-fraction-static=0.2']",
    )
    found = {i.key: i for i in validate(cfg)}
    assert {
        "deployment.shared_memory_fraction",
        "prefill.memory_weight",
        "decode.tp",
        "deployment.workers_per_gpu",
        "engine.args.mem-fraction-static",
        "prefill.extra_args",
    } <= set(found)
    assert "multi-node workers do not share" in found["decode.tp"].problem
    assert "decode=2" in found["deployment.workers_per_gpu"].found
    assert found["engine.args.mem-fraction-static"].found == "0.3"
    zero = dataclasses.replace(cfg.deployment, workers_per_gpu=0)
    assert any(
        i.key == "deployment.workers_per_gpu" and i.found == "0"
        for i in validate(dataclasses.replace(cfg, deployment=zero))
    )


def test_the_mocker_accepts_the_key_and_any_memory_args(compose: Compose) -> None:
    cfg = compose(
        *ONE_GPU, "engine=mocker", "model.path=/m", "+engine.args.mem-fraction-static=0.3"
    )
    assert [i for i in validate(cfg) if "mem-fraction" in i.key] == []


def test_the_port_block_holds_every_shared_worker(compose: Compose) -> None:
    p = plan(
        compose,
        *SGLANG,
        "deployment=aggregated",
        "aggregated.workers=8",
        "aggregated.tp=1",
        "deployment.workers_per_gpu=8",
    )
    ports = [port for proc in p.processes for port in proc.ports.values() if port >= p.port_base]
    assert len(ports) == len(set(ports))
    block = 10 * (1 * 8 + 3)  # a slot per worker a node can hold, plus the infra slots
    assert max(ports) < p.port_base + block
    data = plan_to_dict(p)
    assert data["workers_per_gpu"] == 8


def test_a_shared_gpu_is_requested_once(compose: Compose) -> None:
    cfg = compose(*ONE_GPU, *SGLANG, "cluster.exclusive=false")
    assert gpus_requested(cfg, place(cfg)) == 1


# --- dry-run and the CLI -------------------------------------------------------------------------
def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO,
        env=env,
    )


def test_dry_run_shows_each_workers_gpu_and_memory_share() -> None:
    proc = run_cli(*ONE_GPU, *SGLANG, "model.path=/m", "dry_run=true")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "PROCESS    ROLE      NODE  GPUS  MEMORY  PORTS" in out
    assert "decode-0   decode    0     0     0.4     http=" in out
    assert "prefill-0  prefill   0     0     0.4     http=" in out
    assert "gpu share: 0.4 of GPU 0's memory (weights + KV cache); starts first" in out
    assert "starts once decode-0 is healthy" in out
    assert "on a restart (the others running) appends: --mem-fraction-static 0.666" in out


def test_cli_refuses_what_cannot_share_with_exit_2() -> None:
    proc = run_cli(
        *ONE_GPU,
        *SGLANG,
        "model.path=/m",
        "decode.tp=2",
        "+decode.args.mem-fraction-static=0.5",
        "dry_run=true",
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert "decode.tp=2: a worker sharing GPUs must fit on one node" in proc.stderr
    assert "decode.args.mem-fraction-static=0.5: conflicts with deployment.workers_per_gpu=2" in (
        proc.stderr
    )


@pytest.mark.parametrize("kind", ["sglang", "dynamo_sglang"])
def test_the_engines_own_parser_accepts_the_shared_argv(compose: Compose, kind: str) -> None:
    engine = SGLANG if kind == "sglang" else ("engine=dynamo_sglang",)
    p = plan(compose, *engine)
    module = sglang_check.LAUNCH_MODULE if kind == "sglang" else dynamo_check.DYNAMO_SGLANG
    argvs = sglang_check.sglang_argvs(p, module)
    decode = p.process("decode-0")
    argvs["decode-0 restarted"] = [*argvs["decode-0"], *decode.restart_args]
    python = (
        sglang_check.sglang_python(os.environ)
        if kind == "sglang"
        else dynamo_check.dynamo_sglang_python(os.environ)
    )
    if python is None:
        pytest.skip(f"no interpreter for the {kind} parser (scripts/install.sh --with-sglang)")
    if kind == "sglang":
        errors = sglang_check.parse_in_subprocess(str(python), argvs, SubprocessRunner())
    else:
        found = dynamo_check.run_parser(
            str(python), dynamo_check.DYNAMO_SGLANG_FUNCTIONS, argvs, SubprocessRunner()
        )
        if isinstance(found, str):
            pytest.skip(f"the {kind} parser does not load in {python}: {found}")
        errors = found
    assert set(errors) == set(argvs) and not any(errors.values()), errors
