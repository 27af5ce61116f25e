"""frontend.replicas=2: the plan (two Dynamo frontends behind HAProxy), the proxy's generated
configuration (golden, and accepted by the real haproxy -c), the start script and validation."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.config.schema import RootConfig
from orchestrator.config.validate import validate
from orchestrator.frontends.pair import START_SCRIPT, pair_issues
from orchestrator.observe import prom
from orchestrator.plan.model import Plan, plan_from_dict, plan_to_dict
from orchestrator.plan.placeholders import Bindings, bind_plan

PAIR = ("engine=mocker", "frontend.replicas=2", "cluster=testbed")


def proxy_config(plan: Plan) -> str:
    return plan.process("proxy").argv[4]


def test_pair_plan_puts_replicas_on_two_nodes_behind_the_proxy(
    plan_of: Callable[..., Plan],
) -> None:
    plan = plan_of(
        *PAIR,
        "prefill.workers=2",
        "decode.workers=2",
        "decode.tp=8",
        "model.requires_equal_pd_tp=false",
    )
    names = [p.name for p in plan.processes]
    assert names[:4] == ["etcd", "proxy", "frontend-0", "frontend-1"]
    f0, f1 = plan.process("frontend-0"), plan.process("frontend-1")
    assert (f0.node_index, f1.node_index) == (0, 1)
    # Restarted on their own (a restart unit is group + worker_index), both restartable.
    assert (f0.worker_index, f1.worker_index) == (0, 1)
    assert f0.restart.mode == f1.restart.mode == "on_failure"
    # Users get the proxy's URL; the gate asks each replica too.
    assert plan.readiness.frontend_url == plan.process("proxy").url
    assert plan.readiness.replica_urls == (f0.url, f1.url)
    assert f1.url.startswith("http://{node_ip:1}:")
    # Both replicas share the discovery the workers register with (once).
    assert (
        f0.env["ETCD_ENDPOINTS"]
        == f1.env["ETCD_ENDPOINTS"]
        == plan.process("decode-0").env["ETCD_ENDPOINTS"]
    )
    # The plan survives plan.json and binding.
    assert plan_from_dict(plan_to_dict(plan)) == plan
    bound = bind_plan(
        plan,
        Bindings(
            node_ips=("10.0.0.1", "10.0.0.2", "10.0.0.3"),
            node_hosts=("a", "b", "c"),
            job_id="7",
            run_dir="/r",
        ),
    )
    assert bound.readiness.replica_urls[1].startswith("http://10.0.0.2:")


def test_single_frontend_plan_is_unchanged(plan_of: Callable[..., Plan]) -> None:
    plan = plan_of("engine=mocker")
    assert [p.name for p in plan.processes if p.tier < 2] == ["frontend"]
    assert plan.readiness.replica_urls == ()


def test_proxy_config_golden_and_accepted_by_haproxy(
    plan_of: Callable[..., Plan], golden: Callable[[str, str], None], tmp_path: Path
) -> None:
    plan = plan_of(*PAIR)
    golden("pair_haproxy.cfg", proxy_config(plan))
    haproxy = shutil.which("haproxy")
    if haproxy is None:
        pytest.skip("haproxy not installed (scripts/install-system-deps.sh)")
    bound = bind_plan(
        plan,
        Bindings(node_ips=("127.0.0.1",), node_hosts=("h",), job_id="7", run_dir=str(tmp_path)),
    )
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(proxy_config(bound))
    done = subprocess.run(
        [haproxy, "-c", "-f", str(cfg)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_start_script_writes_the_config_then_runs_the_proxy(tmp_path: Path) -> None:
    """The script quotes every value: a config with quotes and `$` reaches the file verbatim,
    then the proxy binary runs in the foreground on it."""
    assert subprocess.run(["bash", "-n", "-c", START_SCRIPT], check=False).returncode == 0
    script = tmp_path / "start.sh"
    script.write_text(f"#!/bin/bash\n{START_SCRIPT}\n")
    shellcheck = shutil.which("shellcheck") or str(Path(sys.executable).parent / "shellcheck")
    checked = subprocess.run([shellcheck, str(script)], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout
    fake = tmp_path / "fake-haproxy"
    fake.write_text('#!/bin/sh\necho "$@"\n')
    fake.chmod(0o755)
    text = "global\n    log \"$HOME\" 'x'\n"
    path = tmp_path / "infra" / "haproxy.cfg"
    done = subprocess.run(
        ["bash", "-c", START_SCRIPT, "proxy", text, str(path), str(fake)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert path.read_text() == text
    assert done.stdout == f"-db -f {path}\n"


def test_validation_refuses_what_a_pair_cannot_run(compose: Callable[..., RootConfig]) -> None:
    def keys(*overrides: str) -> list[str]:
        return [
            i.key for i in validate(compose("+model=gpt_oss_120b", "engine=mocker", *overrides))
        ]

    assert "frontend.replicas" in keys("frontend.replicas=3")
    assert "frontend.replicas" in keys("frontend.replicas=0")
    assert "frontend.replicas" in keys(
        "frontend=sglang_router", "engine=sglang", "frontend.replicas=2"
    )
    assert "frontend.replicas" not in keys("frontend.replicas=2")
    cfg = compose("+model=gpt_oss_120b", "engine=mocker", "launcher=local", "frontend.replicas=2")
    missing = pair_issues(cfg, lambda binary: False)
    assert [(i.key, i.found) for i in missing] == [("frontend.proxy_binary", "'haproxy'")]
    # On Slurm nodes this machine cannot look: no refusal for a missing local binary.
    slurm = compose(
        "+model=gpt_oss_120b", "engine=mocker", "launcher=sbatch", "frontend.replicas=2"
    )
    assert pair_issues(slurm, lambda binary: False) == []


def test_placement_here_puts_both_replicas_on_this_host(plan_of: Callable[..., Plan]) -> None:
    plan = plan_of(*PAIR, "frontend.placement=here", "frontend.host=10.1.2.3")
    assert [(p.name, p.node_index) for p in plan.processes] == [
        ("etcd", 0),
        ("proxy", 0),
        ("frontend-0", 0),
        ("frontend-1", 0),
    ]
    f0, f1 = plan.process("frontend-0"), plan.process("frontend-1")
    assert f0.url != f1.url  # two ports of this host
    assert plan.serve is not None
    # The worker job's readiness asks the proxy, like every user.
    assert plan.serve.workers.readiness.frontend_url == "http://10.1.2.3:8000"


def test_metrics_of_a_pair_are_summed_per_replica() -> None:
    """Each replica counts its own requests: rates come from two records of one replica, then
    add up (interleaved records of two counters would read as resets)."""

    def rec(target: str, t: float, total: float) -> dict[str, object]:
        return {
            "target": target,
            "role": "frontend",
            "ok": True,
            "t": t,
            "values": {"dynamo_frontend_requests_total": total},
        }

    records = [
        rec("frontend-0", 0, 100),
        rec("frontend-1", 0, 5000),
        rec("frontend-0", 10, 200),
        rec("frontend-1", 10, 5500),
    ]
    assert prom.summed_rates(records)["requests_per_s"] == 10.0 + 50.0
    assert prom.summed_rates(records)["output_tok_s"] is None
