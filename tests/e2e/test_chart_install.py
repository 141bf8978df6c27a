"""The chart, every option on, installed on the real control plane: the API server validates each object
against its OpenAPI schema (strict: an unknown field fails), the Prometheus Operator's own CRDs included."""

from __future__ import annotations

import uuid

import helm_python as helm
import pytest
import yaml

from ferry_dev.binaries import monitoring_crds
from ferry_dev.stack import DevStack
from support.kubectl import Kubectl
from support.monitoring import CHART

pytestmark = pytest.mark.e2e
RELEASE = "ferry-chart-test"  # cluster-scoped names carry it: nothing clashes with the stack's own install


def test_the_chart_installs_with_every_option(stack: DevStack) -> None:
    namespace = f"chart-{uuid.uuid4().hex[:8]}"
    admin = Kubectl(stack, namespace)
    for crd in monitoring_crds():
        admin("apply", "--server-side", "-f", str(crd))
    admin("wait", "--for=condition=Established", "crd/prometheusrules.monitoring.coreos.com", "--timeout=30s")
    admin("wait", "--for=condition=Established", "crd/servicemonitors.monitoring.coreos.com", "--timeout=30s")
    values = {
        "watchNamespaces": [namespace],
        "metrics": {
            "serviceMonitor": {"enabled": True},
            "prometheusRule": {"enabled": True},
            "grafanaDashboard": {"enabled": True},
        },
        "workers": {"allowLinkLocalSources": True},
        "imagePullSecrets": [{"name": "registry"}],
    }
    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(values, name=RELEASE, namespace=namespace, is_install=True)
    objects = [
        doc
        for path, text in sorted(manifests.items())
        if not path.endswith("NOTES.txt")
        for doc in yaml.safe_load_all(text)
        if doc
    ]
    kinds = {o["kind"] for o in objects}
    assert {"Deployment", "ServiceMonitor", "PrometheusRule", "ConfigMap", "ClusterRole", "RoleBinding"} <= kinds
    admin("create", "namespace", namespace)
    try:
        applied = admin("apply", "--server-side", "--field-manager=helm", "--validate=strict", "-f", "-",
                        stdin=yaml.safe_dump_all(objects))  # fmt: skip
        assert applied.count("serverside-applied") == len(objects), applied
        rule = admin("get", "prometheusrule", RELEASE, "-o", "yaml")
        assert "FerryJobStalled" in rule and "FerryOperatorDown" in rule
        board = admin("get", "configmap", f"{RELEASE}-dashboard", "-o", "jsonpath={.metadata.labels.grafana_dashboard}")
        assert board == "1"
        image = "jsonpath={.spec.template.spec.containers[0].image}"
        assert admin("get", "deployment", f"{RELEASE}-operator", "-o", image).startswith("ferry:")
    finally:
        admin.run("delete", "namespace", namespace, "--wait=false", check=False)
        mine = f"app.kubernetes.io/instance={RELEASE}"
        admin.run("delete", "clusterrole,clusterrolebinding", "-l", mine, check=False)
