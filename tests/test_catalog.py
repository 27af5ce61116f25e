"""The model catalog and the published layouts: a golden plan for every model and experiment,
and the DeepSeek-R1 WideEP layout reproduced flag by flag from NVIDIA Dynamo's H100 guide."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from orchestrator.config.load import CONF_DIR
from orchestrator.config.schema import RootConfig
from orchestrator.config.validate import validate
from orchestrator.launchers import materialize
from orchestrator.plan.build import build_plan, gpus_per_worker
from orchestrator.plan.model import Plan
from orchestrator.render.dryrun import render_json

Compose = Callable[..., RootConfig]
Golden = Callable[[str, str], None]
MODELS = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))
# Each experiment with the model it is written for.
EXPERIMENTS = {
    "deepseek_r1_wideep": "deepseek_r1",
    "gpt_oss_2p2d": "gpt_oss_120b",
    "gpt_oss_120b_tp16": "gpt_oss_120b",
}


def rendered(plan: Plan, overrides: tuple[str, ...]) -> str:
    request = materialize(
        plan,
        "submitit",
        python="python3",
        overrides=list(overrides),
        git_sha="abc1234",
        cwd="/work",
    )
    return render_json(plan, request)


def test_every_experiment_names_its_model() -> None:
    assert set(EXPERIMENTS) == {p.stem for p in (CONF_DIR / "experiment").glob("*.yaml")}
    assert {
        "gpt_oss_120b",
        "gpt_oss_20b",
        "deepseek_r1",
        "qwen3_235b_a22b",
        "llama_3_3_70b",
    } <= set(MODELS)


@pytest.mark.parametrize("model", MODELS)
def test_model_golden(compose: Compose, golden: Golden, model: str) -> None:
    overrides = (f"+model={model}",)
    cfg = compose(*overrides)
    assert validate(cfg) == []
    golden(f"catalog/model_{model}.json", rendered(build_plan(cfg), overrides))


@pytest.mark.parametrize("experiment", sorted(EXPERIMENTS))
def test_experiment_golden(compose: Compose, golden: Golden, experiment: str) -> None:
    overrides = (f"+model={EXPERIMENTS[experiment]}", f"+experiment={experiment}")
    cfg = compose(*overrides)
    assert validate(cfg) == []
    golden(f"catalog/experiment_{experiment}.json", rendered(build_plan(cfg), overrides))


# docs/backends/sglang/dsr1-wideep-h100.md (ai-dynamo/dynamo): the flags of each worker with
# their values; ports and addresses (--dist-init-addr, --disaggregation-bootstrap-port, --host)
# are planned, and the two flags SGLang 0.5.21 no longer takes are translated (see the
# experiment's header).
GUIDE_COMMON = (
    "--model-path /model/ --served-model-name deepseek-ai/DeepSeek-R1 --skip-tokenizer-init "
    "--disaggregation-transfer-backend nixl --nnodes 4 --dp-size 32 --enable-dp-attention "
    "--decode-log-interval 1000 --moe-a2a-backend deepep --page-size 1 --trust-remote-code "
    "--moe-dense-tp-size 1 --enable-dp-lm-head --disable-radix-cache --watchdog-timeout 1000000 "
    "--enable-two-batch-overlap --ep-num-redundant-experts 32"
)
GUIDE_ROLE = {
    "prefill": "--disaggregation-mode prefill --load-balance-method round_robin "
    "--deepep-mode normal --mem-fraction-static 0.85 --deepep-config /configs/deepep.json "
    "--ep-dispatch-algorithm dynamic --eplb-algorithm deepseek",
    "decode": "--disaggregation-mode decode --deepep-mode low_latency "
    "--mem-fraction-static 0.835 --cuda-graph-bs-decode 128",
}
PLANNED = ("--dist-init-addr", "--disaggregation-bootstrap-port", "--host", "--node-rank")


def flags(words: list[str]) -> dict[str, str]:
    """`--flag value` / bare `--flag` -> {flag: value or ''} (every flag appears once)."""
    out: dict[str, str] = {}
    for i, word in enumerate(words):
        if word.startswith("--"):
            assert word not in out, f"{word} repeated"
            nxt = words[i + 1] if i + 1 < len(words) else "--"
            out[word] = "" if nxt.startswith("--") else nxt
    return out


@pytest.mark.parametrize("role", ["prefill", "decode"])
def test_wideep_reproduces_the_published_h100_layout(compose: Compose, role: str) -> None:
    cfg = compose("+model=deepseek_r1", "+experiment=deepseek_r1_wideep")
    assert gpus_per_worker(cfg, role) == 32  # TP32 with DP32 attention: 32 GPUs, not 1024
    plan = build_plan(cfg)
    ranks = [p for p in plan.processes if p.role == role]
    assert [(p.rank, p.gpus) for p in ranks] == [(r, tuple(range(8))) for r in range(4)]
    assert len({p.node_index for p in ranks}) == 4 and plan.num_nodes == 8
    for proc in ranks:
        argv = list(proc.argv)
        assert argv[:3] == ["python3", "-m", "dynamo.sglang"]
        got = flags(argv[3:])
        want = flags(f"{GUIDE_COMMON} {GUIDE_ROLE[role]}".split())
        assert {k: got.get(k) for k in want} == want
        assert got["--tp"] == "32"  # the guide's --tp-size 32, spelled as the engine does
        assert got["--node-rank"] == str(proc.rank)
        assert all(k in got for k in PLANNED if k != "--disaggregation-bootstrap-port")
        # Nothing else from the guide's flag set, and no reasoning/tool parser it does not set.
        assert "--dyn-reasoning-parser" not in got and "--ep-size" not in got
    data = json.loads(rendered(plan, ()))
    assert data["slurm"]["nodes"] == 8
