"""Real-engine deployments for the GPU tests: start the orchestrator's CLI with the local
launcher, wait for `ready`, send greedy requests, stop, read the GPU's memory.

Every wait polls a real condition with a deadline (tests/e2e.wait_for). The engine's wheels come
from `scripts/wheelhouse.py` (README: "Proven on a GPU"); the flags below are the ones that
wheelhouse implies (`server_flags` of its target file).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from tests import e2e

MODEL = "tiny"
# What the wheelhouse of scripts/wheelhouse/sglang-*.toml implies (FA3 and xgrammar not shipped),
# plus no CUDA graphs (start-up time) and no radix cache: a prompt sharing a cached prefix takes
# another kernel path, and bf16 near-ties then differ between deployments (gpu.md).
SGLANG_ARGS = (
    "+engine.args.attention-backend=triton",
    "+engine.args.sampling-backend=pytorch",
    "+engine.args.grammar-backend=none",
    "+engine.args.disable-cuda-graph=true",
    "+engine.args.disable-radix-cache=true",
)
PROMPTS = (
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time",
    "1, 2, 3, 4,",
    "Slurm schedules jobs on",
    "The quick brown fox",
)


def gpu_memory_used_mib() -> list[int]:
    """Memory in use on each GPU, from nvidia-smi."""
    out = subprocess.run(
        ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [int(v) for v in out.split()]


def gpu_count() -> int:
    """CUDA devices nvidia-smi lists (0 without a driver)."""
    if shutil.which("nvidia-smi") is None:
        return 0
    res = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False)
    return res.stdout.count("GPU ") if res.returncode == 0 else 0


@dataclass
class Deployment:
    """A running `python -m orchestrator` (local launcher) and its run directory."""

    name: str
    run_dir: Path
    proc: subprocess.Popen[str]
    port: int
    started: float = field(default_factory=time.time)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def state(self) -> dict[str, Any]:
        return e2e.state(self.run_dir)

    def wait_ready(self, timeout: float = 900) -> dict[str, Any]:
        """Wait for phase `ready`; fail with the CLI's stderr when it ended instead."""

        def ready() -> dict[str, Any] | None:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} ended: {self.proc.communicate()[1][-3000:]}")
            st = self.state()
            return st if st.get("phase") == "ready" else None

        return e2e.wait_for(ready, timeout=timeout, what=f"{self.name} ready", interval=0.1)

    def stop(self, timeout: float = 120) -> float:
        """SIGINT (Ctrl-C) and wait for the CLI to end; seconds it took."""
        t0 = time.time()
        self.proc.send_signal(signal.SIGINT)
        self.proc.communicate(timeout=timeout)
        return time.time() - t0

    def ctl_stop(self, timeout: float = 120) -> float:
        """`orchestrator-ctl stop RUN_DIR` (what a user types), then wait for the CLI to end;
        seconds it took."""
        t0 = time.time()
        res = e2e.ctl("stop", str(self.run_dir), timeout=timeout)
        assert res.returncode == 0, res.stdout + res.stderr
        self.proc.communicate(timeout=timeout)
        return time.time() - t0

    def leader_pid(self, process: str) -> int:
        """The engine process (not its children) the plan names `process` (e.g. decode-0)."""
        found = [
            p.pid
            for p in e2e.processes_mentioning(str(self.run_dir))
            if p.env.get("ORCHESTRATOR_PROCESS") == process
            and "-m" in p.argv
            and os.getppid() != p.pid
            and _is_leader(p.pid)
        ]
        assert len(found) == 1, f"{process}: {found}"
        return found[0]


def _is_leader(pid: int) -> bool:
    """The process group leader (the server the driver started, not SGLang's children)."""
    try:
        return os.getpgid(pid) == pid
    except ProcessLookupError:
        return False


def base_overrides(model_dir: Path) -> list[str]:
    """The orchestrator's command line for the tiny model on this machine's interpreter."""
    py = sys.executable
    return [
        "+model=llama_3_3_70b",
        f"model.path={model_dir}",
        f"model.served_name={MODEL}",
        "model.tp=1",
        "launcher=local",
        f"engine.python={py}",
        f"frontend.python={py}",
        "readiness.timeout_s=900",
        "readiness.interval_s=0.1",
    ]


