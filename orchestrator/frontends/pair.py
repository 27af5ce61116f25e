"""A frontend pair (frontend.replicas=2): two frontends behind one HAProxy (Debian's `haproxy`
package, not a proxy of our own). The proxy is a plan process on node 0 (infrastructure tier,
like etcd) serving the URL users get; its configuration is generated here and written into the
run directory by its own start command, so a restart rewrites the same file."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from orchestrator.config.schema import RootConfig
from orchestrator.core.errors import Issue
from orchestrator.frontends.base import http_port
from orchestrator.launchers import runs_on_one_machine
from orchestrator.plan.model import TIER_INFRA, HealthProbe, Process
from orchestrator.plan.placeholders import RUN_DIR, node_ip, port_ref
from orchestrator.plan.ports import PortAllocator

REPLICAS = (1, 2)
PAIR_FRONTENDS = ("dynamo",)  # each replica finds every worker through the shared discovery
MONITOR_URI = "/orchestrator-proxy-health"  # answered by HAProxy itself (its liveness)
CONFIG_PATH = f"{RUN_DIR}/infra/haproxy.cfg"
# Writes the configuration ($1) to its path ($2), then becomes HAProxy ($3) in the foreground
# (-db: no daemon, so the driver's signals and the step reach it). Golden-tested, shellcheck clean.
START_SCRIPT = 'mkdir -p -- "${2%/*}" && printf "%s" "$1" >"$2" && exec "$3" -db -f "$2"'

# Replica(name, index, node, port as written in argv, planned ports) -> its process.
ReplicaFactory = Callable[[str, int, int, str, dict[str, int]], Process]


def haproxy_config(
    bind: str, metrics_bind: str, servers: Sequence[tuple[str, str]], check: str
) -> str:
    """HAProxy's configuration: `bind` (host:port) serves users; every server (name, host:port)
    is health-checked with GET `check` (the model's ready path: a restarted replica gets requests
    only once it routes the model); a request whose connection a dead replica refused or closed
    before any answer is sent again to the other one (retry-on + redispatch: nothing had reached
    a frontend that could act on it). Streams already flowing through a killed replica break."""
    lines = [
        "global",
        "    log stdout format raw daemon",
        "defaults",
        "    mode http",
        "    log global",
        "    option httplog",
        "    option dontlog-normal",  # only errors and retried requests reach the log
        "    timeout connect 2s",
        "    timeout client 1h",  # long generations and idle keep-alive clients
        "    timeout server 1h",
        "    retries 3",
        "    option redispatch 1",  # every retry goes to another server
        "    retry-on conn-failure empty-response junk-response",
        # L7 retries need the whole request in HAProxy's buffer; clients (Python requests) send
        # the body after the headers, and without this HAProxy forwards the headers alone and
        # cannot retry a request whose replica died before answering (seen: 502 "SH--", 0 retries).
        "    option http-buffer-request",
        "frontend serve",
        f"    bind {bind}",
        f"    monitor-uri {MONITOR_URI}",
        "    default_backend frontends",
        "frontend metrics",
        f"    bind {metrics_bind}",
        "    http-request use-service prometheus-exporter",
        "backend frontends",
        "    balance leastconn",
        f"    option httpchk GET {check}",
        "    http-check expect status 200",
        "    default-server check inter 500ms fall 2 rise 1",
        *(f"    server {name} {addr}" for name, addr in servers),
    ]
    return "\n".join(lines) + "\n"


def pair_processes(
    cfg: RootConfig, ports: PortAllocator, num_nodes: int, check: str, replica: ReplicaFactory
) -> tuple[list[Process], str]:
    """The proxy, then two replicas (node 0 and node 1 when the job has two nodes or more, else
    both on node 0: placement=here), and the URL users get (the proxy's)."""
    public, planned = http_port(cfg, ports, ["metrics"])
    replicas = []
    for index, node in enumerate((0, 1 if num_nodes > 1 else 0)):
        own = ports.allocate(node, ["http"])
        replicas.append(replica(f"frontend-{index}", index, node, port_ref(own["http"]), own))
    ip = node_ip(0)
    servers = [(r.name, r.url.removeprefix("http://")) for r in replicas]
    text = haproxy_config(f"{ip}:{public}", f"{ip}:{port_ref(planned['metrics'])}", servers, check)
    argv = (
        "bash",
        "-c",
        START_SCRIPT,
        "orchestrator-proxy",
        text,
        CONFIG_PATH,
        cfg.frontend.proxy_binary,
    )
    url = f"http://{ip}:{public}"
    proxy = Process(
        name="proxy",
        role="infra",
        group="infra",
        worker_index=0,
        rank=0,
        node_index=0,
        gpus=(),
        ports=planned,
        env={},
        argv=argv,
        tier=TIER_INFRA,
        health=HealthProbe(url=f"{url}{MONITOR_URI}"),
        url=url,
    )
    return [proxy, *replicas], url


def pair_issues(cfg: RootConfig, proxy_found: Callable[[str], bool]) -> list[Issue]:
    """frontend.replicas: 1 or 2; a pair only for frontends whose replicas share discovery, and
    with the proxy installed where this machine runs it (launcher=local, placement=here)."""
    f = cfg.frontend
    if f.replicas not in REPLICAS:
        return [Issue("frontend.replicas", str(f.replicas), "unsupported", "use 1 or 2")]
    if f.replicas == 1:
        return []
    issues = []
    if f.kind not in PAIR_FRONTENDS:
        issues.append(
            Issue(
                "frontend.replicas",
                "2",
                f"frontend={f.kind} runs alone: each router "
                "replica would need every worker registered with it",
                f"use frontend={' or '.join(PAIR_FRONTENDS)}, or frontend.replicas=1",
            )
        )
    here = f.placed_here or runs_on_one_machine(cfg.launcher.kind)
    if here and not proxy_found(f.proxy_binary):
        issues.append(
            Issue(
                "frontend.proxy_binary",
                repr(f.proxy_binary),
                "not found on this machine (the pair's proxy runs here)",
                "apt-get install haproxy (scripts/install-system-deps.sh), "
                "or set frontend.proxy_binary",
            )
        )
    return issues
