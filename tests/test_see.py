"""ctl watch's screen, ctl ls and ctl diff on run directories laid out as the driver writes
them (state.json, plan.json, logs/ with real engine lines, results/metrics.jsonl)."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Callable
from io import StringIO
from pathlib import Path
from typing import Any

from orchestrator.config.schema import RootConfig
from orchestrator.ctl.diff import diff
from orchestrator.ctl.ls import load_runs, ls_lines
from orchestrator.ctl.watch import Screen, plain
from orchestrator.ctl.watch_view import gather, lines
from orchestrator.launchers.rundir import write_run_files
from orchestrator.plan.build import build_plan
from orchestrator.rundir import write_json_atomic
from orchestrator.slurm.client import SlurmClient
from tests.fake_slurm import FakeSlurm

LOGS = Path(__file__).parent / "fixtures" / "logs"
T0 = 1_800_000_000.0


def make_run(
    run_dir: Path, compose: Callable[..., RootConfig], state: dict[str, Any], *overrides: str
) -> Path:
    cfg = compose("+model=gpt_oss_120b", *overrides)
    run_dir.mkdir(parents=True)
    write_run_files(
        run_dir, cfg, build_plan(cfg), launcher="submitit", overrides=list(overrides), request={}
    )
    write_json_atomic(run_dir / "state.json", state)
    return run_dir


def starting_state(run_dir: Path) -> dict[str, Any]:
    logs = run_dir / "logs"
    procs = {
        "frontend": ("frontend", "healthy", "dynamo_frontend.log"),
        "decode-0": ("decode", "starting", "sglang_launch_server.log"),
        "prefill-0": ("prefill", "starting", "sglang_tp_capture.log"),
    }
    entries = {}
    for name, (role, state, log) in procs.items():
        logs.mkdir(parents=True, exist_ok=True)
        shutil.copy(LOGS / log, logs / f"{name}.log")
        entries[name] = {
            "node": 0,
            "host": "node1",
            "role": role,
            "state": state,
            "probed": True,
            "log": str(logs / f"{name}.log"),
        }
    entries["decode-0"]["restarts"] = [{"at": T0 + 5, "exit_code": 1, "tail": "boom"}]
    return {
        "phase": "starting",
        "name": "gpt-oss-120b-p1d1",
        "job_id": "42",
        "timeline": [{"phase": "starting", "t": T0}],
        "processes": entries,
    }


def test_watch_screen_of_a_starting_run(tmp_path: Path, compose: Callable[..., RootConfig]) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    make_run(run_dir / "r", compose, {})
    run_dir = run_dir / "r"
    write_json_atomic(run_dir / "state.json", starting_state(run_dir))
    slurm = FakeSlurm()
    slurm.add_job("42", "RUNNING")
    (run,) = load_runs([run_dir], SlurmClient(slurm))
    seen = {"decode-0": ("starting", T0 + 10)}
    screen = lines(gather(run, seen, now=T0 + 95), now=T0 + 130)
    assert screen == [
        "gpt-oss-120b-p1d1  starting  1m  job 42  ",
        "PROCESS    ROLE     HOST:NODE  GPUS  STATE      FOR R PROGRESS",
        "frontend   frontend node1:0    -     healthy    35s 0 ready (chat)",
        "decode-0   decode   node1:0    0-3   starting    2m 1 ready (fired up)",
        "prefill-0  prefill  node1:0    4-7   starting   35s 0 CUDA graph capture 8% 2/23",
    ]
    assert all(len(line) <= 80 for line in screen)


def test_watch_shows_staging_progress(tmp_path: Path, compose: Callable[..., RootConfig]) -> None:
    make_run(tmp_path / "r", compose, {})
    run_dir = tmp_path / "r"
    stage = {"method": "copy", "status": "running", "nodes": {"node1": "1.20/4.00 GB"}}
    write_json_atomic(run_dir / "state.json", {**starting_state(run_dir), "stage": stage})
    slurm = FakeSlurm()
    slurm.add_job("42", "RUNNING")
    (run,) = load_runs([run_dir], SlurmClient(slurm))
    screen = lines(gather(run, {}, now=T0 + 95), now=T0 + 130)
    assert "stage: copy running node1 1.20/4.00 GB" in screen


def test_watch_shows_serving_numbers_and_the_error(
    tmp_path: Path, compose: Callable[..., RootConfig]
) -> None:
    run_dir = make_run(tmp_path / "r", compose, {})
    state = starting_state(run_dir)
    error = (
        "decode-0 (decode) on node1 (node 0) exited with code 1; last 50 lines of x:\n"
        + "\n".join(f"line {i}" for i in range(20))
        + "\nknown failure markers in decode-0:\n  - CUDA out of memory: torch.OutOfMemoryError"
    )
    write_json_atomic(run_dir / "state.json", {**state, "phase": "ready", "error": error})
    (run_dir / "results").mkdir()
    records = [
        {
            "t": T0 + t,
            "role": "frontend",
            "target": "frontend",
            "ok": True,
            "values": {
                "dynamo_frontend_requests_total": 10.0 * t,
                "dynamo_frontend_output_tokens_total": 500.0 * t,
                "dynamo_frontend_inflight_requests": 3.0,
            },
        }
        for t in (10, 20)
    ]
    (run_dir / "results" / "metrics.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in records)
    )
    (run,) = load_runs([run_dir], None)
    screen = lines(gather(run, {}, now=T0 + 30), now=T0 + 30)
    assert "serving: 10.00 req/s  500.0 output tok/s  3 in flight  (10s ago)" in screen
    assert screen[-8:] == [
        "decode-0 (decode) on node1 (node 0) exited with code 1; last 50 lines of x:",
        "  - CUDA out of memory: torch.OutOfMemoryError",
        *[f"line {i}" for i in range(14, 20)],
    ]


def test_plain_watch_prints_changes_and_ends_with_the_run(
    tmp_path: Path, compose: Callable[..., RootConfig]
) -> None:
    run_dir = make_run(tmp_path / "r", compose, {})
    write_json_atomic(run_dir / "state.json", starting_state(run_dir))
    out, stop = StringIO(), threading.Event()
    screen = Screen(run_dir, None)
    first = screen.lines(times=False)
    write_json_atomic(run_dir / "state.json", {**starting_state(run_dir), "phase": "done"})
    assert plain(screen, out, interval_s=0.01, stop=stop) == 0  # ends: the run is done
    printed = out.getvalue().splitlines()
    assert printed[0] == "gpt-oss-120b-p1d1  done  job 42  "
    assert "prefill-0  prefill  node1:0    4-7   starting       0 CUDA graph capture 0%" in printed
    assert first[0].startswith("gpt-oss-120b-p1d1  starting")


def test_ls_one_line_per_run_with_lost_from_slurm(
    tmp_path: Path, compose: Callable[..., RootConfig]
) -> None:
    ready = {"phase": "ready", "job_id": "100", "frontend_url": "http://10.77.0.11:8000"}
    make_run(tmp_path / "a-ready", compose, ready)
    make_run(
        tmp_path / "b-lost", compose, {"phase": "starting", "job_id": "101"}, "prefill.workers=2"
    )
    make_run(tmp_path / "sweeps" / "s" / "c-done", compose, {"phase": "done", "job_id": "102"})
    slurm = FakeSlurm()
    slurm.add_job("100", "RUNNING")
    slurm.add_job("101", "CANCELLED")
    slurm.add_job("102", "COMPLETED")
    out = ls_lines(tmp_path, SlurmClient(slurm), now=__import__("time").time() + 7200)
    assert [line.split()[:4] for line in out] == [
        ["RUN", "PHASE", "JOB", "NODES/GPUS"],
        ["a-ready", "ready", "100", "1/8"],
        ["b-lost", "lost", "101", "2/12"],
        ["sweeps/s/c-done", "done", "102", "1/8"],
    ]
    assert out[1].endswith("2h  http://10.77.0.11:8000")
    assert len(slurm.calls_to("squeue")) == 1  # one batched call for every run


def test_diff_names_the_config_and_fingerprint_differences(
    tmp_path: Path, compose: Callable[..., RootConfig]
) -> None:
    a = make_run(tmp_path / "a", compose, {})
    b = make_run(tmp_path / "b", compose, {}, "decode.workers=2", "metrics.interval_s=5")
    node = {
        "node": 0,
        "host": "node1",
        "packages": {"ai-dynamo": "1.6.1"},
        "gpus": [{"model": "H100"}],
    }
    write_json_atomic(
        a / "fingerprint.json", {"config_hash": "aa", "written_at": "x", "nodes": [node]}
    )
    node_b = {**node, "host": "node3", "packages": {"ai-dynamo": "1.7.0"}}
    write_json_atomic(
        b / "fingerprint.json", {"config_hash": "bb", "written_at": "y", "nodes": [node_b]}
    )
    text = diff(a, b)
    assert "  decode.workers: 1 -> 2" in text
    assert "  metrics.interval_s: 10.0 -> 5.0" in text
    assert "  B: decode.workers=2 metrics.interval_s=5" in text
    assert '  nodes.node0.packages.ai-dynamo: "1.6.1" -> "1.7.0"' in text
    assert '  config_hash: "aa" -> "bb"' in text
    assert "written_at" not in text and "host" not in text
    assert diff(a, a).splitlines()[2:] == ["config:", "  (same)", "fingerprint:", "  (same)"]


def test_sweep_watch_one_line_per_point(tmp_path: Path, compose: Callable[..., RootConfig]) -> None:
    sweep = tmp_path / "sweep"
    run = make_run(sweep / "p0", compose, {})
    bench = {"tool": "aiperf", "done": 1, "of": 3, "status": "running"}
    write_json_atomic(
        run / "state.json", {**starting_state(run), "phase": "ready", "benchmark": bench}
    )
    points = [
        {"label": "p1d1", "runs": [{"run_dir": "p0", "job_id": "42"}]},
        {"label": "p2d2", "runs": []},
    ]
    (sweep / "manifest.json").write_text(json.dumps({"version": 1, "points": points}))
    assert Screen(sweep, None).lines() == [
        "sweep sweep: 2 point(s)",
        "p1d1                           job 42     ready: frontend 1/1 prefill 0/1 decode 0/1 benchmark"[
            :80
        ],
        "p2d2                           new",
    ]


def test_ctl_refuses_a_directory_that_is_no_run(tmp_path: Path, capsys: Any) -> None:
    from orchestrator.ctl.cli import main

    for argv in (["watch"], ["report"], ["diff", str(tmp_path)]):
        assert main([*argv, str(tmp_path)]) == 2
        assert (
            f"{tmp_path} is neither a run directory (no launch.json) nor a sweep"
            in capsys.readouterr().err
        )
