"""On the Slurm testbed: frontend.placement=here runs the frontend on this host (the bridge
address 10.77.0.1 stands in for a login node) under a detached driver, and the workers in
2-minute Slurm jobs that roll over -- each replaced 90 s before its limit, drained once the copy
serves and the frontend routes to it role by role -- while CLIENTS concurrent clients (streamed
and non-streamed chats, each request's send time and outcome kept) run: no request fails (with
Dynamo: but those its frontend logs as cancelled, see CANCELLED), and every generation served some.
A worker job that is scancelled is replaced at once. `ctl stop` leaves nothing anywhere."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests import e2e
from tests.slurm.test_e2e_scale import requests_served

pytestmark = pytest.mark.slurm

MODEL = "openai/gpt-oss-120b"
HERE = [
    "+model=gpt_oss_120b",
    "cluster=testbed",
    "frontend.placement=here",
    "frontend.host=10.77.0.1",
    "serve.rollover=true",
    "cluster.time_limit_min=2",
    "serve.rollover_lead_min=1.5",
    "launcher.signal_before_limit_s=30",
    "serve.signal_hold_s=20",
    "readiness.timeout_s=60",
    "launcher=sbatch",
]
# Dynamo 1.6.1's frontend cancels the responses it still awaits from an instance the moment that
# instance leaves discovery ("Cancelled stream registrations for removed instance ... cancelled=N"),
# a draining one too; without migration each such request fails (503). With --migration-limit the
# retry collides with its own prefill, still running ("request ... is already active"), and the
# prefill router shuts the live prefill out for ~5 s: benchmarks/rollover_soak.py lost 6,059
# requests that way in 1 of 15 rollovers (README "Rollover"). So drains run with Dynamo's default
# (limit 0), and a Dynamo test tolerates exactly the requests its frontend logged as cut off by
# an instance leaving: "Cancelled stream registrations for removed instance ... cancelled=N", or
# one line per request it routed there an instant before the instance left: "instance already
# removed (tombstoned)" (seen in the soak), or the worker's own "Request rejected by worker ...
# unknown endpoint" (seen in CI: the draining worker's graceful shutdown unregisters its
# handler before the frontend has seen it leave discovery). Any other failure (a drain before
# the copy routes, a role with no instance) still fails the test.
CANCELLED = re.compile(r"Cancelled stream registrations for removed instance.*?cancelled=(\d+)")
PER_REQUEST = re.compile(
    r"Cancelling subject immediately: instance already removed \(tombstoned\)"
    r"|Request rejected by worker .*unknown endpoint"
)
DOUBLE = str(e2e.REPO / "tests" / "doubles" / "sglang_test_double.py")
CLIENTS = 8  # concurrent clients during the rollovers (benchmarks/rollover_soak.py: the long soak)


@pytest.fixture
def here_run(tmp_path: Path, slurm_testbed: object) -> Iterator[Path]:
    """The run directory; whatever the test did, the run is stopped afterwards."""
    run_dir = tmp_path / "run"
    yield run_dir
    if (run_dir / "launch.json").exists():
        e2e.ctl("stop", str(run_dir))


def attached(run_dir: Path) -> list[dict[str, Any]]:
    try:
        return list(json.loads((run_dir / "attached.json").read_text()))
    except FileNotFoundError:
        return []


def generations_drained(run_dir: Path, n: int) -> bool:
    """`n` generations replaced and drained, the newest serving."""
    entries = attached(run_dir)
    drained = [e for e in entries if e.get("removed_at") and e.get("drain_at")]
    return len(drained) >= n and bool(entries[-1].get("ready_at"))


def roll_over_twice(
    run_dir: Path, url: str, watch: Callable[[], None], newest_served: Callable[[], bool]
) -> list[e2e.Outcome]:
    """Two rollovers under CLIENTS concurrent clients (about a minute), which run on until the
    newest generation has served requests; `watch` runs while waiting."""
    with e2e.client_loop(url, MODEL, clients=CLIENTS) as results:
        e2e.wait_for(
            lambda: watch() or generations_drained(run_dir, 2),
            timeout=150,  # type: ignore[func-returns-value]
            what="two rollovers",
        )
        e2e.wait_for(
            lambda: watch() or newest_served(),
            timeout=30,  # type: ignore[func-returns-value]
            what="the newest generation serving requests",
        )
    return results


def failed(results: list[e2e.Outcome] | list[str]) -> list[str]:
    """Each failed request with its send time (and the drains' times in attached.json)."""
    return [
        f"{r.sent:.3f}: HTTP {r.status} {r.detail}" if isinstance(r, e2e.Outcome) else r
        for r in results
        if (r.status != 200 if isinstance(r, e2e.Outcome) else r != "ok")
    ]


def cancelled_by_dynamo(run_dir: Path) -> int:
    """Requests the run's Dynamo frontends cancelled as their worker left discovery."""
    logs = (run_dir / "logs").glob("frontend*.log")
    text = re.sub(r"\x1b\[[0-9;]*m", "", "".join(p.read_text(errors="replace") for p in logs))
    return sum(int(n) for n in CANCELLED.findall(text)) + len(PER_REQUEST.findall(text))


def unexplained(results: list[e2e.Outcome], run_dir: Path, before: int = 0) -> list[str]:
    """The failed requests, unless each is a 503 the frontend logged as cancelled (see above);
    `before`: the cancellations logged before these requests were sent."""
    lost = failed(results)
    if len(lost) <= cancelled_by_dynamo(run_dir) - before and all(" HTTP 503 " in f for f in lost):
        return []
    return lost


def stop_and_check_nothing_left(run_dir: Path) -> None:
    jobs = [e["job_id"] for e in attached(run_dir)]
    stopped = e2e.ctl("stop", str(run_dir))
    assert stopped.returncode == 0, stopped.stderr
    assert e2e.state(run_dir)["phase"] == "done"
    e2e.wait_for(lambda: e2e.nothing_left(run_dir), timeout=30, what="no processes of the run")
    for job in jobs:
        e2e.wait_for(
            lambda j=job: e2e.job_state(j) in ("COMPLETED", "CANCELLED"),
            timeout=30,  # type: ignore[misc]
            what=f"job {job} ended in sacct",
        )


def test_dynamo_rolls_over_twice_losing_only_what_its_frontend_cancels_and_replaces_a_lost_job(
    here_run: Path,
) -> None:
    port = e2e.free_port()
    proc = e2e.cli([*HERE, "engine=mocker", f"frontend.http_port={port}", f"run_dir={here_run}"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(here_run)]  # no job of its own: the driver runs here
    url = e2e.state(here_run)["frontend_url"]
    assert url == f"http://10.77.0.1:{port}"
    served: dict[str, int] = {}  # generation dir -> requests its decode worker took

    def watch() -> None:
        for e in attached(here_run):
            if e.get("ready_at") and not e.get("drain_at"):
                try:
                    served[e["run_dir"]] = requests_served(Path(e["run_dir"]), "decode-0")
                except (requests.RequestException, FileNotFoundError):
                    pass

    results = roll_over_twice(
        here_run, url, watch, lambda: served.get(attached(here_run)[-1]["run_dir"], 0) > 0
    )
    assert unexplained(results, here_run) == [], failed(results)[:5]
    entries = attached(here_run)
    assert [e["generation"] for e in entries[:3]] == [1, 2, 3]
    assert [e["replaces"] for e in entries[1:3]] == [entries[0]["job_id"], entries[1]["job_id"]]
    assert all(served.get(e["run_dir"], 0) > 0 for e in entries[:3]), served
    # Each old job was released only once the frontend routed to its copy's prefill and decode.
    log = (here_run / "driver.log").read_text()
    for e in entries[1:3]:
        assert (
            f"worker job {e['job_id']} takes requests from every frontend for decode, prefill: "
            f"draining worker job {e['replaces']}"
        ) in log
    span = max(r.sent for r in results) - min(r.sent for r in results)
    print(
        json.dumps(
            {
                "requests": len(results),
                "requests_per_s": round(len(results) / span, 1),
                "failed": len(failed(results)),
                "cancelled_by_dynamo": cancelled_by_dynamo(here_run),
                "served_per_generation": [served.get(e["run_dir"]) for e in entries[:3]],
            }
        )
    )

    # Slurm's stop signal (what the time limit's --signal and preemption send; no stop file):
    # the job keeps serving while the run replaces it at once, then is drained.
    signalled = entries[-1]
    before = cancelled_by_dynamo(here_run)
    with e2e.request_loop(url, MODEL) as results:
        subprocess.run(["scancel", "--signal=TERM", "--batch", signalled["job_id"]], check=True)
        e2e.wait_for(
            lambda: (
                attached(here_run)[-1].get("replaces") == signalled["job_id"]
                and generations_drained(here_run, 3)
            ),
            timeout=60,
            what="a replacement of the signalled job, then its drain",
        )
    assert unexplained(results, here_run, before) == [], failed(results)[:5]
    assert attached(here_run)[-1]["reason"] == "SIGTERM from Slurm (time limit or preemption)"
    assert e2e.state(Path(signalled["run_dir"]))["stop_signal"] == "SIGTERM"

    # A worker job that is scancelled is replaced at once and the endpoint serves again through
    # the copy. Its driver gets SIGTERM (the hold: a copy at once) and its steps too, which their
    # holding stop wrapper keeps from the workers (slurm/stepwrap.py): Slurm SIGKILLs them
    # KillWait (5 s) later, so the copy may serve before the job is gone (then it is drained)
    # or after (then it "ended unexpectedly").
    current = attached(here_run)[-1]
    subprocess.run(["scancel", current["job_id"]], check=True)
    e2e.wait_for(
        lambda: (
            attached(here_run)[-1].get("replaces") == current["job_id"]
            and attached(here_run)[-1].get("ready_at")
        ),
        timeout=60,
        what="a replacement of the cancelled job that serves",
    )
    assert e2e.chat(url, MODEL).strip()
    log = (here_run / "driver.log").read_text()
    assert f"replacing worker job {current['job_id']} (" in log
    e2e.wait_for(
        lambda: any(
            e["job_id"] == current["job_id"] and e.get("removed_at") for e in attached(here_run)
        ),
        timeout=30,
        what="the cancelled job gone",
    )
    status = e2e.ctl("status", str(here_run)).stdout
    newest = attached(here_run)[-1]
    assert f"attached: job {newest['job_id']} generation {newest['generation']} ready" in status
    assert f"replaced by job {newest['job_id']})" in status
    stop_and_check_nothing_left(here_run)


def test_router_rolls_over_twice_without_a_failed_request(here_run: Path, tmp_path: Path) -> None:
    record = tmp_path / "requests.jsonl"
    port = e2e.free_port()
    proc = e2e.cli(
        [
            *HERE,
            "frontend=sglang_router",
            "engine=sglang",
            f"engine.python={DOUBLE}",
            f"+engine.env.SGLANG_DOUBLE_RECORD={record}",
            f"frontend.http_port={port}",
            "launcher.heartbeat_timeout_s=8",
            f"run_dir={here_run}",
        ]
    )
    assert proc.returncode == 0, proc.stderr
    url = e2e.state(here_run)["frontend_url"]
    results = roll_over_twice(here_run, url, lambda: None, lambda: True)  # counted afterwards
    assert failed(results) == [], failed(results)[:5]
    # Each generation's decode took requests: the double records the port it serves on.
    by_port: dict[int, int] = {}
    for line in record.read_text().splitlines():
        entry = json.loads(line)
        if entry["mode"] == "decode":
            by_port[entry["port"]] = by_port.get(entry["port"], 0) + 1
    ports = []
    for e in attached(here_run)[:3]:
        bound = json.loads((Path(e["run_dir"]) / "plan.bound.json").read_text())
        ports.append(
            next(p["ports"]["http"] for p in bound["processes"] if p["name"] == "decode-0")
        )
    assert all(by_port.get(p, 0) > 0 for p in ports), (ports, by_port)
    print(
        json.dumps(
            {
                "requests": len(results),
                "failed": len(failed(results)),
                "cancelled_by_dynamo": cancelled_by_dynamo(here_run),
                "served_per_generation": [by_port.get(p) for p in ports],
            }
        )
    )

    # The driver here killed (SIGKILL: no teardown): the reaper ends the router, and the worker
    # job stops by itself once the run's heartbeat is older than launcher.heartbeat_timeout_s.
    jobs = [e["job_id"] for e in attached(here_run)]
    os.kill(int(e2e.state(here_run)["driver_pid"]), signal.SIGKILL)
    e2e.wait_for(lambda: e2e.nothing_left(here_run), timeout=60, what="no process of the run left")
    for job in jobs:
        e2e.wait_for(
            lambda j=job: e2e.job_state(j) in ("COMPLETED", "CANCELLED"),
            timeout=30,  # type: ignore[misc]
            what=f"job {job} ended in sacct",
        )
    status = e2e.ctl("status", str(here_run))
    assert "lost" in status.stdout, status.stdout  # the driver is gone: status says so


def test_smg_here_registers_the_worker_jobs_with_its_admin_key(
    here_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_env, secret = "ORCH_TEST_SMG_HERE_KEY", "smg-here-secret-5d1c"
    monkeypatch.setenv(key_env, secret)  # exported where the user launches (and in the job)
    proc = e2e.cli(
        [
            *HERE[:4],
            "cluster.time_limit_min=10",
            "readiness.timeout_s=60",
            "launcher=sbatch",
            "frontend=smg",
            "engine=sglang",
            f"engine.python={DOUBLE}",
            f"frontend.admin_key_env={key_env}",
            f"frontend.http_port={e2e.free_port()}",
            f"run_dir={here_run}",
        ]
    )
    assert proc.returncode == 0, proc.stderr
    url = e2e.state(here_run)["frontend_url"]
    assert requests.get(f"{url}/workers", timeout=5).status_code == 401  # the key is in force
    listed = requests.get(
        f"{url}/workers", headers={"Authorization": f"Bearer {secret}"}, timeout=5
    ).json()["workers"]
    assert sorted(w["worker_type"] for w in listed if w.get("is_healthy")) == ["decode", "prefill"]
    assert e2e.chat(url, MODEL).strip()
    for path in here_run.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".sbatch", ".log", ".out"):
            assert secret not in path.read_text(errors="replace"), path
    stop_and_check_nothing_left(here_run)
