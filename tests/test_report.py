"""ctl report: one self-contained HTML file, rendered in the real headless Chromium: no console
errors, no network references, the expected sections, the timeline picture and, for a sweep,
the embedded Pareto plot."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.config.schema import RootConfig
from orchestrator.ctl.report import report
from orchestrator.observe.timeline_svg import parse_time, rows
from orchestrator.rundir import write_json_atomic
from tests import chromium
from tests.test_see import T0, make_run, starting_state

needs_chromium = pytest.mark.skipif(chromium.binary() is None, reason="chromium not installed")
SECTIONS = (
    "section-timeline",
    "section-benchmark",
    "section-metrics",
    "section-errors",
    "section-fingerprint",
)


def finished_run(
    run_dir: Path, compose: Callable[..., RootConfig], *overrides: str, tput: float = 100.0
) -> Path:
    make_run(run_dir, compose, {}, *overrides)
    st = starting_state(run_dir)
    st["processes"]["decode-0"]["healthy_at"] = T0 + 40
    st["processes"]["prefill-0"].update(healthy_at=T0 + 30, state="exited", exit_code=1)
    error = (
        "prefill-0 (prefill) on node1 (node 0) exited with code 1; last 50 lines of x:\n"
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"
    )
    st.update(
        phase="failed",
        error=error,
        timeline=[
            {"phase": "starting", "t": T0},
            {"phase": "ready", "t": T0 + 45},
            {"phase": "stopping", "t": T0 + 300},
            {"phase": "failed", "t": T0 + 310},
        ],
    )
    write_json_atomic(run_dir / "state.json", st)
    (run_dir / "logs" / "prefill-0.log").write_text(error + "\n")
    (run_dir / "results").mkdir()
    row = {
        "name": st["name"],
        "point": "00-c4",
        "concurrency": 4,
        "isl": 64,
        "osl": 16,
        "valid": True,
        "output_tok_s": tput,
        "output_tok_s_per_gpu": tput / 8,
        "tok_s_per_user": 20.0,
        "ttft_p50_ms": 12.5,
        "error_rate": 0.0,
    }
    (run_dir / "results" / "points.jsonl").write_text(json.dumps(row) + "\n")
    (run_dir / "results" / "summary.json").write_text(json.dumps({"valid": True}))
    write_json_atomic(
        run_dir / "fingerprint.json",
        {"config_hash": "abc", "nodes": [{"node": 0, "host": "node1"}]},
    )
    return run_dir


def check_page(html: Path, screenshot: Path) -> str:
    text = html.read_text()
    assert not re.search(r'(src|href)="(https?:)?//', text)  # nothing fetched from anywhere
    assert "<script" not in text
    page = chromium.render(html, screenshot)
    assert page.console == []
    for section in SECTIONS:
        assert f'class="{section}"' in page.dom, section
    assert screenshot.stat().st_size > 10_000
    return page.dom


def test_the_console_check_catches_errors(tmp_path: Path) -> None:
    if chromium.binary() is None:
        pytest.skip("chromium not installed")
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><script>console.error('boom'); missing();</script></body></html>")
    assert len(chromium.render(bad).console) == 2


@needs_chromium
def test_run_report_renders(tmp_path: Path, compose: Callable[..., RootConfig]) -> None:
    run_dir = finished_run(tmp_path / "run", compose)
    dom = check_page(report(run_dir), tmp_path / "run.png")
    assert dom.count('<svg xmlns="http://www.w3.org/2000/svg"') == 2  # start-up and whole run
    assert "CUDA out of memory: torch.OutOfMemoryError" in dom  # the marker, named per process
    assert "known failure markers in prefill-0" in dom
    assert "12.50" in dom and "abc" in dom  # benchmark table, fingerprint


@needs_chromium
def test_run_report_shows_the_accuracy_rows(
    tmp_path: Path, compose: Callable[..., RootConfig]
) -> None:
    run_dir = finished_run(tmp_path / "run", compose)
    row = {
        "name": "x",
        "point": 0,
        "tool": "lm_eval",
        "task": "arith",
        "metric": "exact_match",
        "filter": "last_number",
        "value": 0.7,
        "stderr": 0.1528,
        "samples": 10,
        "valid": False,
        "invalid_reason": "arith exact_match (last_number) 0.7 below benchmark.min_accuracy.arith=0.9",
    }
    with (run_dir / "results" / "points.jsonl").open("a") as fh:
        fh.write(json.dumps(row) + "\n")
    dom = check_page(report(run_dir), tmp_path / "run.png")
    assert "12.50" in dom  # the load table is still there
    assert (
        "exact_match" in dom and "0.15" in dom and "below benchmark.min_accuracy.arith=0.9" in dom
    )


@needs_chromium
def test_sweep_report_embeds_the_pareto_plot(
    tmp_path: Path, compose: Callable[..., RootConfig]
) -> None:
    sweep = tmp_path / "sweep"
    points = []
    for i, workers in enumerate((1, 2)):
        finished_run(sweep / f"p{i}", compose, f"decode.workers={workers}", tput=100.0 * (i + 1))
        points.append(
            {
                "label": f"d{workers}",
                "name": f"d{workers}",
                "nodes": 1,
                "gpus": 8,
                "runs": [{"run_dir": f"p{i}", "job_id": str(i)}],
            }
        )
    (sweep / "manifest.json").write_text(json.dumps({"version": 1, "points": points}))
    dom = check_page(report(sweep), tmp_path / "sweep.png")
    data = re.search(r'id="pareto" alt="Pareto plot" src="data:image/png;base64,([^"]+)"', dom)
    assert data and base64.b64decode(data[1]).startswith(b"\x89PNG")
    assert dom.count('class="run"') == 2


def test_timeline_rows_from_state() -> None:
    st = {
        "timeline": [
            {"phase": "starting", "t": 0},
            {"phase": "ready", "t": 50},
            {"phase": "stopping", "t": 100},
            {"phase": "done", "t": 110},
        ],
        "processes": {
            "decode-0": {
                "role": "decode",
                "healthy_at": 40,
                "state": "stopped",
                "restarts": [{"at": "1970-01-01T00:00:20.500Z", "exit_code": 137}],
            }
        },
    }
    (row,) = rows(st, {"decode-0": 2.0}, now=500)
    assert row.segments == [
        (2.0, 40, "starting"),
        (40, 50, "healthy"),
        (50, 100, "serving"),
        (100, 110, "stopping"),
    ]
    assert row.marks == [(20.5, "restart (exit 137)")]
    assert parse_time("[2025-05-02 16:13:41] Load weight begin") == 1746202421.0
