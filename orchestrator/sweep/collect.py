"""Sweep results: the valid rows of every point -> results.jsonl, results.csv, pareto.png and the
decision table (decision.md, decision.csv: the Pareto front by tokens/s per user band).

The Pareto plot puts output tokens/s per GPU (throughput per unit of cost) against tokens/s per
user (interactivity): one curve per topology through its load points, and the frontier over all
of them (points no other point beats on both axes) highlighted.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from orchestrator.core.errors import OrchestratorError
from orchestrator.rundir import RunDir

if TYPE_CHECKING:
    from matplotlib.axes import Axes

X_KEY, Y_KEY = "tok_s_per_user", "output_tok_s_per_gpu"
CSV_COLUMNS = (
    "sweep_point",
    "name",
    "deployment",
    "baseline",
    "mode",
    "engine",
    "frontend",
    "nodes",
    "prefill_workers",
    "prefill_tp",
    "decode_workers",
    "decode_tp",
    "aggregated_workers",
    "aggregated_tp",
    "gpus_prefill",
    "gpus_decode",
    "gpus_aggregated",
    "gpus_total",
    "gpus_allocated",
    "tool",
    "point",
    "concurrency",
    "isl",
    "osl",
    "requests",
    "completed",
    "errors",
    "error_rate",
    "output_tokens",
    "duration_s",
    "output_tok_s",
    "output_tok_s_per_gpu",
    "tok_s_per_user",
    "ttft_p50_ms",
    "ttft_p99_ms",
    "itl_p50_ms",
    "itl_p99_ms",
    "request_throughput",
    "task",
    "metric",
    "filter",
    "value",
    "stderr",
    "samples",
    "plan_hash",
    "job_id",
    "run_dir",
    "artifacts",
)


def read_rows(run_dir: Path) -> list[dict[str, Any]]:
    """results/points.jsonl of one run (every row, valid or not)."""
    path = RunDir(run_dir).results_dir / "points.jsonl"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


def flatten(row: dict[str, Any]) -> dict[str, Any]:
    """One CSV record: topology fields and GPUs by role lifted to top-level columns."""
    flat = {k: v for k, v in row.items() if not isinstance(v, dict)}
    topology = row.get("topology") or {}
    flat.update({k: v for k, v in topology.items() if k != "name"})
    flat.update({f"gpus_{k}": v for k, v in (row.get("gpus") or {}).items()})
    return {col: flat.get(col, "") for col in CSV_COLUMNS}


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point dominates (>= on both axes, > on one), by x."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any(
            (x2 >= x and y2 >= y) and (x2 > x or y2 > y)
            for j, (x2, y2) in enumerate(points)
            if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i])


def plottable(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows that have both plot coordinates."""
    return [
        r
        for r in rows
        if isinstance(r.get(X_KEY), int | float) and isinstance(r.get(Y_KEY), int | float)
    ]


def write_tables(out_dir: Path, rows: Sequence[dict[str, Any]]) -> tuple[Path, Path]:
    """results.jsonl (rows as they are) and results.csv (flattened, fixed columns)."""
    jsonl, table = out_dir / "results.jsonl", out_dir / "results.csv"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with table.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(CSV_COLUMNS))
        writer.writeheader()
        for row in rows:
            writer.writerow(flatten(row))
    return table, jsonl


DECISION_COLUMNS = (
    "need_tok_s_per_user_above",
    "need_tok_s_per_user_up_to",
    "name",
    "sweep_point",
    "concurrency",
    "output_tok_s_per_gpu",
    "tok_s_per_user",
    "output_tok_s",
    "ttft_p99_ms",
    "itl_p99_ms",
    "gpus_total",
    "nodes",
    "accuracy",
    "run_dir",
)


def topology_key(row: dict[str, Any]) -> str:
    """What a load row and an accuracy row of the same deployment share: the topology without
    its name (a sweep names the aiperf and the lm_eval point of one deployment apart)."""
    topology = {k: v for k, v in (row.get("topology") or {}).items() if k != "name"}
    return json.dumps(topology, sort_keys=True)


