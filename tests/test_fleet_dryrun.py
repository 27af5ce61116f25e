"""A 1024-node plan (issue 22) dry-runs like a 1-node one: every engine argv reaches the parser
on stdin (one command line overflowed the kernel's argv limit, E2BIG), command lines equal up to
their node and ports are parsed once, and the whole dry-run stays within 3x the reference plan's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from orchestrator.engines import dynamo_check, sglang_check
from orchestrator.plan.model import Plan
from orchestrator.plan.placeholders import renumbered

REPO = Path(__file__).resolve().parent.parent
FLEET = ("prefill.workers=512", "decode.workers=512", "prefill.tp=8", "decode.tp=8")


def test_renumbering_keeps_equal_values_equal_and_forgets_which_node() -> None:
    argv = [
        "--host",
        "{node_ip:7}",
        "--nccl-port",
        "{port:20031}",
        "--dist",
        "{node_ip:7}:{port:20032}",
        "--peer",
        "{node_host:9}",
        "{run_dir}/x",
    ]
    assert renumbered(argv) == [
        "--host",
        "{node_ip:0}",
        "--nccl-port",
        "{port:20000}",
        "--dist",
        "{node_ip:0}:{port:20001}",
        "--peer",
        "{node_host:1}",
        "{run_dir}/x",
    ]
    other = [
        "--host",
        "{node_ip:3}",
        "--nccl-port",
        "{port:20011}",
        "--dist",
        "{node_ip:3}:{port:20012}",
        "--peer",
        "{node_host:4}",
        "{run_dir}/x",
    ]
    assert renumbered(other) == renumbered(argv)


def test_a_thousand_nodes_have_as_many_distinct_argvs_as_one(plan_of: Callable[..., Plan]) -> None:
    plan = plan_of(*FLEET)
    assert plan.num_nodes == 1024
    argvs = sglang_check.sglang_argvs(plan, dynamo_check.DYNAMO_SGLANG)
    assert len(argvs) == 1024
    assert len(sglang_check.distinct_argvs([argvs])) == 2  # one prefill, one decode


def dry_run(*overrides: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator", "+model=gpt_oss_120b", *overrides, "dry_run=json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO,
        env=env,
    )
    return time.monotonic() - start, proc


def test_the_1024_node_dry_run_passes_the_parser_check_within_3x_the_reference() -> None:
    reference_s, reference = dry_run()
    fleet_s, fleet = dry_run(*FLEET)
    assert reference.returncode == 0, reference.stderr
    assert fleet.returncode == 0, fleet.stderr[-2000:]
    plan = json.loads(fleet.stdout)
    assert plan["num_nodes"] == 1024 and len(plan["processes"]) == 1026
    assert fleet_s <= 3 * reference_s, (fleet_s, reference_s)
