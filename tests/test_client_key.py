"""frontend.api_key_env: the key clients must send (sglang-router/SMG `--api-key`), kept off
every command line, plan and log; refused for Dynamo; the readiness canary and the benchmark
clients send it. The e2e runs the real router and SMG (SGLang test double workers) and aiperf."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from orchestrator.bench.client_key import with_api_key_arg, with_openai_key
from orchestrator.config.load import quote_override_value
from orchestrator.config.schema import RootConfig
from orchestrator.config.validate import validate
from orchestrator.core.tools import AIPERF, find_tool
from orchestrator.frontends.control_key import keyed_launch
from orchestrator.launchers.rundir import create_run_dir
from orchestrator.plan.build import build_plan
from orchestrator.rundir.secrets import API_KEY_ENV, export_secrets
from orchestrator.tiny.tokenizer import ensure_tiny_model_dir
from tests import e2e

Compose = Callable[..., RootConfig]
KEY = "client-s3cret-0123456789"
VAR = "TEST_CLIENT_KEY"
ROUTERS = ("sglang_router", "smg")
SHOW = (
    "import os, sys; print(sys.argv[1:]); print(open('/proc/self/cmdline').read()); "
    "print(os.environ.get('K', 'gone'), os.environ.get('C', 'gone'), "
    "os.environ.get('OPENAI_API_KEY', 'none'))"
)


def keyed(compose: Compose, frontend: str, *extra: str) -> RootConfig:
    return compose(
        "+model=gpt_oss_120b",
        "engine=sglang",
        f"frontend={frontend}",
        f"frontend.api_key_env={VAR}",
        *extra,
    )


@pytest.mark.parametrize("frontend", ROUTERS)
def test_the_key_travels_by_name_only(
    compose: Compose, frontend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(VAR, KEY)
    cfg = keyed(compose, frontend, "benchmark=aiperf")
    assert validate(cfg) == []
    plan = build_plan(cfg)
    text = json.dumps([[p.argv, p.env] for p in [*plan.processes, *plan.benchmark.clients]])
    assert KEY not in text and API_KEY_ENV in text
    (front,) = [p for p in plan.processes if p.role == "frontend"]
    assert "--api-key" in front.argv[2]  # added inside the process (LAUNCH_WITH_KEYS)
    client = plan.benchmark.clients[0]
    assert client.argv[client.argv.index("-c") + 2] == API_KEY_ENV


def test_without_it_the_endpoint_stays_open(compose: Compose) -> None:
    plan = build_plan(compose("+model=gpt_oss_120b", "engine=sglang", "frontend=sglang_router"))
    assert not any("--api-key" in a for p in plan.processes for a in p.argv)


def test_router_and_client_keys_are_added_inside_the_process(tmp_path: Path) -> None:
    (tmp_path / "showargs.py").write_text(SHOW)
    argv = keyed_launch(sys.executable, "showargs", ["--host", "h"], "K", "C")
    env = {"K": "adm1n", "C": KEY, "PYTHONPATH": str(tmp_path)}
    out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    args, cmdline, left = out.stdout.splitlines()
    assert args.endswith("'--api-key', 'client-s3cret-0123456789']")
    assert KEY not in cmdline and "adm1n" not in cmdline and left == "gone gone none"
    missing = subprocess.run(
        argv,
        env={"K": "adm1n", "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert missing.returncode == 1 and "no client API key in $C" in missing.stderr


def test_benchmark_clients_get_the_key_outside_argv(tmp_path: Path) -> None:
    script = tmp_path / "showargs"
    script.write_text(f"#!{sys.executable}\n{SHOW}\n")
    env = {API_KEY_ENV: KEY}
    out = subprocess.run(
        with_api_key_arg(str(script), ["profile"]),
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    args, cmdline, _ = out.stdout.splitlines()
    assert args == f"['profile', '--api-key', '{KEY}']" and KEY not in cmdline
    out = subprocess.run(
        with_openai_key([sys.executable, "-c", SHOW]),
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.splitlines()[-1].endswith(KEY)  # lm-eval, bench_serving: $OPENAI_API_KEY
    assert KEY not in " ".join(with_openai_key(["lm_eval"]))


def test_kept_with_the_runs_secrets_for_every_driver(
    compose: Compose, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(VAR, KEY)
    run_dir = create_run_dir(keyed(compose, "smg", f"run_dir={tmp_path / 'r'}"), "x")
    assert oct((run_dir / "secrets" / "api_key").stat().st_mode & 0o777) == "0o600"
    attached: dict[str, str] = {}  # an attached job's driver (ctl scale, rollover)
    assert API_KEY_ENV in export_secrets(tmp_path / "r" / "attached", str(run_dir), attached)
    assert attached[API_KEY_ENV] == KEY


@pytest.mark.parametrize(("value", "why"), [("", "not set or empty"), ("x", None)])
def test_the_variable_must_be_set_where_you_launch(
    compose: Compose, monkeypatch: pytest.MonkeyPatch, value: str, why: str | None
) -> None:
    monkeypatch.setenv(VAR, value)
    issues = [
        i for i in validate(keyed(compose, "sglang_router")) if i.key == "frontend.api_key_env"
    ]
    assert [why in i.problem for i in issues] == ([True] if why else [])
    bad = keyed(compose, "smg", "frontend.api_key_env='sk-123 456'")
    (issue,) = [i for i in validate(bad) if i.key == "frontend.api_key_env"]
    assert "not an environment variable name" in issue.problem


def test_dynamo_is_refused_naming_what_it_supports(
    compose: Compose, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(VAR, KEY)
    cfg = compose("+model=gpt_oss_120b", "frontend=dynamo", f"frontend.api_key_env={VAR}")
    (issue,) = [i for i in validate(cfg) if i.key == "frontend.api_key_env"]
    assert "client certificates" in issue.problem and "sglang_router" in issue.fix


# ---- end to end: the real router / SMG, SGLang test doubles, aiperf -------------------------

DOUBLE = e2e.REPO / "tests" / "doubles" / "sglang_test_double.py"
MODEL = "openai/gpt-oss-120b"


@pytest.fixture
def run_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "run"
    yield path
    e2e.kill_run(path)


def _start(run_dir: Path, frontend: str) -> subprocess.Popen[str]:
    tokenizer = ensure_tiny_model_dir(run_dir.parent / "tokenizer")  # aiperf's, offline
    args = [
        f"benchmark.tokenizer={quote_override_value(str(tokenizer))}",
        "+model=gpt_oss_120b",
        "engine=sglang",
        f"frontend={frontend}",
        "launcher=local",
        f"engine.python={DOUBLE}",
        f"run_dir={quote_override_value(str(run_dir))}",
        f"frontend.http_port={e2e.free_port()}",
        f"frontend.api_key_env={VAR}",
        f"cluster.port_base={22000 + e2e.free_port() % 80 * 100}",
        "readiness.timeout_s=60",
        "model.requires_equal_pd_tp=false",
        "benchmark=aiperf",
        "benchmark.keep_serving=true",
        "benchmark.points=[{concurrency:2,isl:64,osl:8,requests:6}]",
    ]
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator", *args],
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=e2e.REPO,
        env={**os.environ, VAR: KEY},
    )


def _files_with_key(run_dir: Path) -> list[Path]:
    secrets = run_dir / "secrets"
    return [
        p
        for p in run_dir.rglob("*")
        if p.is_file() and secrets not in p.parents and KEY.encode() in p.read_bytes()
    ]


@pytest.mark.engines
@pytest.mark.skipif(find_tool(AIPERF) is None, reason="aiperf not installed (scripts/install.sh)")
@pytest.mark.parametrize("frontend", ROUTERS)
def test_clients_need_the_key_and_the_run_sends_it(run_dir: Path, frontend: str) -> None:
    if importlib.util.find_spec("smg" if frontend == "smg" else "sglang_router") is None:
        pytest.skip(f"{frontend} not installed (scripts/install.sh)")
    proc = _start(run_dir, frontend)
    leaks: set[int] = set()
    seen_aiperf = False

    def benchmarked() -> dict | None:
        # Every live process's command line, polled while the router serves and aiperf runs.
        nonlocal seen_aiperf
        assert proc.poll() is None, proc.communicate()
        for p in e2e.processes_mentioning(""):
            leaks.update([p.pid] if any(KEY in a for a in p.argv) else [])
            seen_aiperf |= "profile" in p.argv and API_KEY_ENV in p.argv
        st = e2e.state(run_dir)
        return st if (st.get("benchmark") or {}).get("status") == "valid" else None

    st = e2e.wait_for(benchmarked, timeout=150, what="the aiperf point done")  # canary passed
    assert seen_aiperf and not leaks
    (row,) = [
        json.loads(r) for r in (run_dir / "results" / "points.jsonl").read_text().splitlines()
    ]
    assert row["valid"] and row["completed"] == 6, row
    url, body = (
        st["frontend_url"],
        {"model": MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]},
    )
    bare = requests.post(f"{url}/v1/chat/completions", json=body, timeout=30)
    wrong = requests.post(
        f"{url}/v1/chat/completions",
        json=body,
        timeout=30,
        headers={"Authorization": "Bearer nope"},
    )
    good = requests.post(
        f"{url}/v1/chat/completions",
        json=body,
        timeout=30,
        headers={"Authorization": f"Bearer {KEY}"},
    )
    assert (bare.status_code, wrong.status_code, good.status_code) == (401, 401, 200)
    benchmarked()  # the router's command line once more, after the requests
    assert not leaks
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert KEY not in out + err and _files_with_key(run_dir) == []
    assert (run_dir / "secrets" / "api_key").read_text().strip() == KEY
