"""On the Slurm testbed with preemption configured for this test only (PreemptType=
preempt/partition_prio; the worker jobs in a `preemptible` partition with GraceTime=30, a
higher-tier `urgent` partition on the same nodes; the default partition's jobs are never
preempted): a frontend.placement=here run (Dynamo + mocker) whose worker job is preempted by an
urgent job replaces it at once, and drains it within GraceTime, while clients send chats: no
request fails but those Dynamo's frontend cancels as the old workers leave (test_e2e_rollover.py). The testbed's slurm.conf is restored afterwards, whatever happens."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from orchestrator.slurm.stepwrap import HOLD_MESSAGE
from tests import e2e
from tests.slurm.test_e2e_rollover import (
    HERE,
    MODEL,
    attached,
    cancelled_by_dynamo,
    failed,
    generations_drained,
    here_run,
    stop_and_check_nothing_left,
    unexplained,
)

__all__ = ["here_run"]  # the fixture, used by name
pytestmark = pytest.mark.slurm

GRACE_S = 30
PREEMPT_CONF = (
    "PreemptType=preempt/partition_prio",
    "PreemptMode=CANCEL",
    "PartitionName=preemptible Nodes=ALL MaxTime=INFINITE State=UP PriorityTier=1 "
    f"PreemptMode=CANCEL GraceTime={GRACE_S}",
    "PartitionName=urgent Nodes=ALL MaxTime=INFINITE State=UP PriorityTier=10 PreemptMode=OFF",
)
# Worker jobs in the preemptible partition; a 10-minute limit: no rollover during the test.
PREEMPTIBLE = [
    *(o for o in HERE if not o.startswith(("cluster.time_limit_min", "serve.rollover_lead"))),
    "cluster.partition=preemptible",
    "cluster.time_limit_min=10",
]


def write_conf(conf: Path, text: str, mtime_ns: int) -> None:
    """Replace slurm.conf atomically (Slurm clients on the shared testbed read it at every
    call) with its old mtime (scripts/slurm-testbed.sh restarts the daemons, cancelling every
    job, when slurm.conf is newer than slurmctld's pid file), then `scontrol reconfigure`:
    22.05 applies PreemptType and new partitions without a restart (checked on the testbed)."""
    tmp = conf.with_name(f".{conf.name}.preempt-test")
    tmp.write_text(text)
    os.utime(tmp, ns=(mtime_ns, mtime_ns))
    os.replace(tmp, conf)
    subprocess.run(["scontrol", "reconfigure"], check=True, timeout=30)


@contextmanager
def preemption_configured() -> Iterator[None]:
    """PREEMPT_CONF on, every existing partition marked PreemptMode=OFF (so nothing else on
    the shared testbed can be preempted); the original slurm.conf back afterwards."""
    conf = Path(os.environ.get("SLURM_CONF") or "/etc/slurm/slurm.conf").resolve()
    original, mtime_ns = conf.read_text(), conf.stat().st_mtime_ns
    lines = [
        f"{line} PreemptMode=OFF" if line.startswith("PartitionName=") else line
        for line in original.splitlines()
    ]
    try:
        write_conf(conf, "\n".join([*lines, *PREEMPT_CONF]) + "\n", mtime_ns)
        yield
    finally:
        write_conf(conf, original, mtime_ns)


def gpus_in_use(node: str) -> int:
    """GPUs allocated on `node` now (scontrol show node: AllocTRES ...,gres/gpu=N)."""
    out = subprocess.run(
        ["scontrol", "show", "node", node], capture_output=True, text=True, check=True
    ).stdout
    alloc = out.split("AllocTRES=", 1)[1].split()[0] if "AllocTRES=" in out else ""
    return next((int(t.split("=")[1]) for t in alloc.split(",") if t.startswith("gres/gpu=")), 0)


def preempt(job_id: str) -> str:
    """Submit an urgent job that needs the GPUs `job_id` holds on its node: Slurm preempts it
    (and nothing else: the other partitions' jobs are not preemptible). Its job id."""
    node = subprocess.run(
        ["squeue", "-h", "-j", job_id, "-o", "%N"], capture_output=True, text=True, check=True
    ).stdout.strip()
    need = 8 - gpus_in_use(node) + 1  # every free GPU and one of the job's
    return subprocess.run(
        [
            "sbatch",
            "--parsable",
            "--partition=urgent",
            f"--nodelist={node}",
            f"--gres=gpu:{need}",
            "--time=1",
            "--wrap=sleep 5",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def test_a_preempted_worker_job_is_replaced_and_drained_within_grace_time_losing_nothing(
    here_run: Path,
) -> None:
    port = e2e.free_port()
    with preemption_configured():
        proc = e2e.cli(
            [*PREEMPTIBLE, "engine=mocker", f"frontend.http_port={port}", f"run_dir={here_run}"]
        )
        assert proc.returncode == 0, proc.stderr
        url = e2e.state(here_run)["frontend_url"]
        first = attached(here_run)[0]
        with e2e.client_loop(url, MODEL, clients=4) as outcomes:
            e2e.wait_for(lambda: len(outcomes) >= 20, timeout=30, what="requests served")
            urgent, preempted_at = preempt(first["job_id"]), time.time()
            e2e.wait_for(
                lambda: (
                    attached(here_run)[-1].get("replaces") == first["job_id"]
                    and generations_drained(here_run, 1)
                ),
                timeout=120,
                what="the preempted job replaced, then drained",
            )
            drained_at = time.time()
            e2e.wait_for(
                lambda: sum(o.sent > drained_at for o in outcomes) >= 20,
                timeout=30,
                what="requests served by the replacement alone",
            )
        subprocess.run(["scancel", urgent], check=False)
        old, new = attached(here_run)[:2]
        # Only what Dynamo's frontend cancels as the old workers leave (test_e2e_rollover.py).
        assert unexplained(outcomes, here_run) == [], (preempted_at, failed(outcomes)[:5])
        assert new["reason"].startswith("preempted by Slurm at"), new["reason"]
        # Drained within GraceTime: Slurm had not ended the job yet.
        assert old["drain_at"] - preempted_at < GRACE_S, (old, preempted_at)
        step_log = (Path(old["run_dir"]) / "logs" / "decode-0.log").read_text()
        assert HOLD_MESSAGE in step_log  # the steps' SIGTERM was kept from the workers
        print(
            json.dumps(
                {
                    "requests": len(outcomes),
                    "failed": len(failed(outcomes)),
                    "cancelled_by_dynamo": cancelled_by_dynamo(here_run),
                    "replacement_submitted_s": round(new["submitted_at"] - preempted_at, 1),
                    "replacement_ready_s": round(new["ready_at"] - preempted_at, 1),
                    "old_drained_s": round(old["drain_at"] - preempted_at, 1),
                    "old_ended": e2e.job_state(old["job_id"]),
                }
            )
        )
        stop_and_check_nothing_left(here_run)
