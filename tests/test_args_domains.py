"""One-flag overrides (`args` mappings layered model -> engine -> role), the domain of every
scalar key, unknown keys added with `+`, and the DP-attention / EP rules."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Callable

import pytest

from orchestrator.config.load import compose_checked
from orchestrator.config.schema import RootConfig
from orchestrator.config.validate import validate
from orchestrator.core.errors import Issue
from orchestrator.engines.base import args_argv, layered_args
from orchestrator.plan.build import build_plan, gpus_per_worker

Compose = Callable[..., RootConfig]


def argv_of(cfg: RootConfig, name: str) -> list[str]:
    return list(build_plan(cfg).process(name).argv)


def keys(issues: list[Issue]) -> list[str]:
    return [i.key for i in issues]


def test_one_flag_override_per_role(compose: Compose) -> None:
    cfg = compose(
        "+model=gpt_oss_120b",
        "+decode.args.mem-fraction-static=0.8",
        "+prefill.args.disable-radix-cache=true",
        "+prefill.args.deepep-mode=normal",
    )
    decode, prefill = argv_of(cfg, "decode-0"), argv_of(cfg, "prefill-0")
    assert decode[decode.index("--mem-fraction-static") + 1] == "0.8"
    assert "--mem-fraction-static" not in prefill
    assert "--disable-radix-cache" in prefill and "--disable-radix-cache" not in decode
    assert prefill[prefill.index("--deepep-mode") + 1] == "normal"


def test_layers_model_then_engine_then_role_and_null_removes(compose: Compose) -> None:
    cfg = compose(
        "+model=gpt_oss_120b",
        "+model.args.page-size=16",
        "+engine.args.page-size=32",
        "+decode.args.page-size=64",
        "+prefill.args.page-size=null",
    )
    decode, prefill = argv_of(cfg, "decode-0"), argv_of(cfg, "prefill-0")
    assert decode[decode.index("--page-size") + 1] == "64"
    assert "--page-size" not in prefill  # null removes what the model and engine set


def test_args_argv_formats_values() -> None:
    merged = layered_args({"a": 1, "b": True, "c": "x"}, {"b": False, "d": [1, 2], "e": 0.835})
    assert args_argv(merged) == ["--a", "1", "--c", "x", "--d", "1", "2", "--e", "0.835"]


def test_args_come_before_the_verbatim_lists(compose: Compose) -> None:
    cfg = compose(
        "+model=gpt_oss_120b",
        "+decode.args.max-running-requests=8",
        "decode.extra_args=[--max-running-requests,16]",
    )
    argv = argv_of(cfg, "decode-0")
    assert argv[-4:] == ["--max-running-requests", "8", "--max-running-requests", "16"]


def test_mocker_takes_no_sglang_server_args(compose: Compose) -> None:
    cfg = compose(
        "+model=gpt_oss_120b",
        "engine=mocker",
        "+model.args.page-size=16",
        "+decode.args.mem-fraction-static=0.8",
        "+engine.args.num-gpu-blocks=64",
    )
    argv = argv_of(cfg, "decode-0")
    assert "--page-size" not in argv and "--mem-fraction-static" not in argv
    assert argv[argv.index("--num-gpu-blocks") + 1] == "64"


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("+prefill.foo=1", "prefill.foo"),
        ("+cluster.gpu_count=8", "cluster.gpu_count"),
        ("+surprise=1", "surprise"),
    ],
)
def test_unknown_keys_added_with_plus_are_reported(override: str, key: str) -> None:
    _, unknown = compose_checked(["+model=gpt_oss_120b", override])
    assert keys(unknown) == [key]
    assert "use one of:" in unknown[0].fix


def test_env_and_args_mappings_take_any_key() -> None:
    _, unknown = compose_checked(
        ["+model=gpt_oss_120b", "+decode.env.NCCL_DEBUG=INFO", "+decode.args.anything=1"]
    )
    assert unknown == []


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("cluster.time_limit_min", 0),
        ("launcher.stop_grace_s", 0.0),
        ("launcher.signal_before_limit_s", -1),
        ("launcher.heartbeat_timeout_s", 5.0),  # no more than one heartbeat period
        ("readiness.canary_max_tokens", 0),
        ("readiness.serve_failures", -1),
        ("readiness.serve_check_s", 0.0),
        ("engine.mocker_speedup_ratio", 0.0),
        ("benchmark.duration_estimate_min", -5),
        ("aggregated.workers", -1),
        ("prefill.tp", -2),
        ("model.tp", 0),
    ],
)
def test_counts_and_timings_outside_their_domain(compose: Compose, key: str, value: float) -> None:
    cfg = compose("+model=gpt_oss_120b")
    head, _, field = key.partition(".")
    cfg = dataclasses.replace(
        cfg, **{head: dataclasses.replace(getattr(cfg, head), **{field: value})}
    )
    found = [i for i in validate(cfg) if i.key == key]
    assert len(found) == 1, validate(cfg)  # once, even where a specific rule also applies


def test_unknown_transfer_backend(compose: Compose) -> None:
    cfg = compose("+model=gpt_oss_120b", "engine.transfer_backend=nixll")
    (issue,) = [i for i in validate(cfg) if i.key == "engine.transfer_backend"]
    assert issue.found == "'nixll'" and "nixl, mooncake" in issue.fix


@pytest.mark.parametrize(
    ("override", "key", "fix"),
    [
        ("+decode.args.tp-size=8", "decode.args.tp-size", "decode.tp"),
        ("+model.args.served-model-name=x", "model.args.served-model-name", "model.served_name"),
    ],
)
def test_args_that_other_keys_own_are_refused(
    compose: Compose, override: str, key: str, fix: str
) -> None:
    issues = validate(compose("+model=gpt_oss_120b", override))
    (issue,) = [i for i in issues if i.key == key]
    assert fix in issue.fix


def test_args_names_go_without_dashes(compose: Compose) -> None:
    cfg = compose("+model=gpt_oss_120b")  # a YAML file can spell the key with dashes
    cfg = dataclasses.replace(cfg, prefill=dataclasses.replace(cfg.prefill, args={"--x": 1}))
    (issue,) = [i for i in validate(cfg) if i.key == "prefill.args.--x"]
    assert "without dashes" in issue.fix


def test_dp_attention_keeps_the_gpus_of_the_tp_group(compose: Compose) -> None:
    base = ("+model=gpt_oss_120b", "decode.tp=8", "prefill.tp=8", "decode.dp=8")
    replicas = compose(*base)
    attention = compose(*base, "decode.dp_attention=true")
    assert gpus_per_worker(replicas, "decode") == 64
    assert gpus_per_worker(attention, "decode") == 8
    assert validate(attention) == []
    argv = argv_of(attention, "decode-0")
    assert argv[argv.index("--dp-size") + 1] == "8" and "--enable-dp-attention" in argv
    assert "--enable-dp-attention" not in argv_of(replicas, "decode-0")


@pytest.mark.parametrize(
    ("overrides", "key", "problem"),
    [
        (("decode.dp_attention=true", "decode.dp=3"), "decode.dp", "must divide decode.tp=4"),
        (("decode.gpus_per_worker=8",), "decode.gpus_per_worker", "decode.tp=4 x decode.dp=1"),
        (
            ("decode.dp_attention=true", "decode.dp=2", "decode.gpus_per_worker=8"),
            "decode.gpus_per_worker",
            "dp_attention=true = 4 GPUs",
        ),
        (("decode.ep=8",), "decode.ep", "must divide the worker's 4 GPUs"),
        (("decode.ep=3",), "decode.ep", "must divide the worker's 4 GPUs"),
    ],
)
def test_dp_and_ep_rules(
    compose: Compose, overrides: tuple[str, ...], key: str, problem: str
) -> None:
    issues = validate(compose("+model=gpt_oss_120b", *overrides))
    (issue,) = [i for i in issues if i.key == key]
    assert problem in issue.problem


def test_cli_reports_unknown_keys_with_the_other_problems(tmp_path: os.PathLike[str]) -> None:
    env = {**os.environ, "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator",
            "+model=gpt_oss_120b",
            "+prefill.foo=1",
            "engine.transfer_backend=bogus",
            "dry_run=true",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert proc.returncode == 2, proc.stderr
    assert "(2 problem(s))" in proc.stderr
    assert "prefill.foo=1: not a key of WorkerGroupConfig" in proc.stderr
    assert "engine.transfer_backend='bogus'" in proc.stderr
    assert proc.stdout == ""
