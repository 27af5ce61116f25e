#!/usr/bin/env python3
"""TEST DOUBLE of the Hugging Face Hub's HTTP API: NOT the Hub. It serves one directory as the
model repository ORG/NAME at one commit, enough for huggingface_hub 2.4's snapshot_download
(set HF_ENDPOINT=http://HOST:PORT):

  GET  /api/models/ORG/NAME/revision/REV       repo_info: {"id", "sha": COMMIT, "siblings"}
  GET  /api/models/ORG/NAME/tree/REV?...       list_repo_tree: every file {"type", "path",
                                               "size", "oid"} (one page, no Link header)
  HEAD /ORG/NAME/resolve/REV/FILE              X-Repo-Commit, ETag (the blob id), Content-Length
  GET  /ORG/NAME/resolve/REV/FILE              the bytes (Range requests honoured)
REV is "main", a tag given with --tag, or the commit. Anything else: 404 with X-Error-Code
RepoNotFound / RevisionNotFound / EntryNotFound, as the Hub answers. Standard library only.

--record FILE appends one JSON line per request (method, path), so tests count what reached
"the Hub"; --delay-s slows every file GET (a fetch in progress, to be killed or waited on).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit


def blob_id(path: Path) -> str:
    """git's blob id of the file (what the Hub reports as `oid` for non-LFS files)."""
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class Repo:
    def __init__(self, args: argparse.Namespace) -> None:
        self.repo_id, self.root, self.commit = args.repo, Path(args.dir), args.commit
        self.revisions = {"main", self.commit, *args.tag}
        self.record_path, self.delay_s = args.record, args.delay_s

    def files(self) -> list[Path]:
        return sorted(p for p in self.root.rglob("*") if p.is_file())

    def record(self, method: str, path: str) -> None:
        if self.record_path:
            with open(self.record_path, "a") as fh:
                fh.write(json.dumps({"t": time.time(), "method": method, "path": path}) + "\n")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    repo: Repo  # set on the subclass made in main()

    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write(f"[hub double] {format % args}\n")

    def _send(
        self,
        status: int,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        *,
        head: bool = False,
    ) -> None:
        self.send_response(status)
        for key, value in {"Content-Length": str(len(body)), **(headers or {})}.items():
            self.send_header(key, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _json(self, data: Any) -> None:
        self._send(200, json.dumps(data).encode(), {"Content-Type": "application/json"})

    def _missing(self, code: str, *, head: bool = False) -> None:
        self._send(404, json.dumps({"error": code}).encode(), {"X-Error-Code": code}, head=head)

    def do_HEAD(self) -> None:
        self._route(head=True)

    def do_GET(self) -> None:
        self._route(head=False)

    def _route(self, *, head: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        self.repo.record(self.command, path)
        api = f"/api/models/{self.repo.repo_id}/"
        if path.startswith(api):
            kind, _, rest = path[len(api) :].partition("/")
            rev = rest.split("/")[0]
            if rev not in self.repo.revisions:
                return self._missing("RevisionNotFound")
            return self._repo_info() if kind == "revision" else self._tree()
        resolve = f"/{self.repo.repo_id}/resolve/"
        if not path.startswith(resolve):
            return self._missing("RepoNotFound", head=head)
        rev, _, name = path[len(resolve) :].partition("/")
        if rev not in self.repo.revisions:
            return self._missing("RevisionNotFound", head=head)
        self._file(name, head=head)

    def _repo_info(self) -> None:
        siblings = [{"rfilename": str(p.relative_to(self.repo.root))} for p in self.repo.files()]
        self._json(
            {
                "id": self.repo.repo_id,
                "modelId": self.repo.repo_id,
                "sha": self.repo.commit,
                "private": False,
                "disabled": False,
                "gated": False,
                "siblings": siblings,
            }
        )

    def _tree(self) -> None:
        self._json(
            [
                {
                    "type": "file",
                    "path": str(p.relative_to(self.repo.root)),
                    "size": p.stat().st_size,
                    "oid": blob_id(p),
                }
                for p in self.repo.files()
            ]
        )

    def _file(self, name: str, *, head: bool) -> None:
        path = self.repo.root / name
        if not path.is_file() or self.repo.root.resolve() not in path.resolve().parents:
            return self._missing("EntryNotFound", head=head)
        data = path.read_bytes()
        headers = {
            "X-Repo-Commit": self.repo.commit,
            "ETag": f'"{blob_id(path)}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        if head:
            return self._send(200, data, headers, head=True)
        time.sleep(self.repo.delay_s)
        start = _range_start(self.headers.get("Range"))
        if start:
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            return self._send(206, data[start:], headers)
        self._send(200, data, headers)


def _range_start(header: str | None) -> int:
    """The first byte of a `Range: bytes=N-` request (0 without one)."""
    if not header or not header.startswith("bytes="):
        return 0
    return int(header[len("bytes=") :].split("-")[0] or 0)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="hub_test_double")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--repo", required=True, help="ORG/NAME")
    p.add_argument("--dir", required=True, help="the repository's files")
    p.add_argument("--commit", default="0123456789abcdef0123456789abcdef01234567")
    p.add_argument("--tag", action="append", default=[])
    p.add_argument("--record", default="")
    p.add_argument("--delay-s", type=float, default=0.0)
    args = p.parse_args(argv)
    handler = type("BoundHandler", (Handler,), {"repo": Repo(args)})
    server = ThreadingHTTPServer((args.host, args.port), handler)
    # The port on stdout, so a test that asked for port 0 learns it.
    print(json.dumps({"port": server.server_address[1], "pid": os.getpid()}), flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
