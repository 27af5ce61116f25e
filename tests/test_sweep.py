"""Deployment sweeps without Slurm: expansion with Hydra's grammar, validate-all-first, manifest,
resume decisions and the status / collect views (submission replaced by a recorder)."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from orchestrator.cli import main
from orchestrator.core.errors import InvalidConfig
from orchestrator.engines import sglang_check
from orchestrator.launchers.select import Site
from orchestrator.rundir import write_json_atomic
from orchestrator.sweep import collect, sweepdir
from orchestrator.sweep import run as sweep
from orchestrator.sweep.points import point_names
from tests.fake_slurm import FakeSlurm
from tests.fakes import FakeClock

SLURM = Site(has_sbatch=True, allocation_job_id="")
BASE = [
    "+model=gpt_oss_120b",
    "engine=mocker",
    "benchmark=aiperf",
    "benchmark.points=[{concurrency:2,isl:64,osl:16}]",
    "readiness.timeout_s=120",
    "cluster.time_limit_min=30",
]


def slurm_with(states: dict[str, str] | None = None) -> FakeSlurm:
    """The fake Slurm knowing the jobs the Recorder "submitted" (job id -> state)."""
    slurm = FakeSlurm()
    for job_id, state in (states or {}).items():
        slurm.add_job(job_id, state)
    return slurm


class Recorder:
    """Stands in for the launch: creates the run dir and a submitted state like launch() does."""

    def __init__(self) -> None:
        self.submitted: list[tuple[str, ...]] = []

    def __call__(self, point: sweep.SweepPoint, ready: Any, run_dir: Path, runner: Any) -> str:
        assert ready.launcher == "submitit" and ready.request.kind == "submitit"
        self.submitted.append(point.overrides)
        run_dir.mkdir(parents=True)
        job_id = str(100 + len(self.submitted))
        write_json_atomic(run_dir / "state.json", {"phase": "submitted", "job_id": job_id})
        return job_id


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    rec = Recorder()
    monkeypatch.setattr(sweep, "_submit", rec)
    return rec


def finish(run_dir: Path, *, valid: bool, phase: str = "done", rows: int = 2) -> None:
    """What the driver leaves behind at the end of a benchmark."""
    (run_dir / "results").mkdir(parents=True, exist_ok=True)
    write_json_atomic(
        run_dir / "state.json", {"phase": phase, "job_id": "1", "error": "" if valid else "bad"}
    )
    write_json_atomic(
        run_dir / "results" / "summary.json",
        {"valid": valid, "reason": "" if valid else "zero output tokens"},
    )
    lines = [
        {
            "name": run_dir.name,
            "point": i,
            "concurrency": 2**i,
            "valid": valid or i == 0,
            "tok_s_per_user": 100.0 / (i + 1),
            "output_tok_s_per_gpu": 10.0 * (i + 1),
            "gpus": {"total": 8},
            "topology": {"name": run_dir.name, "mode": "disaggregated"},
        }
        for i in range(rows)
    ]
    (run_dir / "results" / "points.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


# --- expansion --------------------------------------------------------------------------------
def test_expand_is_the_cartesian_product_in_order() -> None:
    points, options = sweep.expand(
        ["+model=gpt_oss_120b", "prefill.workers=1,2", "decode.workers=1,2,4", "sweep_dir=/tmp/x y"]
    )
    assert options == {"sweep_dir": "/tmp/x y"}
    assert [p.label for p in points][:4] == [
        "prefill.workers=1 decode.workers=1",
        "prefill.workers=1 decode.workers=2",
        "prefill.workers=1 decode.workers=4",
        "prefill.workers=2 decode.workers=1",
    ]
    assert len(points) == 6 and points[0].overrides == (
        "+model=gpt_oss_120b",
        "prefill.workers=1",
        "decode.workers=1",
    )


def test_expand_understands_hydra_sweep_syntax() -> None:
    points, _ = sweep.expand(
        [
            "decode.workers=range(1,4)",
            "name='a,b'",
            "benchmark.points=[{concurrency:1},{concurrency:2}]",
        ]
    )
    assert [p.label for p in points] == ["decode.workers=1", "decode.workers=2", "decode.workers=3"]
    assert "name='a,b'" in points[0].overrides  # a quoted comma is not a sweep
    assert sweep.expand(["a=1,2", "b=3"])[0][0].key == sweep.expand(["b=3", "a=1,2"])[0][0].key


def test_bad_syntax_is_invalid_config() -> None:
    with pytest.raises(InvalidConfig, match="override syntax"):
        sweep.expand(["prefill.workers=[1,2"])


def test_baseline_matches_worker_gpus(compose: Any) -> None:
    point = sweep.SweepPoint(
        overrides=("+model=gpt_oss_120b", "prefill.workers=2", "decode.workers=1"), label="p2d1"
    )
    cfg = compose(*point.overrides)
    base = sweep.baseline_point(point, cfg)
    assert base is not None and base.baseline
    assert base.overrides == (
        "+model=gpt_oss_120b",
        "deployment=aggregated",
        "aggregated.workers=3",
        "aggregated.tp=4",
    )


# --- validate everything first ----------------------------------------------------------------
def test_one_invalid_point_submits_nothing(recorder: Recorder, tmp_path: Path) -> None:
    # decode.tp=8 with prefill.tp=4 breaks gpt-oss's equal-TP rule in one point only.
    with pytest.raises(InvalidConfig) as info:
        sweep.run_sweep(
            [*BASE, "decode.tp=4,8", f"sweep_dir={tmp_path / 's'}"], SLURM, slurm_with()
        )
    assert [i.key for i in info.value.issues] == ["[decode.tp=8] prefill.tp"]
    assert recorder.submitted == [] and not (tmp_path / "s").exists()


def test_cli_exit_code_2_and_every_point_named(
    recorder: Recorder, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["-m", *BASE, "prefill.workers=1,2", "cluster.time_limit_min=1"])
    err = capsys.readouterr().err
    assert code == 2 and "[prefill.workers=1]" in err and "[prefill.workers=2]" in err
    assert recorder.submitted == []


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        (["launcher=local"], "launcher.kind"),
        (["benchmark=none"], "benchmark.kind"),
        (["run_dir=/tmp/r"], "run_dir"),
    ],
)
def test_sweep_rules(recorder: Recorder, extra: list[str], key: str) -> None:
    with pytest.raises(InvalidConfig) as info:
        sweep.run_sweep([*BASE, *extra], SLURM, slurm_with())
    assert any(i.key.endswith(key) for i in info.value.issues)


# --- submission, manifest and resume ----------------------------------------------------------
def test_submits_each_point_then_resumes(
    recorder: Recorder, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        *BASE,
        "prefill.workers=1,2",
        "sweep.baseline=aggregated",
        f"sweep_dir={tmp_path / 'sw'}",
    ]
    assert sweep.run_sweep(args, SLURM, slurm_with()) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "sw")
    manifest = json.loads((tmp_path / "sw" / "manifest.json").read_text())
    entries = {e["name"]: e for e in manifest["points"]}
    assert set(entries) == {
        "gpt-oss-120b-p1d1",
        "gpt-oss-120b-p2d1",
        "gpt-oss-120b-a2",
        "gpt-oss-120b-a3",
    }
    assert (entries["gpt-oss-120b-p2d1"]["nodes"], entries["gpt-oss-120b-p2d1"]["gpus"]) == (2, 12)
    assert entries["gpt-oss-120b-a3"]["baseline"] and len(recorder.submitted) == 4
    runs = {name: tmp_path / "sw" / e["runs"][0]["run_dir"] for name, e in entries.items()}
    assert entries["gpt-oss-120b-p1d1"]["runs"][0]["job_id"] == "101"

    # p1d1 valid, p2d1 invalid, a2 still queued, a3's job vanished before its driver wrote a phase.
    finish(runs["gpt-oss-120b-p1d1"], valid=True)
    finish(runs["gpt-oss-120b-p2d1"], valid=False, phase="failed")
    slurm = slurm_with({"103": "PENDING", "104": "CANCELLED"})
    recorder.submitted.clear()
    assert sweep.run_sweep(args, SLURM, slurm) == 0
    # One squeue for the points that may still run, one sacct for those it no longer knows.
    assert [c[0] for c in slurm.calls] == ["squeue", "sacct"]
    assert slurm.calls[0][slurm.calls[0].index("-j") + 1] == "103,104"
    resubmitted = {o for ovs in recorder.submitted for o in ovs if "workers=" in o}
    assert resubmitted == {"prefill.workers=2", "aggregated.workers=3"}
    manifest = json.loads((tmp_path / "sw" / "manifest.json").read_text())
    p2d1 = next(e for e in manifest["points"] if e["name"] == "gpt-oss-120b-p2d1")
    assert [r["run_dir"].endswith("-r2") for r in p2d1["runs"]] == [False, True]
    assert len(manifest["invocations"]) == 2


def test_dry_run_shows_actions_and_writes_nothing(
    recorder: Recorder, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        sweep.run_sweep(
            [*BASE, "prefill.workers=1,2", "dry_run=true", f"sweep_dir={tmp_path / 'd'}"],
            SLURM,
            slurm_with(),
        )
        == 0
    )
    out = capsys.readouterr().out
    assert (
        "2 point(s), 2 to submit" in out
        and "gpt-oss-120b-p2d1                2 node(s)  12 GPUs" in out
    )
    assert recorder.submitted == [] and not (tmp_path / "d").exists()


def test_status_and_collect(recorder: Recorder, tmp_path: Path) -> None:
    sw = tmp_path / "sw"
    sweep.run_sweep([*BASE, "prefill.workers=1,2", f"sweep_dir={sw}"], SLURM, slurm_with())
    manifest = json.loads((sw / "manifest.json").read_text())
    ok, bad = (sw / e["runs"][0]["run_dir"] for e in manifest["points"])
    finish(ok, valid=True)
    finish(bad, valid=False, phase="failed")
    text = sweepdir.status(sw, slurm_with())
    lines = text.splitlines()
    assert len(lines) == 3
    assert (
        "valid" in lines[1]
        and "done" in lines[1]
        and "1n/  8 GPUs" in lines[1]
        and "best 20.0 tok/s/GPU" in lines[1]
    )
    assert (
        "failed" in lines[2] and "zero output tokens" in lines[2] and "best 10.0" in lines[2]
    )  # its valid first point
    summary = sweepdir.collect(sw)
    assert summary.startswith("3 valid row(s) from 2/2 point(s)")
    assert len((sw / "results.jsonl").read_text().splitlines()) == 3
    assert (sw / "results.csv").exists() and (sw / "pareto.png").stat().st_size > 1000


def test_engine_parser_runs_once_for_every_point(
    recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    batches: list[dict[str, list[str]]] = []

    def parse(python: str, argvs: dict[str, list[str]], runner: Any) -> dict[str, list[str]]:
        batches.append(argvs)
        return {
            k: ["unrecognized arguments: --bad"] if "--bad" in a else [] for k, a in argvs.items()
        }

    monkeypatch.setattr(sglang_check, "sglang_python", lambda env: sys.executable)
    monkeypatch.setattr(sglang_check, "parse_in_subprocess", parse)
    args = [
        *BASE,
        "engine=sglang",
        "frontend=sglang_router",
        "prefill.workers=1,2",
        "decode.workers=1,2",
        "decode.extra_args=[],[--bad]",
    ]
    with pytest.raises(InvalidConfig) as info:
        sweep.run_sweep(args, SLURM, slurm_with())
    assert len(batches) == 1  # 8 points, one parser subprocess
    keys = [i.key for i in info.value.issues]
    assert len(keys) == 4 and all("decode.extra_args=[--bad]]" in k for k in keys)
    assert recorder.submitted == []


# --- throttling: Slurm dependencies through the real sbatch launch path ------------------------
def sbatch_dependencies(slurm: FakeSlurm) -> list[str]:
    """Per sbatch call in order: the job it waits for ('' for none)."""
    out = []
    for call in slurm.calls_to("sbatch"):
        dep = [a for a in call if a.startswith("--dependency=")]
        out.append(dep[0].removeprefix("--dependency=afterany:") if dep else "")
    return out


def test_max_in_flight_chains_each_job_to_the_one_n_places_before(tmp_path: Path) -> None:
    slurm = slurm_with()
    args = [
        *BASE,
        "launcher=sbatch",
        "prefill.workers=1,2,3",
        "decode.workers=1,2",
        "sweep.max_in_flight=2",
        f"sweep_dir={tmp_path / 'sw'}",
    ]
    assert sweep.run_sweep(args, SLURM, slurm) == 0
    # Jobs 100..105: two chains, 100 -> 102 -> 104 and 101 -> 103 -> 105.
    assert sbatch_dependencies(slurm) == ["", "", "100", "101", "102", "103"]
    manifest = json.loads((tmp_path / "sw" / "manifest.json").read_text())
    runs = [e["runs"][0] for e in manifest["points"]]
    assert [r["after"] for r in runs] == ["", "", "100", "101", "102", "103"]
    # What was submitted is what the run directory records.
    launch = json.loads((tmp_path / "sw" / runs[2]["run_dir"] / "launch.json").read_text())
    assert "--dependency=afterany:100" in launch["request"]["argv"]


def test_resume_counts_points_still_in_flight(tmp_path: Path) -> None:
    slurm = slurm_with()
    args = [
        *BASE,
        "launcher=sbatch",
        "prefill.workers=1,2,3",
        "sweep.max_in_flight=2",
        f"sweep_dir={tmp_path / 'sw'}",
    ]
    sweep.run_sweep(args, SLURM, slurm)  # 100, 101, 102 (after 100)
    slurm.set_state("100", "COMPLETED")  # ended without a result: failed, resubmitted
    slurm.set_state("101", "RUNNING", nodes=["node1"])
    slurm.calls.clear()
    sweep.run_sweep(args, SLURM, slurm)
    # 101 and 102 still count: the resubmitted point waits for the one 2 places before it.
    assert sbatch_dependencies(slurm) == ["101"]


def test_max_in_flight_must_be_a_number(recorder: Recorder) -> None:
    with pytest.raises(InvalidConfig) as info:
        sweep.run_sweep(
            [*BASE, "sweep.max_in_flight=two", "cluster.time_limit_min=1"], SLURM, slurm_with()
        )
    keys = [i.key for i in info.value.issues]
    assert keys[0] == "sweep.max_in_flight" and any("time_limit_min" in k for k in keys)


def test_dry_run_shows_what_waits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [
        *BASE,
        "prefill.workers=1,2,3",
        "sweep.max_in_flight=1",
        "dry_run=true",
        f"sweep_dir={tmp_path / 'd'}",
    ]
    assert sweep.run_sweep(args, SLURM, slurm_with()) == 0
    out = capsys.readouterr().out
    assert "3 to submit, at most 1 in flight" in out
    assert "gpt-oss-120b-p2d1 waits for gpt-oss-120b-p1d1" in out
    assert "gpt-oss-120b-p3d1 waits for gpt-oss-120b-p2d1" in out


# --- names that tell points apart ----------------------------------------------------------------
def test_names_are_unique_across_a_tp_sweep(recorder: Recorder, tmp_path: Path) -> None:
    sw = tmp_path / "sw"
    args = [
        *BASE,
        "model.requires_equal_pd_tp=false",
        "prefill.tp=4,8",
        "decode.tp=4,8",
        "decode.workers=1,2",
        f"sweep_dir={sw}",
    ]
    sweep.run_sweep(args, SLURM, slurm_with())
    entries = json.loads((sw / "manifest.json").read_text())["points"]
    names = [e["name"] for e in entries]
    assert names[:2] == ["gpt-oss-120b-p1d1-ptp4-dtp4", "gpt-oss-120b-p1d2-ptp4-dtp4"]
    assert len(set(names)) == 8 and "gpt-oss-120b-p1d2-ptp8-dtp8" in names
    assert entries[0]["swept"] == {"prefill.tp": "4", "decode.tp": "4", "decode.workers": "1"}
    run_dirs = [Path(e["runs"][0]["run_dir"]).name for e in entries]
    assert all(d.startswith(n + "-") for d, n in zip(run_dirs, names, strict=True))
    for entry in entries:
        finish(sw / entry["runs"][0]["run_dir"], valid=True)
    sweepdir.collect(sw)
    table = list(csv.DictReader((sw / "results.csv").open()))
    assert {r["name"] for r in table} == set(names)
    assert {r["deployment"] for r in table} == set(run_dirs)  # the row's own name (finish())
    rows = [json.loads(x) for x in (sw / "results.jsonl").read_text().splitlines()]
    assert [label.split(" (")[0] for label in collect.curves(rows)] == sorted(names)  # legend
    status = sweepdir.status(sw, slurm_with()).splitlines()[1:]
    assert [line.split()[0] for line in status] == names


def test_generic_names_for_any_swept_key() -> None:
    points, _ = sweep.expand(
        [
            "benchmark.seed=1,2",
            "prefill.extra_args=[],[--x,1]",
            "decode.extra_args=[],[--y]",
            "engine=mocker,sglang",
        ]
    )
    names = point_names(["m-p1d1"] * len(points), points)
    first = names[0].split("-")
    assert first[:4] == ["m", "p1d1", "seed1", "pextra_args"] and len(first[4]) == 4
    assert first[5] == "dextra_args" and names[0].endswith("-engine-mocker")
    assert len(set(names)) == len(names) == 16
    # Points whose names would still be equal get a digest of their overrides.
    same = [sweep.SweepPoint(overrides=(o,), label="") for o in ("name=m", "+name=m")]
    one, two = point_names(["m"] * 2, same)
    assert one != two and one.startswith("m-") and two.startswith("m-")


# --- stop and status over the whole sweep ------------------------------------------------------
def test_stop_cancels_queued_points_first_then_stops_running_ones(
    recorder: Recorder, tmp_path: Path
) -> None:
    sw = tmp_path / "sw"
    sweep.run_sweep([*BASE, "prefill.workers=1,2,3,4", f"sweep_dir={sw}"], SLURM, slurm_with())
    entries = json.loads((sw / "manifest.json").read_text())["points"]
    dirs = [sw / e["runs"][0]["run_dir"] for e in entries]
    finish(dirs[3], valid=True)  # 104: done before the stop
    slurm = slurm_with({"101": "RUNNING", "102": "PENDING", "103": "PENDING", "104": "COMPLETED"})
    write_json_atomic(dirs[0] / "state.json", {"phase": "ready", "job_id": "101"})

    def driver_stops(job: Any, sig: str, batch: bool) -> None:  # what the real driver does
        assert (dirs[0] / "stop-requested").exists() and (sig, batch) == ("TERM", True)
        write_json_atomic(dirs[0] / "state.json", {"phase": "done", "job_id": "101"})
        job.state = "COMPLETED"

    slurm.on_signal = driver_stops
    out = sweepdir.stop(sw, slurm, clock=FakeClock())
    assert out.startswith("cancelled 2 queued point(s), stopped 1 running point(s) of 4")
    scancels = slurm.calls_to("scancel")
    assert scancels == [("scancel", "102", "103"), ("scancel", "--signal=TERM", "--batch", "101")]
    for d in dirs[1:3]:
        st = json.loads((d / "state.json").read_text())
        assert st["phase"] == "done" and st["reason"].startswith("cancelled before start")
    assert {s: j.state for s, j in slurm.jobs.items()} == {
        "101": "COMPLETED",
        "102": "CANCELLED",
        "103": "CANCELLED",
        "104": "COMPLETED",
    }
    assert "cancelled 0 queued point(s), stopped 0" in sweepdir.stop(sw, slurm, clock=FakeClock())


def test_status_reads_every_job_with_one_batched_query(recorder: Recorder, tmp_path: Path) -> None:
    sw = tmp_path / "sw"
    sweep.run_sweep([*BASE, "prefill.workers=1,2,3,4", f"sweep_dir={sw}"], SLURM, slurm_with())
    slurm = slurm_with({"101": "RUNNING", "102": "PENDING", "103": "FAILED", "104": "TIMEOUT"})
    lines = sweepdir.status(sw, slurm).splitlines()[1:]
    assert [c[0] for c in slurm.calls] == ["squeue", "sacct"]  # 4 points, 2 calls
    assert [line.split()[1:3] for line in lines] == [
        ["active", "submitted"],
        ["active", "PENDING"],
        ["failed", "submitted"],
        ["failed", "submitted"],
    ]
    assert "job 103 ended (FAILED)" in lines[2]


# --- what to pick: the decision table ---------------------------------------------------------------
def row(name: str, user: float, per_gpu: float, concurrency: int) -> dict[str, Any]:
    return {
        "name": name,
        "tok_s_per_user": user,
        "output_tok_s_per_gpu": per_gpu,
        "concurrency": concurrency,
        "ttft_p99_ms": 50.0,
        "itl_p99_ms": 5.0,
        "gpus": {"total": 8},
        "topology": {"nodes": 1},
    }


def test_decision_table_is_the_front_by_tokens_per_user() -> None:
    rows = [
        row("big", 10.0, 300.0, 64),
        row("big", 40.0, 120.0, 8),
        row("small", 25.0, 200.0, 16),
        row("small", 30.0, 100.0, 4),
        row("tiny", 80.0, 20.0, 1),
    ]
    table = collect.decision_rows(rows)
    # (small, 30 tok/s/user, 100/GPU) is beaten by (big, 40, 120): not a choice.
    assert [
        (
            r["name"],
            r["need_tok_s_per_user_above"],
            r["need_tok_s_per_user_up_to"],
            r["output_tok_s_per_gpu"],
        )
        for r in table
    ] == [
        ("big", 0.0, 10.0, 300.0),
        ("small", 10.0, 25.0, 200.0),
        ("big", 25.0, 40.0, 120.0),
        ("tiny", 40.0, 80.0, 20.0),
    ]
    md = collect.decision_markdown(table, ["x (prefill.workers=3): zero output tokens"])
    assert "up to 10.0 | big | 64 | 300.0 | 10.0 | 50.0 | 5.0 | 8" in md
    assert "10.0 - 25.0 | small | 16 | 200.0" in md and "Above 80.0 tok/s per user" in md
    assert "- x (prefill.workers=3): zero output tokens" in md


def test_collect_writes_the_decision_table_and_lists_failed_points(
    recorder: Recorder, tmp_path: Path
) -> None:
    sw = tmp_path / "sw"
    sweep.run_sweep([*BASE, "prefill.workers=1,2,3", f"sweep_dir={sw}"], SLURM, slurm_with())
    entries = json.loads((sw / "manifest.json").read_text())["points"]
    ok, bad, running = (sw / e["runs"][0]["run_dir"] for e in entries)
    finish(ok, valid=True)
    finish(bad, valid=False, phase="failed")
    summary = sweepdir.collect(sw).splitlines()
    assert str(sw / "decision.md") in summary and str(sw / "decision.csv") in summary
    assert summary[-3:] == [
        "2 point(s) without a valid result:",
        "  gpt-oss-120b-p2d1 (prefill.workers=2): zero output tokens",
        "  gpt-oss-120b-p3d1 (prefill.workers=3): no result yet (phase submitted; see ctl status)",
    ]
    decision = list(csv.DictReader((sw / "decision.csv").open()))
    # p1d1: 20/GPU at 50 tok/s/user, 10/GPU at 100 (p2d1's valid first point ties it).
    assert [(d["name"], d["need_tok_s_per_user_up_to"]) for d in decision] == [
        ("gpt-oss-120b-p1d1", "50.0"),
        ("gpt-oss-120b-p1d1", "100.0"),
    ]
    assert "zero output tokens" in (sw / "decision.md").read_text()
