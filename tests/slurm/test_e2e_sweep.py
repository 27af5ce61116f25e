"""A topology sweep on the Slurm testbed with the mocker and real aiperf: one command submits one
job per point (each with its own node count), every job benchmarks two load points and ends;
ctl status/collect give the table and the plot; a re-run submits nothing; a point whose benchmark
produced zero output tokens (max_tokens 0: the frontend rejects every request) is invalid."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import pytest

from orchestrator.config.load import quote_override_value
from orchestrator.core.effects import SubprocessRunner
from orchestrator.core.tools import AIPERF, find_tool
from orchestrator.slurm.client import SlurmClient
from orchestrator.sweep import sweepdir
from tests import e2e

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(
        find_tool(AIPERF) is None,
        reason="aiperf not installed (scripts/install.sh --with-aiperf)",
    ),
]
POINTS = (
    "benchmark.points=[{concurrency:2,isl:64,osl:16,requests:12},"
    "{concurrency:4,isl:128,osl:32,requests:16}]"
)
COMMON = [
    "+model=gpt_oss_120b",
    "engine=mocker",
    "cluster=testbed",
    "benchmark=aiperf",
    POINTS,
    "readiness.timeout_s=120",
    "cluster.time_limit_min=10",
]


def manifest(sweep_dir: Path) -> dict:
    return dict(json.loads((sweep_dir / "manifest.json").read_text()))


def job_ids(sweep_dir: Path) -> list[str]:
    return [r["job_id"] for p in manifest(sweep_dir)["points"] for r in p["runs"]]


def queued_jobs() -> set[str]:
    res = SubprocessRunner().run(["squeue", "-h", "-o", "%i"], timeout=15)
    assert res.returncode == 0, res.stderr
    return set(res.stdout.split())


def wait_final(sweep_dir: Path, timeout: float) -> dict[str, dict]:
    """Every point valid or failed (its job over), by label."""
    client = SlurmClient(SubprocessRunner())

    def check() -> dict[str, dict] | None:
        points = manifest(sweep_dir)["points"]
        statuses = sweepdir.point_statuses(sweep_dir, points, client)  # one batched query
        out = {p["label"]: s for p, s in zip(points, statuses, strict=True)}
        done = all(
            s["status"] in ("valid", "failed") and s["phase"] in ("done", "failed")
            for s in out.values()
        )
        return out if done else None

    return e2e.wait_for(
        check, timeout=timeout, what=f"every point of {sweep_dir} finished", interval=1.0
    )


def test_sweep_benchmark_collect_resume_and_zero_tokens(
    slurm_jobs: list[str], tmp_path: Path
) -> None:
    sweep_dir, zero_dir = tmp_path / "sweep", tmp_path / "zero tokens"
    started = time.monotonic()
    res = e2e.cli(
        ["-m", *COMMON, "prefill.workers=1,2", f"sweep_dir={quote_override_value(str(sweep_dir))}"]
    )
    slurm_jobs.extend(job_ids(sweep_dir) if (sweep_dir / "manifest.json").exists() else [])
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == str(sweep_dir)
    submitted_in = time.monotonic() - started
    points = manifest(sweep_dir)["points"]
    assert [(p["label"], p["nodes"], p["gpus"], len(p["runs"])) for p in points] == [
        ("prefill.workers=1", 1, 8, 1),
        ("prefill.workers=2", 2, 12, 1),
    ]
    assert all(r["job_id"].isdigit() for p in points for r in p["runs"])

    # max_tokens 0 on every request: the Dynamo frontend answers 400, nothing is generated.
    zero = e2e.cli(
        [
            "-m",
            *COMMON,
            "prefill.workers=1",
            "benchmark.extra_args=[--extra-inputs,max_tokens:0]",
            f"sweep_dir={quote_override_value(str(zero_dir))}",
        ]
    )
    slurm_jobs.extend(job_ids(zero_dir) if (zero_dir / "manifest.json").exists() else [])
    assert zero.returncode == 0, zero.stderr

    final = wait_final(sweep_dir, timeout=300)
    assert {label: s["status"] for label, s in final.items()} == {
        "prefill.workers=1": "valid",
        "prefill.workers=2": "valid",
    }
    sweep_wall_s = time.monotonic() - started
    for s in final.values():
        e2e.wait_for(
            lambda s=s: e2e.job_state(s["job_id"]) == "COMPLETED", timeout=60, what="job COMPLETED"
        )
        assert e2e.nothing_left(s["run_dir"])

    status = e2e.ctl("status", str(sweep_dir))
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()[1:]
    assert len(lines) == 2 and all(
        " valid " in ln and " done " in ln and "best " in ln for ln in lines
    )
    assert "1n/  8 GPUs" in lines[0] and "2n/ 12 GPUs" in lines[1]

    collected = e2e.ctl("collect", str(sweep_dir))
    assert collected.returncode == 0, collected.stderr
    assert collected.stdout.startswith("4 valid row(s) from 2/2 point(s)")
    table = list(csv.DictReader((sweep_dir / "results.csv").open()))
    assert len(table) == 4 and {r["name"] for r in table} == {
        "gpt-oss-120b-p1d1",
        "gpt-oss-120b-p2d1",
    }
    assert {r["gpus_total"] for r in table} == {"8", "12"} and all(
        float(r["output_tok_s_per_gpu"]) > 0 for r in table
    )
    rows = [json.loads(x) for x in (sweep_dir / "results.jsonl").read_text().splitlines()]
    assert all(
        r["valid"] and r["errors"] == 0 and r["output_tokens"] > 0 and r["ttft_p99_ms"]
        for r in rows
    )
    assert {r["topology"]["prefill_workers"] for r in rows} == {1, 2} and rows[0]["job_id"]
    assert (sweep_dir / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    first = next(iter(final.values()))["run_dir"]
    assert (
        first / "results" / "00-c2-i64-o16" / "profile_export_aiperf.json"
    ).exists()  # aiperf's own files
    assert e2e.state(first)["processes"]["benchmark-1"]["host"] == "node1"  # an srun step on node 0

    # Resume: the same command again submits nothing.
    queued_before = queued_jobs()
    again = e2e.cli(
        ["-m", *COMMON, "prefill.workers=1,2", f"sweep_dir={quote_override_value(str(sweep_dir))}"]
    )
    assert again.returncode == 0, again.stderr
    assert "0 job(s) submitted, 2 skipped" in again.stderr
    assert [len(p["runs"]) for p in manifest(sweep_dir)["points"]] == [1, 1]
    assert queued_jobs() <= queued_before  # nothing new queued

    # The zero-token point: failed with the reason, its row kept and marked invalid.
    (zstatus,) = wait_final(zero_dir, timeout=300).values()
    assert zstatus["status"] == "failed" and zstatus["phase"] == "failed"
    st = e2e.state(zstatus["run_dir"])
    assert "invalid: zero output tokens (0/12 requests succeeded)" in st["error"]
    (row,) = [
        json.loads(x)
        for x in (zstatus["run_dir"] / "results" / "points.jsonl").read_text().splitlines()
    ]
    assert row["valid"] is False and row["output_tokens"] == 0 and row["errors"] == 12
    zlines = e2e.ctl("status", str(zero_dir)).stdout
    assert " failed " in zlines and "zero output tokens" in zlines
    assert e2e.ctl("collect", str(zero_dir)).stdout.startswith("0 valid row(s) from 0/1 point(s)")
    # A re-run would resubmit it (dry run: nothing is submitted).
    dry = e2e.cli(
        [
            "-m",
            *COMMON,
            "prefill.workers=1",
            "benchmark.extra_args=[--extra-inputs,max_tokens:0]",
            f"sweep_dir={quote_override_value(str(zero_dir))}",
            "dry_run=true",
        ]
    )
    assert dry.returncode == 0 and "1 point(s), 1 to submit" in dry.stdout, dry.stderr
    print(
        f"\nsweep: submitted in {submitted_in:.1f} s, "
        f"2 points x 2 load points done in {sweep_wall_s:.1f} s"
    )


def test_single_run_with_a_benchmark_waits_for_its_results(
    slurm_jobs: list[str], tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    points = "benchmark.points=[{concurrency:2,isl:64,osl:16,requests:8}]"
    res = e2e.cli(
        [*[a for a in COMMON if not a.startswith("benchmark.points")], points, f"run_dir={run_dir}"]
    )
    slurm_jobs.extend(res.stdout.split()[:1])
    assert res.returncode == 0, res.stderr
    st = e2e.state(run_dir)
    assert (
        st["phase"] == "done" and st["reason"] == "benchmark finished"
    )  # returned after the results
    assert "benchmark 1/1 points (valid)" in res.stderr
    rows = [
        json.loads(line) for line in (run_dir / "results" / "points.jsonl").read_text().splitlines()
    ]
    assert len(rows) == 1 and rows[0]["valid"] and rows[0]["output_tokens"] > 0


# --- throttling and cancel -----------------------------------------------------------------------
# 4-GPU aggregated points (two share a node), one tiny load point each.
SMALL = [
    "+model=gpt_oss_120b",
    "engine=mocker",
    "cluster=testbed",
    "benchmark=aiperf",
    "benchmark.points=[{concurrency:1,isl:16,osl:4,requests:2,warmup:0}]",
    "benchmark.duration_estimate_min=1",
    "readiness.timeout_s=60",
    "cluster.time_limit_min=6",
    "deployment=aggregated",
    "aggregated.workers=1",
]


def sweep_jobs(job_ids: list[str]) -> list[tuple[str, str, str]]:
    """(job id, state, reason) of the sweep's jobs squeue still lists."""
    res = SubprocessRunner().run(
        ["squeue", "-h", "-j", ",".join(job_ids), "-o", "%i %T %r"], timeout=15
    )
    return [tuple(line.split(None, 2)) for line in res.stdout.splitlines()]  # type: ignore[misc]


