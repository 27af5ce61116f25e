"""Register SGLang workers with sglang-router over its worker API (0.3.2), and remove them on stop.

The router starts with no workers; the driver registers each worker the moment its own
`/health` answers 200 (static `--prefill/--decode` lists lose late or restarted workers, and
0.2.x drops a CLI worker for good once its startup timeout passes; engines.md §2.6).

sglang-router 0.3.2 worker API (engines.md §2.4; JSON captured in tests/test_router.py):
- `POST /workers {"url", "worker_type", "bootstrap_port"}` -> 202 `{"worker_id": "<uuid>", ...}`.
  Registration is asynchronous: the worker shows up in `GET /workers` only after the router's
  own `/health` call answered. Without `worker_type` a worker is `regular`, even in PD mode.
- `GET /workers` -> `{"workers": [{"id", "url", "worker_type", "is_healthy", ...}], ...}`.
- `DELETE /workers/{uuid}` -> 202; a URL as id -> 400 (0.2.x used URLs), unknown id -> 404.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from orchestrator.core.effects import Clock, HttpClient, HttpError, HttpResponse
from orchestrator.core.errors import OrchestratorError
from orchestrator.plan.model import Plan, Process

if TYPE_CHECKING:
    from orchestrator.runtime.hooks import DriverView
    from orchestrator.runtime.processes import Running

# Plan role -> the router's worker_type.
WORKER_TYPES: Mapping[str, str] = {"prefill": "prefill", "decode": "decode", "worker": "regular"}
RETRY_BUDGET_S = 30.0  # connection errors only; the router normally answers within a second
REQUEST_TIMEOUT_S = 5.0
DEREGISTER_WAIT_S = 10.0  # the router drops a deleted worker within a second on the testbed


@dataclass(frozen=True, slots=True)
class RouterWorker:
    """One entry of the router's `GET /workers`."""

    id: str
    url: str
    worker_type: str
    healthy: bool
    bootstrap_port: int | None = None


@dataclass(frozen=True, slots=True)
class WorkerCounts:
    """Workers the router lists, per worker_type: how many in total and how many are healthy."""

    listed: Mapping[str, int]
    healthy: Mapping[str, int]


class RouterError(OrchestratorError):
    """The router refused or could not be reached for a registration call."""


def parse_worker_list(body: Any) -> list[RouterWorker]:
    """`GET /workers` JSON -> workers; ValueError when the shape is not the 0.2/0.3 one."""
    if not isinstance(body, dict) or not isinstance(body.get("workers"), list):
        raise ValueError(f"expected {{'workers': [...]}}, got {str(body)[:200]}")
    out = []
    for w in body["workers"]:
        if not isinstance(w, dict) or "url" not in w:
            raise ValueError(f"worker entry without url: {str(w)[:200]}")
        out.append(
            RouterWorker(
                id=str(w.get("id") or w["url"]),
                url=str(w["url"]),
                worker_type=str(w.get("worker_type") or "regular"),
                healthy=w.get("is_healthy") is True,
                bootstrap_port=w.get("bootstrap_port"),
            )
        )
    return out


def parse_router_workers(body: Any) -> WorkerCounts:
    """`GET /workers` JSON -> listed and healthy counts per worker_type."""
    listed: dict[str, int] = {}
    healthy: dict[str, int] = {}
    for w in parse_worker_list(body):
        listed[w.worker_type] = listed.get(w.worker_type, 0) + 1
        healthy[w.worker_type] = healthy.get(w.worker_type, 0) + w.healthy
    return WorkerCounts(listed=listed, healthy=healthy)


def missing_workers(counts: WorkerCounts, expected: Mapping[str, int]) -> str:
    """'' when every expected worker (by plan role) is healthy in the router, else what is missing,
    e.g. 'router has 1/2 healthy prefill (2 listed), 2/2 healthy decode'."""
    parts, short = [], False
    for role, want in expected.items():
        kind = WORKER_TYPES.get(role, role)
        have = counts.healthy.get(kind, 0)
        short = short or have < want
        listed = counts.listed.get(kind, 0)
        parts.append(
            f"{have}/{want} healthy {kind}" + (f" ({listed} listed)" if listed != have else "")
        )
    return f"router has {', '.join(parts)}" if short else ""


