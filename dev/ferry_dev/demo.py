"""`ferry demo`: the local stack, sample data, `kubectl apply -f examples/`, live progress, a verdict."""

from __future__ import annotations

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

# Kinds whose examples the demo runs (the others have examples once they are implemented).
DEMO_KINDS = {"BlobCopy", "DatabaseAccount", "ContainerCopyJob"}
EXPECT_ANNOTATION = "ferry.dev/demo-expect"
NAMESPACE = "ferry-demo"
# An account's "phase" in the demo is its Ready condition; jobs and copies have real phases.
TERMINAL_PHASES = {"Succeeded", "Failed", "Cancelled", "Ready"}
WATCHED = "databaseaccounts,containercopyjobs,blobcopies"


def examples_dir() -> Path:
    for folder in (Path.cwd(), *Path(__file__).resolve().parents):
        if (folder / "examples").is_dir() and (folder / "pyproject.toml").exists():
            return folder / "examples"
    raise FileNotFoundError("examples/ not found; run `ferry demo` from the Ferry repository")


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
        for _, doc in examples:
            print(kubectl("apply", "-f", "-", stdin=_manifest(doc, cosmos.endpoint)).strip(), flush=True)

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            print(kubectl("get", WATCHED), flush=True)
            if all(p in TERMINAL_PHASES for p in _phases(kubectl, examples).values()):
                break
            time.sleep(2)

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
    if failures:
        print("demo FAILED:\n  " + "\n  ".join(failures), file=sys.stderr)
        print(f"logs are in {workdir}/logs and {workdir}/pods", file=sys.stderr)
        return 1
    print(f"demo passed: {len(examples)} examples reached their expected outcome and the data is right")
    return 0
