"""The local stack's network: a Linux bridge of its own with a /24, the address everything listens on.

Pods sit on the bridge (the CNI bridge plugin adds them), so a server on the host is reachable from a pod only
at the bridge's address: the API server, the emulators and every stand-in a test starts listen there (never
on 0.0.0.0). In-cluster clients find the API server at the `kubernetes` Service's cluster IP, which one DNAT
rule for traffic from this bridge turns into the API server's address; two stacks side by side share the
cluster IP and each has its own bridge, subnet and rule.

The subnet is chosen under a lock among 10.123.0.0/24 … 10.123.255.0/24 (the first that no interface of the
machine holds) and written to <dir>/network.json, so `ferry-dev down` finds what to remove after a crash.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

SUBNETS = ipaddress.ip_network("10.123.0.0/16")
LOCK = Path("/run/ferry-dev-network.lock")
SERVICE_IP = "10.0.0.1"  # the `kubernetes` Service: the first address of the control plane's service range
# Where processes of this stack's Python listen (see listen_host); set by the stack for the stand-ins tests start.
HOST_VARIABLE = "FERRY_DEV_HOST"


def listen_host() -> str:
    """The address local servers listen on: the running stack's bridge (pods reach them there), else loopback."""
    return os.environ.get(HOST_VARIABLE) or "127.0.0.1"


def stack_id(directory: Path) -> str:
    return hashlib.sha256(str(directory.resolve()).encode()).hexdigest()[:8]


@dataclass(frozen=True)
class Network:
    bridge: str  # fy<id>: at most 15 characters
    subnet: str  # 10.123.N.0/24
    gateway: str  # 10.123.N.1: the bridge's (and so the host's) address on it
    comment: str  # marks this stack's iptables rules

    @classmethod
    def load(cls, path: Path) -> Network | None:
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done


def _used_subnets() -> set[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    found = json.loads(_ip("-j", "-4", "addr", "show").stdout or "[]")
    return {
        ipaddress.ip_network(f"{a['local']}/{a['prefixlen']}", strict=False)
        for link in found
        for a in link.get("addr_info", [])
    }


def create(directory: Path) -> Network:
    """Pick a free /24, create the bridge with the gateway address, and record it in <directory>/network.json."""
    ident = stack_id(directory)
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two stacks starting at once take different subnets
        used = _used_subnets()
        subnet = next(
            (s for s in SUBNETS.subnets(new_prefix=24) if not any(s.overlaps(u) for u in used)),
            None,
        )
        if subnet is None:
            raise RuntimeError(f"no free /24 left in {SUBNETS} for another local stack")
        network = Network(f"fy{ident}", str(subnet), str(subnet.network_address + 1), f"ferry-dev-{ident}")
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "network.json").write_text(json.dumps(asdict(network)) + "\n")
        _ip("link", "add", network.bridge, "type", "bridge")
        _ip("addr", "add", f"{network.gateway}/24", "dev", network.bridge)
        _ip("link", "set", network.bridge, "up")
    return network


def _dnat(network: Network, api_port: int) -> list[str]:
    return [
        "PREROUTING", "-i", network.bridge, "-d", f"{SERVICE_IP}/32", "-p", "tcp", "--dport", "443",
        "-m", "comment", "--comment", network.comment,
        "-j", "DNAT", "--to-destination", f"{network.gateway}:{api_port}",
    ]  # fmt: skip


def route_service(network: Network, api_port: int) -> None:
    """Pods' connections to https://kubernetes.default.svc (the Service's cluster IP) reach the API server."""
    subprocess.run(["iptables", "-w", "-t", "nat", "-A", *_dnat(network, api_port)], check=True, capture_output=True)


def remove(directory: Path) -> None:
    """Remove the bridge and this stack's iptables rules (whatever of them exists)."""
    network = Network.load(directory / "network.json")
    if network is None:
        return
    rules = subprocess.run(["iptables", "-w", "-t", "nat", "-S"], capture_output=True, text=True).stdout
    for line in rules.splitlines():
        if f"--comment {network.comment}" in line and line.startswith("-A "):
            subprocess.run(["iptables", "-w", "-t", "nat", "-D", *line.split()[1:]], capture_output=True)
    _ip("link", "delete", network.bridge, check=False)
    with contextlib.suppress(OSError):
        (directory / "network.json").unlink()


def namespaces_on(network: Network) -> list[str]:
    """The network namespaces (ip netns names) holding an address of this stack's subnet: its pods'."""
    subnet = ipaddress.ip_network(network.subnet)
    names = [line.split()[0] for line in _ip("netns", "list", check=False).stdout.splitlines() if line.strip()]
    mine = []
    for name in names:
        found = json.loads(_ip("-n", name, "-j", "-4", "addr", "show", check=False).stdout or "[]")
        if any(ipaddress.ip_address(a["local"]) in subnet for link in found for a in link.get("addr_info", [])):
            mine.append(name)
    return mine
