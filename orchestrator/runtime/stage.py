"""The stage step (orchestrator.plan.stage) on one node: copy the model directory to local disk once
per revision, or unpack the tar sbcast put there.

- **Once per revision.** The copy holds `.orchestrator-stage.json`: every file of the source
  with its size and mtime. A node whose copy has the source's manifest skips (a new revision, or
  any changed file, changes the manifest and the copy is made again).
- **Space first.** Before writing, the local directory must have the model's size free (plus the
  tar's with sbcast, counting what an old copy being replaced frees); otherwise the node refuses
  naming its directory, what is needed and what is free.
- **No half copies.** Files go to `<dest>.partial` and are renamed into place at the end.
- Progress: `<progress-dir>/<host>.json` ({"host", "done", "total", "status"}) about every
  second, read by the driver into state.json (ctl status / watch).

`python -m orchestrator.runtime.stage --source DIR --dest DIR(%N = this node's name) [--tar FILE] [--check]
--progress-dir DIR` prints one JSON line {"host", "status": skipped|staged|needed, "bytes",
"seconds"} or {"host", "error"}.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import sys
import tarfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from orchestrator.runtime.node_report import print_report

MANIFEST = ".orchestrator-stage.json"
NODE_NAME = "%N"  # in cluster.local_dir: the node's hostname (Slurm's own spelling of it)
PROGRESS_EVERY_S = 1.0
CHUNK = 16 << 20


class StageError(Exception):
    """This node cannot stage the model (no space, unreadable source)."""


def manifest(source: Path) -> dict[str, list[int]]:
    """{relative name: [size, mtime_ns]} of every file under `source` (symlinks followed: a Hub
    snapshot's files are links into its blobs)."""
    out = {}
    for path in sorted(source.rglob("*")):
        if path.is_file() and path.name != MANIFEST:
            st = path.stat()
            out[str(path.relative_to(source))] = [st.st_size, st.st_mtime_ns]
    return out


def staged_manifest(dest: Path) -> dict[str, list[int]] | None:
    try:
        data = json.loads((dest / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def check_space(dest: Path, need: int) -> None:
    """Refuse when the local directory cannot take `need` bytes (an old copy counts as free)."""
    parent = dest.parent
    parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(parent).free
    old = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file()) if dest.is_dir() else 0
    if free + old < need:
        raise StageError(
            f"not enough space in {parent}: {_size(need)} needed, {_size(free + old)} "
            "free (set cluster.local_dir to a larger disk)"
        )


def _size(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.2f} MB"


class Progress:
    """Writes this node's progress file at most every PROGRESS_EVERY_S."""

    def __init__(self, directory: str, total: int) -> None:
        self.path = Path(directory) / f"{socket.gethostname()}.json" if directory else None
        self.total, self.done, self.last = total, 0, 0.0

    def add(self, n: int, *, status: str = "copying", force: bool = False) -> None:
        self.done += n
        now = time.monotonic()
        if self.path is None or (not force and now - self.last < PROGRESS_EVERY_S):
            return
        self.last = now
        data = {
            "host": socket.gethostname(),
            "done": self.done,
            "total": self.total,
            "status": status,
        }
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(self.path)


def copy_tree(source: Path, partial: Path, files: dict[str, list[int]], progress: Progress) -> None:
    """Every file of `files` from `source` into `partial`, in chunks (progress as it goes)."""
    for name in files:
        target = partial / name
        target.parent.mkdir(parents=True, exist_ok=True)
        with (source / name).open("rb") as src, target.open("wb") as dst:
            while chunk := src.read(CHUNK):
                dst.write(chunk)
                progress.add(len(chunk))


def unpack(tar: Path, partial: Path, progress: Progress) -> None:
    """The tar sbcast delivered, unpacked into `partial` (the driver removes the tar once every
    node has unpacked it: on a shared directory one tar serves several nodes)."""
    with tarfile.open(tar) as archive:
        for member in archive:
            archive.extract(member, partial, filter="data")
            progress.add(member.size)


def finish(partial: Path, dest: Path, files: dict[str, list[int]]) -> None:
    """Record the manifest and put the copy in place of the old one."""
    (partial / MANIFEST).write_text(json.dumps(files))
    if dest.exists():
        shutil.rmtree(dest)
    partial.rename(dest)


def stage(
    source: Path, dest: Path, *, tar: Path | None, check: bool, progress_dir: str
) -> dict[str, Any]:
    """Skip, check or make this node's copy; the report (raises StageError)."""
    started = time.monotonic()
    try:
        files = manifest(source)
    except OSError as exc:
        raise StageError(f"cannot read the model directory {source}: {exc}") from exc
    if not files:
        raise StageError(f"the model directory {source} has no files")
    total = sum(size for size, _ in files.values())
    if staged_manifest(dest) == files:
        return {"status": "skipped", "bytes": total, "seconds": 0.0, "dest": str(dest)}
    check_space(dest, total * 2 if check and tar is not None else total)
    if tar is not None:
        tar.parent.mkdir(parents=True, exist_ok=True)  # sbcast writes into it
    if check:
        return {"status": "needed", "bytes": total, "seconds": 0.0, "dest": str(dest)}
    partial = dest.with_name(dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    progress = Progress(progress_dir, total)
    if tar is not None:
        unpack(tar, partial, progress)
    else:
        copy_tree(source, partial, files, progress)
    finish(partial, dest, files)
    progress.add(0, status="staged", force=True)
    return {
        "status": "staged",
        "bytes": total,
        "seconds": round(time.monotonic() - started, 3),
        "dest": str(dest),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Stage on this node and print the report as one JSON line (exit 1 on failure)."""
    p = argparse.ArgumentParser()
    p.add_argument("--source", required=True)
    p.add_argument("--dest", required=True)
    p.add_argument("--tar", default="", help="unpack this tar (sbcast) instead of copying")
    p.add_argument("--check", action="store_true", help="only say whether a copy is needed")
    p.add_argument("--progress-dir", default="")
    args = p.parse_args(argv)
    # %N: this node's name (a local directory per node where nodes share one filesystem).
    dest = Path(args.dest.replace(NODE_NAME, socket.gethostname()))
    tar = Path(args.tar) if args.tar else None
    return print_report(
        lambda: stage(
            Path(args.source), dest, tar=tar, check=args.check, progress_dir=args.progress_dir
        ),
        StageError,
    )


if __name__ == "__main__":
    sys.exit(main())