def accuracy_by_topology(rows: Sequence[dict[str, Any]]) -> dict[str, str]:
    """'task value, task value' per topology from the valid accuracy rows: each task's first
    metric (the one benchmark.min_accuracy gates)."""
    seen: dict[str, dict[str, str]] = {}
    for row in rows:
        if row.get("task") and row.get("valid") and isinstance(row.get("value"), int | float):
            tasks = seen.setdefault(topology_key(row), {})
            tasks.setdefault(row["task"], f"{row['task']} {row['value']:.3f}")
    return {key: ", ".join(tasks.values()) for key, tasks in seen.items()}


def decision_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Pareto front as a decision table, by tokens/s per user: front point i is the best
    throughput per GPU for a need of more than the previous point's tokens/s per user and up
    to its own (any point faster per user is on the front further on and gives less per GPU;
    any point giving more per GPU is slower per user)."""
    data = plottable(rows)
    front = [data[i] for i in pareto_front([(r[X_KEY], r[Y_KEY]) for r in data])]
    accuracy = accuracy_by_topology(rows)
    out: list[dict[str, Any]] = []
    low = 0.0
    for row in front:
        if out and row[X_KEY] == low:
            continue  # a tie on both axes: one row per band
        flat = {
            **flatten(row),
            "name": row.get("name", ""),
            "accuracy": accuracy.get(topology_key(row), "-"),
        }
        band = {"need_tok_s_per_user_above": low, "need_tok_s_per_user_up_to": row[X_KEY]}
        out.append({**{c: flat.get(c, "") for c in DECISION_COLUMNS}, **band})
        low = row[X_KEY]
    return out


def _num(value: Any, digits: int = 1) -> str:
    return f"{value:.{digits}f}" if isinstance(value, int | float) else str(value or "-")


def decision_markdown(table: Sequence[dict[str, Any]], failed: Sequence[str]) -> str:
    """decision.md: which configuration to pick for the tokens/s per user you need, then the
    points without a result and why."""
    lines = [
        "# Best configuration per tokens/s per user",
        "",
        "Need per user (tok/s) | Pick | Concurrency | Output tok/s/GPU | tok/s/user | "
        "TTFT p99 (ms) | ITL p99 (ms) | GPUs | Accuracy",
        "---|---|---|---|---|---|---|---|---",
    ]
    for r in table:
        low, high = r["need_tok_s_per_user_above"], r["need_tok_s_per_user_up_to"]
        need = f"up to {_num(high)}" if not low else f"{_num(low)} - {_num(high)}"
        lines.append(
            f"{need} | {r['name']} | {r['concurrency']} | {_num(r['output_tok_s_per_gpu'])} | "
            f"{_num(r['tok_s_per_user'])} | {_num(r['ttft_p99_ms'])} | "
            f"{_num(r['itl_p99_ms'])} | {r['gpus_total']} | {r['accuracy']}"
        )
    if not table:
        lines.append("(no valid results with tokens/s per user)")
    if table:
        top = _num(table[-1]["need_tok_s_per_user_up_to"])
        lines += ["", f"Above {top} tok/s per user no measured configuration is fast enough."]
    lines.append("")
    lines += ["## Points without a valid result", ""] + ([f"- {f}" for f in failed] or ["(none)"])
    return "\n".join(lines) + "\n"


def accuracy_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """decision.md's accuracy section: every valid accuracy row ('' without any)."""
    evals = [r for r in rows if r.get("task")]
    if not evals:
        return ""
    lines = [
        "",
        "## Accuracy (benchmark=lm_eval)",
        "",
        "Point | Task | Metric | Filter | Value | Stderr | Documents",
        "---|---|---|---|---|---|---",
    ]
    for r in evals:
        lines.append(
            f"{r.get('name', '')} | {r['task']} | {r['metric']} | {r['filter']} | "
            f"{_num(r['value'], 4)} | {_num(r['stderr'], 4)} | {r['samples']}"
        )
    return "\n".join(lines) + "\n"


