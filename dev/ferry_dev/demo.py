"""`ferry-dev demo`: the local stack, sample data, `kubectl apply -f examples/`, live progress, a verdict."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from ferry_dev import sampledata
from ferry_dev.binaries import kubectl as kubectl_binary
from ferry_dev.stack import DevStack

DEMO_KINDS = {"BlobCopy", "DatabaseAccount", "ContainerCopyJob", "InAccountRestore"}
EXPECT_ANNOTATION = "ferry.dev/demo-expect"
NAMESPACE = "ferry-demo"
# An account's "phase" in the demo is its Ready condition; jobs and copies have real phases.
TERMINAL_PHASES = {"Succeeded", "Failed", "Cancelled", "Ready"}
RESTORE = "InAccountRestore"


def examples_dir() -> Path:
    for folder in (Path.cwd(), *Path(__file__).resolve().parents):
        if (folder / "examples").is_dir() and (folder / "pyproject.toml").exists():
            return folder / "examples"
    raise FileNotFoundError("examples/ not found; run `ferry-dev demo` from the Ferry repository")


def load_examples(folder: Path) -> list[tuple[Path, dict[str, Any]]]:
    found = []
    for path in sorted(folder.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") in DEMO_KINDS:
                found.append((path, doc))
    # Accounts first, so that jobs find theirs; files in name order otherwise.
    return sorted(found, key=lambda item: (item[1]["kind"] != "DatabaseAccount", item[0].name))


class Kubectl:
    """The pinned kubectl, as the cluster admin, in the demo's namespace."""

    def __init__(self, stack: DevStack) -> None:
        self.env = stack.env()

    def __call__(self, *args: str, check: bool = True, stdin: str | None = None) -> str:
        argv = [kubectl_binary(), "-n", NAMESPACE, *args]
        done = subprocess.run(argv, env=self.env, input=stdin, capture_output=True, text=True, timeout=60)
        if check and done.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout


def _phases(kubectl: Kubectl, examples: list[tuple[Path, dict[str, Any]]]) -> dict[str, str]:
    phases = {}
    for _, doc in examples:
        name = doc["metadata"]["name"]
        if doc["kind"] == "DatabaseAccount":
            path = '{.status.conditions[?(@.type=="Ready")].status}'
            ready = kubectl("get", "databaseaccount", name, "-o", f"jsonpath={path}", check=False).strip()
            phases[f"{doc['kind']}/{name}"] = "Ready" if ready == "True" else "NotReady"
            continue
        phase = kubectl("get", doc["kind"].lower(), name, "-o", "jsonpath={.status.phase}", check=False)
        phases[f"{doc['kind']}/{name}"] = phase.strip() or "-"
    return phases


def _manifest(doc: dict[str, Any], cosmos_endpoint: str) -> str:
    """The example as applied: an account's endpoint becomes the local cosmosdb-server's."""
    if doc["kind"] == "DatabaseAccount":
        doc = {**doc, "spec": {**doc["spec"], "endpoint": cosmos_endpoint}}
    return yaml.safe_dump(doc, sort_keys=False)


def _latest_restorable(kubectl: Kubectl, account: str) -> str:
    path = "jsonpath={.status.latestRestorableTime}"
    return kubectl("get", "databaseaccount", account, "-o", path, check=False).strip()


def _captured(kubectl: Kubectl, account: str, past: str, deadline: float) -> bool:
    """Wait for the account's backup to be restorable past a time (RFC 3339, UTC: compared as text)."""
    while time.monotonic() < deadline:
        latest = _latest_restorable(kubectl, account)
        if latest and latest > past:
            return True
        time.sleep(1)
    return False


def _delete_by_mistake(
    kubectl: Kubectl, stack: DevStack, restores: list[dict[str, Any]], deadline: float
) -> dict[tuple[str, str], dict[str, dict[str, Any]]]:
    """Delete what the restore examples bring back once the backup holds it, and wait for the backup to see the
    deletion; what each restored container must hold (its items before the deletion)."""
    assert stack.cosmos is not None
    cosmos = stack.cosmos.endpoint
    deleted: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    wanted: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for doc in restores:
        spec = doc["spec"]
        account = spec["accountRef"]["name"]
        source = (spec["database"], spec["container"])
        if source not in deleted:
            print(f"waiting for {account}'s backup to become restorable ...", flush=True)
            if not _captured(kubectl, account, "1970", deadline):
                break
            print(f"deleting container {'/'.join(source)} by mistake ...", flush=True)
            deleted[source] = sampledata.delete_container(cosmos.endpoint, cosmos.key, *source)
            now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            print("waiting for the backup to capture the deletion ...", flush=True)
            _captured(kubectl, account, now, deadline)
        target = spec.get("target") or {}
        wanted[(target.get("database") or source[0], target.get("container") or source[1])] = deleted[source]
    return wanted


