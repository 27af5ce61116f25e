"""autoscale=dynamo_planner: its keys' rules (every refusal, all at once, exit 2), the planner's
configuration checked by Dynamo's own PlannerConfig in the planner's venv, and its head process
in the plan (node 0, etcd discovery, no secret in argv, the config written into the run dir)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator.config.schema import RootConfig
from orchestrator.config.validate import validate
from orchestrator.core.errors import Issue
from orchestrator.core.tools import install_locations
from orchestrator.frontends.dynamo_planner import PYTHON, START_SCRIPT
from orchestrator.frontends.planner_check import planner_issues_many
from orchestrator.plan.build import build_plan
from orchestrator.plan.model import plan_from_dict, plan_to_dict
from tests.test_dryrun import Golden, dry_run
from tests.test_shell import lint
from tests.test_validation import replaced, run_cli

REPO = Path(__file__).resolve().parent.parent
BASE = ("+model=gpt_oss_120b", "engine=mocker", "autoscale=dynamo_planner", "launcher=sbatch")
Compose = Callable[..., RootConfig]


@pytest.fixture
def cfg_of(compose: Compose) -> Callable[..., RootConfig]:
    def make(values: dict[str, Any] | None = None, *groups: str) -> RootConfig:
        cfg = compose(*BASE, *groups)
        for key, value in (values or {}).items():
            cfg = replaced(cfg, key, value)
        return cfg

    return make


def keys(issues: list[Issue]) -> dict[str, Issue]:
    return {i.key: i for i in issues}


def test_the_packaged_option_is_valid_and_off_is_the_default(
    compose: Compose, cfg_of: Callable[..., RootConfig]
) -> None:
    assert compose("+model=gpt_oss_120b").autoscale.kind == "off"
    assert validate(cfg_of()) == []


@pytest.mark.parametrize(
    ("values", "groups", "key", "words"),
    [
        ({}, ("frontend=sglang_router", "engine=sglang"), "frontend.kind", "Dynamo runtime"),
        ({"frontend.discovery": "file"}, (), "frontend.discovery", "etcd"),
        ({"launcher.kind": "local"}, (), "launcher.kind", "attached Slurm jobs"),
        ({"aggregated.workers": 1}, ("deployment=aggregated",), "deployment.mode", "disagg"),
        ({"autoscale.optimization_target": "fast"}, (), "autoscale.optimization_target", "unknown"),
        ({"autoscale.kind": "hpa"}, (), "autoscale.kind", "unknown"),
        ({"prefill.workers": 3}, (), "prefill.workers", "outside the bounds [1, 2]"),
        ({"autoscale.min_decode": 2}, (), "decode.workers", "outside the bounds [2, 4]"),
        ({"autoscale.min_prefill": 0}, (), "autoscale.min_prefill", ">= 1"),
        ({"autoscale.max_decode": 0}, (), "autoscale.max_decode", "below autoscale.min_decode"),
        ({"autoscale.max_gpus": 4}, (), "autoscale.max_gpus", "starting workers (8)"),
        ({"autoscale.max_gpus": -1}, (), "autoscale.max_gpus", "negative"),
        ({"autoscale.interval_s": 0}, (), "autoscale.interval_s", "positive"),
        ({"autoscale.pending_timeout_s": -5.0}, (), "autoscale.pending_timeout_s", "positive"),
        ({"autoscale.args": {"namespace": "x"}}, (), "autoscale.args.namespace", "set by the run"),
    ],
)
def test_each_refusal_names_key_value_and_fix(
    cfg_of: Callable[..., RootConfig],
    values: dict[str, Any],
    groups: tuple[str, ...],
    key: str,
    words: str,
) -> None:
    found = keys(validate(cfg_of(values, *groups)))
    assert key in found, found
    assert words in found[key].problem and found[key].fix


def test_auto_discovery_is_etcd_with_autoscale_even_on_one_node(
    cfg_of: Callable[..., RootConfig],
) -> None:
    plan = build_plan(cfg_of())
    assert plan.num_nodes == 1
    assert {p.name for p in plan.processes} >= {"etcd", "frontend", "planner"}
    assert plan.process("planner").env["DYN_DISCOVERY_BACKEND"] == "etcd"


def test_cli_refuses_every_problem_at_once_with_exit_2() -> None:
    proc = run_cli(
        *BASE[:3],
        "launcher=local",
        "dry_run=true",
        "frontend.discovery=file",
        "prefill.workers=5",
        "autoscale.max_gpus=2",
    )
    assert (proc.returncode, proc.stdout) == (2, ""), proc.stderr
    for key in ("launcher.kind=local", "frontend.discovery=file", "prefill.workers=5"):
        assert key in proc.stderr
    assert "autoscale.max_gpus=2" in proc.stderr and "Traceback" not in proc.stderr


def test_the_planner_runs_on_node_0_next_to_the_frontend_with_no_secret(
    cfg_of: Callable[..., RootConfig],
) -> None:
    plan = build_plan(cfg_of({"frontend.namespace": "team-a"}))
    p = plan.process("planner")
    assert (p.node_index, p.gpus, p.restart.mode) == (0, (), "on_failure")
    assert p.env["DYN_NAMESPACE"] == "team-a" and p.env["ETCD_ENDPOINTS"].startswith("http://")
    assert not any("PASSWORD" in k or "ETCD_AUTH" in k for k in p.env)
    config = json.loads(p.argv[4])
    assert config["environment"] == "virtual" and config["namespace"] == "team-a"
    assert (config["prefill_min_endpoint"], config["decode_min_endpoint"]) == (1, 1)
    assert config["max_gpu_budget"] == 2 * 4 + 4 * 4  # the maxima's GPUs (TP4 workers)
    assert p.argv[5] == "{run_dir}/planner"  # its config file and working directory
    assert plan.autoscale is not None
    assert (plan.autoscale.namespace, plan.autoscale.max_decode, plan.autoscale.max_gpus) == (
        "team-a",
        4,
        24,
    )
    assert plan_from_dict(json.loads(json.dumps(plan_to_dict(plan)))).autoscale == plan.autoscale


def test_placement_here_runs_the_planner_on_this_host(cfg_of: Callable[..., RootConfig]) -> None:
    plan = build_plan(
        cfg_of({"frontend.host": "10.77.0.1"}, "frontend.placement=here", "launcher=sbatch")
    )
    assert "planner" in {p.name for p in plan.processes}
    assert plan.serve is not None and "planner" not in {
        p.name for p in plan.serve.workers.processes
    }


def test_start_script_writes_the_config_then_execs_the_planner_in_its_folder(
    tmp_path: Path,
) -> None:
    script = tmp_path / "start.sh"
    script.write_text(f"#!/bin/bash\n{START_SCRIPT}\n")
    lint(script)  # bash -n and shellcheck
    fake = tmp_path / "fake-python"
    fake.write_text('#!/bin/sh\necho "$PWD" "$@"\n')
    fake.chmod(0o755)
    text = '{"model_name": "a \'b\' $HOME"}'
    folder = tmp_path / "run" / "planner"
    done = subprocess.run(
        ["bash", "-c", START_SCRIPT, "planner", text, str(folder), str(fake)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert (folder / "planner.json").read_text() == text + "\n"
    assert done.stdout.split() == [
        str(folder),
        "-m",
        "dynamo.planner",
        "--config",
        str(folder / "planner.json"),
    ]


PLANNER_VENV = next((p for p in install_locations(PYTHON) if p.exists()), None)
needs_planner = pytest.mark.skipif(
    PLANNER_VENV is None,
    reason="scripts/install.sh --with-planner not run (scripts/test.sh runs it)",
)


@needs_planner
def test_the_planners_own_model_checks_the_whole_config(
    cfg_of: Callable[..., RootConfig],
) -> None:
    """One subprocess in .venvs/planner for every config: accepted, an unknown field, a value
    its model refuses, `load` without its thresholds, and sla without NVIDIA's aisimulate."""
    load = {
        "prefill_scale_up_queue_tokens": 4096,
        "prefill_scale_down_queue_tokens": 512,
        "decode_scale_up_kv_rate": 0.8,
        "decode_scale_down_kv_rate": 0.2,
    }
    cfgs = [
        cfg_of(),
        cfg_of({"autoscale.args": {"no_such_field": 1}}),
        cfg_of({"autoscale.args": {"load_predictor": "crystal_ball"}}),
        cfg_of({"autoscale.optimization_target": "load"}),
        cfg_of({"autoscale.optimization_target": "load", "autoscale.args": load}),
        cfg_of({"autoscale.optimization_target": "sla"}),
    ]
    ok, unknown, bad, load_bare, load_full, sla = planner_issues_many(cfgs)
    assert ok == [] and load_full == []
    assert [i.key for i in unknown] == ["autoscale.args.no_such_field"]
    assert "not a PlannerConfig field" in unknown[0].problem
    assert [i.key for i in bad] == ["autoscale.args.load_predictor"]
    assert "refused by Dynamo's planner" in bad[0].problem
    assert load_bare and all("PlannerConfig" in i.problem for i in load_bare)
    assert [i.key for i in sla] == ["autoscale.optimization_target"]
    assert "aisimulate" in sla[0].problem and "latency or load" in sla[0].fix


def test_a_missing_planner_interpreter_is_refused_with_the_install_command(
    cfg_of: Callable[..., RootConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        "orchestrator.frontends.planner_check.planner_python",
        lambda cfg: str(tmp_path / "nope" / "python"),
    )
    (found,) = planner_issues_many([cfg_of()])
    assert [i.key for i in found] == ["autoscale.python"]
    assert "scripts/install.sh --with-planner" in found[0].fix


@needs_planner
def test_dry_run_shows_the_planner_and_the_autoscale_bounds(golden: Golden, tmp_path: Path) -> None:
    text = dry_run(tmp_path, *BASE[1:], "dry_run=true").replace(str(REPO), "<repo>")
    start = text.index("--- planner ")
    block = text[start : text.index("\n\n", start)]
    section = text[text.index("=== AUTOSCALE ===") :].split("\n\n", 1)[0]
    golden("autoscale_planner.txt", f"{block}\n\n{section}\n")
    assert "  kind: dynamo_planner" in text  # the config section shows every autoscale key
    assert "ETCD_AUTH" not in block  # the password reaches it in the driver's environment
