#!/usr/bin/env python3
"""TEST DOUBLE of an SGLang server (`python -m sglang.launch_server`): NOT SGLang, no model.

It stands in for the Python interpreter of an SGLang worker, so a test sets
`engine.python=<absolute path of this file>` and the orchestrator's generated command line
`<this file> -m sglang.launch_server --model-path ... --host H --port P ...` starts it. Standard
library only (ThreadingHTTPServer) so it is up in well under a second; unknown flags are ignored.

HTTP API on --host:--port, shaped like SGLang 0.5.21's (see engines.md §1.6):
  GET  /health, /health_generate   503 while "warming up" or draining after SIGTERM; then, as
                                   SGLang's handler, a "1-token generation" answered after 1 s
                                   (SGLANG_DOUBLE_HEALTH_GEN_S); /health answers at once when
                                   SGLANG_ENABLE_HEALTH_ENDPOINT_GENERATION=false
  GET  /server_info, /get_server_info, /model_info, /get_model_info, /v1/models
  POST /generate, /v1/completions, /v1/chat/completions   (`"stream": true` gives SSE)
Answers: "The service is up ..." (REPLY_WORDS), except to a prompt asking "What is A plus B?"
(the lm-eval fixture task tests/fixtures/lm_eval/): "The answer is S." for its last such
question, S = A + B without the hundreds digit -- a "model" that cannot carry into a third digit,
so an accuracy eval of it has a known score below 1.
No /get_load (SGLang 0.5.21 has none either). A prefill (`--disaggregation-mode prefill`)
also serves its bootstrap server on --host:--disaggregation-bootstrap-port (GET /health -> OK,
GET /route). A decode dials `bootstrap_host:bootstrap_port/health` of every request, as real
SGLang decode dials the prefill's bootstrap server, and fails the request (500) when that
server is unreachable; a null bootstrap_port falls back to its own bootstrap port like SGLang.
The decode dials `/route?bootstrap_room=R`; a prefill answers a request of room R only once a
decode dialed it (SGLang's prefill waits for the decode's KV indices), failing it after
SGLANG_DISAGGREGATION_BOOTSTRAP_TIMEOUT s (300 as in SGLang); SGLang's fake bootstrap host
(warmup, health checks) needs no decode. Process life (SIGTERM drain, a scheduler child whose
death crashes the server): double_lifecycle.py.

Environment:
  SGLANG_DOUBLE_RECORD     JSONL file: one line per generation request with the bootstrap
                           fields it carried and this server's name/mode/host/port.
  SGLANG_DOUBLE_LOAD_S     seconds before the port opens ("loading weights": refused).
  SGLANG_DOUBLE_WARMUP_S   seconds of 503 on /health after the port opened (default 0.2).
  SGLANG_DOUBLE_DIAL_S     seconds a decode waits before it dials the prefill's bootstrap
                           server (a slow KV transfer: requests stay in flight that long).
  SGLANG_DOUBLE_ONLY       comma-separated ORCHESTRATOR_PROCESS names the two delays apply to
                           (unset: every process that has them in its environment).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from double_lifecycle import Lifecycle

VERSION = "0.5.21-test-double"
FAKE_BOOTSTRAP_HOST = "2.2.2.2"  # sglang/srt/disaggregation/utils.py
REPLY_WORDS = (
    "The",
    " service",
    " is",
    " up",
    " and",
    " answering",
    " through",
    " the",
    " double",
    ".",
)


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The SGLang flags the double uses; everything else (and `-m MODULE`) is ignored."""
    p = argparse.ArgumentParser(prog="sglang_test_double", allow_abbrev=False, add_help=False)
    p.add_argument("-m", dest="module", default="sglang.launch_server")
    p.add_argument("--model-path", default="test-double-model")
    p.add_argument("--served-model-name", default="")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=30000)
    p.add_argument("--disaggregation-mode", default="null")
    p.add_argument("--disaggregation-bootstrap-port", type=int, default=None)
    p.add_argument("--tp-size", type=int, default=1)
    p.add_argument("--dp-size", type=int, default=1)
    p.add_argument("--node-rank", type=int, default=0)
    args, _unknown = p.parse_known_args(argv)
    args.served_model_name = args.served_model_name or args.model_path
    return args


