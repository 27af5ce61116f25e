"""benchmark=lm_eval without a deployment: lm-eval's command line, the parsing of its results file
(a captured one, and the shapes of real tasks), the accuracy gate, validation, the benchmark step
with a stand-in client replaying the captured result, and the accuracy column of the decision
table. The pipeline against real servers: tests/slurm/test_e2e_lm_eval.py."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from orchestrator.bench import evals
from orchestrator.bench.step import attach_benchmark
from orchestrator.config.validate import validate
from orchestrator.core.effects import SystemClock
from orchestrator.core.errors import Issue
from orchestrator.plan.build import build_plan
from orchestrator.plan.model import plan_from_dict, plan_to_dict
from orchestrator.plan.placeholders import Bindings, bind_plan
from orchestrator.run.driver import Driver
from orchestrator.runtime.processes import LocalBackend
from orchestrator.runtime.state import StateFile
from orchestrator.sweep.collect import decision_markdown, decision_rows, write_decision
from tests.fakes import FakeHttp
from tests.test_bench_step import READY_HTTP

CAPTURED = Path(__file__).parent / "fixtures" / "lm_eval" / "captured"
EVAL = ("+model=gpt_oss_120b", "engine=mocker", "benchmark=lm_eval", "benchmark.tasks=[arith]")
# gsm8k's shape in lm-eval 0.4.x: two filters of one metric; "N/A" where no stderr exists.
GSM8K = {
    "results": {
        "gsm8k": {
            "alias": "gsm8k",
            "exact_match,strict-match": 0.75,
            "exact_match_stderr,strict-match": 0.02,
            "exact_match,flexible-extract": 0.8,
            "exact_match_stderr,flexible-extract": "N/A",
        }
    },
    "n-samples": {"gsm8k": {"original": 1319, "effective": 200}},
}


def test_scores_of_the_captured_result() -> None:
    data = evals.read_lm_eval(CAPTURED)
    assert data is not None
    (score,) = evals.scores(data)
    assert (score.task, score.metric, score.filter, score.value, score.samples) == (
        "arith",
        "exact_match",
        "last_number",
        0.7,
        10,
    )
    assert score.stderr == pytest.approx(0.15275, abs=1e-4)


def test_scores_keep_lm_evals_order_and_a_missing_stderr_is_none() -> None:
    strict, flexible = evals.scores(GSM8K)
    assert (strict.filter, strict.value, strict.stderr) == ("strict-match", 0.75, 0.02)
    assert strict.samples == 200
    assert (flexible.filter, flexible.stderr) == ("flexible-extract", None)


def test_the_gate_applies_to_the_first_metric_of_its_task() -> None:
    found = evals.scores(GSM8K)
    below = evals.judge_scores(found, tasks=("gsm8k",), gates={"gsm8k": 0.9}, exit_code=0)
    assert below == {
        (
            "gsm8k",
            "exact_match",
            "strict-match",
        ): "gsm8k exact_match (strict-match) 0.75 below benchmark.min_accuracy.gsm8k=0.9"
    }
    assert evals.judge_scores(found, tasks=("gsm8k",), gates={"gsm8k": 0.75}, exit_code=0) == {}


def test_a_failed_client_or_a_task_without_result_is_invalid() -> None:
    found = evals.scores(GSM8K)
    failed = evals.judge_scores(found, tasks=("gsm8k",), gates={}, exit_code=1)
    assert set(failed.values()) == {"lm_eval exited with code 1"} and len(failed) == 2
    missing = evals.judge_scores(found, tasks=("gsm8k", "mmlu"), gates={}, exit_code=0)
    assert missing == {("mmlu", "", ""): "lm_eval reported no result for the task"}


def test_argv_chat_and_completions(compose: Any) -> None:
    b = compose(
        *EVAL,
        "benchmark.limit=50",
        "benchmark.num_fewshot=5",
        "benchmark.include_path=/shared/tasks",
        "benchmark.binary=lm_eval",
    ).benchmark
    argv = evals.lm_eval_argv(b, url="http://n0:8000", model="m", out_dir="/r/00-eval")
    assert argv[:4] == ["lm_eval", "run", "--model", "local-chat-completions"]
    args = argv[argv.index("--model_args") + 1].split(",")
    assert "base_url=http://n0:8000/v1/chat/completions" in args and "model=m" in args
    assert "--apply_chat_template" in argv and argv[argv.index("--limit") + 1] == "50"
    assert argv[argv.index("--num_fewshot") + 1] == "5"
    assert argv[argv.index("--include_path") + 1] == "/shared/tasks"
    plain = dataclasses.replace(b, lm_eval_model="local-completions", limit=0, num_fewshot=-1)
    argv = evals.lm_eval_argv(plain, url="http://n0:8000", model="m", out_dir="/r")
    assert "base_url=http://n0:8000/v1/completions" in argv[argv.index("--model_args") + 1]
    assert not {"--apply_chat_template", "--limit", "--num_fewshot"} & set(argv)


def test_validation_names_every_eval_problem_at_once(compose: Any) -> None:
    cfg = compose(
        "+model=gpt_oss_120b",
        "engine=mocker",
        "benchmark=lm_eval",
        "benchmark.tasks=[]",
        "benchmark.lm_eval_model=hf",
        "benchmark.num_concurrent=0",
        "+benchmark.min_accuracy.gsm8k=90",
        "benchmark.binary=/nonexistent/lm_eval",
    )
    keys = {i.key for i in validate(cfg)}
    assert {
        "benchmark.tasks",
        "benchmark.lm_eval_model",
        "benchmark.num_concurrent",
        "benchmark.min_accuracy.gsm8k",
        "benchmark.binary",
    } <= keys
    ok = compose(*EVAL, "benchmark.binary=lm_eval", "+benchmark.min_accuracy.arith=0.9")
    assert [i for i in validate(ok) if i.key.startswith("benchmark")] == []
    out_of_range = evals.eval_issues(
        dataclasses.replace(
            ok, benchmark=dataclasses.replace(ok.benchmark, min_accuracy={"arith": 1.5})
        )
    )
    assert out_of_range == [
        Issue(
            "benchmark.min_accuracy.arith", "1.5", "is a fraction", "use a value in 0-1, e.g. 0.9"
        )
    ]


def test_the_plan_carries_the_point_and_the_gate_through_plan_json(compose: Any) -> None:
    cfg = compose(*EVAL, "benchmark.binary=lm_eval", "+benchmark.min_accuracy.arith=0.9")
    plan = build_plan(cfg)
    assert plan.benchmark is not None and plan.benchmark.tool == "lm_eval"
    (point,) = plan.benchmark.points
    assert point.tasks == ("arith",) and point.label() == "00-eval"
    assert plan_from_dict(json.loads(json.dumps(plan_to_dict(plan)))) == plan


# --- the step, with a stand-in lm_eval replaying the captured result ---------------------------
FAKE_LM_EVAL = """\
import shutil, sys
out = sys.argv[sys.argv.index("--output_path") + 1]
shutil.copytree(sys.argv[-1], out, dirs_exist_ok=True)
"""


def run_step(compose: Any, tmp_path: Path, *overrides: str) -> tuple[Driver, list[dict[str, Any]]]:
    script = tmp_path / "fake-lm-eval"
    script.write_text(f"#!{sys.executable}\n{FAKE_LM_EVAL}")
    script.chmod(0o755)
    cfg = compose(
        *EVAL,
        f"benchmark.binary={script}",
        f"benchmark.extra_args=[{CAPTURED}]",
        "readiness.interval_s=0.05",
        "readiness.timeout_s=10",
        *overrides,
    )
    plan = bind_plan(build_plan(cfg), Bindings(("127.0.0.1",), ("localhost",), "", str(tmp_path)))
    plan = dataclasses.replace(plan, processes=())  # no deployment: only the client runs
    driver = Driver(
        plan,
        run_dir=tmp_path,
        backend=LocalBackend(),
        http=FakeHttp(READY_HTTP),
        clock=SystemClock(),
        state=StateFile(tmp_path),
        say=lambda _m: None,
    )  # type: ignore[arg-type]
    attach_benchmark(driver, plan.benchmark)
    driver.run()
    lines = (tmp_path / "results" / "points.jsonl").read_text().splitlines()
    return driver, [json.loads(x) for x in lines]


def test_step_writes_a_row_per_task_and_metric(compose: Any, tmp_path: Path) -> None:
    _, rows = run_step(compose, tmp_path, "+benchmark.min_accuracy.arith=0.7")
    (row,) = rows
    assert (
        row["tool"],
        row["task"],
        row["metric"],
        row["value"],
        row["samples"],
        row["valid"],
    ) == ("lm_eval", "arith", "exact_match", 0.7, 10, True)
    assert row["topology"]["prefill_workers"] == 1 and row["artifacts"] == "results/00-eval"
    summary = json.loads((tmp_path / "results" / "summary.json").read_text())
    assert summary["valid"] is True


def test_step_fails_the_run_below_the_gate(compose: Any, tmp_path: Path) -> None:
    driver, rows = run_step(compose, tmp_path, "+benchmark.min_accuracy.arith=0.9")
    assert [r["valid"] for r in rows] == [False]
    reason = json.loads((tmp_path / "results" / "summary.json").read_text())["reason"]
    assert "arith exact_match (last_number) 0.7 below benchmark.min_accuracy.arith=0.9" in reason
    assert json.loads((tmp_path / "state.json").read_text())["phase"] == "failed"


# --- the decision table ------------------------------------------------------------------------
def topology(prefill: int) -> dict[str, Any]:
    return {"name": "x", "mode": "disaggregated", "prefill_workers": prefill, "decode_workers": 1}


LOAD = {
    "name": "gpt-oss-p1d1-benchmark-aiperf",
    "tok_s_per_user": 40.0,
    "output_tok_s_per_gpu": 300.0,
    "concurrency": 8,
    "valid": True,
    "topology": topology(1),
    "gpus": {"total": 8},
}
ACCURACY = {
    "name": "gpt-oss-p1d1-benchmark-lm_eval",
    "task": "arith",
    "metric": "exact_match",
    "filter": "last_number",
    "value": 0.7,
    "stderr": 0.15,
    "samples": 10,
    "valid": True,
    "topology": topology(1),
}


def test_decision_table_shows_the_accuracy_of_the_same_deployment(tmp_path: Path) -> None:
    other = {
        **LOAD,
        "name": "p2d1",
        "tok_s_per_user": 20.0,
        "output_tok_s_per_gpu": 500.0,
        "topology": topology(2),
    }
    table = decision_rows([LOAD, other, ACCURACY])
    assert {r["name"]: r["accuracy"] for r in table} == {LOAD["name"]: "arith 0.700", "p2d1": "-"}
    assert "| GPUs | Accuracy" in decision_markdown(table, [])
    md, _ = write_decision(tmp_path, [LOAD, other, ACCURACY], [])
    text = md.read_text()
    assert "## Accuracy (benchmark=lm_eval)" in text
    row = (
        "gpt-oss-p1d1-benchmark-lm_eval | arith | exact_match | last_number | 0.7000 | 0.1500 | 10"
    )
    assert row in text
