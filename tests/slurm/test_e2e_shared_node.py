"""Two small deployments share one node of the testbed (cluster=testbed is not exclusive): each
job asks Slurm only for the 4 GPUs it uses, both are ready at the same time on node1, each
frontend listens on a port of its own job's block, both serve, and each job's workers run on
the GPUs Slurm gave that job."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.core.effects import SubprocessRunner
from orchestrator.slurm.client import SlurmClient
from tests import e2e

pytestmark = pytest.mark.slurm

MODEL = "openai/gpt-oss-120b"
FOUR_GPUS = [
    "+model=gpt_oss_120b",
    "engine=mocker",
    "cluster=testbed",
    "launcher=submitit",
    "deployment=aggregated",
    "aggregated.workers=1",
    "readiness.timeout_s=60",
    "cluster.time_limit_min=5",
    "cluster.sbatch_extra=['--nodelist=node1']",
]


def test_two_four_gpu_deployments_share_a_node(slurm_jobs: list[str], tmp_path: Path) -> None:
    runs = []
    for name in ("a", "b"):
        proc = e2e.cli([*FOUR_GPUS, f"run_dir={tmp_path / name}"])
        slurm_jobs.extend(proc.stdout.split()[:1])
        assert proc.returncode == 0, proc.stderr  # returns once ready: "a" still serves
        runs.append(e2e.submit_output(proc))
    states = [e2e.state(run_dir) for _, run_dir in runs]
    assert [st["phase"] for st in states] == ["ready", "ready"]
    assert [st["nodes"] for st in states] == [["node1"], ["node1"]]
    jobs = SlurmClient(SubprocessRunner()).states([job for job, _ in runs])  # squeue: live
    assert [j.state for j in jobs.values()] == ["RUNNING", "RUNNING"]
    urls = [st["frontend_url"] for st in states]
    assert urls[0] != urls[1]
    for (_, run_dir), url, out in zip(runs, urls, ("a", "b"), strict=True):
        assert url == f"http://{states[0]['node_ips'][0]}:{e2e.frontend_port(run_dir)}"
        assert e2e.chat(url, MODEL).strip(), out
    gpus = [
        {p.env["CUDA_VISIBLE_DEVICES"] for p in e2e.engine_processes(d, "dynamo.mocker")}
        for _, d in runs
    ]
    assert sorted(g.pop() for g in gpus) == ["0,1,2,3", "4,5,6,7"]  # Slurm's ids of each job
    for job, run_dir in runs:
        assert e2e.ctl("stop", str(run_dir)).returncode == 0
        e2e.wait_for(lambda d=run_dir: e2e.nothing_left(d), timeout=30, what="run stopped")
        e2e.wait_for(lambda j=job: e2e.job_state(j) == "COMPLETED", timeout=30, what="COMPLETED")