def delays(env: dict[str, str]) -> tuple[float, float]:
    """(load seconds, warmup seconds) for this process, honouring SGLANG_DOUBLE_ONLY."""
    only = [n for n in env.get("SGLANG_DOUBLE_ONLY", "").split(",") if n]
    applies = not only or env.get("ORCHESTRATOR_PROCESS", "") in only
    load = float(env.get("SGLANG_DOUBLE_LOAD_S", "0")) if applies else 0.0
    warmup = float(env.get("SGLANG_DOUBLE_WARMUP_S", "0.2")) if applies else 0.2
    return load, warmup


class Double:
    """State shared by the request handlers of one double."""

    def __init__(self, args: argparse.Namespace, env: dict[str, str]) -> None:
        self.args = args
        self.name = env.get("ORCHESTRATOR_PROCESS", "")
        self.record_path = env.get("SGLANG_DOUBLE_RECORD", "")
        self.mode = args.disaggregation_mode
        self.ready_at = float("inf")
        self.lock = threading.Lock()
        self.life = Lifecycle(env, self.name or self.mode)
        self.health_gen_s = float(env.get("SGLANG_DOUBLE_HEALTH_GEN_S", "1"))
        self.cheap_health = env.get("SGLANG_ENABLE_HEALTH_ENDPOINT_GENERATION", "").lower() in (
            "false",
            "0",
            "no",
            "off",
        )
        self.rooms = threading.Condition()
        self.rooms_seen: set[int] = set()
        self.aborts = 0  # POST /abort_request {"abort_all": true} calls so far
        self.bootstrap_timeout_s = float(env.get("SGLANG_DISAGGREGATION_BOOTSTRAP_TIMEOUT", "300"))

    def healthy(self) -> bool:
        return time.monotonic() >= self.ready_at

    def health(self, path: str) -> int:
        """SGLang's health_generate: 503 while Starting or draining, 200 at once for a cheap
        /health, else after the 1-token generation and `await asyncio.sleep(1)`."""
        if self.life.exiting or not self.healthy():
            return 503
        if path == "/health" and self.cheap_health:
            return 200
        time.sleep(self.health_gen_s)
        return 200

    def room_dialed(self, room: int) -> None:
        with self.rooms:
            self.rooms_seen.add(room)
            self.rooms.notify_all()

    def wait_for_decode(self, body: dict[str, Any]) -> bool | None:
        """Prefill only: True once a decode dialed every room of the request (at once for the
        fake bootstrap host or a request without rooms), False after the bootstrap timeout, None
        when aborted meanwhile (POST /abort_request abort_all)."""
        room = body.get("bootstrap_room")
        if (
            self.mode != "prefill"
            or room is None
            or body.get("bootstrap_host") == FAKE_BOOTSTRAP_HOST
        ):
            return True
        rooms = {int(r) for r in (room if isinstance(room, list) else [room])}
        with self.rooms:
            aborts = self.aborts
            self.rooms.wait_for(
                lambda: rooms <= self.rooms_seen or self.aborts != aborts, self.bootstrap_timeout_s
            )
            if self.aborts != aborts and not rooms <= self.rooms_seen:
                return None
            return rooms <= self.rooms_seen

    def abort_all(self) -> None:
        """SGLang's abort_request(abort_all=True): every request still waiting ends now."""
        with self.rooms:
            self.aborts += 1
            self.rooms.notify_all()

    def server_info(self) -> dict[str, Any]:
        a = self.args
        return {
            "model_path": a.model_path,
            "served_model_name": a.served_model_name,
            "tp_size": a.tp_size,
            "dp_size": a.dp_size,
            "disaggregation_mode": self.mode,
            "host": a.host,
            "port": a.port,
            "disaggregation_bootstrap_port": a.disaggregation_bootstrap_port,
            "version": VERSION,
            "launch_command": " ".join(sys.argv),
            "test_double": True,
            "internal_states": [{}],
        }

    def model_info(self) -> dict[str, Any]:
        return {
            "model_path": self.args.model_path,
            "served_model_name": self.args.served_model_name,
            "tokenizer_path": self.args.model_path,
            "is_generation": True,
            "model_type": "test_double",
            "architectures": ["TestDoubleForCausalLM"],
            "disaggregation_mode": self.mode,
            "reasoning_parser": None,
            "tool_call_parser": None,
            "weight_version": "default",
        }

    def record(self, path: str, body: dict[str, Any], bootstrap_ok: bool | None) -> None:
        """Append one JSONL line (a single O_APPEND write, so concurrent doubles do not interleave)."""
        if not self.record_path:
            return
        line = {
            "t": time.time(),
            "name": self.name,
            "pid": os.getpid(),
            "mode": self.mode,
            "host": self.args.host,
            "port": self.args.port,
            "path": path,
            "own_bootstrap_port": self.args.disaggregation_bootstrap_port,
            "bootstrap_host": body.get("bootstrap_host"),
            "bootstrap_port": body.get("bootstrap_port"),
            "bootstrap_room": body.get("bootstrap_room"),
            "bootstrap_reachable": bootstrap_ok,
            "stream": bool(body.get("stream")),
            "prompt": prompt_text(body),
        }
        data = (json.dumps(line) + "\n").encode()
        fd = os.open(self.record_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)

    def dial_bootstrap(self, body: dict[str, Any]) -> bool | None:
        """Decode only: reach the prefill's bootstrap server like SGLang's decode does."""
        if self.mode != "decode":
            return None
        time.sleep(float(os.environ.get("SGLANG_DOUBLE_DIAL_S", "0")))
        host = body.get("bootstrap_host")
        port = body.get("bootstrap_port") or self.args.disaggregation_bootstrap_port
        if not host or not port:
            return False
        room = body.get("bootstrap_room")
        query = f"?bootstrap_room={room}" if isinstance(room, int) else ""
        try:
            with urllib.request.urlopen(f"http://{host}:{port}/route{query}", timeout=3) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False


