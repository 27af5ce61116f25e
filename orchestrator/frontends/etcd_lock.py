"""etcd locked with user and password: the run's etcd turns authentication on as soon as it is
healthy, before any worker starts (the driver starts workers only once the infra tier is
healthy, and this runs in that health hook).

Through etcd 3.4's JSON gateway (`/v3/auth/...`, the gRPC calls `etcdctl` makes): add the user
`root` with the per-run password (RUN_DIR/secrets/etcd_password), grant it the root role (etcd
refuses `auth enable` without it), enable auth. From then on every range/put/watch without a
token answers "etcdserver: user name is empty"; Dynamo's processes log in with
ETCD_AUTH_USERNAME/ETCD_AUTH_PASSWORD (exported by the driver). `/health` still answers without
a token (etcd 3.4 counts "user name is empty" as healthy), so our probe needs none.
The password travels only in the JSON body of a POST to the node's own address."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from orchestrator.core.effects import HttpClient, HttpError
from orchestrator.core.errors import OrchestratorError
from orchestrator.rundir.secrets import ETCD_PASSWORD_ENV, ETCD_USER, ETCD_USER_ENV

if TYPE_CHECKING:
    from orchestrator.runtime.hooks import DriverView
    from orchestrator.runtime.processes import Running

ETCD_PROCESS = "etcd"
TIMEOUT_S = 5.0
EVERY_KEY = {"key": "AA==", "range_end": "AA=="}  # "\0".."\0": the whole key space


class EtcdLockError(OrchestratorError):
    """etcd's authentication could not be turned on (the run must not go on unlocked)."""


def _post(http: HttpClient, url: str, body: dict[str, Any]) -> dict[str, Any]:
    """The JSON answer of a gateway call; {'error': ...} when it failed."""
    try:
        resp = http.post(url, body, timeout=TIMEOUT_S)
    except HttpError as exc:
        return {"error": str(exc)}
    data = resp.json()
    if resp.status != 200 and not isinstance(data, dict):
        return {"error": f"HTTP {resp.status}: {resp.body[:200]}"}
    return data if isinstance(data, dict) else {"error": resp.body[:200]}


def logs_in(http: HttpClient, base: str, user: str, password: str) -> bool:
    """Whether `user`/`password` get a token (False while auth is off: etcd says so)."""
    return "token" in _post(
        http, f"{base}/v3/auth/authenticate", {"name": user, "password": password}
    )


def refuses_anonymous(http: HttpClient, base: str) -> bool:
    """Whether a read without a token is refused."""
    answer = _post(http, f"{base}/v3/kv/range", EVERY_KEY)
    return "error" in answer or "code" in answer


def enable_auth(http: HttpClient, base: str, password: str) -> str:
    """Turn auth on with `root`/`password` and check anonymous reads are refused; what was done.
    An etcd restarted on its data directory is locked already: nothing to do."""
    if logs_in(http, base, ETCD_USER, password):
        steps = "already on"
    else:
        calls: list[tuple[str, dict[str, str]]] = [
            ("user/add", {"name": ETCD_USER, "password": password}),
            ("user/grant", {"user": ETCD_USER, "role": "root"}),
            ("enable", {}),
        ]
        for path, body in calls:
            answer = _post(http, f"{base}/v3/auth/{path}", body)
            if "error" in answer:
                raise EtcdLockError(f"etcd at {base}: /v3/auth/{path} failed: {answer['error']}")
        steps = "enabled"
    if not refuses_anonymous(http, base):
        raise EtcdLockError(f"etcd at {base} still answers reads without credentials")
    return steps


def lock_etcd(driver: DriverView, running: Running) -> None:
    """on_process_healthy: lock the run's etcd the moment it is healthy."""
    if running.proc.name != ETCD_PROCESS or running.proc.health is None:
        return
    password = os.environ.get(ETCD_PASSWORD_ENV, "")
    if os.environ.get(ETCD_USER_ENV) != ETCD_USER or not password:
        raise EtcdLockError(
            "no etcd password in the driver's environment (RUN_DIR/secrets/"
            "etcd_password missing: a run directory made before locks existed?)"
        )
    base = running.proc.health.url.rsplit("/health", 1)[0]
    steps = enable_auth(driver.http, base, password)
    driver.say(f"etcd: authentication {steps} (user {ETCD_USER}); anonymous reads refused")
    driver.state.update(etcd_locked=True)


def etcd_client(driver: DriverView) -> HttpClient:
    """The driver's HTTP client with a fresh token of the run's etcd (dynamo_purge revokes dead
    workers' leases with it), or the plain client where no etcd password is set (a run made
    before locks, file discovery). A token per use: etcd's simple tokens expire after 5 idle
    minutes (--auth-token-ttl 300), and a purge is rare."""
    password = os.environ.get(ETCD_PASSWORD_ENV, "")
    endpoints = next(
        (p.env["ETCD_ENDPOINTS"] for p in driver.plan.processes if "ETCD_ENDPOINTS" in p.env), ""
    )
    with_headers: Any = getattr(driver.http, "with_headers", None)
    if not password or not endpoints or with_headers is None:
        return driver.http
    base = endpoints.split(",")[0].rstrip("/")
    answer = _post(
        driver.http,
        f"{base}/v3/auth/authenticate",
        {"name": os.environ.get(ETCD_USER_ENV, ETCD_USER), "password": password},
    )
    if "token" not in answer:
        return driver.http  # the revoke then fails and says so; the lease expires as before
    client: HttpClient = with_headers({"Authorization": answer["token"]})
    return client
