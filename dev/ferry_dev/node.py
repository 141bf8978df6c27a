"""A real node for the local stack: containerd (with runc and the CNI plugins, from Debian) and the kubelet and
kube-scheduler built from the pinned Kubernetes module.

Everything belongs to one stack directory: containerd's root and state, the CNI configuration and its address
store, the kubelet's pod logs, and a cgroup root of its own (/ferry-<id>) in every hierarchy; the unix sockets
and the kubelet's root are under /var/lib/ferry-dev/<id> (a socket's path is short). So two stacks run side by
side, and `cleanup()` finds all of a stack's leftovers (shims, containers, mounts, network namespaces,
cgroups) even after the stack was SIGKILLed.

Pinned: containerd 1.6 (Debian bookworm). The kubelet warns that it lacks the RuntimeConfig call (its
cgroup-driver report), which kubelet 1.38 plans to require.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import yaml

from ferry_dev import network as net
from ferry_dev.binaries import Binaries, kubectl
from ferry_dev.emulators import HttpReady, free_port, wait_until
from ferry_dev.images import Image
from ferry_dev.lifecycle import Service
from ferry_dev.pki import Pair
from ferry_dev.processes import ChildProcess, ProcessRegistry

CNI_BIN = Path("/usr/lib/cni")
READY_TIMEOUT = 60.0
NAMESPACE = "k8s.io"  # containerd's namespace for the CRI
RUNTIME = Path("/var/lib/ferry-dev")
NODE_DIR = "node"  # the node's folder in the stack's directory
CRASH_LOOP_BACK_OFF = 2  # seconds: the kubelet's crashLoopBackOff.maxContainerRestartPeriod


def runtime_dir(stack_dir: Path) -> Path:
    """Where the node keeps its unix sockets: containerd's, and the kubelet's root (pod-resources, plugins). A
    socket's path has at most 107 bytes, fewer than a test's stack directory leaves."""
    return RUNTIME / net.stack_id(stack_dir)


def socket_path(stack_dir: Path) -> Path:
    return runtime_dir(stack_dir) / "containerd.sock"


def cgroup_root(stack_dir: Path) -> str:
    """The kubelet's cgroup root: every pod of the stack, and nothing else, is below it."""
    return f"/ferry-{net.stack_id(stack_dir)}"


