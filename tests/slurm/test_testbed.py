"""Acceptance checks for the Slurm testbed (reference slurm-testbed.md §11: 1, 2, 4, 5 + sacct).

Needs a running testbed: ``scripts/slurm-testbed.sh up`` (3 nodes x 8 fake GPUs).
Every wait polls a condition against a deadline; no fixed sleeps stand in for readiness.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.slurm

TERMINAL = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "PREEMPTED",
    "BOOT_FAIL",
    "DEADLINE",
}


def run(cmd: list[str], timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def sbatch(script: str, workdir: Path, *args: str) -> str:
    path = workdir / f"job-{uuid.uuid4().hex[:8]}.sh"
    path.write_text("#!/bin/bash\nset -euo pipefail\n" + textwrap.dedent(script))
    out = run(
        [
            "sbatch",
            "--parsable",
            "-D",
            str(workdir),
            "-o",
            str(workdir / "slurm-%j.out"),
            "-t",
            "5",
            *args,
            str(path),
        ]
    ).stdout
    return out.strip().split(";")[0]


def job_state(job_id: str) -> str:
    proc = run(["scontrol", "show", "job", "-o", job_id], check=False)
    for field in proc.stdout.split():
        if field.startswith("JobState="):
            return field.split("=", 1)[1]
    return "UNKNOWN"


def wait_job_end(job_id: str, timeout: float = 60) -> str:
    return wait_for(
        lambda: (s := job_state(job_id)) in TERMINAL and s,
        timeout,
        f"job {job_id} to finish (state {job_state(job_id)})",
    )


def job_output(workdir: Path, job_id: str) -> str:
    return (workdir / f"slurm-{job_id}.out").read_text()


def nodes_idle(nodes: tuple[str, ...]) -> bool:
    out = run(["sinfo", "-h", "-N", "-o", "%N %T"], check=False).stdout
    states = dict(line.split() for line in out.splitlines() if len(line.split()) == 2)
    return all(states.get(n) == "idle" for n in nodes)


def need_nodes(testbed, count: int) -> None:
    if len(testbed.nodes) < count:
        pytest.skip(f"needs {count} nodes, testbed has {len(testbed.nodes)}")


def gpu_count() -> int:
    out = run(["sinfo", "-h", "-N", "-o", "%G"]).stdout.split()
    return int(out[0].split(":")[-1].split("(")[0])


def test_three_nodes_distinct_hosts_and_gpus(slurm_testbed, tmp_path):
    """§11.1: sbatch -N3 --gpus-per-node=8; each srun task sees its host and GPUs 0-7."""
    need_nodes(slurm_testbed, 3)
    gpus = gpu_count()
    job = sbatch(
        """
        echo "BATCH $(hostname) ${CUDA_VISIBLE_DEVICES:-none}"
        srun -l bash -c 'echo "TASK $SLURM_NODEID $(hostname) ${CUDA_VISIBLE_DEVICES:-none}"'
        """,
        tmp_path,
        "-N3",
        f"--gpus-per-node={gpus}",
    )
    assert wait_job_end(job) == "COMPLETED", job_output(tmp_path, job)
    out = job_output(tmp_path, job)
    all_gpus = ",".join(str(i) for i in range(gpus))
    tasks = [line.split()[-3:] for line in out.splitlines() if "TASK" in line]
    assert len(tasks) == 3, out
    assert sorted(t[0] for t in tasks) == ["0", "1", "2"], out
    hosts = {t[1] for t in tasks}
    assert hosts == set(slurm_testbed.nodes[:3]), out
    assert all(t[2] == all_gpus for t in tasks), out
    assert f"BATCH {slurm_testbed.nodes[0]} {all_gpus}" in out


def test_concurrent_exact_steps_get_disjoint_gpus(slurm_testbed, tmp_path):
    """§11.2: two concurrent `srun --exact` steps on node1 get GPUs 0-3 and 4-7.

    Each step waits (with a deadline) until both steps are running, so a serialised
    step shows up as a timeout rather than passing by luck.
    """
    need_nodes(slurm_testbed, 3)
    if gpu_count() != 8:
        pytest.skip("needs 8 GPUs per node")
    node = slurm_testbed.nodes[0]
    sync = tmp_path / "sync"
    sync.mkdir()
    step = (
        f"touch {sync}/$SLURM_STEP_ID; end=$((SECONDS+20)); "
        f'while [ "$(ls {sync} | wc -l)" -lt 2 ] && [ $SECONDS -lt $end ]; do sleep 0.05; done; '
        f'if [ "$(ls {sync} | wc -l)" -ge 2 ]; then r=concurrent; else r=serialised; fi; '
        'echo "STEP $SLURM_STEP_ID $(hostname) $CUDA_VISIBLE_DEVICES $r"'
    )
    job = sbatch(
        f"""
        srun --exact -N1 -n1 -w {node} --gpus-per-node=4 bash -c '{step}' &
        srun --exact -N1 -n1 -w {node} --gpus-per-node=4 bash -c '{step}' &
        wait
        """,
        tmp_path,
        "-N3",
        "--gpus-per-node=8",
        "--exclusive",
    )
    assert wait_job_end(job, timeout=90) == "COMPLETED", job_output(tmp_path, job)
    out = job_output(tmp_path, job)
    steps = [line.split() for line in out.splitlines() if line.startswith("STEP")]
    assert len(steps) == 2, out
    assert {s[2] for s in steps} == {node}, out
    assert sorted(s[3] for s in steps) == ["0,1,2,3", "4,5,6,7"], out
    assert all(s[4] == "concurrent" for s in steps), out


TCP_PROG = r"""
import os, socket, sys, time
rank = int(os.environ["SLURM_PROCID"])
peer_name = sys.argv[1]
if rank == 0:
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", 29500))
    srv.listen(1)
    srv.settimeout(30)
    conn, addr = srv.accept()
    data = conn.recv(100).decode()
    conn.sendall(b"pong")
    print(f"RANK0 host={socket.gethostname()} peer={addr[0]} got={data}", flush=True)
