"""Preflight on the Slurm testbed: before any worker starts, every node checks the local model
directory and the tiktoken file in one srun step; a failure names each node and path and leaves
nothing running. With the files in place the same layout becomes ready, offline.

gpt-oss-120b, TP8 prefill + TP8 decode = 2 nodes, SGLang test double workers behind
sglang-router (the model path and tiktoken directory on the testbed's shared filesystem).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests import e2e
from tests.slurm.test_e2e_router import DOUBLE, in_squeue

pytestmark = pytest.mark.slurm

BASE = [
    "+model=gpt_oss_120b",
    "frontend=sglang_router",
    "engine=sglang",
    "cluster=testbed",
    f"engine.python={DOUBLE}",
    "launcher=submitit",
    "readiness.timeout_s=120",
    "cluster.time_limit_min=10",
    "prefill.tp=8",
    "decode.tp=8",
]


def launch(jobs: list[str], tmp_path: Path, model: Path, tiktoken: Path) -> tuple[str, Path, str]:
    run_dir = tmp_path / "run"
    proc = e2e.cli(
        [*BASE, f"model.path={model}", f"cluster.tiktoken_dir={tiktoken}", f"run_dir={run_dir}"]
    )
    if proc.stdout.split():
        jobs.append(proc.stdout.split()[0])
    return (proc.stdout.split() or [""])[0], run_dir, proc.stderr + f"\n(exit {proc.returncode})"


def test_missing_model_and_tiktoken_fail_before_any_worker(
    slurm_jobs: list[str], tmp_path: Path
) -> None:
    model, tiktoken = tmp_path / "models" / "gpt-oss", tmp_path / "tiktoken"
    model.mkdir(parents=True)  # a directory without config.json or weights
    job_id, run_dir, output = launch(slurm_jobs, tmp_path, model, tiktoken)
    assert "(exit 0)" not in output
    st = e2e.wait_for(
        lambda: (s := e2e.state(run_dir)).get("phase") == "failed" and s,
        timeout=60,
        what="phase failed",
    )
    error = st["error"]
    assert "preflight failed before any worker started" in error
    nodes = dict(re.findall(r"node (\d+) \((\S+)\): ", error))
    assert sorted(nodes) == ["0", "1"]  # both nodes of the allocation were checked
    for i, host in nodes.items():
        assert (
            f"node {i} ({host}): model directory {model} (model.path) has no config.json" in error
        )
        assert f"node {i} ({host}): {tiktoken}/o200k_base.tiktoken (cluster.tiktoken_dir)" in error
    assert not (run_dir / "logs" / "prefill-0.log").exists()  # no worker was started
    e2e.wait_for(lambda: e2e.nothing_left(run_dir), timeout=30, what="no processes of the run")
    e2e.wait_for(lambda: not in_squeue(job_id), timeout=30, what=f"job {job_id} gone from squeue")


def test_with_the_files_in_place_the_run_is_ready_offline(
    slurm_jobs: list[str], tmp_path: Path
) -> None:
    model, tiktoken = tmp_path / "models" / "gpt-oss", tmp_path / "tiktoken"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    (model / "model-00001-of-00001.safetensors").write_bytes(b"\0")
    tiktoken.mkdir()
    (tiktoken / "o200k_base.tiktoken").write_text("")
    job_id, run_dir, output = launch(slurm_jobs, tmp_path, model, tiktoken)
    assert "(exit 0)" in output, output
    st = e2e.state(run_dir)
    assert st["phase"] == "ready" and len(st["nodes"]) == 2
    bound = json.loads((run_dir / "plan.bound.json").read_text())
    for proc in bound["processes"]:
        assert proc["env"]["HF_HUB_OFFLINE"] == "1"
        assert proc["env"]["TIKTOKEN_ENCODINGS_BASE"] == str(tiktoken)
    res = e2e.ctl("stop", str(run_dir))
    assert res.returncode == 0, res.stderr
    e2e.wait_for(lambda: e2e.nothing_left(run_dir), timeout=30, what="no processes of the run")
    e2e.wait_for(lambda: not in_squeue(job_id), timeout=30, what=f"job {job_id} gone from squeue")
