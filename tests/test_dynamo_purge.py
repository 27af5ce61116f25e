"""A dead Dynamo worker leaves discovery as soon as the driver sees its exit (frontends/
dynamo_purge.py): its etcd lease is revoked, or its discovery files deleted, before the restart;
with fake processes, HTTP and clock. Bodies and key layouts as Dynamo 1.6.1 and etcd 3.4 write
them (read from a running deployment)."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

from orchestrator.core.effects import HttpResponse
from orchestrator.frontends.dynamo_purge import attach_purge, delete_files, instance_ids, revoke
from orchestrator.run.driver import Driver
from tests.fakes import FakeHttp
from tests.test_runtime_units import READY, make_driver, resp

# One line of a mocker's /metrics (its system port), labelled with its instance id = lease id.
METRICS = (
    'dynamo_component_requests_total{dynamo_component="backend",dynamo_endpoint="generate",'
    'dynamo_namespace="dynamo",worker_id="%s"} 3\ndynamo_component_uptime_seconds'
    '{worker_id="%s"} 29.3\n'
)
LEASE = "24f9a2507bfbdf15"


def metrics(instance: str) -> HttpResponse:
    return resp(200, METRICS % (instance, instance))


def metrics_url(driver: Driver, name: str) -> str:
    probe = driver.plan.process(name).health
    assert probe is not None
    return probe.url.replace("/health", "/metrics")


def test_instance_ids_are_the_worker_id_labels() -> None:
    assert instance_ids(METRICS % (LEASE, LEASE)) == [LEASE]
    assert instance_ids("dynamo_engine_request 0\n") == []


def test_revoke_posts_the_lease_in_decimal_and_accepts_an_expired_one() -> None:
    http = FakeHttp(
        {
            ("POST", "http://10.0.0.1:20000/v3/lease/revoke"): [
                resp(200, {"header": {"revision": "32"}}),
                resp(404, {"error": "etcdserver: requested lease not found", "code": 5}),
            ]
        }
    )
    endpoints = "http://10.0.0.1:20000,http://10.0.0.2:20000"
    assert revoke(http, endpoints, LEASE) == f"etcd lease {LEASE} revoked"
    assert http.posts() == [{"ID": "2664339121127546645"}]
    assert revoke(http, endpoints, LEASE) == f"etcd lease {LEASE} already gone"


def test_delete_files_removes_only_that_instances_keys(tmp_path: Path) -> None:
    def key(bucket: str, path: str) -> Path:
        file = tmp_path / "v1" / bucket / quote(path, safe="")
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text("{}")
        return file

    mine = [
        key("instances", "dynamo/backend/generate/88b604b026edf04"),
        key("mdc", "dynamo/backend/generate/88b604b026edf04"),
        key("mdc", "dynamo/backend/generate/88b604b026edf04/lora-a"),
    ]
    others = [
        key("instances", "dynamo/backend/generate/1d1d174874040c44"),
        key("event_channels", "namespace/dynamo/component/backend/topic/kv/88b604b026edf04"),
    ]
    assert (
        delete_files(tmp_path, "88b604b026edf04")
        == "3 discovery file(s) of 88b604b026edf04 deleted"
    )
    assert not any(p.exists() for p in mine) and all(p.exists() for p in others)


def run_kill(driver: Driver, http: FakeHttp, backend: Any, victim: str) -> dict[str, Any]:
    """Serve, kill `victim`, look right after the exit is seen (before its restart)."""
    seen: dict[str, Any] = {}

    def scenario(d: Driver) -> None:
        backend.procs[victim].code = 137
        d.check_alive()
        seen["starts"] = backend.started.count(victim)
        seen["posts"] = list(http.posts())
        d.request_stop("test over")

    driver.on_ready.append(scenario)
    assert driver.run() == 0
    return seen


def test_a_dead_worker_s_lease_is_revoked_before_its_restart(plan_of: Any, tmp_path: Path) -> None:
    messages: list[str] = []
    http = FakeHttp(dict(READY))
    driver, backend = make_driver(plan_of, tmp_path, http, "prefill.workers=2", "decode.workers=2")
    driver.say = messages.append
    etcd = driver.plan.process("decode-0").env["ETCD_ENDPOINTS"]
    http.script[("POST", f"{etcd}/v3/lease/revoke")] = resp(200, {"header": {}})
    for i, name in enumerate(("decode-0", "decode-1", "prefill-0", "prefill-1")):
        http.script[("GET", metrics_url(driver, name))] = metrics(f"{LEASE[:-1]}{i}")
    attach_purge(driver)
    seen = run_kill(driver, http, backend, "decode-0")
    assert seen["starts"] == 1  # the restart comes after its backoff
    assert [p for p in seen["posts"] if set(p) == {"ID"}] == [
        {"ID": str(int(LEASE[:-1] + "0", 16))}
    ]
    assert driver.state.data["processes"]["decode-1"]["discovery_ids"] == [f"{LEASE[:-1]}1"]
    assert any(
        m.startswith(f"decode-0 removed from Dynamo's discovery: etcd lease {LEASE[:-1]}0 revoked")
        for m in messages
    ), messages


def test_a_failed_purge_is_said_and_the_restart_goes_on(plan_of: Any, tmp_path: Path) -> None:
    messages: list[str] = []
    http = FakeHttp(dict(READY))  # etcd does not answer
    driver, backend = make_driver(plan_of, tmp_path, http, "prefill.workers=2", "decode.workers=2")
    driver.say = messages.append
    http.script[("GET", metrics_url(driver, "prefill-1"))] = metrics(LEASE)
    attach_purge(driver)
    seen = run_kill(driver, http, backend, "prefill-1")
    assert seen["starts"] == 1 and driver.state.data["phase"] == "done"
    assert any("prefill-1: could not remove it from discovery" in m for m in messages), messages
    # The others' /metrics did not answer: said once each when they became healthy.
    assert any("decode-0: no worker_id in its /metrics" in m for m in messages), messages


def test_file_discovery_keys_of_the_dead_worker_are_deleted(plan_of: Any, tmp_path: Path) -> None:
    http = FakeHttp(dict(READY))
    driver, backend = make_driver(plan_of, tmp_path, http)  # one node: file discovery
    root = Path(driver.plan.process("decode-0").env["DYN_FILE_KV"])
    assert root == tmp_path / "dynamo-discovery"
    (root / "v1" / "instances").mkdir(parents=True)
    dead = root / "v1" / "instances" / quote(f"dynamo/backend/generate/{LEASE}", safe="")
    alive = root / "v1" / "instances" / quote("dynamo/prefill/generate/1d1d174874040c44", safe="")
    dead.write_text("{}")
    alive.write_text("{}")
    http.script[("GET", metrics_url(driver, "decode-0"))] = metrics(LEASE)
    http.script[("GET", metrics_url(driver, "prefill-0"))] = metrics("1d1d174874040c44")
    attach_purge(driver)
    run_kill(driver, http, backend, "decode-0")
    assert not dead.exists() and alive.exists()


def test_migration_limit_reaches_the_frontend_argv_and_a_negative_one_is_refused(
    plan_of: Any, compose: Any
) -> None:
    from orchestrator.frontends.dynamo import FRONTEND

    assert "--migration-limit" not in plan_of().process("frontend").argv  # 0: Dynamo's default
    argv = plan_of("frontend.migration_limit=3").process("frontend").argv
    assert argv[argv.index("--migration-limit") + 1] == "3"
    (issue,) = FRONTEND.validate(compose("+model=gpt_oss_120b", "frontend.migration_limit=-1"))
    assert (issue.key, issue.found) == ("frontend.migration_limit", "-1")
