"""Prefill and decode agree on page size, KV-cache dtype, model path and revision, served name and
transfer backend; a mismatch is reported before submission naming both values."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from orchestrator.config.schema import RootConfig
from orchestrator.config.validate import validate
from orchestrator.core.errors import Issue
from orchestrator.plan.consistency import DEFAULT, flag_value

Compose = Callable[..., RootConfig]


def mismatches(issues: list[Issue]) -> list[Issue]:
    return [i for i in issues if "must use the same" in i.problem]


@pytest.mark.parametrize(
    ("overrides", "key", "found", "flag"),
    [
        (
            ("+prefill.args.page-size=1", "+decode.args.page-size=64"),
            "prefill.args.page-size",
            "prefill 1, decode 64",
            "--page-size",
        ),
        (
            ("+decode.args.page-size=16",),
            "decode.args.page-size",
            f"prefill {DEFAULT}, decode 16",
            "--page-size",
        ),
        (
            ("+prefill.args.kv-cache-dtype=fp8_e4m3",),
            "prefill.args.kv-cache-dtype",
            f"prefill fp8_e4m3, decode {DEFAULT}",
            "--kv-cache-dtype",
        ),
        (
            ("decode.extra_args=[--revision,abc123]",),
            "decode.extra_args",
            f"prefill {DEFAULT}, decode abc123",
            "--revision",
        ),
        (
            ("prefill.extra_args=['--served-model-name=other']",),
            "prefill.extra_args",
            "prefill other, decode openai/gpt-oss-120b",
            "--served-model-name",
        ),
        (
            ("decode.extra_args=[--disaggregation-transfer-backend,mooncake]",),
            "decode.extra_args",
            "prefill nixl, decode mooncake",
            "--disaggregation-transfer-backend",
        ),
        (
            ("prefill.extra_args=[--model-path,/models/other]",),
            "prefill.extra_args",
            "prefill /models/other, decode openai/gpt-oss-120b",
            "--model-path",
        ),
    ],
)
def test_a_mismatch_names_both_values(
    compose: Compose, overrides: tuple[str, ...], key: str, found: str, flag: str
) -> None:
    (issue,) = mismatches(validate(compose("+model=gpt_oss_120b", *overrides)))
    assert (issue.key, issue.found) == (key, found)
    assert f"({flag})" in issue.problem


def test_the_same_value_from_different_layers_agrees(compose: Compose) -> None:
    cfg = compose(
        "+model=gpt_oss_120b",
        "+model.args.page-size=16",
        "+decode.args.page-size=16",
        "engine=sglang",
        "frontend=sglang_router",
    )
    assert mismatches(validate(cfg)) == []


def test_aggregated_has_nothing_to_agree_on(compose: Compose) -> None:
    cfg = compose("+model=gpt_oss_120b", "deployment=aggregated", "+aggregated.args.page-size=4")
    assert validate(cfg) == []


def test_the_mocker_is_checked_too(compose: Compose) -> None:
    cfg = compose("+model=gpt_oss_120b", "engine=mocker", "prefill.extra_args=[--model-name,x]")
    (issue,) = mismatches(validate(cfg))
    assert issue.found == "prefill x, decode openai/gpt-oss-120b"


def test_flag_value_is_the_last_copy() -> None:
    argv = ["--page-size", "1", "--x", "--page-size=8"]
    assert flag_value(argv, ("--page-size",)) == "8"
    assert flag_value(argv, ("--kv-cache-dtype",)) == DEFAULT
