"""benchmark=lm_eval on the Slurm testbed with the real lm-evaluation-harness (.venvs/lm_eval), the
local task of tests/fixtures/lm_eval (10 "What is A plus B?" questions), offline
(HF_DATASETS_OFFLINE=1, a fresh HF_HOME).

- sglang-router + the SGLang test double, which answers each question with (A + B) mod 100: the
  prompts lm-eval sends reach the workers (one per question, each question last in its chat, after
  its few-shot turns), its answers are parsed ("The answer is 42." -> 42) and scored 0.7 (the 7
  sums below 100), and benchmark.min_accuracy.arith=0.9 fails the run on that score.
- Dynamo + mocker, in one sweep with an aiperf point of the same deployment: the mocker answers
  random tokens, so the score must be what its logged answers deserve; ctl collect puts both
  points in results.csv and the accuracy in the decision table's Accuracy column.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from orchestrator.config.load import quote_override_value
from orchestrator.core.tools import AIPERF, LM_EVAL, find_tool
from tests import e2e, evals
from tests.slurm.test_e2e_sweep import job_ids, wait_final

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(
        find_tool(LM_EVAL) is None or find_tool(AIPERF) is None,
        reason="lm_eval or aiperf not installed (scripts/install.sh --with-lm-eval --with-aiperf)",
    ),
]
DOUBLE = e2e.REPO / "tests" / "doubles" / "sglang_test_double.py"
QUESTION = re.compile(r"What is \d+ plus \d+\?")


def lm_eval_keys(tmp_path: Path, *extra: str) -> list[str]:
    """The eval settings: the fixture task, offline, a fresh HF cache."""
    task_dir = evals.write_task(tmp_path / "tasks")
    return [
        "benchmark.tasks=[arith]",
        f"benchmark.include_path={task_dir}",
        f"+benchmark.env.HF_HOME={tmp_path / 'hf'}",
        "+benchmark.env.HF_DATASETS_OFFLINE=1",
        "cluster=testbed",
        "readiness.timeout_s=120",
        "cluster.time_limit_min=10",
        *extra,
    ]


def points(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "results" / "points.jsonl").read_text().splitlines()]


def test_router_and_double_prompts_answers_score_and_gate(
    slurm_jobs: list[str], tmp_path: Path
) -> None:
    run_dir, record = tmp_path / "run", tmp_path / "requests.jsonl"
    proc = e2e.cli(
        [
            "+model=gpt_oss_120b",
            "frontend=sglang_router",
            "engine=sglang",
            f"engine.python={DOUBLE}",
            "launcher=submitit",
            "prefill.tp=1",
            "decode.tp=1",
            f"run_dir={run_dir}",
            f"+engine.env.SGLANG_DOUBLE_RECORD={record}",
            "benchmark=lm_eval",
            "benchmark.num_fewshot=2",
            "benchmark.limit=10",
            "+benchmark.min_accuracy.arith=0.9",
            *lm_eval_keys(tmp_path),
        ]
    )
    if proc.stdout.split():
        slurm_jobs.append(proc.stdout.split()[0])
    # The command follows the job to its end: the gate failed it.
    assert proc.returncode == 1, proc.stderr
    assert "0.7 below benchmark.min_accuracy.arith=0.9" in proc.stderr.splitlines()[-1]
    st = e2e.state(run_dir)
    (row,) = points(run_dir)
    # The score: 7 of 10 sums are below 100; the gate at 0.9 fails the run on it.
    assert (row["task"], row["metric"], row["filter"], row["samples"]) == (
        "arith",
        "exact_match",
        "last_number",
        10,
    )
    assert row["value"] == pytest.approx(evals.double_score()) == pytest.approx(0.7)
    assert row["stderr"] == pytest.approx(0.1528, abs=1e-3)
    assert not row["valid"] and "below benchmark.min_accuracy.arith=0.9" in row["invalid_reason"]
    assert st["phase"] == "failed" and "0.7 below benchmark.min_accuracy.arith=0.9" in st["error"]
    # The prompts: each question once at the decode, after 2 few-shot questions.
    prompts = [
        r["prompt"]
        for r in map(json.loads, record.read_text().splitlines())
        if r["mode"] == "decode" and "plus" in r["prompt"]
    ]
    asked = [QUESTION.findall(p) for p in prompts]
    assert sorted(q[-1] for q in asked) == sorted(d["question"] for d in evals.questions())
    assert {len(q) for q in asked} == {3}
    # The answers, parsed by the task's filter.
    samples = evals.samples_of(run_dir / "results" / "00-eval")
    for s in samples:
        a, b = (int(x) for x in evals.NUMBER.findall(s["doc"]["question"]))
        assert s["filtered_resps"] == [str((a + b) % 100)]
    assert e2e.nothing_left(run_dir)


def test_mocker_sweep_mixes_load_and_accuracy_points(slurm_jobs: list[str], tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    res = e2e.cli(
        [
            "-m",
            "+model=gpt_oss_120b",
            "engine=mocker",
            "benchmark=aiperf,lm_eval",
            "benchmark.points=[{concurrency:2,isl:64,osl:16,requests:8}]",
            "benchmark.limit=6",
            f"sweep_dir={quote_override_value(str(sweep_dir))}",
            *lm_eval_keys(tmp_path),
        ]
    )
    slurm_jobs.extend(job_ids(sweep_dir) if (sweep_dir / "manifest.json").exists() else [])
    assert res.returncode == 0, res.stderr
    final = wait_final(sweep_dir, timeout=300)
    assert {label: s["status"] for label, s in final.items()} == {
        "benchmark=aiperf": "valid",
        "benchmark=lm_eval": "valid",
    }
    eval_dir = Path(final["benchmark=lm_eval"]["run_dir"])
    (row,) = points(eval_dir)
    samples = evals.samples_of(eval_dir / "results" / "00-eval")
    assert row["samples"] == len(samples) == 6
    assert row["value"] == pytest.approx(evals.deserved(samples))

    collected = e2e.ctl("collect", str(sweep_dir))
    assert collected.returncode == 0, collected.stderr
    table = list(csv.DictReader((sweep_dir / "results.csv").open()))
    assert sorted(r["tool"] for r in table) == ["aiperf", "lm_eval"]
    decision = list(csv.DictReader((sweep_dir / "decision.csv").open()))
    assert [r["accuracy"] for r in decision] == [f"arith {row['value']:.3f}"]
    assert "| GPUs | Accuracy" in (sweep_dir / "decision.md").read_text()
