"""The operator at scale on the local stack: 1,000 BlobCopies and 50 DatabaseAccounts with 200 ContainerCopyJobs.

Reports, each beside a ceiling measured in the same run:
- reconciled: how many objects reached their terminal phase (all of them, or the run failed);
- terminal_vs_ideal_ratio: the time until every object is terminal, over the shortest time the same
  worker pods could take under the same slot limit (their measured run times, packed perfectly);
- rss_vs_goal_ratio: the operator's peak resident memory over 150 MiB, and its CPU seconds;
- idle requests per object per minute: every request the operator and the workers send while nothing
  happens, from the API server's audit log (the goal is none);
- delete_vs_configmaps_ratio: deleting the 1,000 finished BlobCopies, over deleting 1,000 ConfigMaps
  with the same kubectl against the same API server (no operator involved), and the cleanup pods
  started meanwhile (the goal is none).

Run: .venv/bin/python bench/operator_scale.py [--blobcopies 1000 --accounts 50 --jobs 200]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import urllib3
import yaml
from azure.cosmos import CosmosClient, PartitionKey
from azure.storage.blob import BlobServiceClient
from kubernetes import client, config, watch

from ferry_dev.binaries import kubectl as kubectl_binary
from ferry_dev.stack import DevStack

urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)

MiB = 1024 * 1024
RSS_GOAL = 150 * MiB
DELETE_GOAL = 60.0
SLOTS = 24
IDLE_WINDOW = 60.0
OPERATOR_USER = "system:serviceaccount:ferry-system:ferry-operator"


class Kubectl:
    def __init__(self, stack: DevStack) -> None:
        self.env = stack.env()

    def __call__(self, *args: str, stdin: str | None = None, timeout: float = 600) -> str:
        done = subprocess.run(
            [kubectl_binary(), *args], env=self.env, input=stdin, capture_output=True, text=True, timeout=timeout
        )
        if done.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args[:3])} failed: {done.stderr[-500:]}")
        return done.stdout

    def apply(self, docs: list[dict[str, Any]]) -> None:
        for start in range(0, len(docs), 200):
            self(
                "apply", "--server-side", "-f", "-", stdin="\n---\n".join(yaml.safe_dump(d) for d in docs[start:][:200])
            )


class PodTimes:
    """Watches copy worker pods: how long each ran, and every cleanup pod ever created."""

    def __init__(self, stack: DevStack) -> None:
        self.api = client.CoreV1Api(config.new_client_from_config(config_file=str(stack.kubeconfig)))
        self.started: dict[str, float] = {}
        self.ran: dict[str, float] = {}
        self.cleanups: set[str] = set()
        self._watch = watch.Watch()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        try:
            for event in self._watch.stream(self.api.list_pod_for_all_namespaces, timeout_seconds=3600):
                pod = event["object"]
                name = f"{pod.metadata.namespace}/{pod.metadata.name}"
                role = (pod.metadata.labels or {}).get("ferry.dev/role")
                if role == "cleanup":
                    self.cleanups.add(name)
                if role not in ("copy", "instance"):
                    continue
                phase = pod.status.phase if pod.status else None
                if phase == "Running" and name not in self.started:
                    self.started[name] = time.monotonic()
                if (phase in ("Succeeded", "Failed") or event["type"] == "DELETED") and name in self.started:
                    self.ran.setdefault(name, time.monotonic() - self.started[name])
        except Exception:
            return

    def stop(self) -> None:
        self._watch.stop()


def delete_all(kubectl: Kubectl, kind: str, namespaces: list[str], selector: str) -> float:
    """Seconds from `kubectl delete --wait=false` in every namespace until none of them is left."""
    started = time.monotonic()
    selection = ["-l", selector] if selector else ["--all"]
    for namespace in namespaces:
        kubectl("-n", namespace, "delete", kind, *selection, "--wait=false")
    while kubectl("get", kind, "-A", "--no-headers", *(["-l", selector] if selector else [])).strip():
        time.sleep(0.5)
    return time.monotonic() - started


def process_stats(pid: int) -> tuple[int, float]:
    """(peak resident bytes, CPU seconds) of a process."""
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    peak = int(status["VmHWM"].split()[0]) * 1024
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    ticks = int(fields[11]) + int(fields[12])
    return peak, ticks / 100.0


def seed(stack: DevStack, blobcopies: int, jobs: int) -> tuple[str, str, list[tuple[str, str]]]:
    assert stack.azurite is not None and stack.cosmos is not None
    src = stack.azurite.accounts["ferrysrc"]
    dst = stack.azurite.accounts["ferrydst"]
    source = BlobServiceClient.from_connection_string(src.connection_string).get_container_client("scale-src")
    source.create_container()
    BlobServiceClient.from_connection_string(dst.connection_string).get_container_client("scale-dst").create_container()
    for i in range(blobcopies):
        source.upload_blob(f"b{i:04d}.bin", f"blob {i}".encode())
    cosmos = CosmosClient(stack.cosmos.endpoint.endpoint, stack.cosmos.endpoint.key, connection_verify=False)
    database = cosmos.create_database_if_not_exists("scale")
    pairs = []
    for j in range(jobs):
        container = database.create_container(f"src{j:03d}", PartitionKey("/k"))
        for i in range(3):
            container.upsert_item({"id": f"i{i}", "k": f"k{i}"})
        database.create_container(f"dst{j:03d}", PartitionKey("/id"))
        pairs.append((f"src{j:03d}", f"dst{j:03d}"))
    return src.connection_string, dst.connection_string, pairs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--blobcopies", type=int, default=1000)
    parser.add_argument("--accounts", type=int, default=50)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--copy-namespaces", type=int, default=10)
    parser.add_argument("--account-namespaces", type=int, default=5)
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()

    directory = Path(args.dir or tempfile.mkdtemp(prefix="ferry-scale-"))
    # The stack's one node has two CPUs: the pods ask for little, so that the slots, not the node, bound the run.
    small = {"requests": {"cpu": "10m", "memory": "64Mi"}}
    limits = {
        "workers": {
            "maxConcurrent": SLOTS,
            "maxConcurrentPerNamespace": SLOTS,
            "resources": {"monitor": small, "blobCopy": small},
        }
    }
    print(f"stack in {directory}", flush=True)
    with DevStack(directory, values=limits, audit=True) as stack:
        assert stack.cosmos is not None and stack.control_plane is not None
        kubectl = Kubectl(stack)
        src_cs, dst_cs, pairs = seed(stack, args.blobcopies, args.jobs)
        copy_ns = [f"scale-b{i}" for i in range(args.copy_namespaces)]
        account_ns = [f"scale-a{i}" for i in range(args.account_namespaces)]
        for namespace in copy_ns + account_ns:
            stack.create_namespace(namespace)
            kubectl("-n", namespace, "create", "secret", "generic", "src", f"--from-literal=cs={src_cs}")
            kubectl("-n", namespace, "create", "secret", "generic", "dst", f"--from-literal=cs={dst_cs}")
            kubectl(
                "-n", namespace, "create", "secret", "generic", "key", f"--from-literal=k={stack.cosmos.endpoint.key}"
            )
        docs: list[dict[str, Any]] = []
        for i in range(args.blobcopies):
            docs.append(
                {
                    "apiVersion": "ferry.dev/v1alpha1",
                    "kind": "BlobCopy",
                    "metadata": {"name": f"copy-{i:04d}", "namespace": copy_ns[i % len(copy_ns)]},
                    "spec": {
                        "source": {
                            "account": {"secretRef": {"name": "src", "key": "cs"}},
                            "container": "scale-src",
                            "blob": f"b{i:04d}.bin",
                        },
                        "destination": {
                            "account": {"secretRef": {"name": "dst", "key": "cs"}},
                            "container": "scale-dst",
                        },
                    },
                }
            )
        for a in range(args.accounts):
            docs.append(
                {
                    "apiVersion": "ferry.dev/v1alpha1",
                    "kind": "DatabaseAccount",
                    "metadata": {"name": f"acct-{a:02d}", "namespace": account_ns[a % len(account_ns)]},
                    "spec": {
                        "endpoint": stack.cosmos.endpoint.endpoint,
                        "insecureSkipTLSVerify": True,
                        "credentials": {"secretRef": {"name": "key", "key": "k"}},
                        "copyInstances": {"count": 1, "resources": {"cpu": "50m", "memory": "256Mi"}},
                        "idleTimeout": "10s",
                        "regionPollInterval": "60s",
                    },
                }
            )
        for j, (source, dest) in enumerate(pairs):
            a = j % args.accounts
            docs.append(
                {
                    "apiVersion": "ferry.dev/v1alpha1",
                    "kind": "ContainerCopyJob",
                    "metadata": {"name": f"job-{j:03d}", "namespace": account_ns[a % len(account_ns)]},
                    "spec": {
                        "accountRef": {"name": f"acct-{a:02d}"},
                        "source": {"database": "scale", "container": source},
                        "destination": {"database": "scale", "container": dest},
                    },
                }
            )
        pods = PodTimes(stack)
        print(f"applying {len(docs)} objects ...", flush=True)
        started = time.monotonic()
        kubectl.apply(docs)
        peak_rss, cpu = 0, 0.0
        phases: Counter[str] = Counter()
        while True:
            rss, cpu = process_stats(stack.operator_pid())
            peak_rss = max(peak_rss, rss)
            listed = json.loads(kubectl("get", "blobcopies,containercopyjobs,databaseaccounts", "-A", "-o", "json"))
            phases = Counter()
            for obj in listed["items"]:
                status = obj.get("status") or {}
                if obj["kind"] == "DatabaseAccount":
                    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or [])
                    idle = not status.get("instances")
                    phases[f"DatabaseAccount/{'Ready' if ready and idle else 'busy'}"] += 1
                else:
                    phases[f"{obj['kind']}/{status.get('phase')}"] += 1
            done = phases["BlobCopy/Succeeded"] + phases["ContainerCopyJob/Succeeded"]
            print(f"{time.monotonic() - started:6.0f}s  {dict(phases)}", flush=True)
            if done == args.blobcopies + args.jobs and phases["DatabaseAccount/Ready"] == args.accounts:
                break
            if time.monotonic() - started > 3600:
                break
            time.sleep(10)
        terminal = time.monotonic() - started
        ideal = sum(pods.ran.values()) / SLOTS
        rss, cpu = process_stats(stack.operator_pid())
        peak_rss = max(peak_rss, rss)

        time.sleep(15)  # every instance removed, every last report in
        audit = stack.control_plane.audit_log
        offset = audit.stat().st_size
        time.sleep(IDLE_WINDOW)
        by_user: Counter[str] = Counter()
        with audit.open() as log:
            log.seek(offset)
            for line in log:
                event = json.loads(line)
                if event.get("stage") != "ResponseComplete":
                    continue
                user = event["user"]["username"]
                if user == OPERATOR_USER or "ferry-worker" in user:
                    by_user[f"{user.rsplit(':', 1)[-1]} {event['verb']}"] += 1
        objects = args.blobcopies + args.accounts + args.jobs
        idle_rate = sum(by_user.values()) / objects / (IDLE_WINDOW / 60)

        cleanups_before = len(pods.cleanups)
        delete_time = delete_all(kubectl, "blobcopies", copy_ns, "")
        cleanups = len(pods.cleanups) - cleanups_before

        configmaps = [
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": f"cm-{i:04d}",
                    "labels": {"bench": "scale"},
                    "namespace": copy_ns[i % len(copy_ns)],
                },
                "data": {"k": uuid.uuid4().hex},
            }
            for i in range(args.blobcopies)
        ]
        kubectl.apply(configmaps)
        configmap_time = delete_all(kubectl, "configmaps", copy_ns, "bench=scale")
        pods.stop()

    print()
    print(f"reconciled: {dict(phases)}")
    print(f"time_to_terminal_s: {terminal:.0f}  ideal_s (pod run times / {SLOTS} slots): {ideal:.0f}")
    print(f"terminal_vs_ideal_ratio: {terminal / max(ideal, 1e-9):.2f}")
    print(f"operator_peak_rss_mib: {peak_rss / MiB:.1f}  rss_vs_goal_ratio: {peak_rss / RSS_GOAL:.2f}")
    print(f"operator_cpu_seconds: {cpu:.1f}")
    print(f"idle_requests_per_object_per_minute: {idle_rate:.4f}  by writer: {dict(by_user) or 'none'}")
    print(f"delete_blobcopies_s: {delete_time:.1f}  delete_configmaps_s: {configmap_time:.1f}")
    print(
        f"delete_vs_configmaps_ratio: {delete_time / max(configmap_time, 1e-9):.2f}  "
        f"delete_vs_goal_ratio: {delete_time / DELETE_GOAL:.2f}"
    )
    print(f"cleanup_pods_started_by_deletion: {cleanups}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