def write_decision(
    out_dir: Path, rows: Sequence[dict[str, Any]], failed: Sequence[str]
) -> tuple[Path, Path]:
    """decision.md and decision.csv (the same table, machine-readable)."""
    table = decision_rows(rows)
    md, table_csv = out_dir / "decision.md", out_dir / "decision.csv"
    md.write_text(decision_markdown(table, failed) + accuracy_markdown(rows))
    with table_csv.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(DECISION_COLUMNS))
        writer.writeheader()
        writer.writerows(table)
    return md, table_csv


def plot_pareto(rows: Sequence[dict[str, Any]], path: Path, *, title: str) -> Path:
    """pareto.png: one curve per topology, the frontier highlighted (matplotlib, Agg backend)."""
    plt = _pyplot()
    data = plottable(rows)
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for label, own in curves(data).items():
        _plot_topology(ax, label, own)
    _plot_frontier(ax, [data[i] for i in pareto_front([(r[X_KEY], r[Y_KEY]) for r in data])])
    _label_axes(ax, title, missing=len(rows) - len(data), empty=not data)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _pyplot() -> ModuleType:
    """matplotlib.pyplot on the Agg backend (compute nodes have no display); an optional extra."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise OrchestratorError(
            "the Pareto plot needs matplotlib: pip install -e '.[plot]' "
            "(scripts/install.sh installs it)"
        ) from exc
    return plt


def _coords(rows: Sequence[dict[str, Any]]) -> tuple[list[Any], list[Any]]:
    """The x and y values of `rows`, in order."""
    return [r[X_KEY] for r in rows], [r[Y_KEY] for r in rows]


def curves(rows: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Legend label -> that curve's rows by tokens/s per user: one curve per name (a sweep
    point's name, which shows every swept key), labelled with its GPU count."""
    out: dict[str, list[dict[str, Any]]] = {}
    for name in sorted({r["name"] for r in rows}):
        own = sorted((r for r in rows if r["name"] == name), key=lambda r: r[X_KEY])
        out[f"{name} ({(own[0].get('gpus') or {}).get('total', '?')} GPUs)"] = own
    return out


def _plot_topology(ax: Axes, label: str, own: Sequence[dict[str, Any]]) -> None:
    """One topology's curve through its load points (dashed when aggregated), each point
    annotated with its concurrency."""
    style = "--" if (own[0].get("topology") or {}).get("mode") == "aggregated" else "-"
    xs, ys = _coords(own)
    ax.plot(xs, ys, style, marker="o", alpha=0.8, label=label)
    for r in own:
        ax.annotate(
            f"c{r['concurrency']}",
            (r[X_KEY], r[Y_KEY]),
            textcoords="offset points",
            xytext=(4, 4),
            fontsize=7,
            alpha=0.7,
        )


def _plot_frontier(ax: Axes, front: Sequence[dict[str, Any]]) -> None:
    """The Pareto frontier as a wide grey line under the curves, its points circled."""
    if not front:
        return
    xs, ys = _coords(front)
    ax.plot(xs, ys, color="black", linewidth=2.5, alpha=0.35, zorder=0, label="Pareto frontier")
    ax.scatter(xs, ys, s=140, facecolors="none", edgecolors="black", linewidths=1.5, zorder=3)


def _label_axes(ax: Axes, title: str, *, missing: int, empty: bool) -> None:
    """Axis labels, the title (with how many rows could not be placed), grid and legend."""
    ax.set_xlabel("tokens/s per user")
    ax.set_ylabel("output tokens/s per GPU")
    ax.set_title(title + (f" ({missing} without tokens/s per user not shown)" if missing else ""))
    ax.grid(True, alpha=0.3)
    if empty:
        ax.text(0.5, 0.5, "no valid results", ha="center", va="center", transform=ax.transAxes)
    else:
        ax.legend(fontsize=8)
