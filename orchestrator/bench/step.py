"""The benchmark step: an `on_ready` hook of the driver that runs the load points in sequence.

Each point's client runs through `driver.backend` (an srun step on node 0 under Slurm), writes the
tool's own files into results/<point>/, and adds one normalized line to results/points.jsonl. The
first invalid point fails the run (phase failed, the reason in state.json); the rows are kept,
marked `valid: false`. results/summary.json says whether the whole benchmark is valid (sweeps
skip a point on re-run only then). Afterwards the job ends unless benchmark.keep_serving.
"""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path
from typing import Any, NoReturn

from orchestrator.bench import evals
from orchestrator.bench.normalize import (
    Measured,
    judge,
    normalized_row,
    read_aiperf,
    read_bench_serving,
)
from orchestrator.bench.spec import RESULTS
from orchestrator.core.errors import OrchestratorError
from orchestrator.observe.scrape import point_summary
from orchestrator.plan.model import BenchmarkPlan, LoadPoint, Process
from orchestrator.rundir import RunDir, write_json_atomic
from orchestrator.runtime.hooks import DriverView, Stopped
from orchestrator.runtime.processes import Running, log_tail, stop_tier
from orchestrator.runtime.state import now_iso

POINTS_FILE = "points.jsonl"
SUMMARY_FILE = "summary.json"


class BenchmarkFailed(OrchestratorError):
    """A load point is invalid, or its client could not produce a result."""


def attach_benchmark(driver: DriverView, bench: BenchmarkPlan | None) -> None:
    """Run the plan's benchmark once the deployment is ready (nothing without one)."""
    if bench is not None:
        driver.on_ready.append(BenchmarkStep(bench))


