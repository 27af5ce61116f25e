"""The fetch step (orchestrator.plan.fetch): one process on node 0 downloads the model into the
shared cache before any worker starts; nothing else in the job reaches the Hub.

- **Once.** A complete snapshot is recorded in `<hf_home>/hub/.orchestrator/<repo>@<rev>.json`
  (commit, every file and its size) after `snapshot_download` returned; a later job finds it,
  checks the files are still there with those sizes, and asks the Hub nothing.
- **One fetcher per repository**, across nodes and jobs sharing the cache: an exclusive lock
  file (`O_CREAT|O_EXCL`, works on NFS where flock may not) holding host, pid and time, touched
  every few seconds while the download runs. Others wait; a lock whose holder is gone (its pid
  dead on this host, or not touched for `STALE_S`) is taken over.
- **Stale locks of dead fetches.** huggingface_hub locks each blob with a `.lock` file under
  `hub/.locks/models--ORG--NAME/`; where the filesystem has no flock it falls back to
  SoftFileLock, whose file outlives a killed download and blocks every later one forever. While
  holding the repository lock no live fetch of ours uses them, so they are removed.
- **Offline clusters** (HF_HUB_OFFLINE) refuse with the reason instead of failing in the Hub client.

`python -m orchestrator.runtime.fetch --repo ORG/NAME [--revision R] --hf-home DIR` prints one
JSON line: {"host", "path", "commit", "fetched", "seconds"} or {"host", "error"}.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from orchestrator.core.effects import CommandRunner
from orchestrator.core.errors import OrchestratorError
from orchestrator.plan.fetch import FetchSpec, is_offline
from orchestrator.runtime.node_report import parse_report, print_report, srun_prefix

STALE_S = 60.0  # a lock not touched this long belongs to a dead fetch (touched every TOUCH_S)
TOUCH_S = 5.0
WAIT_POLL_S = 0.5
MARKER_DIR = ".orchestrator"  # under <hf_home>/hub: our completion records and locks


class FetchFailed(OrchestratorError):
    """The model could not be fetched (offline, Hub error, timeout waiting for another fetch)."""


def repo_folder(repo_id: str) -> str:
    """huggingface_hub's cache folder name of a model repository: models--ORG--NAME."""
    return "models--" + repo_id.replace("/", "--")


def _marker(hub: Path, spec: FetchSpec) -> Path:
    return hub / MARKER_DIR / f"{repo_folder(spec.repo_id)}@{spec.revision or 'main'}.json"


def cached_snapshot(hub: Path, spec: FetchSpec) -> dict[str, Any] | None:
    """The completion record of a snapshot whose every file is present with its recorded size
    (None: never completed, or a file went missing or was cut short since)."""
    try:
        record = json.loads(_marker(hub, spec).read_text())
        path = Path(record["path"])
        files = dict(record["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    for name, size in files.items():
        try:
            if (path / name).stat().st_size != size:
                return None
        except OSError:
            return None
    return dict(record)


def _record(hub: Path, spec: FetchSpec, path: Path) -> dict[str, Any]:
    """Write the completion record of the snapshot at `path` (atomically)."""
    files = {
        str(p.relative_to(path)): p.stat().st_size for p in sorted(path.rglob("*")) if p.is_file()
    }
    record = {
        "repo": spec.repo_id,
        "revision": spec.revision,
        "commit": path.name,
        "path": str(path),
        "files": files,
        "at": time.time(),
    }
    marker = _marker(hub, spec)
    tmp = marker.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record))
    tmp.replace(marker)
    return record


# --- the repository lock -------------------------------------------------------------------
def _holder(lock: Path) -> dict[str, Any]:
    try:
        data = json.loads(lock.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def is_stale(lock: Path, *, now: float, host: str) -> bool:
    """Whether `lock` belongs to a dead fetch: its process is gone (same host), or it was not
    touched for STALE_S (any host: a holder on a lost node cannot be asked)."""
    try:
        age = now - lock.stat().st_mtime
    except OSError:
        return False  # released meanwhile: not ours to remove
    holder = _holder(lock)
    if holder.get("host") == host and isinstance(holder.get("pid"), int):
        return not _pid_alive(holder["pid"])
    return age > STALE_S


def _try_create(lock: Path) -> bool:
    try:
        fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o664)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as fh:
        json.dump({"host": socket.gethostname(), "pid": os.getpid(), "at": time.time()}, fh)
    return True


