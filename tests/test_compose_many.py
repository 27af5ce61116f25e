"""Composing many override lists at once (a sweep) gives exactly what composing each one alone
gives: the same typed config, or the same error naming the same key."""

from __future__ import annotations

import pytest

from orchestrator.config import load
from orchestrator.config.load import compose_checked, compose_configs
from orchestrator.config.schema import RootConfig
from orchestrator.core.errors import InvalidConfig

CASES = [
    ["+model=gpt_oss_120b"],
    ["+model=gpt_oss_120b", "prefill.workers=2", "decode.tp=8", "prefill.tp=8"],
    [
        "+model=gpt_oss_120b",
        "engine=mocker",
        "benchmark=aiperf",
        "benchmark.points=[{concurrency:2,isl:64,osl:16},{concurrency:4}]",
    ],
    ["deployment=aggregated", "+model=gpt_oss_120b", "aggregated.workers=3"],
    ["+model=gpt_oss_120b", "+decode.env.NCCL_DEBUG=INFO", "++cluster.partition=gpu"],
    ["+model=gpt_oss_120b", "~cluster.sbatch_extra", "frontend=sglang_router", "engine=sglang"],
    ["+experiment=gpt_oss_2p2d", "decode.workers=1"],
    ["+model=gpt_oss_120b", "model={name:x,path:/m}"],  # a dict value on a group is a value
    ["+model=gpt_oss_120b", "cluster.sbatch_extra=[--nodelist=node1]", "name='a,b'"],
    # errors: unknown key, wrong type, unknown option, append to an existing key
    ["+model=gpt_oss_120b", "prefill.num_worker=2"],
    ["+model=gpt_oss_120b", "prefill.workers=two"],
    ["+model=gpt_oss_120b", "cluster=nosuchsite"],
    ["+model=gpt_oss_120b", "+prefill.workers=2"],
    ["+model=nosuchmodel"],
    ["+model=gpt_oss_120b", "+prefill.foo=1"],  # composes, with the unknown key reported
]


def alone(overrides: list[str]) -> object:
    try:
        return compose_checked(overrides)
    except InvalidConfig as exc:
        return exc.issues


@pytest.mark.parametrize("order", [1, -1])
def test_many_compositions_equal_single_ones(order: int, monkeypatch: pytest.MonkeyPatch) -> None:
    cases = CASES[::order]
    expected = [alone(c) for c in cases]
    fallbacks: list[list[str]] = []

    def counted(overrides: list[str], *args: object) -> object:
        fallbacks.append(list(overrides))
        return compose_checked(overrides, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(load, "compose_checked", counted)
    together = compose_configs(cases)
    # Only the failing lists are composed again alone (for their exact error).
    composed = [isinstance(e, tuple) and isinstance(e[0], RootConfig) for e in expected]
    assert fallbacks == [c for c, ok in zip(cases, composed, strict=True) if not ok]
    assert [r.issues if isinstance(r, InvalidConfig) else r for r in together] == expected