class BenchmarkStep:
    """Callable `on_ready` hook running the plan's benchmark (`plan.benchmark`)."""

    def __init__(self, bench: BenchmarkPlan) -> None:
        self.bench = bench

    def __call__(self, driver: DriverView) -> None:
        results = driver.run_dir / RESULTS
        results.mkdir(exist_ok=True)
        try:
            self._run(driver, results)
        except Stopped:
            self._summary_if_missing(results, driver.stop_reason or "stopped")
            raise
        except OrchestratorError as exc:
            self._summary_if_missing(results, str(exc))
            raise
        except Exception as exc:  # a bug here must still fail the run cleanly (teardown, state)
            reason = f"benchmark step crashed: {type(exc).__name__}: {exc}"
            self._summary_if_missing(results, reason)
            raise BenchmarkFailed(reason) from exc

    def _run(self, driver: DriverView, results: Path) -> None:
        b, url = self.bench, driver.plan.readiness.frontend_url
        # The same client processes the dry-run shows (bound), one per point, under results/.
        context = {**b.context, "job_id": driver.state.data.get("job_id", "")}
        points = b.points
        (results / POINTS_FILE).write_text("")
        driver.say(f"benchmark: {b.tool}, {len(points)} load point(s) against {url}")
        for done, (point, proc) in enumerate(zip(points, b.clients, strict=True)):
            self._progress(driver, "running", point=point.label(), done=done, of=len(points))
            rows = self._point(driver, point, proc, context, results)
            if rows is None:  # stop requested while the client ran
                self._summary(
                    results, valid=False, reason=driver.stop_reason or "stopped", done=done
                )
                return
            with (results / POINTS_FILE).open("a") as fh:
                fh.writelines(json.dumps(row) + "\n" for row in rows)
            for row in rows:
                driver.say(_row_line(row))
            invalid = next((row for row in rows if not row["valid"]), None)
            if invalid is not None:
                self._fail(driver, results, point, invalid, done=done + 1, of=len(points))
        self._summary(results, valid=True, reason="", done=len(points))
        self._progress(driver, "valid", done=len(points), of=len(points))
        if not b.keep_serving:
            driver.request_stop("benchmark finished")

    def _fail(
        self,
        driver: DriverView,
        results: Path,
        point: LoadPoint,
        row: dict[str, Any],
        *,
        done: int,
        of: int,
    ) -> NoReturn:
        """Record an invalid point (summary and state.json) and fail the run on it."""
        reason = f"benchmark point {point.label()} invalid: {row['invalid_reason']}"
        self._summary(results, valid=False, reason=reason, done=done)
        self._progress(driver, "invalid", done=done, of=of, reason=reason)
        raise BenchmarkFailed(
            f"{reason} (see {results / POINTS_FILE} and logs/benchmark-{point.index}.log)"
        )

    def _progress(
        self,
        driver: DriverView,
        status: str,
        *,
        done: int,
        of: int,
        point: str | None = None,
        reason: str | None = None,
    ) -> None:
        """state.json's `benchmark` entry: tool, [point,] done, of, status[, reason] (this key
        order is what state.json has always shown)."""
        entry: dict[str, Any] = {"tool": self.bench.tool}
        if point is not None:
            entry["point"] = point
        entry.update(done=done, of=of, status=status)
        if reason is not None:
            entry["reason"] = reason
        driver.state.update(benchmark=entry)

    def _point(
        self,
        driver: DriverView,
        point: LoadPoint,
        proc: Process,
        context: dict[str, Any],
        results: Path,
    ) -> list[dict[str, Any]] | None:
        """Run one point's client; its normalized rows (one per load point, one per task and
        metric of an accuracy point), or None when a stop was requested."""
        out_dir = results / point.label()
        out_dir.mkdir(exist_ok=True)
        (out_dir / "command.txt").write_text(shlex.join(proc.argv) + "\n")
        log = RunDir(driver.run_dir).log(proc.name)
        started, since = time.time(), driver.clock.now()
        code = self._run_client(driver, proc, log, point)
        if code is None:
            return None
        restarts = driver.restarts_since(since)
        extra = {
            "exit_code": code,
            "artifacts": f"{RESULTS}/{point.label()}",
            "started_at": started,
            "seconds": round(time.time() - started, 3),
            "run_dir": str(driver.run_dir),
            "engine_metrics": point_summary(driver.run_dir, started, time.time()),
        }
        facts = {**context, **extra}
        if point.tasks:
            rows = self._eval_rows(out_dir, point, facts, code=code, log=log)
        else:
            measured = self._measure(out_dir, point)
            rows = [self._row(measured, point, facts, code=code, out_dir=out_dir, log=log)]
        if restarts and not self.bench.allow_restarts:
            for row in rows:
                if row["valid"]:
                    row.update(
                        valid=False,
                        invalid_reason=f"worker restart during the point: "
                        f"{'; '.join(restarts)} (benchmark.allow_restarts=true keeps it)",
                    )
        return [{**row, "restarts": restarts} if restarts else row for row in rows]

    def _eval_rows(
        self, out_dir: Path, point: LoadPoint, context: dict[str, Any], *, code: int, log: Path
    ) -> list[dict[str, Any]]:
        """An accuracy point's rows from lm-eval's results file, judged (bench/evals.py)."""
        data = evals.read_lm_eval(out_dir)
        found = evals.scores(data) if data else []
        reasons = evals.judge_scores(
            found, tasks=point.tasks, gates=self.bench.min_accuracy, exit_code=code
        )
        if data is None:
            why = (
                f"no lm-eval results in {out_dir} (client exit code {code}); last lines of "
                f"{log}:\n{log_tail(log, 15)}"
            )
            reasons = {(task, "", ""): why for task in point.tasks}
        return evals.eval_rows(found, reasons, point, context)

    def _run_client(
        self, driver: DriverView, proc: Process, log: Path, point: LoadPoint
    ) -> int | None:
        """Start the client, wait for it (stopping it if still running) and keep state.json's
        process entry current; its exit code, None when a stop was requested."""
        running = driver.backend.start(proc, log)
        driver.state.process(
            proc.name,
            node=0,
            host=running.host,
            role="benchmark",
            state="running",
            probed=False,
            log=str(log),
        )
        try:
            return self._wait(driver, running, point)
        finally:
            if running.poll() is None:
                stop_tier(
                    driver.backend, [running], grace_s=driver.plan.stop_grace_s, clock=driver.clock
                )
            driver.state.process(proc.name, state="exited", exit_code=running.exit_code)

    def _measure(self, out_dir: Path, point: LoadPoint) -> Measured | None:
        """What the configured tool wrote into `out_dir` (None: no result files)."""
        if self.bench.tool == "aiperf":
            return read_aiperf(out_dir)
        return read_bench_serving(out_dir, point.requests)

    def _row(
        self,
        measured: Measured | None,
        point: LoadPoint,
        context: dict[str, Any],
        *,
        code: int,
        out_dir: Path,
        log: Path,
    ) -> dict[str, Any]:
        """The normalized row, judged; a client without result files counts every request as
        an error and quotes the end of its log."""
        b = self.bench
        if measured is None:
            reason = (
                f"no result files in {out_dir} (client exit code {code}); last lines of {log}:\n"
                f"{log_tail(log, 15)}"
            )
            return normalized_row(
                Measured.unfinished(completed=0, errors=point.requests, output_tokens=0.0),
                point,
                tool=b.tool,
                context=context,
                valid=False,
                reason=reason,
            )
        valid, reason = judge(measured, max_error_rate=b.max_error_rate, exit_code=code)
        return normalized_row(
            measured, point, tool=b.tool, context=context, valid=valid, reason=reason
        )

    def _wait(self, driver: DriverView, running: Running, point: LoadPoint) -> int | None:
        """The client's exit code; None when a stop was requested. Watches the deployment too."""
        deadline = driver.clock.now() + self.bench.point_timeout_s
        while True:
            code = running.poll()
            if code is not None:
                return code
            driver.check_alive()
            if driver.clock.now() >= deadline:
                raise BenchmarkFailed(
                    f"benchmark point {point.label()} still running after "
                    f"benchmark.point_timeout_s={self.bench.point_timeout_s:g}"
                )
            if driver.stop_event.wait(driver.plan.readiness.interval_s):
                return None

    def _summary_if_missing(self, results: Path, reason: str) -> None:
        if not (results / SUMMARY_FILE).exists():
            rows = (
                (results / POINTS_FILE).read_text().splitlines()
                if (results / POINTS_FILE).exists()
                else []
            )
            self._summary(results, valid=False, reason=reason, done=len(rows))

    def _summary(self, results: Path, *, valid: bool, reason: str, done: int) -> None:
        write_json_atomic(
            results / SUMMARY_FILE,
            {
                "tool": self.bench.tool,
                "valid": valid,
                "reason": reason,
                "points_done": done,
                "points": len(self.bench.points),
                "finished_at": now_iso(),
            },
        )


def _row_line(row: dict[str, Any]) -> str:
    """One progress line per point (per task and metric of an accuracy point)."""
    if "task" in row:
        return evals.row_line(row)
    if not row["valid"]:
        head = f"benchmark point {row['point']} (c={row['concurrency']})"
        return f"{head}: INVALID: {row['invalid_reason']}"
    per_gpu = row["output_tok_s_per_gpu"] or 0.0
    # None when the stream gave no inter-token gaps (every token in one chunk): not measurable.
    per_user = f"{row['tok_s_per_user']:.1f}" if row["tok_s_per_user"] else "n/a"
    return (
        f"benchmark point {row['point']} "
        f"(c={row['concurrency']} isl={row['isl']} osl={row['osl']}): "
        f"{row['output_tok_s']:.1f} tok/s, {per_gpu:.2f} tok/s/GPU, {per_user} tok/s/user, "
        f"TTFT p50 {row['ttft_p50_ms'] or 0:.1f} ms"
    )