def _cgroup_hierarchies() -> list[Path]:
    """The mounted cgroup v1 hierarchies (cpu, memory, pids, …, name=systemd)."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        if right.split()[0] == "cgroup":
            found.append(Path(left.split()[4]))
    return found


def _cgroup_dirs(root: str) -> list[Path]:
    """The cgroup `root` in every hierarchy (whether it exists or not)."""
    return [hierarchy / root.lstrip("/") for hierarchy in _cgroup_hierarchies()]


def _processes(root: str) -> set[int]:
    """Every process in the cgroup `root` or below it, in any hierarchy."""
    pids: set[int] = set()
    # os.walk skips a cgroup removed while it is walked (a container ending meanwhile); rglob raised.
    for folder in _cgroup_dirs(root):
        for path, _, files in os.walk(folder):
            if "cgroup.procs" in files:
                with contextlib.suppress(OSError, ValueError):
                    pids.update(int(line) for line in Path(path, "cgroup.procs").read_text().split())
    return pids


class Node(Service):
    def __init__(
        self,
        directory: Path,
        binaries: Binaries,
        network: net.Network,
        *,
        node_name: str,
        kubeconfig: Path,
        scheduler_kubeconfig: Path,
        ca: Path,
        serving: Pair,
        images: list[Image],
        sandbox_image: str,
        registry: ProcessRegistry | None = None,
    ) -> None:
        self.dir = directory
        self.binaries = binaries
        self.network = network
        self.node_name = node_name
        self.kubeconfig = kubeconfig
        self.scheduler_kubeconfig = scheduler_kubeconfig
        self.ca = ca
        self.serving = serving
        self.images = images
        self.sandbox_image = sandbox_image
        self.cgroup_root = cgroup_root(directory.parent)
        self.containerd = ChildProcess("containerd", self.dir / "containerd.log", registry)
        self.kubelet = ChildProcess("kubelet", self.dir / "kubelet.log", registry)
        self.scheduler = ChildProcess("kube-scheduler", self.dir / "kube-scheduler.log", registry)

    @property
    def socket(self) -> Path:
        return socket_path(self.dir.parent)

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._cgroups()
        self._start_containerd()
        self._import_images()
        self._start_kubelet()
        self._start_scheduler()

    def ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """containerd's own client on this node's socket, in the CRI's namespace."""
        done = subprocess.run(
            ["ctr", "--address", str(self.socket), "--namespace", NAMESPACE, *args], capture_output=True, text=True
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"ctr {' '.join(args)}: {done.stderr.strip()}")
        return done

    def _cgroups(self) -> None:
        # The kubelet requires its cgroup root to exist in every hierarchy; cpuset's must get cpus and mems first.
        for path in _cgroup_dirs(self.cgroup_root):
            path.mkdir(exist_ok=True)
            if path.parent.name == "cpuset":
                for name in ("cpuset.cpus", "cpuset.mems"):
                    (path / name).write_text((path.parent / name).read_text())

    def _start_containerd(self) -> None:
        base = self.dir / "containerd"
        cni = self.dir / "cni"
        cni.mkdir(parents=True, exist_ok=True)
        conflist = {
            "cniVersion": "0.4.0",
            "name": self.network.bridge,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.network.bridge,
                    "isGateway": True,
                    "isDefaultGateway": True,  # pods reach the host (and through the DNAT rule, the API server)
                    "ipMasq": False,  # pods talk to this machine's servers only
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": self.network.subnet, "gateway": self.network.gateway}]],
                        "dataDir": str(self.dir / "ipam"),
                    },
                }
            ],
        }
        (cni / "10-ferry.conflist").write_text(json.dumps(conflist, indent=2))
        config = f"""version = 2
root = "{base / "root"}"
state = "{base / "state"}"
[grpc]
  address = "{self.socket}"
[ttrpc]
  address = "{self.socket}.ttrpc"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{base / "opt"}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{self.sandbox_image}"
  # Root here lacks CAP_SYS_RESOURCE: without this, runc fails to lower its own oom_score_adj for every sandbox.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{cni}"
"""
        base.mkdir(parents=True, exist_ok=True)
        self.socket.parent.mkdir(parents=True, exist_ok=True)
        (base / "config.toml").write_text(config)
        self.containerd.spawn(["containerd", "--config", str(base / "config.toml")], os.environ, cwd=self.dir)
        wait_until(lambda: self.ctr("version", check=False).returncode == 0, self.containerd, "containerd", 30.0)

    def _import_images(self) -> None:
        for image in self.images:
            self.ctr("images", "import", "--no-unpack", str(image.archive))

    def _start_kubelet(self) -> None:
        healthz = free_port("127.0.0.1")
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": self.network.gateway,
            "port": free_port(self.network.gateway),
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": healthz,
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(self.ca)},
            },
            "authorization": {"mode": "Webhook"},
            "tlsCertFile": str(self.serving.cert),
            "tlsPrivateKeyFile": str(self.serving.key),
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": self.cgroup_root,
            "failCgroupV1": False,  # this machine has cgroup v1 only
            "failSwapOn": False,
            "podLogsDir": str(self.dir / "pod-logs"),
            "resolvConf": "/etc/resolv.conf",
            "clusterDomain": "cluster.local",
            "maxPods": 250,
            "serializeImagePulls": False,
            # A machine of tests, not a node to protect: evict only when memory or disk are nearly gone.
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
            # Crash-loop back-off capped at 2 s (10 s doubling to 5 min by default; the setting is beta and on since
            # 1.35): the tests kill workers on purpose, many times.
            "crashLoopBackOff": {"maxContainerRestartPeriod": f"{CRASH_LOOP_BACK_OFF}s"},
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
        }
        path = self.dir / "kubelet.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        argv = [
            str(self.binaries.path("kubelet")),
            f"--config={path}",
            f"--kubeconfig={self.kubeconfig}",
            f"--root-dir={runtime_dir(self.dir.parent) / 'kubelet'}",
            f"--hostname-override={self.node_name}",
            f"--node-ip={self.network.gateway}",
            "--v=1",
        ]
        self.kubelet.spawn(argv, os.environ, cwd=self.dir)
        wait_until(HttpReady(f"http://127.0.0.1:{healthz}/healthz"), self.kubelet, "kubelet", READY_TIMEOUT)

    def _start_scheduler(self) -> None:
        kubeconfig = str(self.scheduler_kubeconfig)
        argv = [
            str(self.binaries.path("kube-scheduler")),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={free_port('127.0.0.1')}",
            "--leader-elect=false",
            "--v=1",
        ]
        self.scheduler.spawn(argv, os.environ, cwd=self.dir)
        time.sleep(0.2)
        if not self.scheduler.running:
            raise RuntimeError(f"kube-scheduler exited:\n{self.scheduler.log_tail()}")

    def wait_ready(self, kubeconfig: Path, timeout: float = READY_TIMEOUT) -> None:
        """Until the API server has the node Ready."""
        argv = [kubectl(), "--kubeconfig", str(kubeconfig), "wait", "--for=condition=Ready", f"node/{self.node_name}"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if subprocess.run([*argv, "--timeout=5s"], capture_output=True).returncode == 0:
                return
            if not self.kubelet.running:
                raise RuntimeError(f"the kubelet exited:\n{self.kubelet.log_tail()}")
            time.sleep(0.5)
        raise TimeoutError(f"node {self.node_name} not Ready after {timeout:.0f}s; see {self.kubelet.log_path}")

    def kill_container(self, container_id: str, sig: int = signal.SIGKILL) -> bool:
        """Signal a container's main process (`containerd://<id>` of a pod's status) as the kernel would."""
        task = container_id.removeprefix("containerd://")
        return self.ctr("tasks", "kill", "--signal", signal.Signals(sig).name, task, check=False).returncode == 0

    def task_pid(self, container_id: str) -> int | None:
        """The host's pid of a container's main process (for /proc readings), or None when it does not run."""
        task = container_id.removeprefix("containerd://")
        for line in self.ctr("tasks", "ls", check=False).stdout.splitlines()[1:]:
            fields = line.split()
            if len(fields) >= 3 and fields[0] == task and fields[2] == "RUNNING":
                return int(fields[1])
        return None

    def stop(self) -> None:
        self.scheduler.stop()
        self.kubelet.stop()
        cleanup(self.dir.parent, containerd=self.containerd)


def _shims(socket: Path) -> list[int]:
    """containerd-shim processes serving the containerd at `socket` (they outlive containerd by design)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"containerd-shim-runc-v2") and str(socket).encode() in argv:
            found.append(int(proc.name))
    return found


def _kill(pids: set[int] | list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def cleanup(stack_dir: Path, containerd: ChildProcess | None = None) -> None:
    """Remove everything the node of the stack in `stack_dir` left: containers and their shims, containerd, mounts
    under the node's directories, the pods' network namespaces, the cgroups, the bridge and its rules."""
    stack_dir = stack_dir.resolve()
    socket, root = socket_path(stack_dir), cgroup_root(stack_dir)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        victims = _processes(root) | set(_shims(socket))
        if not victims:
            break
        _kill(victims)
        time.sleep(0.1)
    if containerd is not None:
        containerd.stop()
    network = net.Network.load(stack_dir / "network.json")
    if network is not None:
        for name in net.namespaces_on(network):
            subprocess.run(["ip", "netns", "delete", name], capture_output=True)
    _unmount_under(stack_dir / NODE_DIR)
    _unmount_under(runtime_dir(stack_dir))
    for top in (d for d in _cgroup_dirs(root) if d.is_dir()):
        for folder in [
            *sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True),
            top,
        ]:
            with contextlib.suppress(OSError):
                folder.rmdir()
    net.remove(stack_dir)
    shutil.rmtree(runtime_dir(stack_dir), ignore_errors=True)


def leftovers(stack_dir: Path, network: net.Network) -> list[str]:
    """What of the node of the stack in `stack_dir`, on `network`, still exists (nothing after `cleanup`):
    processes in its cgroups, shims, mounts, cgroups, network namespaces, the bridge, the DNAT rule."""
    stack_dir = stack_dir.resolve()
    node_dir, runtime, root = stack_dir / NODE_DIR, runtime_dir(stack_dir), cgroup_root(stack_dir)
    found = []
    if pids := _processes(root):
        found.append(f"{len(pids)} processes in {root}")
    if shims := _shims(socket_path(stack_dir)):
        found.append(f"{len(shims)} containerd shims")
    if mounts := _mounts_under(node_dir) + _mounts_under(runtime):
        found.append(f"{len(mounts)} mounts under {node_dir} and {runtime}")
    if runtime.exists():
        found.append(f"{runtime}")
    if cgroups := [str(d.parent) for d in _cgroup_dirs(root) if d.exists()]:
        found.append(f"cgroup {root} in {', '.join(cgroups)}")
    if namespaces := net.namespaces_on(network):
        found.append(f"network namespaces {', '.join(namespaces)}")
    if subprocess.run(["ip", "link", "show", network.bridge], capture_output=True).returncode == 0:
        found.append(f"bridge {network.bridge}")
    rules = subprocess.run(["iptables", "-w", "-t", "nat", "-S"], capture_output=True, text=True).stdout
    if network.comment in rules:
        found.append(f"iptables rule {network.comment}")
    return found


def _mounts_under(directory: Path) -> list[str]:
    prefix = str(directory.resolve()) + "/"
    points = [
        line.split()[4].encode().decode("unicode_escape")
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
    ]
    return [p for p in points if p.startswith(prefix)]


def _unmount_under(directory: Path) -> None:
    for _ in range(5):
        mine = sorted(_mounts_under(directory), key=len, reverse=True)
        if not mine:
            return
        for point in mine:
            subprocess.run(["umount", "--lazy", point], capture_output=True)
