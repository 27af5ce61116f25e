"""A dead Dynamo worker leaves discovery the moment the driver sees its exit, before its restart.

Without this, a SIGKILLed worker stays registered until its etcd lease expires (ETCD_LEASE_TTL,
10 s) or its discovery files go stale (file backend, 10 s mtime TTL), and Dynamo 1.6.1's frontend
keeps routing to it: measured on the testbed (2P2D, 8 requests/s) one request failed about every
5 s for 22 s after a kill -9 of decode-0 ("TCP connection ... failed", then 503 "no backend worker
available"); with --migration-limit 3 it also made the prefill router answer "No workers
available for endpoint dynamo/prefill/generate" to every request for up to 10 s although the
other prefill was up.

How a worker is registered (read from etcd and DYN_FILE_KV with Dynamo 1.6.1): every key of one
worker process lives under one etcd lease, its primary lease, whose id is also its instance id
(`v1/instances/<ns>/<component>/<endpoint>/<id:x>`, `v1/mdc/...` model cards, event channels).
The worker's system port labels its own metrics with that id (`worker_id="<id:x>"`). So:

- once a worker is healthy, its id is read from its /metrics and kept (state.json:
  `discovery_ids`);
- when it exits, its lease is revoked (etcd's JSON gateway, `POST /v3/lease/revoke`: every key of
  the process goes at once and the frontend's watch sees the deletes), or with the file backend
  its instance and model-card files are deleted (the frontend's inotify watch sees that).

Requests in flight on the dead worker fail (or are migrated with frontend.migration_limit > 0;
see frontends/dynamo.py for why it is 0 by default). A purge that fails is said in driver.log;
the lease then expires as before.

etcd credentials: the HTTP client used for etcd comes from `etcd_http(driver)`: the run's locked
etcd's authenticated client (frontends/etcd_lock.py `etcd_client`), else the driver's own.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote

from orchestrator.core.effects import HttpClient, HttpError
from orchestrator.plan.model import TIER_WORKER, Process
from orchestrator.runtime.restarts import unit_key, unit_members

if TYPE_CHECKING:
    from orchestrator.runtime.hooks import DriverView
    from orchestrator.runtime.processes import Running

WORKER_ID = re.compile(r'worker_id="([0-9a-f]+)"')
ETCD_TIMEOUT_S = 2.0  # the driver's supervision waits on this: a stuck etcd must not hold it
FILE_BUCKETS = ("instances", "mdc")  # what the frontend routes by; event channels just expire


def registers(proc: Process) -> bool:
    """A worker that registers itself in Dynamo's discovery (etcd or files), probed on its
    system port."""
    backend = proc.env.get("DYN_DISCOVERY_BACKEND")
    return proc.tier == TIER_WORKER and proc.health is not None and backend in ("etcd", "file")


def instance_ids(metrics: str) -> list[str]:
    """The instance ids (hex, as Dynamo writes them in keys) a worker's /metrics is labelled with."""
    return sorted(set(WORKER_ID.findall(metrics)))


def read_ids(http: HttpClient, proc: Process) -> list[str]:
    """The instance ids of a running worker, from its system port ([] when it does not answer)."""
    assert proc.health is not None
    try:
        resp = http.get(proc.health.url.replace("/health", "/metrics"), timeout=ETCD_TIMEOUT_S)
    except HttpError:
        return []
    return instance_ids(resp.body) if resp.status == 200 else []


def revoke(http: HttpClient, endpoints: str, instance: str) -> str:
    """Revoke the etcd lease `instance` (hex): every key of that process goes. Returns what
    happened; raises HttpError when etcd refused."""
    url = endpoints.split(",")[0].rstrip("/")
    resp = http.post(
        f"{url}/v3/lease/revoke", {"ID": str(int(instance, 16))}, timeout=ETCD_TIMEOUT_S
    )
    if resp.status == 200:
        return f"etcd lease {instance} revoked"
    if "lease not found" in resp.body:  # expired meanwhile (etcd: 404, code 5)
        return f"etcd lease {instance} already gone"
    raise HttpError(f"etcd {url} answered {resp.status} to revoking {instance}: {resp.body[:200]}")


def delete_files(root: Path, instance: str) -> str:
    """Delete the file backend's instance and model-card keys of `instance`. A key is a file
    named by the percent-encoded key, `<ns>/<component>/<endpoint>/<id:x>[/<suffix>]`."""
    removed = 0
    for bucket in FILE_BUCKETS:
        for path in (root / "v1" / bucket).glob("*"):
            segments = unquote(path.name).split("/")
            if len(segments) > 3 and segments[3] == instance:
                path.unlink(missing_ok=True)
                removed += 1
    return f"{removed} discovery file(s) of {instance} deleted"


class Purge:
    """The driver hooks: record ids once healthy, purge them on a loss."""

    def __init__(self, etcd_http: Callable[[DriverView], HttpClient] | None = None) -> None:
        self.ids: dict[str, list[str]] = {}  # process name -> its instance ids
        self.etcd_http = etcd_http or (lambda d: d.http)

    def record(self, d: DriverView, running: Running) -> None:
        """on_process_healthy: keep the worker's instance ids (a restarted worker has new ones)."""
        proc = running.proc
        if not registers(proc):
            return
        ids = read_ids(d.http, proc)
        if not ids:
            d.say(
                f"warning: {proc.name}: no worker_id in its /metrics; if it dies, it stays "
                "in Dynamo's discovery until its lease expires"
            )
        self.ids[proc.name] = ids
        d.state.process(proc.name, discovery_ids=ids)

    def purge(self, d: DriverView, running: Running) -> None:
        """on_process_lost: remove the registrations of every process of the dead unit."""
        for proc in unit_members(d.plan.processes, unit_key(running.proc)):
            for instance in self.ids.pop(proc.name, []):
                started = time.monotonic()
                try:
                    done = self._remove(d, proc, instance)
                except (HttpError, OSError, ValueError) as exc:
                    d.say(
                        f"warning: {proc.name}: could not remove it from discovery ({exc}); "
                        "it stays there until its lease expires"
                    )
                    continue
                d.say(
                    f"{proc.name} removed from Dynamo's discovery: {done} in "
                    f"{time.monotonic() - started:.3f} s"
                )

    def _remove(self, d: DriverView, proc: Process, instance: str) -> str:
        if proc.env["DYN_DISCOVERY_BACKEND"] == "etcd":
            return revoke(self.etcd_http(d), proc.env["ETCD_ENDPOINTS"], instance)
        return delete_files(Path(proc.env["DYN_FILE_KV"]), instance)


def attach_purge(
    driver: DriverView, etcd_http: Callable[[DriverView], HttpClient] | None = None
) -> Purge:
    """Every driver of a Dynamo deployment (the run's own, an attached job's) purges its dead
    workers from the discovery they registered in (their own environment names it)."""
    purge = Purge(etcd_http)
    driver.on_process_healthy.append(purge.record)
    driver.on_process_lost.append(purge.purge)
    return purge
