"""A locked control plane, unit level: per-run secrets (generation, permissions, handing over to
every driver of the run), the run directory's mode, the router/SMG key kept off the command line,
and etcd's authentication calls (the real components: tests/slurm/test_e2e_locks.py)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest

from orchestrator.config.schema import RootConfig
from orchestrator.config.validate import validate
from orchestrator.core.effects import HttpResponse, SubprocessRunner
from orchestrator.ctl.locks import status_lines
from orchestrator.frontends import lock_lines
from orchestrator.frontends.control_key import keyed_launch
from orchestrator.frontends.etcd_lock import EtcdLockError, enable_auth, etcd_client
from orchestrator.launchers.rundir import create_run_dir
from orchestrator.plan.build import build_plan
from orchestrator.plan.model import TIER_WORKER, Process
from orchestrator.rundir import RunDir
from orchestrator.rundir.secrets import (
    ADMIN_KEY_ENV,
    NAMES,
    TLS_FILES,
    TLS_SERVER_NAME,
    SecretsError,
    create_secrets,
    create_tls,
    export_secrets,
    read_secrets,
)
from tests.fakes import FakeHttp

Compose = Callable[..., RootConfig]
REPO = Path(__file__).resolve().parent.parent
ETCD = "http://10.0.0.1:2379"
PLAIN_WORKER = Process(
    name="decode-0",
    role="decode",
    group="decode",
    worker_index=0,
    rank=0,
    node_index=0,
    gpus=(),
    ports={},
    env={},
    argv=("x",),
    tier=TIER_WORKER,
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_secrets_are_new_random_and_private(tmp_path: Path) -> None:
    old = os.umask(0)  # even a permissive umask gives 0700 / 0600
    try:
        folder = create_secrets(tmp_path)
    finally:
        os.umask(old)
    assert mode(folder) == 0o700
    assert sorted(p.name for p in folder.iterdir()) == sorted(NAMES)
    assert all(mode(p) == 0o600 for p in folder.iterdir())
    values = read_secrets(folder)
    assert len(set(values.values())) == len(NAMES) and all(len(v) >= 40 for v in values.values())
    with pytest.raises(FileExistsError):  # never reused or overwritten
        create_secrets(tmp_path)


def test_secrets_readable_by_others_are_refused(tmp_path: Path) -> None:
    folder = create_secrets(tmp_path)
    folder.chmod(0o750)
    with pytest.raises(SecretsError, match="chmod 700"):
        read_secrets(folder)


def test_every_driver_of_the_run_gets_the_same_secrets(tmp_path: Path) -> None:
    values = read_secrets(create_secrets(tmp_path))
    own: dict[str, str] = {}
    assert export_secrets(tmp_path, "", own) == [
        "ETCD_AUTH_PASSWORD",
        "ETCD_AUTH_USERNAME",
        ADMIN_KEY_ENV,
    ]
    assert own[ADMIN_KEY_ENV] == values["admin_key"]
    assert own["ETCD_AUTH_PASSWORD"] == values["etcd_password"]
    attached = tmp_path / "attached" / "1"  # ctl scale's and rollover's jobs, plan.job.run_dir
    attached.mkdir(parents=True)
    theirs: dict[str, str] = {}
    export_secrets(attached, str(tmp_path), theirs)
    assert theirs == own
    assert export_secrets(tmp_path / "old-run", "", {}) == []  # made before locks: nothing


def test_run_dir_is_private_by_default_or_as_configured(compose: Compose, tmp_path: Path) -> None:
    cfg = compose("+model=gpt_oss_120b", f"run_dir={tmp_path / 'a'}")
    assert mode(create_run_dir(cfg, "x")) == 0o700
    cfg = compose("+model=gpt_oss_120b", f"run_dir={tmp_path / 'b'}", "cluster.run_dir_mode=0750")
    path = create_run_dir(cfg, "x")
    assert mode(path) == 0o750 and mode(path / "secrets") == 0o700


@pytest.mark.parametrize("value", ["0777", "0770", "0600", "rwx", "1777", ""])
def test_run_dir_mode_must_keep_the_run_yours(compose: Compose, value: str) -> None:
    cfg = compose("+model=gpt_oss_120b")
    cfg = dataclasses.replace(cfg, cluster=dataclasses.replace(cfg.cluster, run_dir_mode=value))
    (issue,) = [i for i in validate(cfg) if i.key == "cluster.run_dir_mode"]
    assert "0750" in issue.fix


SHOW = (
    "import os, sys; print(sys.argv[1:]); print(open('/proc/self/cmdline').read()); "
    "print(os.environ.get('K', 'gone'))"
)


def test_router_key_is_added_inside_the_process_not_on_its_command_line(tmp_path: Path) -> None:
    (tmp_path / "showargs.py").write_text(SHOW)
    argv = keyed_launch(sys.executable, "showargs", ["--host", "h"], "K")
    env = {"K": "s3cret", "PYTHONPATH": str(tmp_path)}
    out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    args, cmdline, left = out.stdout.splitlines()
    assert (
        args
        == "['--host', 'h', '--control-plane-api-keys', 'orchestrator:orchestrator:admin:s3cret']"
    )
    assert "s3cret" not in cmdline and "showargs" in cmdline
    assert left == "gone"  # nothing the router starts inherits it
    missing = subprocess.run(
        argv, env={"PYTHONPATH": str(tmp_path)}, capture_output=True, text=True, check=False
    )
    assert missing.returncode == 1 and "no control-plane admin key in $K" in missing.stderr


OK = HttpResponse(200, '{"header": {}}')
REFUSED = HttpResponse(400, '{"error": "etcdserver: user name is empty", "code": 3}')
NOT_ON = HttpResponse(400, '{"error": "etcdserver: authentication is not enabled", "code": 9}')


def test_etcd_auth_is_turned_on_with_the_runs_password() -> None:
    http = FakeHttp(
        {
            "/v3/auth/authenticate": NOT_ON,
            "/v3/auth/user/add": OK,
            "/v3/auth/user/grant": OK,
            "/v3/auth/enable": OK,
            "/v3/kv/range": REFUSED,
        }
    )
    assert enable_auth(http, ETCD, "pw") == "enabled"
    assert [u.removeprefix(ETCD) for u in http.urls()] == [
        "/v3/auth/authenticate",
        "/v3/auth/user/add",
        "/v3/auth/user/grant",
        "/v3/auth/enable",
        "/v3/kv/range",
    ]
    assert http.posts()[1] == {"name": "root", "password": "pw"}
    assert http.posts()[2] == {"user": "root", "role": "root"}


def test_a_restarted_etcd_is_locked_already() -> None:
    http = FakeHttp(
        {"/v3/auth/authenticate": HttpResponse(200, '{"token": "t.1"}'), "/v3/kv/range": REFUSED}
    )
    assert enable_auth(http, ETCD, "pw") == "already on"
    assert not any("user/add" in u for u in http.urls())


@pytest.mark.parametrize("failing", ["/v3/auth/user/add", "/v3/auth/enable", "/v3/kv/range"])
def test_an_etcd_that_stays_open_fails_the_run(failing: str) -> None:
    script = {
        "/v3/auth/authenticate": NOT_ON,
        "/v3/auth/user/add": OK,
        "/v3/auth/user/grant": OK,
        "/v3/auth/enable": OK,
        "/v3/kv/range": REFUSED,
    }
    script[failing] = OK if failing == "/v3/kv/range" else REFUSED
    with pytest.raises(EtcdLockError):
        enable_auth(FakeHttp(script), ETCD, "pw")


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root")
@pytest.mark.parametrize("cmd", [["stop"], ["scale", "decode.workers=2"]])
def test_stop_and_scale_of_someone_elses_run_exit_2(cmd: list[str]) -> None:
    base = Path(tempfile.mkdtemp(prefix="orch-notyours-"))
    try:
        base.chmod(0o755)
        run = base / "run"
        run.mkdir(mode=0o755)  # readable, not writable by others: someone else's results
        (run / "state.json").write_text("{}")
        nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        res = subprocess.run(
            [*nobody, sys.executable, "-m", "orchestrator.ctl", cmd[0], str(run), *cmd[1:]],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        assert res.returncode == 2, res.stderr
        assert f"{run} is not writable by you (owner uid 0, mode 0755)" in res.stderr
        assert not (run / "stop-requested").exists()
    finally:
        shutil.rmtree(base)


def test_status_lists_the_locks(compose: Compose, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    create_secrets(run)
    RunDir(run).write_plan(
        build_plan(compose("+model=gpt_oss_120b", "frontend=sglang_router", "engine=sglang"))
    )
    lines = status_lines(run)
    assert lines[0] == "locks: run directory 0700, secrets 0700"
    assert "/workers needs Authorization: Bearer <secret:admin_key> (401 without)" in lines[1]
    assert not any(v in "\n".join(lines) for v in read_secrets(run / "secrets").values())


def test_request_plane_tls_material_is_made_at_launch(tmp_path: Path) -> None:
    create_secrets(tmp_path)
    folder = create_tls(tmp_path, SubprocessRunner())
    assert sorted(p.name for p in folder.iterdir()) == sorted(TLS_FILES)  # no CA key kept
    assert all(mode(p) == 0o600 for p in folder.iterdir()) and mode(folder) == 0o700
    verify = subprocess.run(
        ["openssl", "verify", "-CAfile", str(folder / "ca.crt"), str(folder / "node.crt")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verify.returncode == 0, verify.stderr
    text = subprocess.run(
        ["openssl", "x509", "-noout", "-text", "-in", str(folder / "node.crt")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"DNS:{TLS_SERVER_NAME}" in text and "TLS Web Client Authentication" in text


def test_request_plane_tls_hands_every_dynamo_process_paths_only(compose: Compose) -> None:
    plan = build_plan(compose("+model=gpt_oss_120b", "frontend.request_plane_tls=true"))
    for name in ("frontend", "decode-0", "prefill-0"):
        env = plan.process(name).env
        assert env["DYN_TCP_TLS_CLIENT_CA_CERT_PATH"] == "{run_dir}/secrets/tls/ca.crt"
        assert env["DYN_TCP_TLS_KEY_PATH"] == "{run_dir}/secrets/tls/node.key"
        assert env["DYN_TCP_TLS_SERVER_NAME"] == TLS_SERVER_NAME
    assert any("mutual TLS" in line for line in lock_lines(plan))
    routed = compose(
        "+model=gpt_oss_120b",
        "frontend=sglang_router",
        "engine=sglang",
        "frontend.request_plane_tls=true",
    )
    assert [i.key for i in validate(routed)] == ["frontend.request_plane_tls"]


class HeaderHttp(FakeHttp):
    """FakeHttp that remembers the headers a client was made with."""

    headers: dict[str, str] = {}

    def with_headers(self, headers: dict[str, str]) -> HeaderHttp:
        self.headers = headers
        return self


def test_lease_revokes_of_the_purge_carry_a_fresh_etcd_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    http = HeaderHttp({"/v3/auth/authenticate": HttpResponse(200, '{"token": "tok.7"}')})
    proc = dataclasses.replace(PLAIN_WORKER, env={"ETCD_ENDPOINTS": ETCD})
    driver = SimpleNamespace(http=http, plan=SimpleNamespace(processes=(proc,)))
    monkeypatch.setenv("ETCD_AUTH_USERNAME", "root")
    monkeypatch.setenv("ETCD_AUTH_PASSWORD", "pw")
    assert etcd_client(driver) is http and http.headers == {"Authorization": "tok.7"}  # type: ignore[arg-type]
    assert http.posts() == [{"name": "root", "password": "pw"}]
    monkeypatch.delenv("ETCD_AUTH_PASSWORD")
    plain = HeaderHttp({})
    driver.http = plain
    assert etcd_client(driver) is plain and plain.calls == []  # type: ignore[arg-type]
