"""Fetch once on the Slurm testbed: `model.path=hf:test-org/tiny@v1` with the mocker, the Hub being
the local test double (tests/doubles/hub_test_double.py on the bridge address, HF_ENDPOINT).
The first run downloads the snapshot on node 0 into cluster.hf_home before any worker starts and
every process gets HF_HOME; a second run finds it complete and asks the Hub nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests import e2e
from tests.test_fetch import COMMIT, requests_seen, serve_hub

pytestmark = pytest.mark.slurm
BRIDGE = "10.77.0.1"  # the host as the testbed's nodes reach it (slurm-testbed.md)


def launch(run_dir: Path, hf_home: Path) -> dict:
    proc = e2e.cli(
        [
            "+model=gpt_oss_120b",
            "engine=mocker",
            "cluster=testbed",
            "launcher=submitit",
            "model.path=hf:test-org/tiny@v1",
            f"cluster.hf_home={hf_home}",
            "readiness.timeout_s=120",
            "cluster.time_limit_min=10",
            f"run_dir={run_dir}",
        ]
    )
    try:
        assert proc.returncode == 0, proc.stderr
        return e2e.state(run_dir)
    finally:
        e2e.ctl("stop", str(run_dir))


def test_fetched_once_before_the_workers_then_found_in_the_cache(
    slurm_jobs: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hf_home = tmp_path / "hf"
    with serve_hub(tmp_path, host=BRIDGE, delay_s=0.0) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub["url"])  # inherited by the job (sbatch exports all)
        first = launch(tmp_path / "first", hf_home)
        slurm_jobs.append(first["job_id"])
        fetched = first["fetch"]
        assert (fetched["status"], fetched["fetched"], fetched["commit"]) == ("done", True, COMMIT)
        assert fetched["host"] == first["nodes"][0]  # node 0 of the job
        snapshot = hf_home / "hub" / "models--test-org--tiny" / "snapshots" / COMMIT
        assert (snapshot / "model.safetensors").read_bytes() == (
            hub["files"] / "model.safetensors"
        ).read_bytes()
        # Before any worker: the fetch ended before the first process started.
        started = min(p["started_at"] for p in first["processes"].values())
        assert fetched["finished_at"] <= started
        # Every process reads the shared cache, offline (the plan the driver ran).
        plan = json.loads((tmp_path / "first" / "plan.json").read_text())
        for proc in plan["processes"]:
            if proc["role"] != "infra":
                assert (
                    proc["env"]["HF_HOME"] == str(hf_home) and proc["env"]["HF_HUB_OFFLINE"] == "1"
                )
        seen = len(requests_seen(hub["record"]))

        second = launch(tmp_path / "second", hf_home)
        slurm_jobs.append(second["job_id"])
        assert (second["fetch"]["status"], second["fetch"]["fetched"]) == ("done", False)
        assert len(requests_seen(hub["record"])) == seen  # the Hub was not asked again