def _follow(stack: DevStack, kubectl: Kubectl, examples: list[tuple[Path, dict[str, Any]]], deadline: float) -> None:
    """`ferry status`'s live view of the demo's namespace, until every example reached an end."""
    from rich.console import Console

    from ferry.cli import status as status_cli

    os.environ["KUBECONFIG"] = str(stack.kubeconfig)  # the status view reads the stack as kubectl does

    def settled(rows: object) -> bool:
        return all(p in TERMINAL_PHASES for p in _phases(kubectl, examples).values())

    console = Console() if sys.stdout.isatty() else Console(color_system=None, width=160)
    status_cli.watch(NAMESPACE, 1.0, console, until=settled, deadline=deadline)


def run(directory: Path | None, timeout: float = 300.0) -> int:
    examples = load_examples(examples_dir())
    workdir = directory or Path(tempfile.mkdtemp(prefix="ferry-demo-"))
    print(f"starting the local stack in {workdir} ...", flush=True)
    with DevStack(workdir) as stack:
        assert stack.azurite is not None and stack.cosmos is not None
        stack.create_namespace(NAMESPACE)  # restricted Pod Security, the chart's worker service account
        kubectl = Kubectl(stack)
        cosmos = stack.cosmos.endpoint
        src, dst = stack.azurite.accounts["ferrysrc"], stack.azurite.accounts["ferrydst"]
        print("creating sample blobs and the Secrets the examples use ...", flush=True)
        samples = sampledata.seed_blobs(src, dst)
        print("creating the sample Cosmos DB databases and containers ...", flush=True)
        sampledata.seed_cosmos(cosmos.endpoint, cosmos.key)
        for secret, literal in (
            ("ferry-src-storage", f"connectionString={src.connection_string}"),
            ("ferry-dst-storage", f"connectionString={dst.connection_string}"),
            ("ferry-src-sas", f"url={samples.sas_url}"),
            ("shop-cosmos-key", f"primaryKey={cosmos.key}"),
        ):
            kubectl("create", "secret", "generic", secret, f"--from-literal={literal}")
        print(f"applying examples/ (DatabaseAccount endpoints set to {cosmos.endpoint}):", flush=True)
        restores = [doc for _, doc in examples if doc["kind"] == RESTORE]
        for _, doc in examples:
            if doc["kind"] != RESTORE:
                print(kubectl("apply", "-f", "-", stdin=_manifest(doc, cosmos.endpoint)).strip(), flush=True)

        deadline = time.monotonic() + timeout
        restored = _delete_by_mistake(kubectl, stack, restores, deadline)
        for doc in restores:
            print(kubectl("apply", "-f", "-", stdin=_manifest(doc, cosmos.endpoint)).strip(), flush=True)
        _follow(stack, kubectl, examples, deadline)
        print("final state:", flush=True)
        print(kubectl("get", "ferry", "-o", "wide"), flush=True)
        phases = _phases(kubectl, examples)
        failures = []
        for _, doc in examples:
            key = f"{doc['kind']}/{doc['metadata']['name']}"
            expected = doc["metadata"].get("annotations", {}).get(EXPECT_ANNOTATION, "Succeeded")
            if phases[key] != expected:
                failures.append(f"{key}: phase {phases[key]}, expected {expected}")
        failures += sampledata.check_blobs(dst, samples.expected)
        failures += sampledata.check_cosmos(cosmos.endpoint, cosmos.key)
        failures += sampledata.check_restored(cosmos.endpoint, cosmos.key, restored)
    if failures:
        print("demo FAILED:\n  " + "\n  ".join(failures), file=sys.stderr)
        print(f"logs are in {workdir}/logs, {workdir}/kube and {workdir}/node (pod-logs: containers)", file=sys.stderr)
        return 1
    print(f"demo passed: {len(examples)} examples reached their expected outcome and the data is right")
    return 0