def _toucher(lock: Path, stop: threading.Event) -> threading.Thread:
    """Keeps the lock's mtime fresh while the download runs (others judge staleness by it)."""

    def touch() -> None:
        while not stop.wait(TOUCH_S):
            try:
                os.utime(lock)
            except OSError:
                return

    thread = threading.Thread(target=touch, name="fetch-lock", daemon=True)
    thread.start()
    return thread


@contextmanager
def repo_lock(lock: Path, *, timeout_s: float, say: Any = None) -> Iterator[bool]:
    """Hold the repository lock; yields whether a stale lock of a dead fetch was taken over."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    deadline, took_over = time.monotonic() + timeout_s, False
    while not _try_create(lock):
        if is_stale(lock, now=time.time(), host=socket.gethostname()):
            if say:
                say(f"removing the stale lock {lock} of a dead fetch ({_holder(lock)})")
            lock.unlink(missing_ok=True)
            took_over = True
            continue
        if time.monotonic() > deadline:
            raise FetchFailed(f"another fetch holds {lock} ({_holder(lock)}) after {timeout_s:g} s")
        time.sleep(WAIT_POLL_S)
    stop = threading.Event()
    thread = _toucher(lock, stop)
    try:
        yield took_over
    finally:
        stop.set()
        thread.join()
        lock.unlink(missing_ok=True)


def clean_hub_locks(hub: Path, repo_id: str) -> list[str]:
    """Remove huggingface_hub's per-blob .lock files of this repository (the caller holds the
    repository lock: they are leftovers of dead fetches); the names removed."""
    folder = hub / ".locks" / repo_folder(repo_id)
    removed = []
    for path in sorted(folder.glob("*.lock")) if folder.is_dir() else []:
        path.unlink(missing_ok=True)
        removed.append(path.name)
    return removed


# --- the step ------------------------------------------------------------------------------
def fetch(
    spec: FetchSpec, env: Mapping[str, str], *, timeout_s: float, say: Any = None
) -> dict[str, Any]:
    """Make the snapshot of `spec` complete in the shared cache; what was found or fetched."""
    hub, started = Path(spec.hf_home) / "hub", time.monotonic()
    done = cached_snapshot(hub, spec)
    if done is not None:
        return {"path": done["path"], "commit": done["commit"], "fetched": False, "seconds": 0.0}
    if is_offline(env):
        raise FetchFailed(
            f"HF_HUB_OFFLINE={env.get('HF_HUB_OFFLINE')} on this node: an offline "
            f"cluster cannot fetch {spec.repo_id} (no complete snapshot in {hub}); put "
            "the model on the shared filesystem and set model.path to it"
        )
    with repo_lock(
        hub / MARKER_DIR / f"{repo_folder(spec.repo_id)}.lock", timeout_s=timeout_s, say=say
    ):
        done = cached_snapshot(hub, spec)  # another fetch finished while we waited
        if done is not None:
            return {
                "path": done["path"],
                "commit": done["commit"],
                "fetched": False,
                "seconds": round(time.monotonic() - started, 3),
            }
        removed = clean_hub_locks(hub, spec.repo_id)
        if removed and say:
            say(f"removed {len(removed)} stale huggingface_hub lock(s) of {spec.repo_id}")
        path = Path(_download(spec, hub))
        record = _record(hub, spec, path)
    return {
        "path": record["path"],
        "commit": record["commit"],
        "fetched": True,
        "seconds": round(time.monotonic() - started, 3),
    }


def _download(spec: FetchSpec, hub: Path) -> str:
    """huggingface_hub.snapshot_download into `hub` (HF_ENDPOINT and HF_TOKEN from the env)."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:
        raise FetchFailed("huggingface_hub is not installed (pip install huggingface_hub)") from exc
    try:
        return str(snapshot_download(spec.repo_id, revision=spec.revision or None, cache_dir=hub))
    except Exception as exc:  # the Hub client's own errors: name the repository and the reason
        raise FetchFailed(
            f"fetching {spec.repo_id}@{spec.revision or 'main'} failed: {type(exc).__name__}: {exc}"
        ) from exc


