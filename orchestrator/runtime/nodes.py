"""The allocation's nodes: hostnames from Slurm, addresses resolved on the nodes themselves."""

from __future__ import annotations

import argparse
import fcntl
import ipaddress
import json
import os
import socket
import struct
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from orchestrator.core.effects import CommandRunner
from orchestrator.core.errors import OrchestratorError
from orchestrator.runtime.node_report import srun_prefix
from orchestrator.slurm.client import SlurmClient

SIOCGIFADDR = 0x8915


@dataclass(frozen=True)
class NodeInfo:
    """What a node reports about itself."""

    ip: str
    busy: tuple[int, ...] = ()
    # The GPUs Slurm gave the job on this node, as a step there sees them (CUDA_VISIBLE_DEVICES):
    # planned GPU i of the node is gpus[i]. Empty when Slurm set none (no GPU gres).
    gpus: tuple[str, ...] = ()


def interface_ip(name: str) -> str:
    """IPv4 address of network interface `name` (Linux ioctl; no `ip`/`ifconfig` needed,
    ai-dynamo/dynamo #1804: ifconfig missing in containers)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        packed = fcntl.ioctl(s.fileno(), SIOCGIFADDR, struct.pack("256s", name[:15].encode()))
    return socket.inet_ntoa(packed[20:24])


def hostname_ip(host: str) -> str:
    """First non-loopback IPv4 address `host` resolves to (falls back to loopback)."""
    infos = socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)
    addrs = [str(i[4][0]) for i in infos]
    routable = [a for a in addrs if not ipaddress.ip_address(a).is_loopback]
    return (routable or addrs)[0]


def busy_ports(ports: Sequence[int]) -> list[int]:
    """Ports someone already listens on here (a leftover process, another job on a shared node):
    binding the wildcard address fails for them. Planned ports must all be free before we start."""
    busy = []
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is not "in use"
            try:
                s.bind(("", port))
            except OSError:
                busy.append(port)
    return busy


def local_node_info(ip_source: str, interface: str, ports: Sequence[int] = ()) -> dict[str, object]:
    """This node's hostname, the address other nodes should use, and which `ports` are taken."""
    host = socket.gethostname()
    ip = interface_ip(interface) if ip_source == "interface" else hostname_ip(host)
    gpus = [g for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g]
    return {"host": host, "ip": ip, "busy": busy_ports(ports), "gpus": gpus}


def parse_node_lines(stdout: str) -> dict[str, NodeInfo]:
    """`nodeinfo` JSON lines -> {hostname: NodeInfo}. Lines that are not our JSON are ignored (srun
    chatter such as "Step created for StepId=..." must never become an address, srt-slurm #250)."""
    found: dict[str, NodeInfo] = {}
    for line in stdout.splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if (
            isinstance(item, dict)
            and isinstance(item.get("host"), str)
            and isinstance(item.get("ip"), str)
        ):
            busy = tuple(int(p) for p in item.get("busy", []))
            gpus = tuple(str(g) for g in item.get("gpus", []))
            found[item["host"]] = NodeInfo(ip=item["ip"], busy=busy, gpus=gpus)
    return found


def check_address(host: str, ip: str) -> str:
    """`ip` as a validated IPv4/IPv6 string, or an error naming the node."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError as exc:
        raise OrchestratorError(f"node {host} reported an invalid address {ip!r}") from exc
    if addr.is_unspecified or addr.is_multicast:
        raise OrchestratorError(f"node {host} reported an unusable address {ip}")
    return str(addr)


def expand_hostlist(runner: CommandRunner, nodelist: str) -> list[str]:
    """`node[1-3]` -> ['node1', 'node2', 'node3'] (scontrol show hostnames)."""
    return SlurmClient(runner).hostnames(nodelist)


def probe_nodes(
    runner: CommandRunner,
    *,
    job_id: str,
    hosts: Sequence[str],
    python: str,
    ip_source: str,
    interface: str,
    ports: Sequence[int],
) -> list[NodeInfo]:
    """Run `nodeinfo` once on every node (one srun step): validated addresses and busy ports."""
    argv = [
        *srun_prefix(job_id, hosts, "nodeinfo"),
        python,
        "-m",
        "orchestrator.runtime.nodes",
        "--ip-source",
        ip_source,
        "--interface",
        interface,
        "--ports",
        ",".join(str(p) for p in sorted(set(ports))),
    ]
    res = runner.run(argv, timeout=120)
    found = parse_node_lines(res.stdout)
    missing = [h for h in hosts if h not in found]
    if res.returncode != 0 or missing:
        raise OrchestratorError(
            f"could not resolve node addresses (missing: {', '.join(missing) or '-'}; "
            f"exit {res.returncode}): {res.stderr.strip()[-500:]}"
        )
    return [
        NodeInfo(ip=check_address(h, found[h].ip), busy=found[h].busy, gpus=found[h].gpus)
        for h in hosts
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m orchestrator.runtime.nodes`: print this node's {"host", "ip", "busy",
    "gpus"} as JSON."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--ip-source", default="hostname")
    parser.add_argument("--interface", default="")
    parser.add_argument("--ports", default="", help="comma-separated ports that must be free")
    args = parser.parse_args(argv)
    ports = [int(p) for p in args.ports.split(",") if p]
    print(json.dumps(local_node_info(args.ip_source, args.interface, ports)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