def in_flight(jobs: list[tuple[str, str, str]]) -> int:
    """Jobs queued for resources or running. Not counted: PENDING (Dependency), waiting for an
    earlier point, and COMPLETING (the job ended; Slurm is releasing its nodes and counts the
    dependency as satisfied)."""
    return sum(1 for _, st, why in jobs if st != "COMPLETING" and "Dependency" not in why)


def test_max_in_flight_throttles_twelve_points_to_two(
    slurm_jobs: list[str], tmp_path: Path
) -> None:
    sweep_dir = tmp_path / "throttled"
    started = time.monotonic()
    res = e2e.cli(
        [
            "-m",
            *SMALL,
            "benchmark.seed=range(1,13)",
            "sweep.max_in_flight=2",
            f"sweep_dir={sweep_dir}",
        ]
    )
    ids = job_ids(sweep_dir) if (sweep_dir / "manifest.json").exists() else []
    slurm_jobs.extend(ids)
    assert res.returncode == 0, res.stderr
    assert len(ids) == 12 and "12 job(s) submitted, 0 skipped, at most 2 in flight" in res.stderr
    seen: list[int] = []
    waiting: list[int] = []

    def sampled_until_done() -> bool:
        jobs = sweep_jobs(ids)
        seen.append(in_flight(jobs))
        waiting.append(sum(1 for _, _, why in jobs if "Dependency" in why))
        return not jobs

    e2e.wait_for(sampled_until_done, timeout=420, what="all 12 points ended", interval=0.5)
    assert max(seen) == 2 and max(waiting) >= 8, (seen, waiting)
    final = wait_final(sweep_dir, timeout=60)
    assert {s["status"] for s in final.values()} == {"valid"}
    names = [p["name"] for p in manifest(sweep_dir)["points"]]
    assert len(set(names)) == 12 and names[0] == "gpt-oss-120b-a1-seed1"
    collected = e2e.ctl("collect", str(sweep_dir))
    assert collected.returncode == 0 and (sweep_dir / "decision.md").exists(), collected.stderr
    print(f"\n12 points, 2 in flight: {time.monotonic() - started:.0f} s, samples {len(seen)}")


