"""Pure parsers over process logs: how far a process got on its way to ready, and which known
fatal markers a log contains (named in failure messages, `ctl watch` and `ctl report`).

The patterns are the lines the engines really print (fixtures in tests/fixtures/logs/):
SGLang's model runner (`Load weight begin`, the `Loading safetensors checkpoint shards: 45%
Completed | 9/20` tqdm bar, `KV Cache is allocated`, `Capture cuda graph begin`, the
`Capturing batches (...): 50%| 2/4` bar, `The server is fired up and ready to roll!`), Dynamo's
Rust runtime for its workers and the mocker (`System HTTP listener started`, `Registered
endpoint`) and its frontend (`Starting HTTP(S) service`, `Chat completions is ready`).
Logs carry ANSI colours (Dynamo's tracing) and tqdm's carriage returns; both are handled.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
TAIL_BYTES = 256 * 1024  # enough for a cold start's progress lines; logs can grow to GBs


@dataclass(frozen=True)
class Progress:
    """Where a process is on its way to ready: an ordered stage and, within it, a fraction."""

    stage: str  # e.g. "loading weights", "CUDA graph capture", "ready"
    rank: int  # order of the stage (higher = further)
    done: int = 0
    total: int = 0

    @property
    def percent(self) -> int | None:
        """Completed share of the stage (None when the stage has no counter)."""
        return int(100 * self.done / self.total) if self.total else None

    def text(self) -> str:
        """`loading weights 45% 9/20` or just the stage."""
        if self.total:
            return f"{self.stage} {self.percent}% {self.done}/{self.total}"
        return self.stage

    def coarse(self, step: int = 25) -> str:
        """The same, with the percentage rounded down to `step` (for line-per-change output)."""
        if not self.total:
            return self.stage
        return f"{self.stage} {(self.percent or 0) // step * step}%"


# (pattern, stage, rank); counters come from groups `done`/`total` when present.
STAGES: tuple[tuple[re.Pattern[str], str, int], ...] = (
    (re.compile(r"Init torch distributed begin"), "torch.distributed init", 10),
    (re.compile(r"Load weight begin"), "loading weights", 20),
    (
        re.compile(
            r"Loading \w+ checkpoint shards:\s+\d+% Completed \| (?P<done>\d+)/(?P<total>\d+)"
        ),
        "loading weights",
        21,
    ),
    (re.compile(r"Load weight end"), "weights loaded", 30),
    (re.compile(r"KV Cache is allocated"), "KV cache allocated", 40),
    (re.compile(r"Capture cuda graph begin"), "CUDA graph capture", 50),
    (
        re.compile(r"Capturing batches \([^)]*\):\s+\d+%\|[^|]*\| (?P<done>\d+)/(?P<total>\d+)"),
        "CUDA graph capture",
        51,
    ),
    (re.compile(r"Capture cuda graph end"), "CUDA graphs captured", 60),
    (re.compile(r"Uvicorn running on"), "warming up", 70),
    # Dynamo (Rust runtime): a worker's system port, then its endpoint served.
    (re.compile(r"System HTTP listener started"), "system port up", 65),
    (re.compile(r"Creating mocker engine"), "mocker engine created", 66),
    (re.compile(r"Registered endpoint '[^']*'"), "endpoint registered", 80),
    # Dynamo frontend.
    (re.compile(r"Starting HTTP\(S\) service"), "waiting for workers", 70),
    (re.compile(r"Adding worker set to model"), "workers discovered", 75),
    (re.compile(r"Chat completions is ready"), "ready (chat)", 90),
    # SGLang: the warm-up generation passed (launch_server's own "ready" line).
    (re.compile(r"The server is fired up and ready to roll"), "ready (fired up)", 90),
)


def read_tail(path: Path, nbytes: int = TAIL_BYTES) -> str:
    """The last `nbytes` of a log (the one function here that reads a file) ('' when it does not exist)."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - nbytes))
            return fh.read().decode(errors="replace")
    except OSError:
        return ""


def log_lines(text: str) -> list[str]:
    """Lines without ANSI colours; tqdm's carriage-return updates become lines of their own."""
    return [line for line in re.split(r"[\r\n]+", ANSI.sub("", text)) if line.strip()]


def progress(text: str) -> Progress | None:
    """The furthest readiness stage a log shows (the latest counter within it); None if none."""
    best: Progress | None = None
    for line in log_lines(text):
        for pattern, stage, rank in STAGES:
            match = pattern.search(line)
            if not match:
                continue
            groups = match.groupdict()
            found = Progress(
                stage, rank, int(groups.get("done") or 0), int(groups.get("total") or 0)
            )
            # The same stage later in the log (a newer tqdm update) replaces the earlier one.
            if best is None or found.rank >= best.rank:
                best = found
    return best


# Known fatal markers: (name, pattern). Named in failure messages with the line they match.
MARKERS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "CUDA out of memory",
        re.compile(r"CUDA out of memory|CUDA error: out of memory|OutOfMemoryError"),
    ),
    (
        "NCCL error",
        re.compile(
            r"NCCL error|ncclInternalError|ncclSystemError|ncclUnhandledCudaError|NCCL WARN .*(fail|error)",
            re.I,
        ),
    ),
    ("address already in use", re.compile(r"Address already in use|EADDRINUSE")),
    (
        "KV transfer failure",
        re.compile(r"KVTransferError|(Prefill|Decode) transfer failed|Failed to get kvcache"),
    ),
    ("page size mismatch", re.compile(r"page[ _]size mismatch", re.I)),
)


def hints(log_text: str, *, limit: int = 5) -> list[str]:
    """`CUDA out of memory: <the line>` for each known fatal marker in the log (first line that
    matches each marker, in the order they appear), at most `limit`."""
    found: dict[str, tuple[int, str]] = {}
    for number, line in enumerate(log_lines(log_text)):
        for name, pattern in MARKERS:
            if name not in found and pattern.search(line):
                found[name] = (number, line.strip()[:300])
    ordered = sorted(found.items(), key=lambda item: item[1][0])
    return [f"{name}: {line}" for name, (_, line) in ordered[:limit]]


def hint_text(process: str, log_text: str) -> str:
    """The hints of one process's log as a message suffix ('' without any)."""
    found = hints(log_text)
    if not found:
        return ""
    return "\nknown failure markers in " + process + ":\n" + "\n".join(f"  - {h}" for h in found)
