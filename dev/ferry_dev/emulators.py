"""Run the npm emulators (Azurite blob, cosmosdb-server) as child processes, on the address pods reach
(network.listen_host: the stack's bridge, or 127.0.0.1 without a stack).

Each emulator runs in its own process group so that stopping it also stops anything it spawned;
ports are chosen free unless given, and start() returns only once the emulator answers.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ferry_dev.binaries import ensure_tool
from ferry_dev.lifecycle import Service
from ferry_dev.network import listen_host
from ferry_dev.processes import ChildProcess, ProcessRegistry

# The Cosmos DB emulator's published, well-known key (not a secret).
COSMOS_EMULATOR_KEY = "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DF8xmN7MC7ZtLoqKEoGfeFzKzgg1oxjRvP9hP92z3c6AZg=="

START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0


def find_node_bin(name: str) -> Path:
    """node_modules/.bin/<name> of the repository (searched upwards from this file and the cwd)."""
    starts = [Path(__file__).resolve().parent, Path.cwd().resolve()]
    for start in starts:
        for folder in (start, *start.parents):
            candidate = folder / "node_modules" / ".bin" / name
            if candidate.exists():
                return candidate
    raise FileNotFoundError(
        f"node_modules/.bin/{name} not found above {starts[0]} or {starts[1]}; "
        "run `npm ci` at the repository root to install the pinned emulators"
    )


def free_port(host: str | None = None) -> int:
    host = host or listen_host()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def account_key(name: str) -> str:
    """A stable, valid base64 account key per account name (emulator-only, not a secret)."""
    return base64.b64encode(hashlib.sha512(f"ferry-devstack:{name}".encode()).digest()).decode()


@dataclass(frozen=True)
class StorageAccount:
    name: str
    key: str
    blob_endpoint: str
    connection_string: str


@dataclass(frozen=True)
class CosmosEndpoint:
    endpoint: str
    key: str


def wait_until(ready: Callable[[], bool], child: ChildProcess, what: str, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not child.running:
            raise RuntimeError(f"{what} exited during start-up; log tail:\n{child.log_tail()}")
        if ready():
            return
        time.sleep(0.1)
    child.stop()
    raise TimeoutError(f"{what} did not answer within {START_TIMEOUT:.0f}s; log tail:\n{child.log_tail()}")


class HttpReady:
    def __init__(self, url: str, context: ssl.SSLContext | None = None) -> None:
        self.url = url
        self.context = context

    def __call__(self) -> bool:
        try:
            with urllib.request.urlopen(self.url, timeout=2, context=self.context):
                return True
        except urllib.error.HTTPError:
            return True  # any HTTP answer means the server is up
        except (OSError, ValueError):
            return False


class Azurite(Service):
    """Azurite's blob service with several storage accounts (AZURITE_ACCOUNTS).

    With `tls` (a certificate, its key and the CA that issued it), it serves HTTPS and also accepts Entra bearer
    tokens (`--oauth basic`: it checks their issuer, audience and lifetime, not their signature, and no role
    assignments). It trusts that CA when it reads a copy's source from another account over HTTPS.
    """

    def __init__(
        self,
        workdir: Path,
        accounts: Sequence[str] = ("ferrysrc", "ferrydst"),
        host: str | None = None,
        blob_port: int = 0,
        loose: bool = True,
        registry: ProcessRegistry | None = None,
        tls: tuple[Path, Path, Path] | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.tls = tls
        self.account_names = list(accounts)
        self.host = host or listen_host()
        self.blob_port = blob_port
        self.loose = loose
        self.accounts: dict[str, StorageAccount] = {}
        self._child = ChildProcess("azurite", self.workdir / "azurite.log", registry)

    def start(self) -> None:
        if self._child.running:
            return
        port = self.blob_port or free_port(self.host)
        keys = {name: account_key(name) for name in self.account_names}
        env = dict(os.environ)
        env["AZURITE_ACCOUNTS"] = ";".join(f"{name}:{key}" for name, key in keys.items())
        argv = [
            str(find_node_bin("azurite-blob")),
            "--blobHost",
            self.host,
            "--blobPort",
            str(port),
            "--location",
            str(self.workdir / "data"),
            "--skipApiVersionCheck",
            "--disableProductStyleUrl",
            "--silent",
        ]
        if self.loose:
            argv.append("--loose")
        scheme, context = "http", None
        if self.tls is not None:
            argv += ["--cert", str(self.tls[0]), "--key", str(self.tls[1]), "--oauth", "basic"]
            env["NODE_EXTRA_CA_CERTS"] = str(self.tls[2])
            scheme, context = "https", ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE  # only asks whether it answers yet
        self._child.spawn(argv, env, cwd=self.workdir)
        wait_until(HttpReady(f"{scheme}://{self.host}:{port}/", context), self._child, "azurite-blob")
        self.blob_port = port
        self.accounts = {}
        for name, key in keys.items():
            endpoint = f"{scheme}://{self.host}:{port}/{name}"
            self.accounts[name] = StorageAccount(
                name=name,
                key=key,
                blob_endpoint=endpoint,
                connection_string=(
                    f"DefaultEndpointsProtocol={scheme};AccountName={name};AccountKey={key};BlobEndpoint={endpoint};"
                ),
            )

    def stop(self) -> None:
        self._child.stop()


class CosmosServer(Service):
    """@vercel/cosmosdb-server over HTTPS (self-signed), answering the azure-cosmos SDK."""

    def __init__(
        self, workdir: Path, host: str | None = None, port: int = 0, registry: ProcessRegistry | None = None
    ) -> None:
        self.workdir = Path(workdir)
        self.host = host or listen_host()
        self.port = port
        self.endpoint = CosmosEndpoint(endpoint="", key=COSMOS_EMULATOR_KEY)
        self._child = ChildProcess("cosmosdb-server", self.workdir / "cosmosdb-server.log", registry)

    def start(self) -> None:
        if self._child.running:
            return
        port = self.port or free_port(self.host)
        argv = [str(find_node_bin("cosmosdb-server")), "--host", self.host, "-p", str(port)]
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._child.spawn(argv, dict(os.environ), cwd=self.workdir)
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE  # the emulator's certificate is self-signed
        wait_until(HttpReady(f"https://{self.host}:{port}/", insecure), self._child, "cosmosdb-server")
        self.port = port
        self.endpoint = CosmosEndpoint(endpoint=f"https://{self.host}:{port}/", key=COSMOS_EMULATOR_KEY)

    def stop(self) -> None:
        self._child.stop()


class TcpReady:
    def __init__(self, host: str, port: int) -> None:
        self.address = (host, port)

    def __call__(self) -> bool:
        try:
            with socket.create_connection(self.address, timeout=2):
                return True
        except OSError:
            return False


# FerretDB v1 on SQLite checks no password; PLAIN is the mechanism it accepts from a client that sends one (it
# refuses SCRAM there), so the local account's key travels but is not checked.
FERRETDB_USER = "ferry"
FERRETDB_KEY = "ferretdb-local-key"


class FerretDB(Service):
    """FerretDB (hack/ferretdb, built from its Go module) on its SQLite backend: a MongoDB wire-protocol account.
    `endpoint` is its mongodb:// URI without user or password; the user is FERRETDB_USER, `key` the password."""

    def __init__(
        self, workdir: Path, host: str | None = None, port: int = 0, registry: ProcessRegistry | None = None
    ) -> None:
        self.workdir = Path(workdir)
        self.host = host or listen_host()
        self.port = port
        self.endpoint = CosmosEndpoint(endpoint="", key=FERRETDB_KEY)
        self._child = ChildProcess("ferretdb", self.workdir / "ferretdb.log", registry)

    def start(self) -> None:
        if self._child.running:
            return
        port = self.port or free_port(self.host)
        self.workdir.mkdir(parents=True, exist_ok=True)
        argv = [str(ensure_tool("ferretdb")), "--listen", f"{self.host}:{port}"]
        argv += ["--sqlite-dir", str(self.workdir / "data")]
        self._child.spawn(argv, dict(os.environ), cwd=self.workdir)
        wait_until(TcpReady(self.host, port), self._child, "FerretDB")
        self.port = port
        uri = f"mongodb://{self.host}:{port}/?authMechanism=PLAIN&directConnection=true"
        self.endpoint = CosmosEndpoint(endpoint=uri, key=FERRETDB_KEY)

    def stop(self) -> None:
        self._child.stop()


