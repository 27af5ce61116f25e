"""`ctl scale`: the difference from the running workers, the attached plan (workers only, joined
to the run's frontend), validation before anything is submitted, status and stop of attached jobs."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from orchestrator.api import prepare
from orchestrator.core.effects import HttpResponse
from orchestrator.core.errors import InvalidConfig, OrchestratorError
from orchestrator.ctl import status, stop
from orchestrator.elastic import scale_up as scaling
from orchestrator.frontends.dynamo_attach import CANARIES_PER_WORKER, require_traffic
from orchestrator.launch import launch
from orchestrator.launchers.select import Site
from orchestrator.plan.model import plan_to_dict
from orchestrator.plan.placeholders import Bindings, bind_plan
from orchestrator.run.entry import load_plan
from orchestrator.rundir import write_json_atomic
from orchestrator.rundir.jobs import WorkerJobs
from orchestrator.runtime.state import StateFile
from orchestrator.slurm.client import SlurmClient
from tests.fake_slurm import FakeSlurm
from tests.fakes import FakeHttp

SITE = Site(has_sbatch=True, allocation_job_id="")
RUN = [
    "+model=gpt_oss_120b",
    "engine=mocker",
    "cluster=testbed",
    "launcher=sbatch",
    "wait=false",
    "readiness.timeout_s=120",
]
ETCD = "frontend.discovery=etcd"


def started_run(tmp_path: Path, slurm: FakeSlurm, *extra: str) -> Path:
    """A 1P1D run submitted to the fake Slurm, bound to node1 and ready (as its driver leaves it)."""
    run_dir = tmp_path / "run"
    assert launch(prepare([*RUN, f"run_dir={run_dir}", *extra], SITE), slurm) == 0
    job_id = StateFile(run_dir).data["job_id"]
    slurm.set_state(job_id, "RUNNING", nodes=["node1"])
    n = load_plan(run_dir).num_nodes
    bindings = Bindings(
        node_ips=tuple(f"10.77.0.{11 + i}" for i in range(n)),
        node_hosts=tuple(f"node{1 + i}" for i in range(n)),
        job_id=job_id,
        run_dir=str(run_dir),
        port_offset=0,
    )
    write_json_atomic(
        run_dir / "plan.bound.json", plan_to_dict(bind_plan(load_plan(run_dir), bindings))
    )
    StateFile(run_dir).phase("ready")
    return run_dir


def scale_up(run_dir: Path, slurm: FakeSlurm, *items: str) -> tuple[str, Path]:
    request = scaling.parse_request(items)
    scaling.check_ready(run_dir, status.run_view(run_dir, SlurmClient(slurm))[0].phase)
    job = scaling.scale_up(run_dir, request, slurm)
    return job.job_id, Path(job.run_dir)


def read_attached(run_dir: Path) -> list[dict[str, Any]]:
    """attached.json's entries, as written."""
    return [job.to_dict() for job in WorkerJobs(run_dir).read()]


def test_scale_up_submits_only_the_new_workers_joined_to_the_runs_frontend(tmp_path: Path) -> None:
    slurm = FakeSlurm()
    run_dir = started_run(tmp_path, slurm, ETCD)
    run_bound = json.loads((run_dir / "plan.bound.json").read_text())
    job_id, adir = scale_up(run_dir, slurm, "decode.workers=2")
    plan = load_plan(adir)
    assert [p.name for p in plan.processes] == ["decode-1"]  # no frontend, no etcd, no clash
    decode = plan.processes[0]
    run_decode = next(p for p in run_bound["processes"] if p["name"] == "decode-0")
    for key in ("ETCD_ENDPOINTS", "DYN_NAMESPACE", "DYN_DISCOVERY_BACKEND"):
        assert decode.env[key] == run_decode["env"][key]  # the run's real etcd address
    assert decode.env["ETCD_ENDPOINTS"].startswith("http://10.77.0.11:")
    assert plan.readiness.frontend_url == run_bound["readiness"]["frontend_url"]
    assert plan.readiness.expected == {"decode": 2, "prefill": 1}  # the frontend's totals
    assert plan.num_nodes == 1 and plan.slurm.gpus_per_node == 4
    assert plan.job is not None and plan.job.run_dir == str(run_dir)
    # The run's tiny model, not a copy: Dynamo rejects workers whose model card differs.
    assert str(run_dir / "tiny-model") in decode.argv
    assert plan.prepare == {"tiny_model_dir": str(run_dir / "tiny-model")}
    assert slurm.calls_to("sbatch") and (adir / "job.sbatch").exists()
    assert "--nodes=1" in (adir / "job.sbatch").read_text()
    (entry,) = read_attached(run_dir)
    assert entry["job_id"] == job_id and entry["workers"] == ["decode-1"]
    assert entry["run_dir"] == str(adir)
    text, _ = status.status(run_dir, SlurmClient(slurm))
    assert f"attached: job {job_id} submitted  decode-1" in text


def test_a_second_scale_up_counts_the_attached_workers(tmp_path: Path) -> None:
    slurm = FakeSlurm()
    run_dir = started_run(tmp_path, slurm, ETCD)
    scale_up(run_dir, slurm, "decode.workers=2")
    _, adir = scale_up(run_dir, slurm, "decode.workers=4", "prefill.workers=2")
    names = [p.name for p in load_plan(adir).processes]
    assert sorted(names) == ["decode-2", "decode-3", "prefill-1"]
    assert load_plan(adir).num_nodes == 2  # 3 TP4 workers: 12 GPUs on 8-GPU nodes
    assert len(read_attached(run_dir)) == 2