def registration_payload(proc: Process) -> dict[str, Any]:
    """The `POST /workers` body of a worker: its URL (an address the decode nodes can reach,
    since a decode dials the host of the prefill's URL), its type and, for a prefill, the real
    bootstrap port (with null the decode would use its own --disaggregation-bootstrap-port)."""
    payload: dict[str, Any] = {"url": proc.url, "worker_type": WORKER_TYPES[proc.role]}
    if proc.role == "prefill":
        payload["bootstrap_port"] = proc.bootstrap_port
    return payload


def parse_accepted(resp: HttpResponse) -> str:
    """The worker id from a `POST /workers` answer (202 or 200/201); RouterError otherwise."""
    body = resp.json()
    if resp.status in (200, 201, 202) and isinstance(body, dict) and body.get("worker_id"):
        return str(body["worker_id"])
    raise RouterError(f"router refused the registration (HTTP {resp.status}): {resp.body[:300]}")


class RouterClient:
    """The router's worker API; connection errors are retried until `budget_s` is spent (HTTP
    errors are answers and are not retried)."""

    def __init__(
        self, http: HttpClient, clock: Clock, base_url: str, *, budget_s: float = RETRY_BUDGET_S
    ) -> None:
        self.http, self.clock, self.budget_s = http, clock, budget_s
        self.base_url = base_url.rstrip("/")

    def _retrying(self, what: str, call: Callable[[], HttpResponse]) -> HttpResponse:
        deadline = self.clock.now() + self.budget_s
        delay = 0.2
        while True:
            try:
                return call()
            except HttpError as exc:
                if self.clock.now() + delay > deadline:
                    raise RouterError(
                        f"{what}: router at {self.base_url} unreachable for "
                        f"{self.budget_s:g} s: {exc}"
                    ) from exc
            self.clock.sleep(delay)
            delay = min(delay * 2, 2.0)

    def list_workers(self) -> list[RouterWorker]:
        url = f"{self.base_url}/workers"
        resp = self._retrying("GET /workers", lambda: self.http.get(url, timeout=REQUEST_TIMEOUT_S))
        try:
            return parse_worker_list(resp.json() if resp.status == 200 else None)
        except ValueError as exc:
            raise RouterError(
                f"unexpected answer to GET {url} (HTTP {resp.status}): {resp.body[:300]}"
            ) from exc

    def add_worker(self, payload: Mapping[str, Any]) -> str:
        url = f"{self.base_url}/workers"
        resp = self._retrying(
            "POST /workers", lambda: self.http.post(url, dict(payload), timeout=REQUEST_TIMEOUT_S)
        )
        return parse_accepted(resp)

    def remove_worker(self, worker_id: str) -> bool:
        """DELETE one worker: True when removed, False when the router does not know it."""
        url = f"{self.base_url}/workers/{worker_id}"
        resp = self.http.delete(url, timeout=REQUEST_TIMEOUT_S)  # at stop: no retries
        if resp.status in (200, 202, 204):
            return True
        if resp.status == 404:
            return False
        raise RouterError(f"DELETE {url} failed (HTTP {resp.status}): {resp.body[:300]}")


