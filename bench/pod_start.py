"""Pod start latency on the local stack's real node: from `create` to Running, as a worker pod of Ferry's image
starts, against the same image started by containerd alone (`ctr run`, no kubelet, no sandbox, no CNI) on the
same node in the same run.

Reports, for --pods pods one after another: the median and the slowest create→Running, the median of
`ctr run` of the same image to its first output, and their ratio (the kubelet's, the scheduler's and the
API server's share of a pod's start).

Run: .venv/bin/python bench/pod_start.py [--pods 20]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from ferry_dev.binaries import kubectl
from ferry_dev.stack import DevStack

NAMESPACE = "bench-pods"


def pod(image: str, name: str) -> dict[str, Any]:
    """A pod like Ferry's workers: its image, the restricted level, /tmp an emptyDir, a service-account token."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {
                    "name": "main",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": ["sleep", "600"],
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]},
                    },
                    "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                }
            ],
            "volumes": [{"name": "tmp", "emptyDir": {}}],
        },
    }


def time_pod(stack: DevStack, image: str) -> float:
    name = f"p-{uuid.uuid4().hex[:8]}"
    manifest = json.dumps(pod(image, name))
    started = time.monotonic()
    subprocess.run([kubectl(), "--kubeconfig", str(stack.kubeconfig), "create", "-f", "-"], input=manifest,
                   text=True, check=True, capture_output=True)  # fmt: skip
    while True:
        phase = stack.kubectl("get", "pod", name, "-n", NAMESPACE, "-o", "jsonpath={.status.phase}").stdout
        if phase == "Running":
            return time.monotonic() - started
        if time.monotonic() - started > 120:
            raise TimeoutError(f"pod {name} not Running after 120 s")
        time.sleep(0.05)


def time_ctr(stack: DevStack, image: str) -> float:
    assert stack.node is not None
    name = f"bench-{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    stack.node.ctr("run", "--rm", image, name, "sh", "-c", "echo up")
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--pods", type=int, default=20)
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()
    directory = Path(args.dir or tempfile.mkdtemp(prefix="ferry-pods-"))
    with DevStack(directory) as stack:
        assert stack.image is not None and stack.node is not None
        image = stack.image.reference
        stack.create_namespace(NAMESPACE)
        time_pod(stack, image)  # the image's first use unpacks it: not a pod start a user waits for twice
        pods = [time_pod(stack, image) for _ in range(args.pods)]
        bare = [time_ctr(stack, image) for _ in range(max(5, args.pods // 2))]
        print(f"stack ready in {stack.timings}")
        print(f"pod create→Running: median {statistics.median(pods):.2f}s, slowest {max(pods):.2f}s ({len(pods)} pods)")
        print(f"ctr run of the same image: median {statistics.median(bare):.2f}s ({len(bare)} runs)")
        print(f"pod_start_vs_ctr_run_ratio: {statistics.median(pods) / statistics.median(bare):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