else:
    ip = socket.gethostbyname(peer_name)
    deadline = time.monotonic() + 30
    while True:
        try:
            c = socket.create_connection((peer_name, 29500), timeout=2)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    c.sendall(b"ping")
    reply = c.recv(100).decode()
    print(f"RANK1 host={socket.gethostname()} resolved={ip} reply={reply}", flush=True)
"""


def test_cross_node_tcp_by_hostname(slurm_testbed, tmp_path):
    """§11.4: rank 0 listens on node1:29500, rank 1 on node2 connects to `node1` by name."""
    need_nodes(slurm_testbed, 2)
    n1, n2 = slurm_testbed.nodes[:2]
    prog = tmp_path / "tcp.py"
    prog.write_text(TCP_PROG)
    out = run(
        ["srun", "-N2", "-n2", "-w", f"{n1},{n2}", "-t", "2", sys.executable, str(prog), n1],
        timeout=90,
    ).stdout
    ip1 = socket.gethostbyname(n1)  # the host resolves node names too (/etc/hosts lines)
    ip2 = socket.gethostbyname(n2)
    assert ip1.startswith("10.77.0.") and ip2.startswith("10.77.0.") and ip1 != ip2
    assert f"RANK0 host={n1} peer={ip2} got=ping" in out, out
    assert f"RANK1 host={n2} resolved={ip1} reply=pong" in out, out


def _procs_with(token: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if token.encode() in cmdline:
            pids.append(int(entry.name))
    return pids


def test_scancel_leaves_no_processes(slurm_testbed, tmp_path):
    """§11.5: scancel of a 3-node job whose tasks start background, TERM-ignoring,
    setsid and double-forked children leaves no process behind; nodes return to idle."""
    need_nodes(slurm_testbed, 3)
    tok = f"tbleak{uuid.uuid4().hex[:10]}"
    ready = tmp_path / "ready"
    ready.mkdir()
    task = tmp_path / "task.sh"
    task.write_text(
        textwrap.dedent(
            f"""\
            #!/bin/bash
            (exec -a {tok}-bg sleep 1000) &
            (trap '' TERM; exec -a {tok}-noterm sleep 1000) &
            setsid bash -c 'exec -a {tok}-setsid sleep 1000' &
            ( (exec -a {tok}-dfork sleep 1000) & )
            touch {ready}/$SLURM_NODEID
            exec -a {tok}-main sleep 1000
            """
        )
    )
    task.chmod(0o755)
    job = sbatch(f"srun bash {task}\n", tmp_path, "-N3", "--ntasks-per-node=1")
    per_node = 5
    try:
        wait_for(lambda: len(list(ready.iterdir())) == 3, 60, "all 3 tasks to start")
        wait_for(lambda: len(_procs_with(tok)) >= 3 * per_node, 30, f"{3 * per_node} job processes")
        assert job_state(job) == "RUNNING"
    finally:
        run(["scancel", job])
    state = wait_job_end(job, timeout=60)
    assert state == "CANCELLED", state
    wait_for(lambda: not _procs_with(tok), 30, "all job processes to be killed")
    wait_for(lambda: nodes_idle(slurm_testbed.nodes[:3]), 60, "nodes to return to idle")


def sacct_state(job_id: str) -> str | None:
    proc = run(["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "JobID,State"], check=False)
    for line in proc.stdout.splitlines():
        jid, _, state = line.partition("|")
        if jid == job_id:
            return state.split()[0] if state else None
    return None


def test_sacct_reports_final_states(slurm_testbed, tmp_path):
    """Accounting (slurmdbd): sacct shows COMPLETED for a finished job and FAILED for exit 3."""
    ok = sbatch("srun hostname\n", tmp_path, "-N1")
    bad = sbatch("exit 3\n", tmp_path, "-N1")
    assert wait_job_end(ok) == "COMPLETED"
    assert wait_job_end(bad) == "FAILED"
    wait_for(lambda: sacct_state(ok) == "COMPLETED", 20, f"sacct COMPLETED for job {ok}")
    wait_for(lambda: sacct_state(bad) == "FAILED", 20, f"sacct FAILED for job {bad}")


def test_host_clients_need_no_slurm_conf(slurm_testbed):
    """/etc/slurm/slurm.conf points at the testbed: clients work without SLURM_CONF."""
    env = {k: v for k, v in os.environ.items() if k != "SLURM_CONF"}
    if not Path("/etc/slurm/slurm.conf").exists():
        pytest.skip("no /etc/slurm/slurm.conf on this host")
    out = subprocess.run(
        ["srun", "-N1", "true"], check=False, env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
