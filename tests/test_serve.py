"""frontend.placement=here and serve.rollover before anything runs: the rules (exit 2 with key,
value and fix), the address of this host, the plan (the frontend and etcd here, the worker job's
plan pointing at them) and the dry-run, which shows the very worker job that is submitted."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from orchestrator.api import prepare
from orchestrator.core.errors import InvalidConfig
from orchestrator.launchers import request_from_dict, request_to_dict
from orchestrator.launchers.select import Site
from orchestrator.plan.model import plan_from_dict, plan_to_dict
from tests.test_dryrun import Golden, dry_run

SLURM = Site(has_sbatch=True, allocation_job_id="")
HERE = [
    "+model=gpt_oss_120b",
    "frontend.placement=here",
    "frontend.host=10.77.0.1",
    "launcher=sbatch",
]
MOCKER = [*HERE, "engine=mocker", "cluster=testbed", "readiness.timeout_s=600"]


def problems(*overrides: str, site: Site = SLURM) -> dict[str, str]:
    """key -> 'found: problem -> fix' of every issue `prepare` raises."""
    with pytest.raises(InvalidConfig) as caught:
        prepare(list(overrides), site)
    return {i.key: f"{i.found}: {i.problem} -> {i.fix}" for i in caught.value.issues}


def test_rollover_needs_the_frontend_outside_the_job() -> None:
    found = problems("+model=gpt_oss_120b", "engine=mocker", "serve.rollover=true")
    assert "frontend.placement=here" in found["serve.rollover"]


def test_every_placement_problem_is_reported_at_once() -> None:
    found = problems(
        *MOCKER,
        "launcher=local",
        "frontend.host=127.0.0.1",
        "benchmark=aiperf",
        "frontend.discovery=file",
        "serve.rollover=true",
        "serve.rollover_lead_min=0.1",
        "cluster.time_limit_min=30",
    )
    assert set(found) >= {
        "launcher.kind",
        "frontend.host",
        "benchmark.kind",
        "frontend.discovery",
        "serve.rollover_lead_min",
    }
    assert "launcher=sbatch" in found["launcher.kind"]
    assert "10.77.0.1" in found["frontend.host"]  # the fix names the testbed's bridge
    assert "etcd" in found["frontend.discovery"]
    assert "signal_before_limit_s=120" in found["serve.rollover_lead_min"]


def test_an_unknown_placement_is_refused() -> None:
    assert (
        "use one of: job, here"
        in problems(*MOCKER, "frontend.placement=login")["frontend.placement"]
    )


def test_the_host_address_defaults_to_this_hosts_but_never_loopback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    args = [a for a in MOCKER if not a.startswith("frontend.host=")]
    monkeypatch.setattr(socket, "gethostbyname", lambda name: "192.0.2.7")
    assert prepare(args, SLURM).plan.serve.host == "192.0.2.7"  # type: ignore[union-attr]
    monkeypatch.setattr(socket, "gethostbyname", lambda name: "127.0.1.1")
    assert "a loopback address" in problems(*args)["frontend.host"]


def test_the_plan_runs_the_head_here_and_points_the_worker_job_at_it() -> None:
    plan = prepare(MOCKER, SLURM).plan
    assert [p.name for p in plan.processes] == ["etcd", "frontend"]  # auto discovery: etcd
    front = plan.processes[1].argv
    assert "--migration-limit" not in front  # 0, as in every placement (frontends/dynamo.py)
    assert plan.readiness.frontend_url == "http://{node_ip:0}:8000"  # bound to frontend.host
    serve = plan.serve
    assert serve is not None and serve.launcher == "sbatch"
    workers = serve.workers
    assert [p.name for p in workers.processes] == ["decode-0", "prefill-0"]
    assert workers.readiness.frontend_url == "http://10.77.0.1:8000"
    assert {p.env["ETCD_ENDPOINTS"] for p in workers.processes} == {"http://10.77.0.1:20000"}
    assert workers.processes[0].env["DYN_SYSTEM_HOST"] == "{node_ip:0}"  # its own node
    request = request_from_dict(serve.request)
    assert request_to_dict(request) == dict(serve.request)
    assert "--job-name=orch-gpt-oss-120b-p1d1-attached" in request.script  # type: ignore[union-attr]
    assert (
        plan_from_dict(json.loads(json.dumps(plan_to_dict(plan)))) == plan
    )  # plan.json round trip
    short = prepare([*MOCKER, "launcher.heartbeat_timeout_s=8"], SLURM).plan
    again = plan_from_dict(json.loads(json.dumps(plan_to_dict(short))))
    assert again.serve is not None and again.serve.workers.job is not None
    assert again.serve.workers.job.heartbeat_timeout_s == 8.0


def test_router_worker_jobs_register_with_this_hosts_router() -> None:
    plan = prepare(
        [
            *HERE,
            "frontend=sglang_router",
            "engine=sglang",
            "cluster=testbed",
            "readiness.timeout_s=600",
        ],
        SLURM,
    ).plan
    assert [p.name for p in plan.processes] == ["frontend"]
    assert plan.serve is not None
    assert plan.serve.workers.readiness.frontend_url == "http://10.77.0.1:8000"


def test_dry_run_shows_the_driver_here_and_the_worker_job(golden: Golden, tmp_path: Path) -> None:
    text = dry_run(tmp_path, *HERE[1:], "serve.rollover=true", "dry_run=true")
    golden("gpt_oss_here_rollover.txt", text)
    assert "=== DRIVER ON THIS HOST (detached; frontend and discovery bind 10.77.0.1) ===" in text
    assert "driver (here): <python> -m orchestrator.run.entry '{run_dir}'" in text
    assert "rollover: a copy of each worker job is submitted measured submit -> ready" in text
    worker_job = text.split("=== WORKER JOB ", 1)[1]
    assert (
        "python3 -m dynamo.sglang" in worker_job
        and "ETCD_ENDPOINTS=http://10.77.0.1:" in worker_job
    )
    assert "--- sbatch script ---" in worker_job  # the very script the driver submits
    assert "python3 -m dynamo.frontend" not in worker_job


def test_dry_run_json_carries_the_worker_jobs_request(tmp_path: Path) -> None:
    data = json.loads(dry_run(tmp_path, *HERE[1:], "dry_run=json"))
    assert data["launcher"] == "here" and data["request"]["kind"] == "here"
    assert data["slurm"]["script"] == data["serve"]["request"]["script"]
    assert [p["name"] for p in data["serve"]["workers"]["processes"]] == ["decode-0", "prefill-0"]
