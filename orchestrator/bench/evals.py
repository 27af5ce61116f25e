"""Accuracy evals as benchmark points: EleutherAI lm-evaluation-harness against the frontend.

`benchmark=lm_eval` runs one point: `lm_eval run` (its own venv, tools.LM_EVAL) with the
`local-chat-completions` or `local-completions` model pointed at the frontend's OpenAI endpoint,
every task of `benchmark.tasks` in one invocation. lm-eval writes
`<out>/<model>/results_<time>.json` (per task `"<metric>,<filter>": value` and
`"<metric>_stderr,<filter>": stderr`) and, with `--log_samples`, every prompt and answer; each
(task, metric, filter) becomes one row of results/points.jsonl. `benchmark.min_accuracy.<task>`
gates the task's first metric (lm-eval's order: its metric_list, then its filter_list).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.config.schema import BenchmarkConfig, RootConfig
from orchestrator.core.errors import Issue
from orchestrator.core.tools import LM_EVAL, tool_or_default
from orchestrator.plan.model import LoadPoint

# lm-eval's API models and the OpenAI path each one posts to.
LM_EVAL_MODELS = {
    "local-chat-completions": "/v1/chat/completions",
    "local-completions": "/v1/completions",
}
RESULTS_GLOB = "results_*.json"
# Start-up (imports, task loading) and the pessimistic per-document cost of the time estimate.
OVERHEAD_S = 30.0
DOCS_IF_UNLIMITED = 1000
GENERATION_S = 15.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Score:
    """One metric of one task as lm-eval reported it."""

    task: str
    metric: str  # e.g. exact_match
    filter: str  # e.g. strict-match (lm-eval's "none" when the task has no filter)
    value: float | None
    stderr: float | None  # None where lm-eval reports "N/A" (e.g. a single document)
    samples: int  # documents evaluated


def lm_eval_binary(b: BenchmarkConfig) -> str:
    """benchmark.binary, else lm_eval on PATH, else install.sh's .venvs/lm_eval (tools.py)."""
    return tool_or_default(LM_EVAL, explicit=b.binary)


def eval_point(b: BenchmarkConfig) -> LoadPoint:
    """The single accuracy point: its tasks, concurrency and document limit."""
    return LoadPoint(
        index=0,
        concurrency=b.num_concurrent,
        isl=0,
        osl=0,
        requests=b.limit,
        warmup=0,
        tasks=tuple(b.tasks),
    )


def estimate_s(b: BenchmarkConfig) -> float:
    """Seconds an eval is expected to take (without benchmark.duration_estimate_min)."""
    docs = (b.limit or DOCS_IF_UNLIMITED) * max(len(b.tasks), 1)
    return OVERHEAD_S + math.ceil(docs / max(b.num_concurrent, 1)) * GENERATION_S


def lm_eval_argv(b: BenchmarkConfig, *, url: str, model: str, out_dir: str) -> list[str]:
    """`lm_eval run` of every task against the frontend at `url`; results in `out_dir`."""
    # tokenized_requests=False + no tokenizer: lm-eval sends text and never loads a tokenizer
    # (no hub access); the server applies the model's chat template for chat completions.
    model_args = [
        f"model={model}",
        f"base_url={url}{LM_EVAL_MODELS.get(b.lm_eval_model, '')}",
        f"num_concurrent={b.num_concurrent}",
        "max_retries=3",
        "tokenized_requests=False",
        "tokenizer_backend=None",
    ]
    argv = [lm_eval_binary(b), "run", "--model", b.lm_eval_model]
    argv += ["--model_args", ",".join(model_args), "--tasks", ",".join(b.tasks)]
    if b.lm_eval_model == "local-chat-completions":
        argv.append("--apply_chat_template")  # lm-eval refuses chat models without it
    if b.include_path:
        argv += ["--include_path", b.include_path]
    if b.limit:
        argv += ["--limit", str(b.limit)]
    if b.num_fewshot >= 0:
        argv += ["--num_fewshot", str(b.num_fewshot)]
    argv += ["--seed", str(b.seed), "--output_path", out_dir, "--log_samples"]
    return argv + list(b.extra_args)


def eval_issues(cfg: RootConfig) -> list[Issue]:
    """benchmark=lm_eval's keys: tasks, model, counts, the accuracy gate, the binary."""
    return _setting_issues(cfg.benchmark) + _gate_issues(cfg.benchmark) + _binary_issues(cfg)


def _setting_issues(b: BenchmarkConfig) -> list[Issue]:
    """Tasks given, a known lm-eval model, counts in range."""
    issues = []
    if not b.tasks:
        issues.append(
            Issue(
                "benchmark.tasks",
                "[]",
                "benchmark=lm_eval needs at least one task",
                "set benchmark.tasks=[gsm8k] (lm_eval ls tasks lists them)",
            )
        )
    if b.lm_eval_model not in LM_EVAL_MODELS:
        issues.append(
            Issue(
                "benchmark.lm_eval_model",
                repr(b.lm_eval_model),
                "unknown value",
                f"use one of: {', '.join(LM_EVAL_MODELS)}",
            )
        )
    for key, value, low in (
        ("limit", b.limit, 0),
        ("num_fewshot", b.num_fewshot, -1),
        ("num_concurrent", b.num_concurrent, 1),
    ):
        if value < low:
            issues.append(
                Issue(
                    f"benchmark.{key}",
                    str(value),
                    f"must be at least {low}",
                    f"set benchmark.{key}={max(low, 0)} or more",
                )
            )
    return issues


