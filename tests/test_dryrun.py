"""Dry-run of the gpt-oss reference deployment: golden files plus the issue's "done" criteria.

Goldens are rewritten only by `pytest --update-golden`; review the diff before committing.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator.config.load import CONF_DIR
from orchestrator.launchers.rundir import git_sha
from orchestrator.plan.model import ROLES

REFERENCE_WORKER = (
    "python3 -m dynamo.sglang --model-path openai/gpt-oss-120b --served-model-name "
    "openai/gpt-oss-120b --tp 4 --trust-remote-code --skip-tokenizer-init "
    "--disaggregation-mode {mode} --disaggregation-transfer-backend nixl "
    "--dyn-reasoning-parser gpt_oss --dyn-tool-call-parser harmony"
)
REFERENCE_FRONTEND = "python3 -m dynamo.frontend --http-port 8000"
CONTRACT_KEYS = ("name", "role", "node_index", "gpus", "ports", "env", "argv")
Golden = Callable[[str, str], None]

if any((CONF_DIR / "local").glob("*.yaml")):
    pytest.skip(
        "orchestrator/conf/local/*.yaml (site overrides) change the dry-run output",
        allow_module_level=True,
    )


# A checkout that is not the installed one (a worktree) is run as itself.
PYTHONPATH = {"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}


def dry_run(cwd: Path, *args: str) -> str:
    """`python -m orchestrator +model=gpt_oss_120b ARGS` in an empty `cwd` (it must stay empty)."""
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator", "+model=gpt_oss_120b", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(cwd), **PYTHONPATH},  # no Slurm, no site settings
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert list(cwd.iterdir()) == [], "dry-run wrote files"
    # The sbatch script execs the driver with the interpreter running the orchestrator, from
    # the directory the command ran in; its header names the commit.
    out = proc.stdout.replace(sys.executable, "<python>").replace(str(cwd), "<cwd>")
    sha = git_sha()
    return out.replace(f"(git {sha})", "(git <sha>)") if sha else out


def assert_runs(argv: list[str], reference: str) -> None:
    """`argv` is the reference command plus additions: same program, every flag with its value."""
    ref = shlex.split(reference)
    assert argv[:3] == ref[:3]
    for i, word in enumerate(ref[3:], start=3):
        if not word.startswith("--"):
            continue
        assert argv.count(word) == 1, f"{word} missing or repeated in {argv}"
        value = ref[i + 1] if i + 1 < len(ref) and not ref[i + 1].startswith("--") else None
        if value is not None:
            assert argv[argv.index(word) + 1] == value, word


@pytest.fixture(scope="module")
def plan_json(tmp_path_factory: pytest.TempPathFactory) -> str:
    return dry_run(tmp_path_factory.mktemp("json"), "dry_run=json", "launcher=submitit")


def test_json_golden(plan_json: str, golden: Golden) -> None:
    golden("gpt_oss_submitit.json", plan_json)


def test_json_meets_the_reference_deployment(plan_json: str) -> None:
    data: dict[str, Any] = json.loads(plan_json)
    procs = data["processes"]
    for proc in procs:
        assert all(key in proc for key in CONTRACT_KEYS), proc.keys()
        assert proc["role"] in ROLES
    roles = ("decode", "prefill", "frontend")
    by_role = {role: [p for p in procs if p["role"] == role] for role in roles}
    assert all(len(found) == 1 for found in by_role.values()), by_role
    for role, gpus in (("decode", "0,1,2,3"), ("prefill", "4,5,6,7")):
        (proc,) = by_role[role]
        assert proc["env"]["CUDA_VISIBLE_DEVICES"] == gpus
        assert proc["gpus"] == [int(g) for g in gpus.split(",")]
        assert proc["node_index"] == 0
        assert_runs(proc["argv"], REFERENCE_WORKER.format(mode=role))
    (front,) = by_role["frontend"]
    assert_runs(front["argv"], REFERENCE_FRONTEND)
    assert front["ports"]["http"] == 8000
    slurm = data["slurm"]
    assert slurm["nodes"] == 1 and slurm["launcher"] == "submitit"
    assert "--nodes=1" in slurm["sbatch"]
    assert slurm["submitit"]["nodes"] == 1 and slurm["submitit"]["gpus_per_node"] == 8
    assert set(slurm["srun"]) == {p["name"] for p in procs}
    for proc in procs:  # each srun step ends with the process's own command line
        assert slurm["srun"][proc["name"]][-len(proc["argv"]) :] == proc["argv"]
    assert "script" not in slurm  # only launcher=sbatch has one


def unwrap(text: str) -> str:
    return text.replace(" \\\n    ", " ")


def test_text_golden_shows_the_same_plan_as_json(
    plan_json: str, golden: Golden, tmp_path: Path
) -> None:
    text = dry_run(tmp_path, "dry_run=true", "launcher=submitit")
    golden("gpt_oss_submitit.txt", text)
    assert "PROCESS    ROLE      NODE  GPUS  PORTS" in text
    assert "decode-0   decode    0     0-3" in text
    assert "prefill-0  prefill   0     4-7" in text
    flat = unwrap(text)
    for proc in json.loads(plan_json)["processes"]:
        assert f"--- {proc['name']} ({proc['role']}, node {proc['node_index']}" in text
        assert "\n  " + shlex.join(proc["argv"]) + "\n" in flat, proc["name"]
        for key, value in proc["env"].items():
            assert f"\n  {key}={value}\n" in text
    assert "=== SLURM REQUEST (launcher=submitit) ===" in text
    assert "\nsbatch --job-name=orch-gpt-oss-120b-p1d1 --nodes=1 " in text
    assert "--- sbatch script ---" not in text


def test_sbatch_text_golden_includes_the_script(golden: Golden, tmp_path: Path) -> None:
    text = dry_run(tmp_path, "dry_run=true", "launcher=sbatch")
    golden("gpt_oss_sbatch.txt", text)
    script = text.split("--- sbatch script ---\n", 1)[1]
    assert script.startswith("#!/bin/bash\n")
    assert "#SBATCH --nodes=1\n" in script
    assert script.rstrip().endswith('exec <python> -m orchestrator.run.entry "$run_dir"')
    assert "cd <cwd>\n" in script  # the deployment runs where the command was launched


def test_benchmark_clients_are_part_of_the_dry_run(tmp_path: Path) -> None:
    points = "benchmark.points=[{concurrency:2,isl:64,osl:16},{concurrency:8,isl:64,osl:16}]"
    data = json.loads(
        dry_run(tmp_path, "dry_run=json", "engine=mocker", "benchmark=aiperf", points)
    )
    clients = [p for p in data["processes"] if p["role"] == "benchmark"]
    assert [(c["name"], c["node_index"], c["gpus"]) for c in clients] == [
        ("benchmark-0", 0, []),
        ("benchmark-1", 0, []),
    ]
    assert clients[1]["argv"][clients[1]["argv"].index("--concurrency") + 1] == "8"
    assert "http://{node_ip:0}:8000" in clients[0]["argv"]  # against the frontend
    assert set(data["slurm"]["srun"]) >= {"benchmark-0", "benchmark-1"}
