"""The real kubectl against the API emulator."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import threading
import time

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from kubeapi_fixtures import (
    Kubectl,
    install_test_crd,
    k8s_client,
    kubeapi_url,
    kubeconfig,
    kubectl,
)

__all__ = ["k8s_client", "kubeapi_url", "kubeconfig", "kubectl"]
pytestmark = pytest.mark.e2e

CR = """
apiVersion: test.ferry.dev/v1
kind: Widget
metadata:
  name: w1
spec:
  source: {source}
  mode: {mode}
"""


def apply_cr(
    kubectl: Kubectl, source: str = "a", mode: str = "Stream", check: bool = True
) -> subprocess.CompletedProcess[str]:
    return kubectl.run("apply", "-f", "-", input=CR.format(source=source, mode=mode), check=check)


def test_crd_apply_wait_and_cr_apply_cycle(kubectl: Kubectl) -> None:
    install_test_crd(kubectl)
    assert "created" in apply_cr(kubectl).stdout
    assert "unchanged" in apply_cr(kubectl).stdout
    assert "configured" in apply_cr(kubectl, mode="ServerSide").stdout
    obj = json.loads(kubectl.run("get", "widget", "w1", "-o", "json").stdout)
    assert obj["spec"] == {"source": "a", "mode": "ServerSide", "replicas": 1}
    assert obj["metadata"]["generation"] == 2


def test_get_printer_columns_shortnames_categories(kubectl: Kubectl) -> None:
    install_test_crd(kubectl)
    apply_cr(kubectl)
    for what in ("widgets", "wdg", "ferry", "widgets.test.ferry.dev"):
        out = kubectl.run("get", what).stdout.splitlines()
        assert out[0].split() == ["NAME", "MODE", "PHASE", "AGE"], out
        assert out[1].split()[:2] == ["w1", "Stream"]
    assert kubectl.run("get", "wdg", "-o", "name").stdout.strip() == "widget.test.ferry.dev/w1"
    assert "kind: Widget" in kubectl.run("get", "wdg", "w1", "-o", "yaml").stdout
    assert "w1" in kubectl.run("get", "wdg", "-o", "wide", "-A").stdout
    assert "Source:" in kubectl.run("describe", "widget", "w1").stdout


def test_invalid_crs_are_rejected_with_clear_messages(kubectl: Kubectl) -> None:
    install_test_crd(kubectl)
    bad = apply_cr(kubectl, mode="X", check=False)
    assert bad.returncode != 0
    assert 'spec.mode: Unsupported value: "X": supported values: "ServerSide", "Stream"' in bad.stderr
    missing = kubectl.run(
        "apply", "-f", "-", check=False, input=CR.format(source="a", mode="Stream").replace("  mode: Stream\n", "")
    )
    assert "spec.mode: Required value" in missing.stderr
    apply_cr(kubectl)
    immutable = apply_cr(kubectl, source="b", check=False)
    assert 'spec.source: Invalid value: "string": source is immutable' in immutable.stderr
    unknown = kubectl.run("apply", "-f", "-", check=False, input=CR.format(source="a", mode="Stream") + "  foo: 1\n")
    assert 'unknown field "spec.foo"' in unknown.stderr


def test_secret_configmap_namespace_creation(kubectl: Kubectl) -> None:
    kubectl.run("create", "secret", "generic", "s", "--from-literal=k=v")
    secret = json.loads(kubectl.run("get", "secret", "s", "-o", "json").stdout)
    assert secret["data"] == {"k": "dg=="} and secret["type"] == "Opaque"
    kubectl.run("create", "configmap", "cm", "--from-literal=a=b")
    kubectl.run("create", "namespace", "other")
    namespaces = kubectl.run("get", "ns").stdout.splitlines()
    assert namespaces[0].split() == ["NAME", "STATUS", "AGE"]
    assert any(line.split()[:2] == ["other", "Active"] for line in namespaces)
    dup = kubectl.run("create", "configmap", "cm", "--from-literal=a=b", check=False)
    assert 'configmaps "cm" already exists' in dup.stderr
    cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm2}\ndata: {a: '1'}\n"
    kubectl.run("apply", "-f", "-", input=cm)
    assert "configured" in kubectl.run("apply", "-f", "-", input=cm.replace("'1'", "'2'")).stdout


def test_patch_and_label(kubectl: Kubectl) -> None:
    install_test_crd(kubectl)
    apply_cr(kubectl)
    kubectl.run("patch", "widget", "w1", "--type=merge", "-p", '{"spec":{"replicas":3}}')
    kubectl.run("patch", "widget", "w1", "--type=json", "-p", '[{"op":"test","path":"/spec/replicas","value":3}]')
    kubectl.run("label", "widget", "w1", "team=data")
    assert "w1" in kubectl.run("get", "widgets", "-l", "team=data", "-o", "name").stdout
    assert kubectl.run("get", "widgets", "-l", "team!=data", "-o", "name").stdout.strip() == ""
    strategic = kubectl.run("patch", "widget", "w1", "-p", '{"spec":{"replicas":2}}', check=False)
    assert "is not supported" in strategic.stderr


def test_wait_for_jsonpath_patched_by_another_client(kubectl: Kubectl, k8s_client: object) -> None:
    import kubernetes

    install_test_crd(kubectl)
    apply_cr(kubectl)
    api = kubernetes.client.CustomObjectsApi(k8s_client)  # type: ignore[arg-type]

    def later() -> None:
        time.sleep(0.5)
        api.patch_namespaced_custom_object_status(
            "test.ferry.dev", "v1", "default", "widgets", "w1", {"status": {"phase": "Done"}}
        )

    threading.Thread(target=later, daemon=True).start()
    kubectl.run("wait", "--for=jsonpath={.status.phase}=Done", "widget/w1", "--timeout=5s")
    assert "Done" in kubectl.run("get", "widgets").stdout


def test_delete_waits_for_finalizer_removal(kubectl: Kubectl, k8s_client: object) -> None:
    import kubernetes

    install_test_crd(kubectl)
    apply_cr(kubectl)
    kubectl.run("patch", "widget", "w1", "--type=merge", "-p", '{"metadata":{"finalizers":["test/x"]}}')
    api = kubernetes.client.CustomObjectsApi(k8s_client)  # type: ignore[arg-type]
    proc = kubectl.popen("delete", "widget", "w1", "--timeout=8s")
    time.sleep(0.7)
    obj = api.get_namespaced_custom_object("test.ferry.dev", "v1", "default", "widgets", "w1")
    assert obj["metadata"]["deletionTimestamp"]
    assert proc.poll() is None  # still waiting
    api.patch_namespaced_custom_object(
        "test.ferry.dev", "v1", "default", "widgets", "w1", {"metadata": {"finalizers": None}}
    )
    out, err = proc.communicate(timeout=8)
    assert proc.returncode == 0, err
    assert "deleted" in out
    assert "NotFound" in kubectl.run("get", "widget", "w1", check=False).stderr


def test_get_watch_streams_changes(kubectl: Kubectl) -> None:
    install_test_crd(kubectl)
    apply_cr(kubectl)
    proc = kubectl.popen("get", "widgets", "-w", "--request-timeout=3s")
    time.sleep(0.7)
    kubectl.run("patch", "widget", "w1", "--type=merge", "-p", '{"spec":{"mode":"ServerSide"}}')
    time.sleep(0.5)
    proc.terminate()
    out, _ = proc.communicate(timeout=5)
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["NAME", "MODE"]
    assert any("ServerSide" in line for line in lines[1:]), out


def test_pods_table_describe_and_crd_deletion(kubectl: Kubectl) -> None:
    pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p1}\nspec: {containers: [{name: c, image: busybox}]}\n"
    kubectl.run("apply", "-f", "-", input=pod)
    header = kubectl.run("get", "pods").stdout.splitlines()[0].split()
    assert header == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert "Pending" in kubectl.run("get", "pods").stdout
    assert "busybox" in kubectl.run("describe", "pod", "p1").stdout
    kubectl.run("logs", "p1")
    install_test_crd(kubectl)
    apply_cr(kubectl)
    kubectl.run("delete", "crd", "widgets.test.ferry.dev")
    assert kubectl.run("get", "widgets", check=False).returncode != 0


def test_explain_and_api_resources(kubectl: Kubectl) -> None:
    install_test_crd(kubectl)
    assert "mode" in kubectl.run("explain", "widget.spec").stdout
    resources = kubectl.run("api-resources").stdout
    assert "widgets" in resources and "wdg" in resources and "customresourcedefinitions" in resources
    assert kubectl.run("version").returncode == 0
