"""On the Slurm testbed, autoscale=dynamo_planner end to end: Dynamo's own planner (ai-dynamo
1.6.1, `environment: virtual`, load-based `latency` target) runs next to the frontend and the
P/D mocker; a burst of 24 concurrent long requests makes it ask for a second decode, which the
run's driver carries out with an attached Slurm job; after the burst it asks for one again and
the attached decode is removed. A request loop running all along fails nothing; state.json,
`ctl status` and `ctl report` show the decisions; `ctl stop` leaves nothing."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests

from orchestrator.core.tools import install_locations
from orchestrator.frontends.dynamo_planner import PYTHON
from orchestrator.rundir.jobs import WorkerJobs
from tests import e2e

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(
        not any(p.exists() for p in install_locations(PYTHON)),
        reason="scripts/install.sh --with-planner not run (scripts/test.sh runs it)",
    ),
]

MODEL = "openai/gpt-oss-120b"
BASE = [
    "+model=gpt_oss_120b",
    "engine=mocker",
    "cluster=testbed",
    # One GPU per worker: the attached decode fits beside whatever else shares the testbed.
    "model.tp=1",
    "readiness.timeout_s=120",
    "cluster.time_limit_min=10",
    "autoscale=dynamo_planner",
    # Prefill stays at one, so the planner's GPU budget (the maxima's GPUs) is also decode's
    # ceiling: it has no per-role maximum of its own.
    "autoscale.max_prefill=1",
    "autoscale.max_decode=2",
    "autoscale.interval_s=5",
]
BURST_PROMPT = "hello " * 200  # long enough to fill the mocker's KV cache with 24 at once


@contextmanager
def burst(url: str, clients: int = 24) -> Iterator[list[str]]:
    """`clients` threads sending long chats until the block ends: 'ok' or why it failed."""
    results: list[str] = []
    done = threading.Event()

    def client() -> None:
        while not done.is_set():
            try:
                e2e.chat(url, MODEL, prompt=BURST_PROMPT, max_tokens=400, timeout=120)
                results.append("ok")
            except (AssertionError, requests.RequestException, ValueError, KeyError) as exc:
                results.append(f"failed: {exc}")

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    try:
        yield results
    finally:
        done.set()
        for t in threads:
            t.join()


def decided(run_dir: Path, decode: int, jobs: list[str]) -> dict[str, Any] | None:
    """The last planner decision once it targets `decode` decodes and was carried out (the
    attached jobs submitted meanwhile are added to `jobs`, which the fixture cancels)."""
    jobs += [j.job_id for j in WorkerJobs(run_dir).read() if j.job_id and j.job_id not in jobs]
    last = e2e.state(run_dir).get("autoscale") or {}
    done = last.get("status") == "done" and last["target"]["decode"] == decode
    return last if done else None


PLACEMENTS = {
    "job": ["launcher=submitit"],
    # The frontend, etcd and the planner on this host (the testbed's bridge), every worker in
    # worker jobs: the first one holds 1P1D, the autoscaler's decode comes in another.
    "here": ["launcher=sbatch", "frontend.placement=here", "frontend.host=10.77.0.1"],
}


@pytest.fixture
def run_dir(tmp_path: Path, slurm_testbed: object) -> Iterator[Path]:
    """The run directory; the run is stopped afterwards whatever the test did (placement=here:
    no Slurm job of its own for the slurm_jobs fixture to cancel)."""
    yield tmp_path / "run"
    if (tmp_path / "run" / "launch.json").exists():
        e2e.ctl("stop", str(tmp_path / "run"))


@pytest.mark.parametrize("placement", list(PLACEMENTS))
def test_a_burst_scales_decode_up_through_an_attached_job_and_back_down(
    placement: str, slurm_jobs: list[str], run_dir: Path
) -> None:
    port = [f"frontend.http_port={e2e.free_port()}"] if placement == "here" else []
    proc = e2e.cli([*BASE, *PLACEMENTS[placement], *port, f"run_dir={run_dir}"])
    if placement == "job":
        job_id, _ = e2e.submit_output(proc)
        slurm_jobs.append(job_id)
    assert proc.returncode == 0, proc.stderr
    url = e2e.state(run_dir)["frontend_url"]

    with e2e.request_loop(url, MODEL) as loop:
        with burst(url) as burst_results:
            up = e2e.wait_for(
                lambda: decided(run_dir, 2, slurm_jobs), timeout=150, what="decode 2 serving"
            )
        # The run's job watch records the attached job's readiness on its own tick (the decision
        # is "done" from the job's state.json, possibly a tick before).
        attached = e2e.wait_for(
            lambda: next(
                (
                    j
                    for j in WorkerJobs(run_dir).read()
                    if j.workers == ("decode-1",) and j.ready_at
                ),
                None,
            ),
            timeout=10,
            what="the attached job recorded ready",
        )
        down = e2e.wait_for(
            lambda: decided(run_dir, 1, slurm_jobs), timeout=150, what="back to decode 1"
        )
        seen = len(loop)
        e2e.wait_for(lambda: len(loop) >= seen + 3, timeout=30, what="requests after it")

    assert up["actions"] == [f"submitted attached job {attached.job_id} (decode-1)"]
    assert "load_reason=scale_up" in up["why"]  # the planner's own summary line
    assert down["actions"] == [f"removing decode-1 (job {attached.job_id})"]
    failed = [r for r in [*loop, *burst_results] if r != "ok"]
    print(
        json.dumps(
            {
                "decisions": [
                    {k: d.get(k) for k in ("decision", "target", "status", "took_s")}
                    for d in e2e.state(run_dir)["autoscale_decisions"]
                ],
                "loop_requests": len(loop),
                "burst_requests": len(burst_results),
                "failed": failed[:5],
            }
        )
    )
    assert failed == []
    e2e.wait_for(
        lambda: e2e.nothing_left(Path(attached.run_dir)),
        timeout=30,
        what="no processes of the removed decode's job",
    )
    status = e2e.ctl("status", str(run_dir)).stdout
    assert "autoscale: planner decision" in status and "decode 1 -> done" in status
    report = e2e.ctl("report", str(run_dir))
    assert report.returncode == 0, report.stderr
    page = (run_dir / "report.html").read_text()
    assert 'aria-label="decode workers serving"' in page

    stopped = e2e.ctl("stop", str(run_dir))
    assert stopped.returncode == 0, stopped.stderr
    e2e.wait_for(lambda: e2e.nothing_left(run_dir), timeout=30, what="no processes of the run")
    for job in slurm_jobs:
        e2e.wait_for(
            lambda j=job: e2e.job_state(j) == "COMPLETED",  # type: ignore[misc]
            timeout=30,
            what=f"job {job} COMPLETED",
        )
