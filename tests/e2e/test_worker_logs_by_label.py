"""`kubectl logs -l app.kubernetes.io/name=ferry` finds Ferry's worker pods, as the chart's own label for the
operator suggests; the component tells their roles apart."""

from __future__ import annotations

import json

import yaml

from ferry_dev.install import RELEASE
from ferry_dev.stack import DevStack
from support.kubectl import Kubectl


def test_worker_pods_are_found_by_the_recommended_labels(stack: DevStack, kubectl: Kubectl) -> None:
    assert stack.cosmos is not None
    kubectl("create", "secret", "generic", "cosmos-key", f"--from-literal=primaryKey={stack.cosmos.endpoint.key}")
    body = {
        "apiVersion": "ferry.dev/v1alpha1",
        "kind": "DatabaseAccount",
        "metadata": {"name": "acct"},
        "spec": {
            "endpoint": stack.cosmos.endpoint.endpoint,
            "insecureSkipTLSVerify": True,
            "credentials": {"secretRef": {"name": "cosmos-key", "key": "primaryKey"}},
            "regionPollInterval": "2s",
        },
    }
    kubectl.apply(yaml.safe_dump(body))
    kubectl.wait_condition("databaseaccount", "acct", "Ready", timeout=90)

    release = f"app.kubernetes.io/name=ferry,app.kubernetes.io/instance={RELEASE}"
    pods = json.loads(kubectl("get", "pods", "-l", release, "-o", "json"))["items"]
    assert [p["metadata"]["name"] for p in pods] == ["acct-monitor-0"]
    labels = pods[0]["metadata"]["labels"]
    assert labels["app.kubernetes.io/component"] == "monitor"
    assert labels["app.kubernetes.io/part-of"] == "ferry" and labels["app.kubernetes.io/managed-by"] == "ferry"
    logs = kubectl("logs", "-l", f"{release},app.kubernetes.io/component=monitor", "--prefix")
    assert "acct-monitor-0" in logs and "write region" in logs, logs
