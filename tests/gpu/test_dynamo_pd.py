"""The seed's own stack on a real GPU: `python3 -m dynamo.frontend` with `python3 -m
dynamo.sglang` prefill and decode workers moving the KV cache over NIXL (engine=dynamo_sglang
frontend=dynamo), on one GPU through the orchestrator: greedy answers equal those of an
aggregated Dynamo deployment of the same model, token for token; stop leaves nothing and gives
the GPU's memory back. Dynamo 1.4.2 with SGLang 0.5.16 (the newest pair whose torch, 2.11, is the
GPU machine's): its wheelhouse is scripts/wheelhouse/dynamo-1.4.2.toml."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import e2e
from tests.gpu import deploy

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("dynamo") is None, reason="Dynamo is not installed (its wheelhouse)"
)
STACK = ("engine=dynamo_sglang", "frontend=dynamo", *deploy.SGLANG_ARGS)


@pytest.fixture(scope="module")
def pair(
    tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[deploy.Deployment, deploy.Deployment]]:
    """An aggregated Dynamo worker, then 1P1D, on GPU 0."""
    with deploy.pd_and_aggregated(tiny_llama, STACK, tmp_path_factory.mktemp("dynamo")) as pair:
        yield pair


def test_dynamo_pd_answers_equal_aggregated_token_for_token(
    pair: tuple[deploy.Deployment, deploy.Deployment],
) -> None:
    deploy.assert_same_answers(*pair)


def test_dynamo_stop_leaves_nothing_and_frees_the_gpu(
    pair: tuple[deploy.Deployment, deploy.Deployment],
) -> None:
    idle = 0  # nothing else runs on the test GPU
    took = [pair[0].ctl_stop(), pair[1].stop()]  # `ctl stop`, and Ctrl-C
    for dep in pair:
        assert dep.state()["phase"] == "done" and dep.proc.returncode == 0
        assert e2e.nothing_left(dep.run_dir)
    e2e.wait_for(
        lambda: deploy.gpu_memory_used_mib()[0] <= idle + 64,
        timeout=60,
        what="GPU memory back to idle",
    )
    print(f"stop: {took[0]:.1f} s (P/D), {took[1]:.1f} s (aggregated)")