QUESTION = re.compile(r"What is (\d+) plus (\d+)\?")


def prompt_text(body: dict[str, Any]) -> str:
    """The text of a request: its chat messages one per line, the completion prompt, or
    /generate's text."""
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    if messages:
        contents = [m.get("content") for m in messages]
        return "\n".join(c if isinstance(c, str) else json.dumps(c) for c in contents)
    prompt = body.get("prompt", body.get("text", ""))
    return prompt if isinstance(prompt, str) else json.dumps(prompt)


def reply_words(body: dict[str, Any]) -> tuple[str, ...]:
    """REPLY_WORDS, or the answer to the prompt's last arithmetic question (see the docstring)."""
    found = QUESTION.findall(prompt_text(body))
    if not found:
        return REPLY_WORDS
    a, b = found[-1]
    return ("The", " answer", " is", f" {(int(a) + int(b)) % 100}", ".")


def max_tokens(body: dict[str, Any], words: int) -> int:
    for key in ("max_completion_tokens", "max_tokens", "max_new_tokens"):
        if isinstance(body.get(key), int):
            return max(1, min(int(body[key]), words))
    params = body.get("sampling_params") or {}
    return max(1, min(int(params.get("max_new_tokens") or words), words))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "sglang-test-double"
    double: Double  # set on the subclass made in serve()

    def log_message(self, format: str, *args: Any) -> None:
        # `path` is unset when the request line itself was bad (the router's HTTP/2 probe).
        if not getattr(self, "path", "").startswith(("/health", "/get_load", "/metrics")):
            sys.stderr.write(f"[double {self.double.name or self.double.mode}] {format % args}\n")

    # --- helpers -------------------------------------------------------------------------
    def _send(self, status: int, body: Any = None, content_type: str = "application/json") -> None:
        data = (
            b""
            if body is None
            else (body if isinstance(body, bytes) else json.dumps(body).encode())
        )
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, events: list[dict[str, Any]]) -> None:
        """Server-sent events in chunked transfer encoding, ending with `data: [DONE]`."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for event in [*(f"data: {json.dumps(e)}\n\n" for e in events), "data: [DONE]\n\n"]:
            chunk = event.encode()
            self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            data = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    # --- routes --------------------------------------------------------------------------
    def do_GET(self) -> None:
        d = self.double
        path = self.path.split("?")[0]
        if path in ("/health", "/health_generate"):
            self._send(d.health(path))
        elif path in ("/server_info", "/get_server_info"):
            self._send(200, d.server_info())
        elif path in ("/model_info", "/get_model_info"):
            self._send(200, d.model_info())
        elif path == "/v1/models":
            name = d.args.served_model_name
            self._send(
                200,
                {
                    "object": "list",
                    "data": [
                        {
                            "id": name,
                            "object": "model",
                            "root": name,
                            "owned_by": "sglang",
                            "max_model_len": 4096,
                        }
                    ],
                },
            )
        else:
            self._send(404, {"detail": "Not Found"})

    def do_POST(self) -> None:
        path = self.path.split("?")[0]
        if path == "/abort_request":
            if self._body().get("abort_all"):
                self.double.abort_all()
            self._send(200, {})
            return
        if path not in ("/generate", "/v1/completions", "/v1/chat/completions"):
            self._send(404, {"detail": "Not Found"})
            return
        body = self._body()
        d = self.double
        d.life.request(+1)
        try:
            self._generation(path, body)
        finally:
            d.life.request(-1)

    def _generation(self, path: str, body: dict[str, Any]) -> None:
        d = self.double
        reachable = d.dial_bootstrap(body)
        d.record(path, body, reachable)
        if reachable is False:
            where = f"{body.get('bootstrap_host')}:{body.get('bootstrap_port')}"
            self._send(
                500,
                {
                    "error": {
                        "message": f"decode could not reach bootstrap server {where}",
                        "type": "InternalServerError",
                        "code": 500,
                    }
                },
            )
            return
        decoded = d.wait_for_decode(body)
        if decoded is None:  # aborted: SGLang ends it with finish_reason abort, HTTP 200
            self._send(
                200,
                {
                    "text": "",
                    "meta_info": {
                        "finish_reason": {"type": "abort", "message": "Abort in waiting queue"}
                    },
                },
            )
            return
        if not decoded:
            self._send(
                500,
                {
                    "error": {
                        "message": f"KVTransferError(bootstrap_room={body.get('bootstrap_room')}): "
                        "no decode within the bootstrap timeout",
                        "code": 500,
                    }
                },
            )
            return
        words = reply_words(body)
        n = max_tokens(body, len(words))
        if path == "/generate":
            self._generate(body, words[:n])
        else:
            self._openai(path, body, words[:n])

    def _generate(self, body: dict[str, Any], words: tuple[str, ...]) -> None:
        n = len(words)
        meta = {
            "id": "double",
            "finish_reason": {"type": "length", "length": n},
            "prompt_tokens": 4,
            "completion_tokens": n,
            "cached_tokens": 0,
        }
        text = "".join(words)
        if body.get("stream"):
            self._stream([{"text": "".join(words[: i + 1]), "meta_info": meta} for i in range(n)])
        else:
            self._send(200, {"text": text, "meta_info": meta})

    def _openai(self, path: str, body: dict[str, Any], words: tuple[str, ...]) -> None:
        n = len(words)
        chat = path.endswith("chat/completions")
        model = body.get("model") or self.double.args.served_model_name
        base = {"id": f"double-{time.monotonic_ns()}", "created": int(time.time()), "model": model}
        usage = {"prompt_tokens": 4, "completion_tokens": n, "total_tokens": 4 + n}
        if body.get("stream"):
            kind = "chat.completion.chunk" if chat else "text_completion"
            events = []
            for i, word in enumerate(words):
                last = i == n - 1
                choice: dict[str, Any] = {"index": 0, "finish_reason": "length" if last else None}
                choice.update(
                    {"delta": {"role": "assistant", "content": word}} if chat else {"text": word}
                )
                events.append({**base, "object": kind, "choices": [choice]})
            events.append({**base, "object": kind, "choices": [], "usage": usage})
            self._stream(events)
            return
        text = "".join(words)
        if chat:
            choice = {
                "index": 0,
                "finish_reason": "length",
                "message": {"role": "assistant", "content": text, "reasoning_content": None},
            }
        else:
            choice = {"index": 0, "finish_reason": "length", "text": text}
        obj = "chat.completion" if chat else "text_completion"
        self._send(200, {**base, "object": obj, "choices": [choice], "usage": usage})


class BootstrapHandler(BaseHTTPRequestHandler):
    """The prefill's bootstrap server (SGLang: aiohttp on --host:--disaggregation-bootstrap-port)."""

    protocol_version = "HTTP/1.1"
    double: Double  # set on the subclass made in serve()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        if path == "/route" and query.startswith("bootstrap_room="):
            self.double.room_dialed(int(query.split("=", 1)[1]))
        status, data = (
            (200, b"OK") if path == "/health" else (200, b"{}") if path == "/route" else (404, b"")
        )
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def serve(args: argparse.Namespace, env: dict[str, str]) -> None:
    """Open the ports (after the load delay), become healthy after warmup, serve until SIGTERM."""
    load_s, warmup_s = delays(env)
    double = Double(args, env)
    double.life.start()
    label = double.name or args.disaggregation_mode
    print(
        f"[double {label}] SGLang test double {VERSION}: {args.disaggregation_mode} on "
        f"{args.host}:{args.port}, loading for {load_s:g} s",
        flush=True,
    )
    time.sleep(load_s)  # the port stays closed, like SGLang while it loads weights
    if args.node_rank > 0:  # SGLang ranks >= 1 serve no HTTP; they block in the scheduler
        while True:
            signal.pause()
    handler = type("BoundHandler", (Handler,), {"double": double})
    httpd = ThreadingHTTPServer((args.host, args.port), handler)
    httpd.daemon_threads = True
    servers = [httpd]
    if args.disaggregation_mode == "prefill" and args.disaggregation_bootstrap_port:
        servers.append(
            ThreadingHTTPServer(
                (args.host, args.disaggregation_bootstrap_port),
                type("BoundBootstrap", (BootstrapHandler,), {"double": double}),
            )
        )
        servers[-1].daemon_threads = True
    for extra in servers[1:]:
        threading.Thread(target=extra.serve_forever, daemon=True).start()
    double.ready_at = time.monotonic() + warmup_s
    # The wall-clock time lets tests measure "worker ready -> orchestrator ready".
    timer = threading.Timer(
        warmup_s,
        lambda: print(
            f"[double {label}] The server is fired up and ready to roll! at {time.time():.3f}",
            flush=True,
        ),
    )
    timer.daemon = True
    timer.start()
    httpd.serve_forever()


def main(argv: list[str]) -> int:
    if argv[:2] != ["-m", "sglang.launch_server"]:
        sys.stderr.write(
            "usage: sglang_test_double.py -m sglang.launch_server --host H --port P ...\n"
        )
        return 2
    args = parse_args(argv)
    serve(args, dict(os.environ))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