def _gate_issues(b: BenchmarkConfig) -> list[Issue]:
    """benchmark.min_accuracy: only for tasks that run, each a fraction."""
    issues = []
    for task, gate in b.min_accuracy.items():
        if task not in b.tasks:
            issues.append(
                Issue(
                    f"benchmark.min_accuracy.{task}",
                    f"{gate:g}",
                    f"gates a task that is not run (benchmark.tasks={list(b.tasks)})",
                    "add the task or drop the gate",
                )
            )
        elif not 0 <= gate <= 1:
            issues.append(
                Issue(
                    f"benchmark.min_accuracy.{task}",
                    f"{gate:g}",
                    "is a fraction",
                    "use a value in 0-1, e.g. 0.9",
                )
            )
    return issues


def _binary_issues(cfg: RootConfig) -> list[Issue]:
    """lm_eval must exist where it is looked for (a path on this host, outside containers)."""
    binary = lm_eval_binary(cfg.benchmark)
    if cfg.cluster.container_image or not binary.startswith("/") or Path(binary).exists():
        return []
    return [
        Issue(
            "benchmark.binary",
            binary,
            "does not exist",
            "run scripts/install.sh --with-lm-eval, or set benchmark.binary",
        )
    ]


# --- results -------------------------------------------------------------------------------
def read_lm_eval(out_dir: Path) -> dict[str, Any] | None:
    """The newest results_*.json lm-eval wrote anywhere under `out_dir` (None: none)."""
    found = sorted(out_dir.rglob(RESULTS_GLOB), key=lambda p: p.stat().st_mtime)
    for path in reversed(found):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            return data
    return None


def _number(value: Any) -> float | None:
    """A finite float, or None (lm-eval writes "N/A" for a stderr it cannot compute)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def scores(data: Mapping[str, Any]) -> list[Score]:
    """Every (task, metric, filter) of a results file, in lm-eval's order."""
    out = []
    samples = data.get("n-samples") or {}
    for task, metrics in (data.get("results") or {}).items():
        done = int((samples.get(task) or {}).get("effective") or 0)
        for key, value in metrics.items():
            metric, sep, filt = key.partition(",")
            if not sep or metric.endswith("_stderr"):
                continue  # alias, name, sample_len, and the stderr entries read below
            stderr = _number(metrics.get(f"{metric}_stderr,{filt}"))
            out.append(
                Score(
                    task=task,
                    metric=metric,
                    filter=filt,
                    value=_number(value),
                    stderr=stderr,
                    samples=done,
                )
            )
    return out


def judge_scores(
    found: list[Score], *, tasks: tuple[str, ...], gates: Mapping[str, float], exit_code: int
) -> dict[tuple[str, str, str], str]:
    """Why each score is invalid, by (task, metric, filter); valid scores are absent. A task
    without any score, a failed client, no documents and a gate not met all invalidate."""
    reasons: dict[tuple[str, str, str], str] = {}
    firsts: dict[str, Score] = {}
    for s in found:
        firsts.setdefault(s.task, s)
        key = (s.task, s.metric, s.filter)
        if exit_code:
            reasons[key] = f"lm_eval exited with code {exit_code}"
        elif s.value is None or not s.samples:
            reasons[key] = "no documents were scored"
    for task, low in gates.items():
        first = firsts.get(task)
        if first is not None and first.value is not None and first.value < low:
            key = (task, first.metric, first.filter)
            reasons.setdefault(
                key,
                f"{task} {first.metric} ({first.filter}) {first.value:.4g} "
                f"below benchmark.min_accuracy.{task}={low:g}",
            )
    for task in tasks:
        if task not in firsts:
            reasons[(task, "", "")] = "lm_eval reported no result for the task"
    return reasons


def eval_rows(
    found: list[Score],
    reasons: Mapping[tuple[str, str, str], str],
    point: LoadPoint,
    context: Mapping[str, Any],
) -> list[dict[str, Any]]:
    """The points.jsonl rows of an accuracy point: one per score, and one per task that has
    none (its reason says why)."""
    base = {"name": context.get("name", ""), "point": point.index, "tool": "lm_eval"}
    base["concurrency"] = point.concurrency
    facts = {k: v for k, v in context.items() if k != "name"}
    missing = [
        Score(task=task, metric="", filter="", value=None, stderr=None, samples=0)
        for (task, metric, _), reason in reasons.items()
        if not metric
    ]
    rows = []
    for s in [*found, *missing]:
        reason = reasons.get((s.task, s.metric, s.filter), "")
        score = {"task": s.task, "metric": s.metric, "filter": s.filter, "value": s.value}
        score.update(stderr=s.stderr, samples=s.samples, valid=not reason, invalid_reason=reason)
        rows.append({**base, **score, **facts})
    return rows


def row_line(row: Mapping[str, Any]) -> str:
    """One progress line per accuracy row."""
    head = f"accuracy {row['task']} {row['metric']} ({row['filter']})"
    if not row["valid"]:
        return f"{head}: INVALID: {row['invalid_reason']}"
    stderr = f" ± {row['stderr']:.3f}" if row["stderr"] is not None else ""
    return f"{head}: {row['value']:.4f}{stderr} over {row['samples']} document(s)"
