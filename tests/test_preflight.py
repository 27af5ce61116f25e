"""Offline clusters: hub-offline variables for a local model, the tiktoken encoding from a local
copy, and the per-node preflight (model directory, container image, tiktoken file)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.config.schema import RootConfig
from orchestrator.config.validate import validate
from orchestrator.core.errors import OrchestratorError
from orchestrator.plan.build import build_plan
from orchestrator.plan.model import plan_from_dict, plan_to_dict
from orchestrator.plan.preflight import PathCheck, host_path
from orchestrator.runtime import preflight

Compose = Callable[..., RootConfig]


def model_dir(root: Path, *, config: bool = True, weights: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    if config:
        (root / "config.json").write_text("{}")
    if weights:
        (root / "model-00001-of-00002.safetensors").write_bytes(b"\0")
    return root


def test_local_model_gets_hub_offline_and_a_model_dir_check(compose: Compose) -> None:
    plan = build_plan(compose("+model=llama_3_3_70b", "model.path=/models/llama"))
    for proc in plan.processes:
        if proc.role != "infra":
            assert proc.env["HF_HUB_OFFLINE"] == "1" and proc.env["TRANSFORMERS_OFFLINE"] == "1"
    (check,) = plan.preflight
    assert (check.kind, check.path, check.nodes) == ("model_dir", "/models/llama", (0,))
    assert plan_from_dict(json.loads(json.dumps(plan_to_dict(plan)))) == plan


def test_hub_ids_stay_online(compose: Compose) -> None:
    plan = build_plan(compose("+model=llama_3_3_70b"))
    assert plan.preflight == () and "HF_HUB_OFFLINE" not in plan.process("decode-0").env


def test_offline_gpt_oss_needs_a_local_tiktoken(compose: Compose) -> None:
    (issue,) = [
        i
        for i in validate(compose("+model=gpt_oss_120b", "model.path=/m/gpt"))
        if i.key == "cluster.tiktoken_dir"
    ]
    assert "o200k_base" in issue.problem and "o200k_base.tiktoken" in issue.fix
    cfg = compose("+model=gpt_oss_120b", "model.path=/m/gpt", "cluster.tiktoken_dir=/shared/tk")
    assert validate(cfg) == []
    plan = build_plan(cfg)
    assert plan.process("frontend").env["TIKTOKEN_ENCODINGS_BASE"] == "/shared/tk"
    assert plan.process("prefill-0").env["TIKTOKEN_ENCODINGS_BASE"] == "/shared/tk"
    kinds = {c.kind: c.path for c in plan.preflight}
    assert kinds == {"model_dir": "/m/gpt", "tiktoken": "/shared/tk/o200k_base.tiktoken"}


def test_relative_tiktoken_dir_is_refused(compose: Compose) -> None:
    issues = validate(compose("+model=gpt_oss_120b", "cluster.tiktoken_dir=tk"))
    assert [i.key for i in issues] == ["cluster.tiktoken_dir"]


def test_container_paths_are_checked_at_their_host_source(compose: Compose) -> None:
    cfg = compose(
        "+model=llama_3_3_70b",
        "model.path=/model/llama",
        "cluster.container_image=/i/d.sqsh",
        "cluster.container_mounts=[/lustre/models:/model]",
    )
    assert host_path(cfg, "/model/llama") == "/lustre/models/llama"
    kinds = {c.kind: c.path for c in build_plan(cfg).preflight}
    assert kinds == {"model_dir": "/lustre/models/llama", "container_image": "/i/d.sqsh"}


def test_the_mocker_does_not_load_the_model(compose: Compose) -> None:
    plan = build_plan(compose("+model=llama_3_3_70b", "model.path=/x", "engine=mocker"))
    assert plan.preflight == ()


@pytest.mark.parametrize(
    ("config", "weights", "problem"),
    [(True, True, ""), (False, True, "has no config.json"), (True, False, "has no weights")],
)
def test_model_dir_check(tmp_path: Path, config: bool, weights: bool, problem: str) -> None:
    root = model_dir(tmp_path / "m", config=config, weights=weights)
    found = preflight.check_path(
        PathCheck(kind="model_dir", path=str(root), nodes=(0,), key="model.path")
    )
    assert (problem in found) if problem else found == ""


def test_local_failures_name_node_and_path(tmp_path: Path) -> None:
    checks = [
        PathCheck(kind="model_dir", path=str(tmp_path / "no"), nodes=(0,), key="model.path"),
        PathCheck(
            kind="tiktoken",
            path=str(tmp_path / "o.tiktoken"),
            nodes=(0, 1),
            key="cluster.tiktoken_dir",
        ),
    ]
    with pytest.raises(OrchestratorError) as err:
        preflight.run_local(checks)
    text = str(err.value)
    assert (
        f"node 0 (localhost): model directory {tmp_path / 'no'} (model.path) does not exist" in text
    )
    assert f"{tmp_path / 'o.tiktoken'} (cluster.tiktoken_dir) is not a file" in text


def test_node_report_parsing_ignores_srun_chatter() -> None:
    out = 'srun: Step created\n{"host": "node2", "failures": ["x"]}\n{"host": "node1", "failures": []}\n'
    assert preflight.parse_report(out) == {"node2": ["x"], "node1": []}
    with pytest.raises(OrchestratorError, match=r"node 1 \(node2\): x"):
        preflight.raise_failures(preflight.parse_report(out), ["node1", "node2"])


def test_main_reports_this_node(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    check = PathCheck(kind="container_image", path=str(tmp_path / "img"), nodes=(1,), key="k")
    payload = json.dumps([dataclasses.asdict(check)])
    preflight.main(["--hosts", f"other,{socket.gethostname()}", "--checks", payload])
    line = json.loads(capsys.readouterr().out)
    assert line["host"] == socket.gethostname() and "is not a file" in line["failures"][0]