class Registrar:
    """Registers each healthy worker once and remembers the router's id for deregistration."""

    def __init__(self, client: RouterClient) -> None:
        self.client = client
        self.ids: dict[str, str] = {}  # process name -> router worker id
        self.removed: set[str] = set()  # ids we deleted (stale entries of restarted workers)
        # The router's list, fetched once per batch of registrations (`new_batch`): fetched per
        # registration, 768 workers turning healthy cost 768 GETs of a list growing to 768
        # entries, most of the 30 s it took to register them on the testbed (issue 22).
        self.listed: dict[str, RouterWorker] | None = None

    def new_batch(self) -> None:
        """The next registration lists the router's workers anew (called once per tick)."""
        self.listed = None

    def forget(self, name: str) -> str:
        """DELETE the router entry of a worker that died (its restart registers anew); returns
        a problem line, '' when removed or unknown. The router would drop it from routing after
        its own failed health checks, but only after those (3 x 60 s by default)."""
        worker_id = self.ids.pop(name, None)
        if worker_id is None:
            return ""
        self.removed.add(worker_id)
        try:
            self.client.remove_worker(worker_id)
        except (HttpError, RouterError) as exc:
            return f"{name}: {exc}"
        return ""

    def register(self, proc: Process) -> tuple[str, bool]:
        """Register `proc` unless it is already registered or listed; returns (id, newly added).
        An entry we removed ourselves (`forget`) is never taken for the new process: the router
        removes workers asynchronously (DELETE answers 202), so it may still be listed."""
        if proc.name in self.ids:
            return self.ids[proc.name], False
        if self.listed is None:
            self.listed = {w.url.rstrip("/"): w for w in self.client.list_workers()}
        known = self.listed.get(proc.url.rstrip("/"))
        if known is not None and known.id not in self.removed:
            self.ids[proc.name] = known.id
            return known.id, False
        if known is not None:
            self._wait_removed(known.id)
        worker_id = self.client.add_worker(registration_payload(proc))
        self.ids[proc.name] = worker_id
        return worker_id, True

    def _wait_removed(self, stale: str) -> None:
        """Wait (up to DEREGISTER_WAIT_S) until the router no longer lists the entry we deleted:
        SMG 1.13 removes it in the background after answering 202, and until then refuses the
        restarted worker's URL with 409 WORKER_ALREADY_EXISTS (seen on the testbed 2 s after
        the DELETE); sglang-router 0.3.2 drops it within a second."""
        clock = self.client.clock
        deadline = clock.now() + DEREGISTER_WAIT_S
        while clock.now() < deadline:
            clock.sleep(0.2)
            if all(w.id != stale for w in self.client.list_workers()):
                return

    def deregister_all(self) -> list[str]:
        """DELETE every worker we registered; returns one problem line per failure."""
        problems = []
        for name, worker_id in list(self.ids.items()):
            try:
                self.client.remove_worker(worker_id)
                del self.ids[name]
            except (HttpError, RouterError) as exc:
                problems.append(f"{name}: {exc}")
        return problems


def workers_verdict(
    http: HttpClient, base_url: str, expected: Mapping[str, int]
) -> tuple[bool, str]:
    """(ok, detail): are all expected workers listed healthy by the router's `GET /workers`?"""
    url = f"{base_url.rstrip('/')}/workers"
    try:
        resp = http.get(url, timeout=REQUEST_TIMEOUT_S)
    except HttpError as exc:
        return False, str(exc)
    try:
        counts = parse_router_workers(resp.json() if resp.status == 200 else None)
    except ValueError:
        return False, f"unexpected answer to GET {url} (HTTP {resp.status}): {resp.body[:200]}"
    missing = missing_workers(counts, expected)
    return not missing, missing