class CosmosWithChangeFeed(Service):
    """cosmosdb-server behind the change feed stand-in: `endpoint` is the stand-in's.

    cosmosdb-server's own change feed is a stub, and copy jobs and backup captures read the change feed;
    the stand-in (ferry_dev.changefeed, run as a process of its own) serves it, with `ranges` partition
    key ranges and the all-versions-and-deletes mode.
    """

    def __init__(self, workdir: Path, ranges: int = 4, registry: ProcessRegistry | None = None) -> None:
        self.workdir = Path(workdir)
        self.ranges = ranges
        self.server = CosmosServer(self.workdir, registry=registry)
        self.endpoint = self.server.endpoint
        self._child = ChildProcess("changefeed-standin", self.workdir / "changefeed-standin.log", registry)

    def start(self) -> None:
        self.server.start()
        self.endpoint = self.server.endpoint
        if self._child.running:
            return
        host = self.server.host
        port = free_port(host)
        argv = [sys.executable, "-m", "ferry_dev.changefeed", "--upstream", self.server.endpoint.endpoint]
        argv += ["--key", self.server.endpoint.key, "--host", host, "--port", str(port)]
        argv += ["--ranges", str(self.ranges), "--all-versions"]
        self._child.spawn(argv, dict(os.environ), cwd=self.workdir)
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE  # cosmosdb-server's self-signed certificate, which it presents too
        wait_until(HttpReady(f"https://{host}:{port}/", insecure), self._child, "the change feed stand-in")
        self.endpoint = CosmosEndpoint(endpoint=f"https://{host}:{port}/", key=self.server.endpoint.key)

    def stop(self) -> None:
        self._child.stop()
        self.server.stop()
