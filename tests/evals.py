"""The lm-eval fixture task (tests/fixtures/lm_eval/) and what the SGLang test double's answers to
it deserve: the double answers "What is A plus B?" with (A + B) mod 100 (it cannot carry into a
third digit), so its score is the share of questions whose sum is below 100."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "lm_eval"
TASK = "arith"
NUMBER = re.compile(r"-?[0-9]+")


def write_task(directory: Path) -> Path:
    """A copy of the fixture task whose data file is named by its absolute path; the directory
    to pass as benchmark.include_path."""
    directory.mkdir(parents=True, exist_ok=True)
    data = directory / "arith.jsonl"
    data.write_text((FIXTURE / "arith.jsonl").read_text())
    text = (FIXTURE / "arith.yaml").read_text().replace("test: arith.jsonl", f"test: {data}")
    (directory / "arith.yaml").write_text(text)
    return directory


def questions() -> list[dict[str, str]]:
    """The fixture's documents: {"question": "What is A plus B?", "answer": "S"}."""
    return [json.loads(x) for x in (FIXTURE / "arith.jsonl").read_text().splitlines()]


def double_score() -> float:
    """The exact-match score the test double's answers deserve."""
    docs = questions()
    right = sum(1 for d in docs if int(d["answer"]) < 100)
    return right / len(docs)


def deserved(samples: list[dict[str, Any]]) -> float:
    """The score lm-eval's own logged responses deserve under the task's filter (the last
    number of the answer equals the target); recomputed here from the raw responses."""
    hits = 0
    for s in samples:
        numbers = NUMBER.findall(s["resps"][0][0])
        hits += bool(numbers) and numbers[-1] == s["target"]
    return hits / len(samples)


def samples_of(out_dir: Path) -> list[dict[str, Any]]:
    """lm-eval's --log_samples lines of the arith task under `out_dir`."""
    (path,) = out_dir.rglob(f"samples_{TASK}_*.jsonl")
    return [json.loads(x) for x in path.read_text().splitlines()]
