"""Stage to node-local disk (model.stage=node_local): validation, the plan, the node step (copy,
manifest, skip on rerun, a changed file copied again, the tar path, out-of-space refusal on a
real 1 MB tmpfs), the workers' model path, and the status line. On the testbed:
tests/slurm/test_e2e_stage.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from orchestrator.core.effects import SubprocessRunner
from orchestrator.plan.build import build_plan
from orchestrator.plan.model import plan_from_dict, plan_to_dict
from orchestrator.plan.stage import StageSpec, stage_issues
from orchestrator.runtime import stage, stage_step
from orchestrator.runtime.state import cold_start_lines
from tests import e2e

ROUTER = ("+model=llama_3_3_70b", "engine=sglang", "frontend=sglang_router")


def model_dir(root: Path, size: int = 300_000) -> Path:
    (root / "sub").mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text("{}")
    (root / "model.safetensors").write_bytes(os.urandom(size))
    (root / "sub" / "tokenizer.json").write_text("{}")
    return root


def test_validation(compose: Any) -> None:
    bad = compose(
        *ROUTER,
        "model.stage=node_local",
        "model.path=meta-llama/x",
        "cluster.local_dir=relative",
        "model.stage_method=rsync",
    )
    assert [i.key for i in stage_issues(bad, loads_model=True)] == [
        "model.stage_method",
        "cluster.local_dir",
        "model.stage",
    ]
    mocker = compose(
        "+model=llama_3_3_70b", "engine=mocker", "model.stage=node_local", "model.path=/m"
    )
    assert "loads no model" in stage_issues(mocker, loads_model=False)[0].problem
    fetched = compose(*ROUTER, "model.stage=node_local", "model.path=hf:a/b", "cluster.hf_home=/hf")
    assert stage_issues(fetched, loads_model=True) == []


def test_the_plan_stages_on_the_worker_nodes(compose: Any) -> None:
    cfg = compose(
        *ROUTER,
        "model.stage=node_local",
        "model.path=/shared/m",
        "prefill.tp=8",
        "decode.tp=8",
        "decode.workers=2",
        "model.stage_method=sbcast",
    )
    plan = build_plan(cfg)
    assert plan.stage == StageSpec(
        source="/shared/m", local_dir="", name="llama-3.3-70b", method="sbcast", nodes=(0, 1, 2)
    )
    assert plan_from_dict(json.loads(json.dumps(plan_to_dict(plan)))) == plan
    staged = stage_step.use_staged(plan, "/local/%N/m", ["n1", "n2", "n3"])
    paths = {
        p.name: p.argv[p.argv.index("--model-path") + 1]
        for p in staged.processes
        if "--model-path" in p.argv
    }
    assert paths == {
        "decode-0": "/local/n1/m",
        "decode-1": "/local/n2/m",
        "prefill-0": "/local/n3/m",
    }


def run_node(*args: str) -> dict[str, Any]:
    res = subprocess.run(
        [sys.executable, "-m", "orchestrator.runtime.stage", *args],
        capture_output=True,
        text=True,
        cwd=e2e.REPO,
        check=False,
        timeout=60,
    )
    return dict(json.loads(res.stdout.splitlines()[-1]))


def test_copy_once_then_skip_then_copy_a_changed_revision(tmp_path: Path) -> None:
    src, dest = model_dir(tmp_path / "src"), tmp_path / "local" / "%N" / "m"
    first = run_node("--source", str(src), "--dest", str(dest), "--progress-dir", str(tmp_path))
    host = first["host"]
    copy = Path(str(dest).replace("%N", host))
    assert first["status"] == "staged" and first["dest"] == str(copy)
    assert (copy / "model.safetensors").read_bytes() == (src / "model.safetensors").read_bytes()
    assert (copy / "sub" / "tokenizer.json").exists() and not copy.with_name("m.partial").exists()
    progress = json.loads((tmp_path / f"{host}.json").read_text())
    assert progress["done"] == progress["total"] == first["bytes"]
    mtime = (copy / "model.safetensors").stat().st_mtime_ns
    again = run_node("--source", str(src), "--dest", str(dest))
    assert again["status"] == "skipped" and (copy / "model.safetensors").stat().st_mtime_ns == mtime
    (src / "config.json").write_text('{"revision": 2}')
    assert run_node("--source", str(src), "--dest", str(dest))["status"] == "staged"
    assert (copy / "config.json").read_text() == '{"revision": 2}'


def test_unpack_a_tar(tmp_path: Path) -> None:
    src = model_dir(tmp_path / "src")
    tar = stage_step.pack(str(src), tmp_path / "m.tar")
    out = run_node("--source", str(src), "--dest", str(tmp_path / "local" / "m"), "--tar", str(tar))
    assert out["status"] == "staged" and tar.exists()  # the driver removes the tar afterwards
    assert stage.staged_manifest(tmp_path / "local" / "m") == stage.manifest(src)


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("mount") is None, reason="needs root to mount a tmpfs"
)
def test_out_of_space_is_refused_before_writing(tmp_path: Path) -> None:
    src, small = model_dir(tmp_path / "src", size=2_000_000), tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], check=True)
    try:
        out = run_node("--source", str(src), "--dest", str(small / "m"))
        need = sum(p.stat().st_size for p in src.rglob("*") if p.is_file()) / 1e6
        assert out["error"] == (
            f"not enough space in {small}: {need:.2f} MB needed, 1.05 MB free "
            "(set cluster.local_dir to a larger disk)"
        )
        assert list(small.iterdir()) == []  # nothing written
    finally:
        subprocess.run(["umount", str(small)], check=True)


def test_status_lines() -> None:
    data = {
        "fetch": {
            "repo": "a/b@main",
            "status": "done",
            "fetched": True,
            "host": "node1",
            "seconds": 3.0,
        },
        "stage": {"method": "copy", "status": "running", "nodes": {"node1": "1.00/4.00 GB"}},
    }
    assert cold_start_lines(data) == [
        "fetch: a/b@main done (downloaded on node1, 3.0 s)",
        "stage: copy running node1 1.00/4.00 GB",
    ]


def test_the_driver_stages_and_records_progress_locally(tmp_path: Path) -> None:
    # launcher=local: one node, no srun; the same node step and state.json entries as under Slurm.
    src = model_dir(tmp_path / "src")
    spec = StageSpec(
        source=str(src), local_dir=str(tmp_path / "local"), name="m", method="copy", nodes=(0,)
    )
    records: list[dict[str, Any]] = []

    def stage_once(run_dir: Path) -> str:
        run_dir.mkdir()
        return stage_step.before_workers(
            spec,
            source=str(src),
            hosts=["localhost"],
            job_id="",
            run_dir=run_dir,
            env={},
            timeout_s=60,
            runner=SubprocessRunner(),
            record=lambda e: records.append(dict(e)),
            say=lambda _m: None,
        )

    dest = stage_once(tmp_path / "run1")
    assert dest == str(tmp_path / "local" / "orchestrator-models" / "m")
    assert records[0]["status"] == "running" and records[-1]["status"] == "done"
    assert [v.split()[0] for v in records[-1]["nodes"].values()] == ["staged"]
    stage_once(tmp_path / "run2")
    assert list(records[-1]["nodes"].values()) == ["skipped"]