def fetch_argv(spec: FetchSpec, python: str, timeout_s: float) -> list[str]:
    """The command that runs the step (on a node, or here for launcher=local)."""
    argv = [
        python,
        "-m",
        "orchestrator.runtime.fetch",
        "--repo",
        spec.repo_id,
        "--hf-home",
        spec.hf_home,
        "--timeout-s",
        f"{timeout_s:g}",
    ]
    return argv + (["--revision", spec.revision] if spec.revision else [])


def run_step(
    runner: CommandRunner,
    spec: FetchSpec,
    *,
    python: str,
    timeout_s: float,
    srun: Sequence[str] = (),
) -> dict[str, Any]:
    """Run the step (under `srun` on one node, or here) and return its report; raises the
    step's own error. HF_HOME is the shared cache for the Hub client's own files too."""
    argv = [*srun, *fetch_argv(spec, python, timeout_s)]
    res = runner.run(argv, timeout=timeout_s + 60, env={**os.environ, "HF_HOME": spec.hf_home})
    report = parse_report(res.stdout)
    if report is None:
        raise FetchFailed(
            f"the fetch step printed no report (exit {res.returncode}): {res.stderr.strip()[-500:]}"
        )
    if report.get("error"):
        raise FetchFailed(f"fetch on {report['host']}: {report['error']}")
    return report


def before_workers(
    spec: FetchSpec,
    *,
    hosts: Sequence[str],
    job_id: str,
    timeout_s: float,
    record: Callable[[dict[str, Any]], None],
    say: Callable[[str], None],
    runner: CommandRunner,
) -> dict[str, Any]:
    """The driver's fetch: one step on node 0 (here without a job id), its progress in
    state.json's `fetch` entry (`record`) and driver.log (`say`)."""
    what = f"{spec.repo_id}@{spec.revision or 'main'}"
    entry: dict[str, Any] = {"repo": what, "host": hosts[0], "status": "running"}
    entry["started_at"] = time.time()
    record(entry)
    say(f"fetch: {what} into {spec.hf_home} on {hosts[0]}")
    srun = srun_prefix(job_id, hosts[:1], "fetch")
    try:
        report = run_step(runner, spec, python=sys.executable, timeout_s=timeout_s, srun=srun)
    except FetchFailed as exc:
        record({**entry, "status": "failed", "error": str(exc)})
        raise
    entry.update(status="done", fetched=report["fetched"], commit=report["commit"])
    entry.update(path=report["path"], seconds=report["seconds"], finished_at=time.time())
    record(entry)
    how = "downloaded" if report["fetched"] else "already complete in the cache"
    say(f"fetch: {what} {how} ({report['commit'][:12]}, {report['seconds']:.1f} s)")
    return entry


def main(argv: Sequence[str] | None = None) -> int:
    """Fetch on this node and print the report as one JSON line (exit 1 on failure)."""
    p = argparse.ArgumentParser()
    p.add_argument("--repo", required=True)
    p.add_argument("--revision", default="")
    p.add_argument("--hf-home", required=True)
    p.add_argument("--timeout-s", type=float, default=3600.0)
    args = p.parse_args(argv)
    spec = FetchSpec(repo_id=args.repo, revision=args.revision, hf_home=args.hf_home)

    def say(message: str) -> None:
        print(f"[fetch] {message}", file=sys.stderr, flush=True)

    return print_report(
        lambda: fetch(spec, os.environ, timeout_s=args.timeout_s, say=say), FetchFailed
    )


if __name__ == "__main__":
    sys.exit(main())