@contextmanager
def deployment(name: str, overrides: Sequence[str], tmp: Path) -> Iterator[Deployment]:
    """Start a deployment; whatever happens, stop it and leave nothing behind."""
    run_dir = tmp / name
    port = e2e.free_port()
    port_base = 22000 + (port % 70) * 100
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    argv = [
        sys.executable,
        "-m",
        "orchestrator",
        *overrides,
        f"run_dir={run_dir}",
        f"frontend.http_port={port}",
        f"cluster.port_base={port_base}",
    ]
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=e2e.REPO, env=env
    )
    dep = Deployment(name, run_dir, proc, port)
    try:
        yield dep
    finally:
        if proc.poll() is None:
            dep.stop()
        e2e.kill_run(run_dir)


# Prefill and decode share GPU 0 (deployment.workers_per_gpu=2) with the memory the aggregated
# deployment, started first, leaves.
SHARED = (
    "cluster.gpus_per_node=1",
    "prefill.tp=1",
    "decode.tp=1",
    "deployment.workers_per_gpu=2",
    "deployment.shared_memory_fraction=0.6",
)
AGGREGATED = (
    "cluster.gpus_per_node=1",
    "deployment=aggregated",
    "aggregated.tp=1",
    "+engine.args.mem-fraction-static=0.25",
)


@contextmanager
def pd_and_aggregated(
    model_dir: Path, stack: Sequence[str], tmp: Path
) -> Iterator[tuple[Deployment, Deployment]]:
    """One aggregated worker, then 1P1D, of the same model and stack, all on GPU 0. One after
    the other: SGLang sizes its memory from what is free when it starts (plan/sharing.py)."""
    base = [*base_overrides(model_dir), *stack]
    with deployment("agg", [*base, *AGGREGATED], tmp) as agg:
        agg.wait_ready()
        with deployment("pd", [*base, *SHARED], tmp) as pd:
            pd.wait_ready()
            yield pd, agg


def assert_same_answers(pd: Deployment, agg: Deployment) -> None:
    """Greedy answers of the P/D deployment equal the aggregated one's, token for token."""
    got, want = answers(pd.url), answers(agg.url)
    assert got == want
    assert all(a["completion"]["tokens"] > 0 and a["chat"] for a in got.values())


def complete(url: str, prompt: str, max_tokens: int = 24) -> dict[str, Any]:
    """A greedy /v1/completions answer (text and token count)."""
    body = {"model": MODEL, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
    resp = requests.post(f"{url}/v1/completions", json=body, timeout=120)
    assert resp.status_code == 200, resp.text
    out = resp.json()
    return {"text": out["choices"][0]["text"], "tokens": out["usage"]["completion_tokens"]}


def chat(url: str, prompt: str, *, stream: bool, max_tokens: int = 24) -> str:
    """A greedy chat completion's text (deltas joined when streaming)."""
    return e2e.chat(
        url, MODEL, prompt=prompt, stream=stream, max_tokens=max_tokens, timeout=120, temperature=0
    )


def answers(url: str) -> dict[str, Any]:
    """Every answer of the fixed prompt set: completions, chats, streamed chats."""
    return {
        p: {
            "completion": complete(url, p),
            "chat": chat(url, p, stream=False),
            "chat_stream": chat(url, p, stream=True),
        }
        for p in PROMPTS
    }


@dataclass(frozen=True)
class Outcome:
    """One request of a load loop: when it was sent, how long it took, how it ended."""

    sent: float
    took: float
    status: str  # "ok", "HTTP 503", "timeout", ...


def _one_request(url: str, stream: bool, timeout: float) -> str:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Count to five"}],
        "max_tokens": 16,
        "temperature": 0,
        "stream": stream,
    }
    try:
        resp = requests.post(
            f"{url}/v1/chat/completions", json=body, timeout=timeout, stream=stream
        )
        text = resp.text  # a stream is read to its end
    except requests.Timeout:
        return "timeout"
    except requests.RequestException as exc:
        return f"error {type(exc).__name__}"
    if resp.status_code != 200:
        return f"HTTP {resp.status_code}"
    return "ok" if text.strip() and "error" not in text[-300:].lower() else "bad body"


@contextmanager
def load(url: str, clients: int = 4, timeout: float = 60) -> Iterator[list[Outcome]]:
    """`clients` threads (half streaming) sending chats back to back until the block ends; each
    request's send time, duration and outcome."""
    outcomes: list[Outcome] = []
    done = threading.Event()

    def loop(stream: bool) -> None:
        while not done.is_set():
            sent = time.time()
            status = _one_request(url, stream, timeout)
            outcomes.append(Outcome(sent, time.time() - sent, status))

    threads = [threading.Thread(target=loop, args=(i % 2 == 1,)) for i in range(clients)]
    for t in threads:
        t.start()
    try:
        yield outcomes
    finally:
        done.set()
        for t in threads:
            t.join()
