"""Launch per node (`cluster.launch_per=node`) on the Slurm testbed: one srun step per node runs
the node agent, which starts and supervises that node's processes. The reference deployment
(Dynamo frontend + mocker) and a multi-node TP worker (sglang-router + the SGLang test double):
GPU binding, one step and one srun client per node, restart in place, a killed node step (its
processes reported lost and restarted, nothing of it left), stop."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests import e2e
from tests.slurm.test_e2e_dynamo import start as start_dynamo
from tests.slurm.test_e2e_dynamo import stop_and_check_clean
from tests.slurm.test_e2e_restart import FAST, chat_ok, healthy_again, named, start_multi_node

pytestmark = pytest.mark.slurm
PER_NODE = "cluster.launch_per=node"


def steps(job_id: str) -> dict[str, str]:
    """Step name -> step id of the job's running steps (squeue)."""
    out = subprocess.run(
        ["squeue", "-h", "-s", "-j", job_id, "-o", "%i %j"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {name: sid for sid, name in (line.split() for line in out.splitlines())}


def srun_clients(run_dir: Path) -> list[e2e.OsProcess]:
    """The run's srun client processes (srun's own helper child not counted)."""
    found = [p for p in e2e.processes_mentioning(str(run_dir)) if p.argv[:1] == ["srun"]]
    pids = {p.pid for p in found}
    return [p for p in found if _parent(p.pid) not in pids]


def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (FileNotFoundError, IndexError):
        return 0


def test_reference_deployment_per_node_binds_gpus_restarts_and_stops_clean(
    slurm_jobs: list[str], tmp_path: Path
) -> None:
    job_id, run_dir = start_dynamo(slurm_jobs, tmp_path / "run", PER_NODE, *FAST)
    st = e2e.state(run_dir)
    assert e2e.chat(st["frontend_url"], "openai/gpt-oss-120b").strip()
    assert sorted(steps(job_id)) == ["agent-node0", "batch"]  # 3 processes, one step
    assert len(srun_clients(run_dir)) == 1
    mockers = e2e.engine_processes(run_dir, "dynamo.mocker")
    gpus = {p.env["ORCHESTRATOR_PROCESS"]: p.env["CUDA_VISIBLE_DEVICES"] for p in mockers}
    assert gpus == {"decode-0": "0,1,2,3", "prefill-0": "4,5,6,7"}
    old = named(mockers, "decode-0")
    assert old is not None
    old_ns = e2e.netns_of(old.pid)
    os.kill(old.pid, signal.SIGKILL)
    healthy_again(run_dir, "decode-0")
    new = named(e2e.engine_processes(run_dir, "dynamo.mocker"), "decode-0")
    assert new is not None and new.pid != old.pid and new.argv == old.argv
    assert new.env["CUDA_VISIBLE_DEVICES"] == "0,1,2,3"
    assert e2e.netns_of(new.pid) == old_ns == f"slurm-{st['nodes'][0]}"
    assert sorted(steps(job_id)) == ["agent-node0", "batch"]  # restarted by the same agent
    # One log per process, appended to on the restart: both starts are in it.
    log = (run_dir / "logs" / "decode-0.log").read_text()
    assert log.count("Metrics background tasks started") == 2
    stop_and_check_clean(run_dir, job_id)
    assert not (run_dir / "logs" / "agent-node0.log").read_text().strip()  # no agent complaint


def test_multi_node_worker_per_node_survives_a_killed_node_step(
    slurm_jobs: list[str], tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    job_id = start_multi_node(slurm_jobs, run_dir, PER_NODE)
    assert sorted(steps(job_id)) == ["agent-node0", "agent-node1", "agent-node2", "batch"]
    assert len(srun_clients(run_dir)) == 3
    doubles = e2e.engine_processes(run_dir, "sglang.launch_server")
    rank1 = named(doubles, "decode-0-rank1")
    assert rank1 is not None and e2e.netns_of(rank1.pid) == "slurm-node2"
    # Kill node 1's whole step: its agent and decode-0-rank1 with it.
    subprocess.run(["scancel", "--signal=KILL", steps(job_id)["agent-node1"]], check=True)
    st = healthy_again(run_dir, "decode-0")
    entry = st["processes"]["decode-0-rank1"]["restarts"][0]
    assert entry["cause"] == "decode-0-rank1" and entry["exit_code"] == 137
    log = (run_dir / "logs" / "decode-0-rank1.log").read_text()
    assert "decode-0-rank1 lost: node agent step on node2 ended (srun exit 137)" in log
    assert e2e.state(run_dir)["processes"]["prefill-0"].get("restarts", []) == []
    doubles = e2e.engine_processes(run_dir, "sglang.launch_server")
    new1 = named(doubles, "decode-0-rank1")
    assert new1 is not None and new1.pid != rank1.pid and e2e.netns_of(new1.pid) == "slurm-node2"
    assert rank1.pid not in {p.pid for p in e2e.processes_mentioning(str(run_dir))}
    assert sorted(steps(job_id)) == ["agent-node0", "agent-node1", "agent-node2", "batch"]
    assert chat_ok(st["frontend_url"])
    res = e2e.ctl("stop", str(run_dir))
    assert res.returncode == 0, res.stderr
    assert e2e.state(run_dir)["phase"] == "done"
    e2e.wait_for(lambda: e2e.nothing_left(run_dir), timeout=30, what="no processes of the run")
    e2e.wait_for(lambda: e2e.job_state(job_id) == "COMPLETED", timeout=30, what="COMPLETED")