@pytest.mark.parametrize(
    ("items", "key", "found"),
    [
        (("decode.replicas=2",), "decode.replicas", "'decode.replicas=2'"),
        (("decode.workers=0",), "decode.workers", "'0'"),
        (("frontend.workers=3",), "frontend.workers", "'frontend.workers=3'"),
        ((), "scale", "nothing"),
    ],
)
def test_bad_scale_requests_name_the_key(items: tuple[str, ...], key: str, found: str) -> None:
    with pytest.raises(InvalidConfig) as err:
        scaling.parse_request(items)
    assert err.value.exit_code == 2
    assert err.value.issues[0].key == key and err.value.issues[0].found == found


def invalid(run_dir: Path, slurm: FakeSlurm, *items: str) -> str:
    with pytest.raises(InvalidConfig) as err:
        scale_up(run_dir, slurm, *items)
    assert err.value.exit_code == 2
    assert slurm.calls_to("sbatch") == slurm.calls_to("sbatch")[:1]  # only the run's own job
    assert not (run_dir / "attached").exists()
    return str(err.value)


def test_invalid_requests_exit_2_before_submitting(tmp_path: Path) -> None:
    slurm = FakeSlurm()
    run_dir = started_run(tmp_path, slurm, ETCD)
    assert "prefill.tp" in invalid(run_dir, slurm, "decode.workers=2", "decode.tp=8")  # gpt-oss
    assert "already has these workers" in invalid(run_dir, slurm, "decode.workers=1")


def test_an_attached_job_that_ended_holds_no_workers(tmp_path: Path) -> None:
    slurm = FakeSlurm()
    run_dir = started_run(tmp_path, slurm, ETCD)
    _, adir = scale_up(run_dir, slurm, "decode.workers=2")
    StateFile(adir).phase("failed", error="decode-1: healthy, but ...")
    assert WorkerJobs(run_dir).live() == []
    _, again = scale_up(run_dir, slurm, "decode.workers=2")
    assert [p.name for p in load_plan(again).processes] == ["decode-1"]


def test_dynamo_runs_must_use_etcd_to_scale(tmp_path: Path) -> None:
    slurm = FakeSlurm()
    run_dir = started_run(tmp_path, slurm)  # discovery=auto: the file backend on one node
    message = invalid(run_dir, slurm, "decode.workers=2")
    assert "frontend.discovery" in message and "etcd" in message


def test_a_run_that_is_not_ready_does_not_scale(tmp_path: Path) -> None:
    slurm = FakeSlurm()
    run_dir = started_run(tmp_path, slurm, ETCD)
    StateFile(run_dir).phase("starting")
    assert "the run is starting" in invalid(run_dir, slurm, "decode.workers=2")


def test_stop_stops_the_attached_jobs_first(tmp_path: Path) -> None:
    slurm = FakeSlurm()
    run_dir = started_run(tmp_path, slurm, ETCD)
    run_job = StateFile(run_dir).data["job_id"]
    job_id, adir = scale_up(run_dir, slurm, "decode.workers=2")
    slurm.set_state(run_job, "PENDING")  # both queued: cancelled at once, no driver to wait for
    StateFile(run_dir).phase("submitted")
    said = stop.stop(run_dir, timeout_s=1, client=SlurmClient(slurm))
    assert said.splitlines()[0] == f"attached job {job_id}: cancelled before start (job {job_id})"
    cancelled = [call[-1] for call in slurm.calls_to("scancel")]
    assert cancelled == [job_id, run_job]
    assert StateFile(adir).data["phase"] == "done"


METRICS = (
    'dynamo_component_requests_total{{dynamo_component="backend",dynamo_endpoint="generate"}} {n}\n'
)
CANARY_OK = {"choices": [{"message": {"content": "yes"}}], "usage": {"completion_tokens": 3}}


def resp(status: int, body: Any) -> HttpResponse:
    return HttpResponse(status, body if isinstance(body, str) else json.dumps(body))


class AttachedView:
    """What require_traffic touches on the driver."""

    def __init__(self, plan: Any, http: FakeHttp) -> None:
        self.plan, self.http, self.said = plan, http, []
        self.state = SimpleNamespace(update=lambda **_f: None)

    def say(self, message: str) -> None:
        self.said.append(message)


def attached_view(tmp_path: Path, metrics: list[int]) -> AttachedView:
    slurm = FakeSlurm()
    run_dir = started_run(tmp_path, slurm, ETCD)
    _, adir = scale_up(run_dir, slurm, "decode.workers=2")
    http = FakeHttp(
        {
            "/metrics": [resp(200, METRICS.format(n=n)) for n in metrics],
            "/v1/chat/completions": resp(200, CANARY_OK),
        }
    )
    return AttachedView(load_plan(adir), http)


def test_an_attached_dynamo_worker_is_ready_once_it_took_a_canary(tmp_path: Path) -> None:
    view = attached_view(tmp_path, [0, 0, 1])
    require_traffic(view)  # type: ignore[arg-type]
    canaries = view.http.posts()
    assert len(canaries) == 2 and canaries[0] != canaries[1]  # a new prompt each time (KV routing)


def test_an_attached_dynamo_worker_the_frontend_ignores_fails_the_job(tmp_path: Path) -> None:
    view = attached_view(tmp_path, [0])
    with pytest.raises(OrchestratorError, match="decode-1: healthy, but the run's frontend"):
        require_traffic(view)  # type: ignore[arg-type]
    assert len(view.http.posts()) == CANARIES_PER_WORKER
