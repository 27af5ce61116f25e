"""Staging to node-local disk on the Slurm testbed (model.stage=node_local), sglang-router + the
SGLang test double over 3 nodes (prefill TP8, 2 decode TP8). The testbed's nodes share one
filesystem, so `cluster.local_dir=<dir>/%N` gives each node a directory of its own (%N = the
node's name) -- what a node-local disk is on a real cluster.

Copy (parallel reads of the shared directory): every node stages, every worker loads its own
node's copy; the same again: every node skips. sbcast (one tar broadcast by Slurm): every node
stages from it and the tars are gone afterwards.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from orchestrator.rundir import RunDir
from orchestrator.runtime.stage import MANIFEST
from tests import e2e

pytestmark = pytest.mark.slurm
DOUBLE = e2e.REPO / "tests" / "doubles" / "sglang_test_double.py"
# TP8 workers of the SGLang test double: one node each (its 8 GPUs), so every node stages.
STAGED = [
    "+model=llama_3_3_70b",
    "engine=sglang",
    "frontend=sglang_router",
    "cluster=testbed",
    f"engine.python={DOUBLE}",
    "launcher=submitit",
    "prefill.tp=8",
    "decode.tp=8",
]


def launch(run_dir: Path, model: Path, local_dir: Path, method: str, timeout: float = 240) -> dict:
    """Launch until ready, note the workers' model paths by host, stop; state.json + paths."""
    proc = e2e.cli(
        [
            *STAGED,
            "decode.workers=2",
            f"model.path={model}",
            "model.served_name=tiny",
            "model.stage=node_local",
            f"model.stage_method={method}",
            f"cluster.local_dir={local_dir}/%N",
            "readiness.timeout_s=120",
            "cluster.time_limit_min=10",
            f"run_dir={run_dir}",
        ],
        timeout=timeout,
    )
    try:
        assert proc.returncode == 0, proc.stderr
        st = e2e.state(run_dir)
        hosts = {name: entry["host"] for name, entry in st["processes"].items()}
        paths = {
            hosts[p.env["ORCHESTRATOR_PROCESS"]]: p.argv[p.argv.index("--model-path") + 1]
            for p in e2e.engine_processes(run_dir, "sglang.launch_server")
        }
        status = e2e.ctl("status", str(run_dir)).stdout
        return {"state": st, "paths": paths, "status": status}
    finally:
        e2e.ctl("stop", str(run_dir))


def test_copy_then_skip_then_sbcast(slurm_jobs: list[str], tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(os.urandom(5_000_000))
    nodes = {"node1", "node2", "node3"}

    first = launch(tmp_path / "copy1", model, tmp_path / "copy", "copy")
    slurm_jobs.append(first["state"]["job_id"])
    stage = first["state"]["stage"]
    assert stage["status"] == "done" and set(stage["nodes"]) == nodes
    assert all(v.startswith("staged") for v in stage["nodes"].values())
    dest = {h: tmp_path / "copy" / h / "orchestrator-models" / "llama-3.3-70b" for h in nodes}
    assert first["paths"] == {h: str(d) for h, d in dest.items()}  # each worker its node's copy
    for d in dest.values():
        assert (d / "model.safetensors").read_bytes() == (model / "model.safetensors").read_bytes()
        assert (d / MANIFEST).exists()
    assert "stage: copy done node" in first["status"]

    again = launch(tmp_path / "copy2", model, tmp_path / "copy", "copy")
    slurm_jobs.append(again["state"]["job_id"])
    assert set(again["state"]["stage"]["nodes"].values()) == {"skipped"}

    broadcast = launch(tmp_path / "sbcast", model, tmp_path / "bcast", "sbcast")
    slurm_jobs.append(broadcast["state"]["job_id"])
    stage = broadcast["state"]["stage"]
    assert stage["status"] == "done" and stage["sbcast_s"] >= 0
    assert all(v.startswith("staged") for v in stage["nodes"].values())
    for h in nodes:
        copy = tmp_path / "bcast" / h / "orchestrator-models" / "llama-3.3-70b"
        assert (copy / "model.safetensors").read_bytes() == (
            model / "model.safetensors"
        ).read_bytes()
    assert not list((tmp_path / "bcast").rglob("*.tar"))


def test_a_node_without_the_space_refuses_before_any_worker(
    slurm_jobs: list[str], tmp_path: Path
) -> None:
    """A model larger than the local disk's free space (a sparse file: 8 TiB apparent, no blocks)
    is refused on every node before anything is copied or any worker starts; nothing is left."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    with (model / "model.safetensors").open("wb") as f:
        f.truncate(2**43)
    run_dir = tmp_path / "full"
    proc = e2e.cli(
        [
            *STAGED,
            f"model.path={model}",
            "model.served_name=tiny",
            "model.stage=node_local",
            f"cluster.local_dir={tmp_path}/local/%N",
            "readiness.timeout_s=120",
            "cluster.time_limit_min=10",
            f"run_dir={run_dir}",
        ],
        timeout=240,
    )
    st = e2e.state(run_dir)
    slurm_jobs.append(st.get("job_id", ""))
    assert proc.returncode != 0
    assert st["phase"] == "failed"
    assert "not enough space" in (st.get("error") or "") + proc.stderr
    assert not [p for p in (tmp_path / "local").rglob("*") if p.is_file()]  # nothing copied
    logs = RunDir(run_dir)
    assert not [n for n in ("prefill-0", "decode-0") if logs.log(n).exists()]  # no worker started
    assert e2e.wait_for(lambda: e2e.nothing_left(run_dir), timeout=30, what="nothing left")