class RouterHooks:
    """The driver hooks of router registration: register each worker when healthy (after the
    router's own /health passed: no blocking retries at start-up, and a router that dies is
    reported with its log by the driver), forget it when it is lost, deregister all at stop."""

    def __init__(self, driver: DriverView) -> None:
        client = RouterClient(driver.http, driver.clock, driver.plan.readiness.frontend_url)
        self.registrar = Registrar(client)
        self.pending: dict[str, Process] = {}
        # An attached plan (ctl scale) joins a router that already serves: no frontend process
        # of its own will pass a health check first.
        self.router_up = driver.plan.job is not None

    def _register_pending(self, d: DriverView) -> None:
        for name, proc in list(self.pending.items()):
            worker_id, added = self.registrar.register(proc)
            del self.pending[name]
            d.state.process(name, registered=True, router_id=worker_id, registered_at=time.time())
            d.say(
                f"registered {name} ({WORKER_TYPES[proc.role]}) {proc.url} with the router"
                + ("" if added else " (already listed)")
            )

    def on_healthy(self, d: DriverView, running: Running) -> None:
        """A process passed its health check: the router, or a worker to register."""
        proc = running.proc
        if proc.role == "frontend":
            self.router_up = True
        elif proc.role in WORKER_TYPES and proc.url:  # ranks >= 1 serve no HTTP: no url
            self.pending[proc.name] = proc
        if self.router_up:
            self._register_pending(d)

    def on_tick(self, _d: DriverView) -> None:
        """Registrations of the next tick see the router's list as it is then."""
        self.registrar.new_batch()

    def on_lost(self, d: DriverView, running: Running) -> None:
        """A process died (it will be restarted): drop its router entry."""
        proc = running.proc
        if proc.role == "frontend":
            # A restarted router starts with no workers: every registered worker registers
            # again once the new router's /health passes.
            self.router_up = False
            for name, worker_id in list(self.registrar.ids.items()):
                self.pending[name] = d.plan.process(name)
                self.registrar.removed.add(worker_id)
            self.registrar.ids.clear()
            self.registrar.new_batch()
            return
        self.pending.pop(proc.name, None)
        problem = self.registrar.forget(proc.name)
        d.state.process(proc.name, registered=False)
        if problem:
            d.say(f"warning: could not remove the router entry of {problem}")
        if proc.role == "decode" and not self._decodes_left():
            self._abort_prefills(d)

    def _registered(self, role: str, d: DriverView) -> list[str]:
        return [n for n in self.registrar.ids if d.plan.process(n).role == role]

    def _decodes_left(self) -> bool:
        """Whether the router lists a decode worker other than those we just removed: the
        router's view, not this driver's, as worker jobs and attached jobs register their decodes
        with the same router (a prefill may be paired with any of them). On doubt, True."""
        try:
            listed = self.registrar.client.list_workers()
        except (HttpError, RouterError):
            return True
        removed = self.registrar.removed
        return any(w.worker_type == "decode" and w.id not in removed for w in listed)

    def _abort_prefills(self, d: DriverView) -> None:
        """The last decode worker died: end the requests the prefill workers still hold. Each
        waits for its decode's KV-transfer handshake until SGLANG_DISAGGREGATION_BOOTSTRAP_TIMEOUT
        (300 s) and sglang-router waits for the prefill's answer, so the clients of requests in
        flight at the death hung (seen on an H100: every client stuck until its own timeout).
        SGLang's POST /abort_request {"abort_all": true} ends them at once. Not with a decode
        left anywhere in the router: abort_all would also end the requests bound for them."""
        for name in self._registered("prefill", d):
            url = d.plan.process(name).url.rstrip("/") + "/abort_request"
            try:
                resp = d.http.post(url, {"abort_all": True}, timeout=REQUEST_TIMEOUT_S)
            except HttpError as exc:
                d.say(f"warning: could not abort the requests held by {name}: {exc}")
                continue
            if resp.status == 200:
                d.say(f"no decode worker left: aborted the requests {name} held")

    def on_retired(self, d: DriverView, running: Running) -> None:
        """Scale-down: DELETE the worker, then wait until the router no longer lists it (DELETE
        answers 202 and removes it asynchronously); only then is the worker stopped."""
        proc = running.proc
        self.pending.pop(proc.name, None)
        worker_id = self.registrar.ids.get(proc.name)
        problem = self.registrar.forget(proc.name)
        d.state.process(proc.name, registered=False)
        if problem:
            raise RouterError(f"deregistration failed: {problem}")
        deadline = d.clock.now() + DEREGISTER_WAIT_S
        while worker_id and any(w.id == worker_id for w in self.registrar.client.list_workers()):
            if d.clock.now() >= deadline:
                raise RouterError(
                    f"the router still lists {proc.url} {DEREGISTER_WAIT_S:g} s "
                    f"after DELETE /workers/{worker_id}"
                )
            d.clock.sleep(0.1)

    def before_stop(self, d: DriverView) -> None:
        """Deregister every worker we registered, unless the router goes too: the run's own
        router stops in the same tier as its workers (768 DELETEs, each queued as a removal
        job by the router, took 17 s of a 45-s stop on the testbed, issue 22), and a run's
        router that is gone (runtime/heartbeat.py) would make each call retry RETRY_BUDGET_S."""
        if d.run_gone:
            return
        names = list(self.registrar.ids)
        if router_stops_with_run(d.plan):
            problems: list[str] = []
            self.registrar.ids.clear()
        else:
            problems = self.registrar.deregister_all()
        with d.state.batched():  # one state.json write, not one per worker
            for name in names:
                if name not in self.registrar.ids:
                    d.state.process(name, registered=False)
        if problems:
            raise RouterError("deregistration failed: " + "; ".join(problems))


def router_stops_with_run(plan: Plan) -> bool:
    """Whether the router is a process of this very plan (a run's head), stopped with it; an
    attached job's (ctl scale, worker jobs, a rollover's) serves on after the job stops."""
    return plan.job is None and any(p.role == "frontend" for p in plan.processes)


def attach_router_registration(driver: DriverView) -> None:
    """Add the router registration hooks (`RouterHooks`) to the driver."""
    hooks = RouterHooks(driver)
    driver.on_process_healthy.append(hooks.on_healthy)
    driver.on_process_lost.append(hooks.on_lost)
    driver.on_process_retired.append(hooks.on_retired)
    driver.before_stop.append(hooks.before_stop)
    driver.on_tick.append(hooks.on_tick)
