"""Validation: every problem at once, each naming the key, the value found and the fix.

Rules are checked on typed configs: group selections (engine=sglang) are composed by Hydra, plain
values are set with `dataclasses.replace` (a Hydra composition costs ~80 ms; the override path is
covered by the CLI tests below and by test_config_compose).
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from orchestrator.config.schema import RootConfig
from orchestrator.config.validate import check, validate
from orchestrator.core.errors import InvalidConfig, Issue

REPO = Path(__file__).resolve().parent.parent
Compose = Callable[..., RootConfig]


def replaced(obj: Any, key: str, value: Any) -> Any:
    """A copy of the dataclass tree `obj` with the dotted `key` set to `value`."""
    head, _, rest = key.partition(".")
    new = replaced(getattr(obj, head), rest, value) if rest else value
    return dataclasses.replace(obj, **{head: new})


@pytest.fixture
def issues(compose: Compose) -> Callable[..., list[Issue]]:
    """issues({"prefill.tp": 8}, "engine=sglang") -> validate() of gpt-oss-120b so changed."""

    def run(values: Mapping[str, Any] | None = None, *groups: str) -> list[Issue]:
        cfg = compose("+model=gpt_oss_120b", *groups)
        for key, value in (values or {}).items():
            cfg = replaced(cfg, key, value)
        return validate(cfg)

    return run


@pytest.fixture
def one(issues: Callable[..., list[Issue]]) -> Callable[..., Issue]:
    """one(key, values, *groups) -> the single Issue about `key`."""

    def run(key: str, values: Mapping[str, Any] | None = None, *groups: str) -> Issue:
        all_issues = issues(values, *groups)
        found = [i for i in all_issues if i.key == key]
        assert len(found) == 1, f"expected one issue for {key}, got {all_issues}"
        return found[0]

    return run


Issues = Callable[..., list[Issue]]
One = Callable[..., Issue]


@pytest.mark.parametrize(
    ("values", "groups"),
    [
        ({}, ()),
        ({}, ("+experiment=gpt_oss_2p2d",)),
        ({"prefill.tp": 16, "decode.tp": 16}, ()),
        ({}, ("engine=mocker",)),
        ({}, ("engine=sglang", "frontend=sglang_router")),
        ({"aggregated.workers": 2}, ("deployment=aggregated",)),
        ({}, ("launcher=local",)),
        (
            {"cluster.sbatch_extra": ["--constraint=a100&ib"], "cluster.partition": "gpu"},
            ("cluster=gres",),
        ),
        ({"prefill.tp": 0, "decode.tp": 0}, ()),  # 0 = the model's TP
    ],
)
def test_valid_configs_have_no_issue(
    issues: Issues, values: dict[str, Any], groups: tuple[str, ...]
) -> None:
    assert issues(values, *groups) == []


def test_gpus_per_worker_must_divide_gpus_per_node(one: One) -> None:
    issue = one("decode.gpus_per_worker", {"cluster.gpus_per_node": 6})
    assert issue.found == "4"
    assert "cluster.gpus_per_node=6" in issue.problem
    assert "1, 2, 3, 6" in issue.fix


def test_worker_spanning_nodes_must_use_whole_nodes(one: One) -> None:
    issue = one("prefill.gpus_per_worker", {"prefill.tp": 12, "decode.tp": 12})
    assert issue.found == "12"
    assert "cluster.gpus_per_node=8" in issue.problem
    assert "16" in issue.fix


def test_gpus_per_worker_must_hold_the_tp(one: One) -> None:
    issue = one("decode.gpus_per_worker", {"decode.gpus_per_worker": 2})
    assert issue.found == "2"
    assert "decode.tp=4" in issue.problem
    assert "decode.gpus_per_worker" in issue.fix


def test_negative_gpus_per_worker_is_refused(one: One) -> None:
    issue = one("prefill.gpus_per_worker", {"prefill.gpus_per_worker": -4})
    assert issue.found == "-4" and "prefill.gpus_per_worker=0" in issue.fix


@pytest.mark.parametrize(
    ("key", "values"),
    [
        ("prefill.dp", {"prefill.dp": 0}),
        ("decode.ep", {"decode.ep": 0}),
        ("decode.tp", {"model.tp": 0}),
    ],
)
def test_parallel_sizes_must_be_positive(one: One, key: str, values: dict[str, int]) -> None:
    issue = one(key, values)
    assert issue.found == "0" and f"{key}=1" in issue.fix


def test_gpt_oss_needs_equal_prefill_and_decode_tp(one: One, issues: Issues) -> None:
    issue = one("prefill.tp", {"prefill.tp": 8})
    assert issue.found == "8 (decode.tp=4)"
    assert "gpt-oss-120b" in issue.problem
    assert "prefill.tp=4" in issue.fix and "decode.tp=8" in issue.fix
    # A model without the restriction may use different TP sizes.
    assert issues({"prefill.tp": 8, "model.requires_equal_pd_tp": False}) == []


@pytest.mark.parametrize(
    ("engine", "frontend", "needed"),
    [
        ("sglang", "dynamo", "sglang_router"),
        ("dynamo_sglang", "sglang_router", "dynamo"),
        ("mocker", "sglang_router", "dynamo"),
    ],
)
def test_engine_frontend_combinations_that_cannot_work(
    one: One, engine: str, frontend: str, needed: str
) -> None:
    issue = one("frontend.kind", {}, f"engine={engine}", f"frontend={frontend}")
    assert issue.found == frontend
    assert f"engine={engine}" in issue.problem
    assert issue.fix == f"set frontend={needed}"


@pytest.mark.parametrize("port", [0, 70000])
def test_http_port_out_of_range(one: One, port: int) -> None:
    issue = one("frontend.http_port", {"frontend.http_port": port})
    assert issue.found == str(port) and "out of range" in issue.problem and "1-65535" in issue.fix


def test_http_port_inside_the_worker_range(one: One) -> None:
    issue = one("frontend.http_port", {"frontend.http_port": 20500})
    assert issue.found == "20500"
    assert "20000-" in issue.problem
    assert "cluster.port_base" in issue.fix


@pytest.mark.parametrize(
    ("base", "groups"),
    [(80, ()), (65000, ("engine=sglang", "frontend=sglang_router")), (32000, ())],
)
def test_worker_ports_out_of_range(one: One, base: int, groups: tuple[str, ...]) -> None:
    issue = one("cluster.port_base", {"cluster.port_base": base}, *groups)
    assert issue.found == str(base) and "outside 1024-" in issue.problem
    assert "lower cluster.port_base" in issue.fix


def test_dynamo_system_ports_must_fit_a_signed_16_bit_int(one: One, issues: Issues) -> None:
    issue = one("cluster.port_base", {"cluster.port_base": 32000}, "engine=mocker")
    assert "1024-32767" in issue.problem and "16-bit" in issue.problem
    # Plain SGLang behind the router has no such limit.
    assert issues({"cluster.port_base": 40000}, "engine=sglang", "frontend=sglang_router") == []


def test_time_limit_shorter_than_readiness_deadline(one: One, issues: Issues) -> None:
    issue = one("cluster.time_limit_min", {"cluster.time_limit_min": 30})
    assert issue.found == "30"
    assert "3600 s" in issue.problem
    assert "120 s before the limit" in issue.problem  # the driver's stop signal comes early
    assert "cluster.time_limit_min>=63" in issue.fix and "readiness.timeout_s" in issue.fix
    assert issues({"cluster.time_limit_min": 30, "readiness.timeout_s": 1200.0}) == []


def test_time_limit_counts_the_benchmark_estimate(one: One) -> None:
    values = {"cluster.time_limit_min": 90, "benchmark.duration_estimate_min": 60}
    issue = one("cluster.time_limit_min", values)
    assert "60 min" in issue.problem and ">=123" in issue.fix


@pytest.mark.parametrize("group", ["prefill", "decode"])
def test_zero_workers_in_a_disaggregated_group(one: One, group: str) -> None:
    issue = one(f"{group}.workers", {f"{group}.workers": 0})
    assert issue.found == "0"
    assert "disaggregated" in issue.problem
    assert f"{group}.workers=1" in issue.fix


def test_workers_of_a_group_the_mode_does_not_use(one: One) -> None:
    issue = one("prefill.workers", {"prefill.workers": 2}, "deployment=aggregated")
    assert issue.found == "2" and "aggregated" in issue.problem and "prefill.workers=0" in issue.fix


@pytest.mark.parametrize(
    ("key", "value", "valid"),
    [
        ("engine.kind", "vllm", "dynamo_sglang, sglang, mocker"),
        ("frontend.kind", "nginx", "dynamo, sglang_router"),
        ("frontend.discovery", "consul", "auto, etcd, file"),
        ("launcher.kind", "k8s", "auto, submitit, sbatch, local"),
        ("deployment.mode", "mixed", "disaggregated, aggregated"),
        ("cluster.gpu_directive", "gpus", "gpus-per-node, gres"),
        ("cluster.ip_source", "dns", "hostname, interface"),
        ("benchmark.kind", "sweep", "none"),
        ("dry_run", "yaml", "false, true, json"),
    ],
)
def test_unknown_kinds_list_the_valid_choices(one: One, key: str, value: str, valid: str) -> None:
    issue = one(key, {key: value})
    assert value in issue.found
    assert valid in issue.fix


def test_unknown_group_option_lists_the_options(compose: Compose) -> None:
    with pytest.raises(InvalidConfig) as info:
        compose("+model=gpt_oss_120b", "engine=vllm")
    (issue,) = info.value.issues
    assert (issue.key, issue.found) == ("engine", "vllm")
    for option in ("dynamo_sglang", "mocker", "sglang"):
        assert option in issue.problem


@pytest.mark.parametrize(
    "override", ["prefil.workers=2", "prefill.workerz=2", "prefill.workers=two"]
)
def test_bad_override_names_the_key_and_value(compose: Compose, override: str) -> None:
    with pytest.raises(InvalidConfig) as info:
        compose("+model=gpt_oss_120b", override)
    (issue,) = info.value.issues
    assert f"{issue.key}={issue.found}" == override


def test_secrets_in_env_are_refused_without_echoing_them(one: One, issues: Issues) -> None:
    issue = one("engine.env.HF_TOKEN", {"engine.env": {"HF_TOKEN": "hf_s3cr3t"}})
    assert issue.found == "<hidden>"
    assert "hf_s3cr3t" not in str(issue)
    assert "export HF_TOKEN" in issue.fix
    assert issues({"engine.env": {"NCCL_DEBUG": "INFO"}}) == []


def test_local_launcher_cannot_run_more_than_one_node(one: One) -> None:
    issue = one("launcher.kind", {}, "launcher=local", "+experiment=gpt_oss_2p2d")
    assert issue.found == "local" and "2 nodes" in issue.problem
    assert "launcher=submitit" in issue.fix


def test_mocker_cannot_span_nodes(issues: Issues) -> None:
    found = issues({"prefill.tp": 16, "decode.tp": 16}, "engine=mocker")
    assert [i.key for i in found] == ["decode.tp"]
    assert found[0].found == "16" and "mocker" in found[0].problem


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("name", "my run"),
        ("launcher.job_name", "a'b"),
        ("model.name", "x$y"),
        ("launcher.job_name", "ab\n"),
        ("cluster.partition", "gpu q"),
        ("cluster.account", 'a"b'),
        ("cluster.sbatch_extra", ["--comment=a b"]),
        ("cluster.sbatch_extra", ["--constraint=`id`"]),
    ],
)
def test_values_unsafe_in_sbatch_lines_are_refused(one: One, key: str, value: Any) -> None:
    issue = one(key, {key: value})
    assert "#SBATCH" in issue.problem and "spaces" in issue.fix


def test_every_problem_is_reported_at_once(compose: Compose) -> None:
    cfg = compose("+model=gpt_oss_120b", "engine=sglang", "frontend=dynamo")
    for key, value in {
        "prefill.workers": 0,
        "decode.tp": 8,
        "frontend.http_port": 70000,
        "cluster.time_limit_min": 10,
        "decode.env": {"API_KEY": "x"},
        "launcher.kind": "k8s",
    }.items():
        cfg = replaced(cfg, key, value)
    with pytest.raises(InvalidConfig) as info:
        check(cfg)
    keys = {i.key for i in info.value.issues}
    assert keys == {
        "frontend.kind",
        "prefill.workers",
        "prefill.tp",
        "frontend.http_port",
        "cluster.time_limit_min",
        "decode.env.API_KEY",
        "launcher.kind",
    }
    message = str(info.value)
    assert f"({len(info.value.issues)} problem(s))" in message
    assert all(str(i) in message for i in info.value.issues)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_exits_2_with_every_problem_on_stderr_and_nothing_on_stdout() -> None:
    proc = run_cli(
        "+model=gpt_oss_120b",
        "dry_run=json",
        "prefill.tp=8",
        "cluster.time_limit_min=5",
        "name=a b",
    )
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr.startswith("error: invalid configuration (3 problem(s)):")
    assert "prefill.tp=8 (decode.tp=4)" in proc.stderr
    assert "cluster.time_limit_min=5" in proc.stderr
    assert "name='a b'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_unknown_override_key_exits_2() -> None:
    proc = run_cli("+model=gpt_oss_120b", "dry_run=true", "prefil.workers=2")
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr.startswith("error: invalid configuration (1 problem(s)):")
    assert "prefil.workers=2" in proc.stderr and "Key 'prefil' not in 'RootConfig'" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("overrides", "why"),
    [(("cluster=nosuch",), "composition error"), (("prefill.tp=3",), "validation error")],
)
def test_cli_debug_true_shows_the_traceback(overrides: tuple[str, ...], why: str) -> None:
    proc = run_cli("+model=gpt_oss_120b", "dry_run=true", *overrides, "debug=True")
    assert proc.returncode == 2 and "Traceback" in proc.stderr, why
    assert proc.stderr.rstrip().splitlines()[-1].startswith("  - ")  # the error still comes last


def test_no_model_selected(one: One) -> None:
    issue = one("model.path", {"model.path": ""})
    assert issue.found == "''" and "+model=gpt_oss_120b" in issue.fix


def test_cli_unknown_dry_run_value_exits_2_and_prints_no_dry_run() -> None:
    # dry_run=maybe once printed a dry-run and exited 0 (issue 23).
    proc = run_cli("+model=gpt_oss_120b", "engine=mocker", "dry_run=maybe")
    assert (proc.returncode, proc.stdout) == (2, "")
    assert "dry_run='maybe': unknown value (use one of: false, true, json)" in proc.stderr