def test_stop_mid_sweep_leaves_nothing_queued_or_running(
    slurm_jobs: list[str], tmp_path: Path
) -> None:
    sweep_dir = tmp_path / "stopped"
    res = e2e.cli(
        [
            "-m",
            *SMALL,
            "benchmark.keep_serving=true",
            "benchmark.seed=range(1,5)",
            "sweep.max_in_flight=2",
            f"sweep_dir={sweep_dir}",
        ]
    )
    ids = job_ids(sweep_dir) if (sweep_dir / "manifest.json").exists() else []
    slurm_jobs.extend(ids)
    assert res.returncode == 0, res.stderr
    run_dirs = [sweep_dir / r["run_dir"] for p in manifest(sweep_dir)["points"] for r in p["runs"]]
    # The first two serve (keep_serving) while the other two wait for them.
    e2e.wait_for(
        lambda: all(e2e.state(d).get("phase") == "ready" for d in run_dirs[:2]),
        timeout=120,
        what="the first two points ready",
    )
    assert sorted(why for _, _, why in sweep_jobs(ids[2:])) == ["Dependency", "Dependency"]
    stop = e2e.ctl("stop", str(sweep_dir))
    assert stop.returncode == 0, stop.stderr
    assert "cancelled 2 queued point(s), stopped 2 running point(s) of 4" in stop.stdout
    e2e.wait_for(lambda: not sweep_jobs(ids), timeout=60, what="no job of the sweep in squeue")
    states = [e2e.state(d) for d in run_dirs]
    assert [st["phase"] for st in states] == ["done"] * 4
    assert all(st["reason"].startswith("cancelled before start") for st in states[2:])
    for d in run_dirs:
        e2e.wait_for(lambda d=d: e2e.nothing_left(d), timeout=30, what=f"nothing left of {d}")
    status = e2e.ctl("status", str(sweep_dir)).stdout.splitlines()[1:]
    assert len(status) == 4 and all(" active " not in line for line in status)
