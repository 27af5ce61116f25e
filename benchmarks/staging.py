#!/usr/bin/env python3
"""Measure model staging to node-local disk on the Slurm testbed (not a test: prints a table).

A synthetic model directory (config.json + N safetensors files of random bytes, default 4 GB)
is staged by `model.stage=node_local` to the three nodes (sglang-router + the SGLang test double,
prefill TP8 + 2 decode TP8 = 3 nodes), once with each method, then the copy again (every node
skips). Per run: the driver's staging time (srun start, the check, packing, sbcast, copying:
state.json's stage entry) and each node's own time. The testbed's nodes share one disk, so
`cluster.local_dir=<dir>/%N` stands for node-local disks and every byte read and written goes
through the same device: the numbers compare the methods' overheads here, not a cluster's
network or NVMe. Each method's copies are deleted after its run.

Usage: python benchmarks/staging.py [--gb 4] [--files 4] [--dir /var/tmp/staging-bench]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.slurm.test_e2e_stage import launch  # noqa: E402  (after the sys.path insert)

CHUNK = 64 << 20


def synthetic_model(root: Path, gb: float, files: int) -> int:
    """config.json + `files` safetensors of random bytes, `gb` in all; the bytes written."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text('{"model_type": "llama"}')
    each = int(gb * 1e9 / files)
    block = bytes(range(256)) * (CHUNK // 256)  # written once per chunk: no RNG cost
    for i in range(files):
        with (root / f"model-{i + 1:05d}-of-{files:05d}.safetensors").open("wb") as fh:
            left = each
            while left > 0:
                fh.write(block[: min(left, CHUNK)])
                left -= CHUNK
    return sum(p.stat().st_size for p in root.iterdir())


def run(base: Path, model: Path, name: str, local: Path, method: str) -> dict[str, Any]:
    started = time.monotonic()
    out = launch(base / name, model, local, method, timeout=1500)  # the testbed may be busy
    stage = out["state"]["stage"]
    return {
        "run": name,
        "method": method,
        "stage_s": stage["seconds"],
        "nodes": stage["nodes"],
        "sbcast_s": stage.get("sbcast_s"),
        "wall_s": round(time.monotonic() - started, 1),
    }


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--gb", type=float, default=4.0)
    p.add_argument("--files", type=int, default=4)
    p.add_argument("--dir", default="/var/tmp/staging-bench")
    args = p.parse_args()
    base = Path(args.dir)
    shutil.rmtree(base, ignore_errors=True)
    need = args.gb * 1e9 * 6  # source + 3 copies + the tar and its packed source
    free = shutil.disk_usage(base.parent).free
    if free < need * 1.2:
        sys.exit(
            f"{free / 1e9:.0f} GB free under {base.parent}: need about {need / 1e9:.0f} GB; use --gb"
        )
    size = synthetic_model(base / "model", args.gb, args.files)
    print(
        f"synthetic model: {size / 1e9:.2f} GB in {args.files + 1} files; {free / 1e9:.0f} GB free"
    )
    rows = [
        run(base, base / "model", "copy", base / "copy", "copy"),
        run(base, base / "model", "copy-again", base / "copy", "copy"),
    ]
    shutil.rmtree(base / "copy")
    rows.append(run(base, base / "model", "sbcast", base / "bcast", "sbcast"))
    shutil.rmtree(base / "bcast")
    print("| Run | Method | Staging (driver) | sbcast | Per node |\n|---|---|---|---|---|")
    for r in rows:
        nodes = ", ".join(f"{h}: {v}" for h, v in sorted(r["nodes"].items()))
        sb = f"{r['sbcast_s']:.1f} s" if r["sbcast_s"] is not None else "-"
        print(f"| {r['run']} | {r['method']} | {r['stage_s']:.1f} s | {sb} | {nodes} |")
    shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
