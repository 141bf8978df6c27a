"""The node agent of the local stack: a small kubelet (and scheduler) that runs pods as local processes.

It registers its Node, watches Pods in all namespaces, binds the unscheduled ones to its node and runs
each container's command and args (the image is ignored: every Ferry pod runs from this installation)
with the container's environment (Secrets, ConfigMaps, the downward API) and volumes (emptyDir, the
projected service-account token) resolved through the API with the node's own credentials, in a mount
namespace of its own. It writes the pod status as the kubelet does, restarts per restartPolicy with
back-off, on deletion stops the processes within the grace period and completes the deletion, and
serves `kubectl logs` through the kubelet API.

Each pod gets `<workdir>/<namespace>_<pod>_<uid>/` as its working directory, with one
`<container>.log` per container (stdout and stderr, appended across restarts).

A runner that starts over finds the processes of an earlier one gone, as after a node reboot:
containers that were running are reported terminated with exit code 137 and reason
ContainerStatusUnknown, then restarted per restartPolicy (a Never pod ends Failed).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import urllib3

from ferry_dev.nodeagent.kubeletapi import KubeletAPI
from ferry_dev.nodeagent.podapi import PodAPI
from ferry_dev.nodeagent.podstatus import TERMINAL_PHASES, now_iso
from ferry_dev.nodeagent.podworker import NodeSettings, PodWorker
from ferry_dev.pki import Pair
from ferry_dev.processes import ProcessRegistry

JSON = dict[str, Any]
log = logging.getLogger(__name__)

__all__ = ["PodRunner"]


def _default_env(api_server: str) -> dict[str, str]:
    # The installation's bin dir first, so that `ferry` and its Python resolve as in the image.
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", os.defpath)])
    address = urlsplit(api_server)
    return {
        "PATH": path,
        "HOME": "/tmp",
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "PYTHONUNBUFFERED": "1",
        # A work tree's code, where the agent was started with one (the installation's otherwise).
        **({"PYTHONPATH": os.environ["PYTHONPATH"]} if os.environ.get("PYTHONPATH") else {}),
        # What the kubelet sets from the `kubernetes` Service: in-cluster clients find the API server.
        "KUBERNETES_SERVICE_HOST": address.hostname or "127.0.0.1",
        "KUBERNETES_SERVICE_PORT": str(address.port or 443),
        "KUBERNETES_SERVICE_PORT_HTTPS": str(address.port or 443),
        # Pods run the code the stack runs: a source tree on PYTHONPATH comes before the installed package.
        **({"PYTHONPATH": os.environ["PYTHONPATH"]} if os.environ.get("PYTHONPATH") else {}),
    }


def node_status(port: int) -> JSON:
    return {
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": "localhost"}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
        "capacity": {"cpu": str(os.cpu_count() or 1), "memory": "16Gi", "pods": "1000"},
        "allocatable": {"cpu": str(os.cpu_count() or 1), "memory": "16Gi", "pods": "1000"},
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "KubeletReady",
                "message": "the node agent runs pods as local processes",
                "lastHeartbeatTime": now_iso(),
                "lastTransitionTime": now_iso(),
            }
        ],
        "nodeInfo": {
            "architecture": "amd64",
            "operatingSystem": "linux",
            "kubeletVersion": "ferry-node-agent",
            "containerRuntimeVersion": "local-process://1",
            "kernelVersion": os.uname().release,
            "osImage": "local processes",
            "machineID": "",
            "systemUUID": "",
            "bootID": "",
            "kubeProxyVersion": "",
        },
    }


class PodRunner:
    def __init__(
        self,
        kubeconfig: Path,
        workdir: Path,
        *,
        scheduler_kubeconfig: Path,
        api_server: str,
        serving: Pair,
        ca: Path,
        extra_env: Mapping[str, str] = {},
        entrypoint: Sequence[str] = ("ferry",),
        node_name: str = "ferry-local",
        max_grace_seconds: float = 30.0,
        restart_backoff_seconds: float = 10.0,
        registry: ProcessRegistry | None = None,
        keep_visible: Sequence[str] = (),
    ) -> None:
        self.kubeconfig = Path(kubeconfig)
        self.scheduler_kubeconfig = Path(scheduler_kubeconfig)
        self.workdir = Path(workdir)
        self._kubelet = KubeletAPI(serving, ca, self.log_path, self._is_running)
        self._node = NodeSettings(
            node_name=node_name,
            workdir=self.workdir,
            base_env={**_default_env(api_server), **extra_env},
            entrypoint=tuple(entrypoint),
            max_grace_seconds=max_grace_seconds,
            restart_backoff_seconds=restart_backoff_seconds,
            registry=registry,
            keep_visible=tuple(keep_visible),
        )
        self._api: PodAPI | None = None
        self._workers: dict[str, PodWorker] = {}
        self._gone: set[str] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._listed = threading.Event()
        self._stream: urllib3.HTTPResponse | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._api = PodAPI(self.kubeconfig, self.scheduler_kubeconfig)
        self._kubelet.start()
        labels = {"kubernetes.io/hostname": self._node.node_name, "kubernetes.io/os": "linux"}
        self._api.register_node(self._node.node_name, node_status(self._kubelet.port), labels)
        self._thread = threading.Thread(target=self._watch, name="podrunner-watch", daemon=True)
        self._thread.start()

    def wait_ready(self, timeout: float = 10.0) -> bool:
        """True once the first listing of pods has been taken in."""
        return self._listed.wait(timeout)

    def stop(self, grace: float = 2.0) -> None:
        """Stop watching and stop every pod's processes (SIGKILL after `grace` seconds)."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        stream = self._stream
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.shutdown()
        if self._thread is not None:
            self._thread.join(10.0)
        with self._lock:
            workers = list(self._workers.values())
        for worker in workers:
            worker.stop(grace)
        for worker in workers:
            worker.join(grace + 5.0)
        for worker in workers:
            worker.kill_now()  # whatever outlived its thread
        self._kubelet.stop()
        if self._api is not None:
            self._api.close()

    def _is_running(self, namespace: str, name: str) -> bool:
        worker = self._find(namespace, name)
        return worker is not None and bool(worker.live_processes())

    def process_pid(self, namespace: str, name: str) -> int | None:
        worker = self._find(namespace, name)
        processes = worker.live_processes() if worker else []
        return processes[0].pid if processes else None

    def kill_pod_process(self, namespace: str, name: str, sig: int = signal.SIGKILL) -> bool:
        """Signals a pod's process behind the API's back, as a crash would end it."""
        pid = self.process_pid(namespace, name)
        if pid is None:
            return False
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return False
        return True

    def log_path(self, namespace: str, name: str, container: str | None = None) -> Path | None:
        worker = self._find(namespace, name)
        if worker is not None:
            directory = worker.dir
            container = container or (worker.main[0].name if worker.main else None)
        else:
            # The pod may be gone already: its directory stays.
            candidates = sorted(self.workdir.glob(f"{namespace}_{name}_*"), key=lambda p: p.stat().st_mtime)
            if not candidates:
                return None
            directory = candidates[-1]
            if container is None:
                logs = sorted(directory.glob("*.log"))
                return logs[0] if logs else None
        return directory / f"{container}.log" if container else None

    def _find(self, namespace: str, name: str) -> PodWorker | None:
        with self._lock:
            found = [w for w in self._workers.values() if w.namespace == namespace and w.name == name]
        return found[-1] if found else None

    def _watch(self) -> None:
        assert self._api is not None
        version: str | None = None
        while not self._stopping.is_set():
            try:
                if version is None:
                    version = self._relist()
                stream = self._stream = self._api.watch_pods(version)
                if self._stopping.is_set():
                    break
                try:
                    for event in self._api.iter_events(stream):
                        version = self._on_event(event, version)
                        if version is None:
                            break
                finally:
                    self._stream = None
                    stream.release_conn()
            except Exception as exc:
                if self._stopping.is_set():
                    break
                log.warning("pod watch interrupted, listing again: %s", exc)
                version = None
                self._stopping.wait(1.0)

    def _relist(self) -> str:
        assert self._api is not None
        listing = self._api.list_pods()
        items: list[JSON] = listing.get("items") or []
        for pod in items:
            self._observe(pod)
        present = {pod["metadata"].get("uid") for pod in items}
        with self._lock:
            vanished = [w for uid, w in self._workers.items() if uid not in present]
        for worker in vanished:
            worker.mark_deleted()
        self._listed.set()
        return str((listing.get("metadata") or {}).get("resourceVersion") or "")

    def _on_event(self, event: JSON, version: str) -> str | None:
        """Returns the resourceVersion to resume from, None when the watch must start over."""
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            log.info("pod watch expired (%s), listing again", obj.get("message"))
            return None
        new_version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
        if kind == "DELETED":
            with self._lock:
                worker = self._workers.get(obj["metadata"].get("uid"))
            if worker is not None:
                worker.mark_deleted(obj)
        elif kind in ("ADDED", "MODIFIED"):
            self._observe(obj)
        return new_version

    def _observe(self, pod: JSON) -> None:
        meta, spec = pod["metadata"], pod.get("spec") or {}
        if spec.get("nodeName") not in (None, "", self._node.node_name):
            return
        uid = meta.get("uid")
        with self._lock:
            self._reap_finished()
            worker = self._workers.get(uid)
            if worker is not None:
                worker.update(pod)
                return
            finished = (pod.get("status") or {}).get("phase") in TERMINAL_PHASES
            if self._stopping.is_set() or uid in self._gone or (finished and not meta.get("deletionTimestamp")):
                return
            assert self._api is not None
            worker = PodWorker(self._api, pod, self._node)
            self._workers[worker.uid] = worker
        worker.start()

    def _reap_finished(self) -> None:
        for uid, worker in list(self._workers.items()):
            if worker.done.is_set():
                del self._workers[uid]
                self._gone.add(uid)
