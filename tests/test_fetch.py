"""Fetch once (model.path=hf:ORG/NAME[@REV]): the config form, validation, the plan, the repository
lock, the completion record, and real huggingface_hub downloads from a local test double of the
Hub's HTTP API (tests/doubles/hub_test_double.py, HF_ENDPOINT). On the testbed:
tests/slurm/test_e2e_fetch.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from orchestrator.config.load import compose_checked
from orchestrator.plan.build import build_plan
from orchestrator.plan.fetch import FetchSpec, fetch_issues
from orchestrator.plan.model import plan_from_dict, plan_to_dict
from orchestrator.runtime import fetch
from orchestrator.runtime.node_report import parse_report
from tests import e2e

HUB_DOUBLE = Path(__file__).parent / "doubles" / "hub_test_double.py"
REPO = "test-org/tiny"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
pytestmark = pytest.mark.skipif(
    __import__("importlib").util.find_spec("huggingface_hub") is None,
    reason="huggingface_hub not installed",
)


# --- config, validation, plan ------------------------------------------------------------------
def test_hf_path_sets_repo_revision_and_fetch() -> None:
    cfg, issues = compose_checked(["+model=gpt_oss_120b", "model.path=hf:test-org/tiny@v1"])
    assert issues == []
    assert (cfg.model.path, cfg.model.revision, cfg.model.fetch) == (REPO, "v1", True)
    _, clash = compose_checked(["+model=gpt_oss_120b", "model.path=hf:a/b@v1", "model.revision=v2"])
    assert [i.key for i in clash] == ["model.path"] and "model.revision=v2" in clash[0].problem


def test_fetch_validation_names_every_problem(compose: Any) -> None:
    cfg = compose("+model=gpt_oss_120b", "model.fetch=true", "model.path=/models/x")
    issues = fetch_issues(cfg, {"HF_HUB_OFFLINE": "1"})
    assert [i.key for i in issues] == ["model.path", "cluster.hf_home", "model.fetch"]
    assert "offline cluster cannot reach the Hub" in issues[2].problem
    ok = compose("+model=gpt_oss_120b", "model.path=hf:test-org/tiny", "cluster.hf_home=/shared/hf")
    assert fetch_issues(ok, {}) == []


def test_the_plan_fetches_once_and_every_process_reads_the_shared_cache(compose: Any) -> None:
    cfg = compose(
        "+model=gpt_oss_120b",
        "engine=mocker",
        "model.path=hf:test-org/tiny@v1",
        "cluster.hf_home=/shared/hf",
    )
    plan = build_plan(cfg)
    assert plan.fetch == FetchSpec(repo_id=REPO, revision="v1", hf_home="/shared/hf")
    assert plan_from_dict(json.loads(json.dumps(plan_to_dict(plan)))) == plan
    for proc in plan.processes:
        if proc.role in ("frontend", "prefill", "decode"):
            assert proc.env["HF_HOME"] == "/shared/hf" and proc.env["HF_HUB_OFFLINE"] == "1"
    assert "fetch" not in plan_to_dict(build_plan(compose("+model=gpt_oss_120b")))


# --- the lock ----------------------------------------------------------------------------------
def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def write_lock(path: Path, *, host: str, pid: int, age_s: float = 0.0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"host": host, "pid": pid, "at": time.time()}))
    then = time.time() - age_s
    os.utime(path, (then, then))


def test_a_lock_of_a_dead_process_on_this_host_is_taken_over(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    write_lock(lock, host=os.uname().nodename, pid=dead_pid())
    with fetch.repo_lock(lock, timeout_s=5) as took_over:
        assert took_over and json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists()


def test_a_lock_of_another_host_is_stale_only_once_untouched(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    write_lock(lock, host="elsewhere", pid=1, age_s=fetch.STALE_S + 5)
    assert fetch.is_stale(lock, now=time.time(), host="here")
    write_lock(lock, host="elsewhere", pid=1, age_s=1)
    assert not fetch.is_stale(lock, now=time.time(), host="here")
    with pytest.raises(fetch.FetchFailed, match="another fetch holds"):
        with fetch.repo_lock(lock, timeout_s=0.3):
            pass


# --- against the Hub test double ---------------------------------------------------------------
@contextmanager
def serve_hub(
    tmp_path: Path, *, host: str = "127.0.0.1", delay_s: float = 0.3
) -> Iterator[dict[str, Any]]:
    """The Hub test double serving a 3-file repository; its URL, record file and files."""
    files = tmp_path / "repo"
    (files / "sub").mkdir(parents=True)
    (files / "config.json").write_text('{"model_type": "llama"}')
    (files / "model.safetensors").write_bytes(os.urandom(200_000))
    (files / "sub" / "tokenizer.json").write_text("{}")
    record = tmp_path / "hub-requests.jsonl"
    proc = subprocess.Popen(
        [
            sys.executable,
            str(HUB_DOUBLE),
            "--repo",
            REPO,
            "--dir",
            str(files),
            "--commit",
            COMMIT,
            "--tag",
            "v1",
            "--record",
            str(record),
            "--host",
            host,
            "--delay-s",
            str(delay_s),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    port = json.loads(proc.stdout.readline())["port"]
    try:
        yield {"url": f"http://{host}:{port}", "record": record, "files": files}
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[dict[str, Any]]:
    with serve_hub(tmp_path) as served:
        yield served


def requests_seen(record: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in record.read_text().splitlines()] if record.exists() else []


def run_fetch(
    hub: dict[str, Any], hf_home: Path, *extra: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    argv = [
        sys.executable,
        "-m",
        "orchestrator.runtime.fetch",
        "--repo",
        REPO,
        "--hf-home",
        str(hf_home),
        "--revision",
        "v1",
        "--timeout-s",
        "30",
        *extra,
    ]
    return subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=e2e.REPO,
        env={**os.environ, "HF_ENDPOINT": hub["url"], **(env or {})},
    )


def report(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = proc.communicate(timeout=60)
    parsed = parse_report(out)
    assert parsed is not None, err
    return parsed


def test_two_fetches_at_once_download_each_file_once(hub: dict[str, Any], tmp_path: Path) -> None:
    hf_home = tmp_path / "hf"
    first, second = run_fetch(hub, hf_home), run_fetch(hub, hf_home)
    a, b = report(first), report(second)
    assert (
        a["path"]
        == b["path"]
        == str(hf_home / "hub" / "models--test-org--tiny" / "snapshots" / COMMIT)
    )
    assert sorted([a["fetched"], b["fetched"]]) == [False, True]
    gets = [
        r["path"]
        for r in requests_seen(hub["record"])
        if r["method"] == "GET" and "/resolve/" in r["path"]
    ]
    assert sorted(gets) == sorted(
        f"/{REPO}/resolve/{COMMIT}/{n}"
        for n in ("config.json", "model.safetensors", "sub/tokenizer.json")
    )
    snapshot = Path(a["path"])
    assert (snapshot / "model.safetensors").read_bytes() == (
        hub["files"] / "model.safetensors"
    ).read_bytes()


def test_a_complete_snapshot_asks_the_hub_nothing_even_offline(
    hub: dict[str, Any], tmp_path: Path
) -> None:
    hf_home = tmp_path / "hf"
    assert report(run_fetch(hub, hf_home))["fetched"]
    before = len(requests_seen(hub["record"]))
    again = report(run_fetch(hub, hf_home, env={"HF_HUB_OFFLINE": "1"}))
    assert again["fetched"] is False and len(requests_seen(hub["record"])) == before
    # A file cut short since: the record no longer holds, the snapshot is fetched again.
    (Path(again["path"]) / "model.safetensors").resolve().write_bytes(b"short")
    assert report(run_fetch(hub, hf_home))["fetched"] is True


def test_offline_refuses_with_the_reason(hub: dict[str, Any], tmp_path: Path) -> None:
    out = report(run_fetch(hub, tmp_path / "hf", env={"HF_HUB_OFFLINE": "1"}))
    assert (
        "HF_HUB_OFFLINE=1 on this node: an offline cluster cannot fetch test-org/tiny"
        in out["error"]
    )
    assert requests_seen(hub["record"]) == []


def test_stale_locks_of_a_killed_fetch_are_cleaned(hub: dict[str, Any], tmp_path: Path) -> None:
    hf_home = tmp_path / "hf"
    hub_dir = hf_home / "hub"
    # A fetch killed mid-download: its repository lock and huggingface_hub's blob locks remain.
    killed = run_fetch(hub, hf_home)
    lock = hub_dir / fetch.MARKER_DIR / "models--test-org--tiny.lock"
    e2e.wait_for(lock.exists, timeout=20, what="the first fetch holds the lock")
    killed.kill()
    killed.wait()
    blob_lock = hub_dir / ".locks" / "models--test-org--tiny" / "leftover.lock"
    blob_lock.parent.mkdir(parents=True, exist_ok=True)
    blob_lock.write_text("")
    out, err = run_fetch(hub, hf_home).communicate(timeout=60)
    parsed = parse_report(out)
    assert parsed is not None and parsed["fetched"] is True, err
    assert not blob_lock.exists() and not lock.exists()
    assert "removing the stale lock" in err and "stale huggingface_hub lock(s)" in err
