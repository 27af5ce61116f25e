"""frontend.request_plane_tls end to end on this machine (real Dynamo frontend + P/D mocker): the
run serves over mutual TLS on its TCP request plane, and a worker's request port refuses a
client without the run's certificate."""

from __future__ import annotations

import re
import signal
import socket
import ssl
import stat
import subprocess
from pathlib import Path

from orchestrator.rundir.secrets import TLS_FILES, TLS_SERVER_NAME
from tests import e2e
from tests.test_local_e2e import MODEL, pytestmark, run_dir, start, wait_ready

__all__ = ["pytestmark", "run_dir"]  # the module's marks and fixture, from test_local_e2e


def listening_ports(pid: int) -> list[int]:
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
    return [
        int(line.split()[3].rsplit(":", 1)[1])
        for line in out.splitlines()
        if re.search(rf"pid={pid},", line)
    ]


def answer(port: int, tls: Path, *, with_cert: bool) -> str:
    """'open' when a TLS connection to the port stays up, 'refused' when the server ends it
    after the handshake (TLS 1.3 sends "certificate required" then), 'no tls' otherwise."""
    ctx = ssl.create_default_context(cafile=str(tls / "ca.crt"))
    if with_cert:
        ctx.load_cert_chain(str(tls / "node.crt"), str(tls / "node.key"))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as raw:
            with ctx.wrap_socket(raw, server_hostname=TLS_SERVER_NAME) as conn:
                conn.settimeout(1.0)
                return "refused" if conn.recv(1) == b"" else "open"
    except TimeoutError:
        return "open"
    except ssl.SSLError as exc:
        return "refused" if "CERTIFICATE_REQUIRED" in str(exc).upper() else "no tls"
    except OSError:
        return "no tls"


def test_request_plane_mutual_tls_serves_and_refuses_strangers(run_dir: Path) -> None:
    proc, _ = start(run_dir, "frontend.request_plane_tls=true")
    st = wait_ready(proc, run_dir)  # the canary went through prefill and decode over mTLS
    assert e2e.chat(st["frontend_url"], MODEL).strip()
    tls = run_dir / "secrets" / "tls"
    assert sorted(p.name for p in tls.iterdir()) == sorted(TLS_FILES)  # the CA's key is gone
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in tls.iterdir())
    for name in ("decode-0", "prefill-0", "frontend"):
        assert (
            "TLS enabled with mutual authentication"
            in (run_dir / "logs" / f"{name}.log").read_text()
        )
    decode = next(
        p
        for p in e2e.engine_processes(run_dir, "dynamo.mocker")
        if p.env["ORCHESTRATOR_PROCESS"] == "decode-0"
    )
    found = {port: answer(port, tls, with_cert=True) for port in listening_ports(decode.pid)}
    print(f"decode-0 listening ports: {found}")
    request_ports = [port for port, how in found.items() if how == "open"]
    assert request_ports, found
    for port in request_ports:
        assert answer(port, tls, with_cert=False) == "refused", port
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 0 and e2e.state(run_dir)["phase"] == "done"
