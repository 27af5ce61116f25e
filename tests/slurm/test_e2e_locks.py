"""A locked control plane on the Slurm testbed, tried as another user on the cluster network
would (issue 20): the run's etcd refuses reads and writes without its credentials while Dynamo's
own processes register, serve and restart through it; sglang-router and SMG answer 401 to
`POST /workers` without the run's key while the driver registers and re-registers with it; and
no secret is on any command line, in any file outside RUN_DIR/secrets/, or in any log."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
from pathlib import Path

import pytest
import requests

from tests import e2e
from tests.slurm.test_e2e_dynamo import THREE_NODES
from tests.slurm.test_e2e_dynamo import start as start_dynamo
from tests.slurm.test_e2e_restart import FAST, chat_ok, healthy_again, named
from tests.slurm.test_e2e_router import BASE as ROUTER

pytestmark = pytest.mark.slurm
EVERY_KEY = {"key": "AA==", "range_end": "AA=="}
NOBODY = {"url": "http://10.9.9.9:9", "worker_type": "decode"}  # someone else's "worker"


def secrets_of(run_dir: Path) -> list[str]:
    return [(run_dir / "secrets" / n).read_text().strip() for n in ("admin_key", "etcd_password")]


def assert_locked_down(run_dir: Path) -> None:
    """Modes of the run directory and its secrets; no secret on any command line of this host
    (the testbed's nodes are namespaces of it), in any file of the run but its secrets, in logs."""
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    assert mode(run_dir) == 0o700 and mode(run_dir / "secrets") == 0o700
    # The two secrets, etcd's data directory (its WAL holds the user it was given), tls/.
    assert all(mode(p) == (0o700 if p.is_dir() else 0o600) for p in (run_dir / "secrets").iterdir())
    values = secrets_of(run_dir)
    assert len(values) == 2 and all(len(v) >= 40 for v in values)
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except (OSError, ValueError):
            continue
        assert not any(v in cmdline for v in values), f"a secret in /proc/{proc.name}/cmdline"
    files = [p for p in run_dir.rglob("*") if p.is_file() and "secrets" not in p.parts]
    assert any(p.suffix == ".log" for p in files)
    for path in files:
        text = path.read_text(errors="replace")
        assert not any(v in text for v in values), f"a secret in {path}"


def etcd_url(run_dir: Path) -> str:
    bound = json.loads((run_dir / "plan.bound.json").read_text())["processes"]
    return next(p["health"]["url"] for p in bound if p["name"] == "etcd").rsplit("/health", 1)[0]


def test_dynamo_etcd_refuses_strangers_and_serves_restarts_through_it(
    slurm_jobs: list[str], tmp_path: Path
) -> None:
    # With request-plane mutual TLS too: every request crosses nodes over it.
    job_id, run_dir = start_dynamo(
        slurm_jobs, tmp_path / "run", *THREE_NODES, *FAST, "frontend.request_plane_tls=true"
    )
    st = e2e.state(run_dir)
    url, etcd = st["frontend_url"], etcd_url(run_dir)
    assert st["etcd_locked"] is True
    # A stranger on the network: no listing, no writing, no user of their own.
    for path, body in (
        ("kv/range", EVERY_KEY),
        ("kv/put", {"key": "YQ==", "value": "YQ=="}),
        ("auth/user/add", {"name": "x", "password": "y"}),
    ):
        answer = requests.post(f"{etcd}/v3/{path}", json=body, timeout=5).json()
        assert "user name is empty" in answer.get("error", ""), (path, answer)
    wrong = requests.post(
        f"{etcd}/v3/auth/authenticate", json={"name": "root", "password": "guess"}, timeout=5
    ).json()
    assert "authentication failed" in wrong["error"]
    # The run's own credentials list what its Dynamo processes registered.
    password = (run_dir / "secrets" / "etcd_password").read_text().strip()
    token = requests.post(
        f"{etcd}/v3/auth/authenticate", json={"name": "root", "password": password}, timeout=5
    ).json()["token"]
    listed = requests.post(
        f"{etcd}/v3/kv/range", json=EVERY_KEY, headers={"Authorization": token}, timeout=5
    ).json()
    assert int(listed["count"]) >= 5, listed  # 4 workers' instances and model cards, at least
    assert chat_ok(url)
    for name in ("frontend", "decode-0", "prefill-1"):
        log = (run_dir / "logs" / f"{name}.log").read_text()
        assert "TLS enabled with mutual authentication" in log, name
    # A restarted worker logs in again and serves.
    old = named(e2e.engine_processes(run_dir, "dynamo.mocker"), "decode-0")
    assert old is not None
    os.kill(old.pid, signal.SIGKILL)
    healthy_again(run_dir, "decode-0")
    # The driver revoked the dead worker's lease in the locked etcd with the run's token.
    assert re.search(
        r"decode-0 removed from Dynamo's discovery: etcd lease \w+ (revoked|already "
        r"gone)",
        (run_dir / "driver.log").read_text(),
    )
    log = run_dir / "logs" / "decode-0.log"
    after = log.read_text().count("\n")
    e2e.wait_for(
        lambda: (
            chat_ok(url)
            and "request" in "".join(log.read_text().splitlines(keepends=True)[after:]).lower()
        ),
        timeout=30,
        what="a request served by the restarted decode-0",
    )
    assert_locked_down(run_dir)
    res = e2e.ctl("stop", str(run_dir))
    assert res.returncode == 0, res.stderr
    e2e.wait_for(lambda: e2e.nothing_left(run_dir), timeout=30, what="no processes of the run")
    e2e.wait_for(lambda: e2e.job_state(job_id) == "COMPLETED", timeout=30, what="COMPLETED")
    assert_locked_down(run_dir)  # the logs of the whole run, stop included


@pytest.mark.parametrize("frontend", ["sglang_router", "smg"])
def test_router_control_plane_needs_the_runs_key(
    slurm_jobs: list[str], tmp_path: Path, frontend: str
) -> None:
    run_dir = tmp_path / "run"
    args = [a if a != "frontend=sglang_router" else f"frontend={frontend}" for a in ROUTER]
    proc = e2e.cli([*args, *FAST, f"run_dir={run_dir}"])
    slurm_jobs += proc.stdout.split()[:1]
    assert proc.returncode == 0, proc.stderr
    job_id, _ = e2e.submit_output(proc)
    url = e2e.state(run_dir)["frontend_url"]
    auth = e2e.admin_auth(run_dir)
    assert requests.post(f"{url}/workers", json=NOBODY, timeout=5).status_code == 401
    assert requests.get(f"{url}/workers", timeout=5).status_code == 401
    listed = requests.get(f"{url}/workers", headers=auth, timeout=5).json()["workers"]
    assert len([w for w in listed if w["is_healthy"]]) == 4 and NOBODY["url"] not in str(listed)
    assert chat_ok(url)
    restart_registers_again(run_dir, url, auth)
    assert_locked_down(run_dir)
    res = e2e.ctl("stop", str(run_dir))
    assert res.returncode == 0, res.stderr
    st = e2e.state(run_dir)
    assert st["phase"] == "done" and all(
        p["registered"] is False for n, p in st["processes"].items() if n != "frontend"
    )
    e2e.wait_for(lambda: e2e.nothing_left(run_dir), timeout=30, what="no processes of the run")
    e2e.wait_for(lambda: e2e.job_state(job_id) == "COMPLETED", timeout=30, what="COMPLETED")
    assert_locked_down(run_dir)


def restart_registers_again(run_dir: Path, url: str, auth: dict[str, str]) -> None:
    """A killed decode is deregistered, restarted and registered again with the key (SMG 1.13
    lists the deleted entry a while after its 202: the registration waits for it to go)."""
    old_id = e2e.state(run_dir)["processes"]["decode-1"]["router_id"]
    victim = named(e2e.engine_processes(run_dir, "sglang.launch_server"), "decode-1")
    assert victim is not None
    os.kill(victim.pid, signal.SIGKILL)
    st = healthy_again(run_dir, "decode-1")
    new_id = st["processes"]["decode-1"]["router_id"]
    assert new_id != old_id and st["processes"]["decode-1"]["registered"] is True
    e2e.wait_for(
        lambda: any(
            w["id"] == new_id and w["is_healthy"]
            for w in requests.get(f"{url}/workers", headers=auth, timeout=5).json()["workers"]
        ),
        timeout=20,
        what="the new decode-1 listed healthy",
    )
    assert chat_ok(url)
