"""The kubernetes python client against the API emulator."""

from __future__ import annotations

import pathlib
import sys
import threading
from typing import Any

import kubernetes
import pytest
import yaml
from kubernetes.client.rest import ApiException

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from kubeapi_fixtures import TEST_CRD, WIDGET, k8s_client, kubeapi_url, kubeconfig, wait_for

__all__ = ["k8s_client", "kubeapi_url", "kubeconfig"]
G, V, P = "test.ferry.dev", "v1", "widgets"


@pytest.fixture
def crs(k8s_client: Any) -> kubernetes.client.CustomObjectsApi:
    ext = kubernetes.client.ApiextensionsV1Api(k8s_client)
    ext.create_custom_resource_definition(yaml.safe_load(TEST_CRD))
    return kubernetes.client.CustomObjectsApi(k8s_client)


def widget(name: str, **spec: Any) -> dict[str, Any]:
    return {**WIDGET, "metadata": {"name": name}, "spec": {"source": "s", "mode": "Stream", **spec}}


def test_crud_generation_and_resource_versions(crs: kubernetes.client.CustomObjectsApi) -> None:
    created = crs.create_namespaced_custom_object(G, V, "default", P, widget("a"))
    meta = created["metadata"]
    assert len(meta["uid"]) == 36 and meta["generation"] == 1 and meta["creationTimestamp"].endswith("Z")
    rv1 = int(meta["resourceVersion"])
    patched = crs.patch_namespaced_custom_object(G, V, "default", P, "a", {"spec": {"replicas": 2}})
    assert int(patched["metadata"]["resourceVersion"]) > rv1
    assert patched["metadata"]["generation"] == 2
    labelled = crs.patch_namespaced_custom_object(G, V, "default", P, "a", {"metadata": {"labels": {"x": "y"}}})
    assert labelled["metadata"]["generation"] == 2
    status = crs.patch_namespaced_custom_object_status(
        G, V, "default", P, "a", {"status": {"phase": "Running"}, "spec": {"replicas": 5}}
    )
    assert status["status"] == {"phase": "Running"} and status["spec"]["replicas"] == 2
    assert status["metadata"]["generation"] == 2
    main = crs.patch_namespaced_custom_object(G, V, "default", P, "a", {"status": {"phase": "Hacked"}})
    assert main["status"] == {"phase": "Running"}
    # A no-op patch changes nothing, not even the resourceVersion.
    same = crs.patch_namespaced_custom_object(G, V, "default", P, "a", {"spec": {"replicas": 2}})
    assert same["metadata"]["resourceVersion"] == main["metadata"]["resourceVersion"]


def test_conflicts_and_errors(crs: kubernetes.client.CustomObjectsApi) -> None:
    obj = crs.create_namespaced_custom_object(G, V, "default", P, widget("a"))
    with pytest.raises(ApiException) as e:
        crs.create_namespaced_custom_object(G, V, "default", P, widget("a"))
    assert e.value.status == 409 and '"reason":"AlreadyExists"' in e.value.body.replace(" ", "")
    crs.patch_namespaced_custom_object(G, V, "default", P, "a", {"spec": {"replicas": 3}})
    obj["spec"]["replicas"] = 4
    with pytest.raises(ApiException) as e:
        crs.replace_namespaced_custom_object(G, V, "default", P, "a", obj)
    assert e.value.status == 409 and "the object has been modified" in e.value.body
    with pytest.raises(ApiException) as e:
        crs.get_namespaced_custom_object(G, V, "default", P, "nope")
    assert e.value.status == 404 and 'widgets.test.ferry.dev \\"nope\\" not found' in e.value.body
    with pytest.raises(ApiException) as e:
        crs.create_namespaced_custom_object(G, V, "default", P, widget("b", replicas=0, mode="X"))
    assert e.value.status == 422
    assert "spec.replicas" in e.value.body and "spec.mode" in e.value.body and '"causes"' in e.value.body


def test_generate_name_pruning_defaulting_int_or_string(crs: kubernetes.client.CustomObjectsApi) -> None:
    body = widget("", port="http", extra={"any": {"thing": 1}}, unknown=1)
    body["metadata"] = {"generateName": "w-"}
    body["status"] = {"phase": "ignored-on-create"}
    obj = crs.create_namespaced_custom_object(G, V, "default", P, body)
    assert obj["metadata"]["name"].startswith("w-") and len(obj["metadata"]["name"]) == 7
    assert "unknown" not in obj["spec"] and obj["spec"]["extra"] == {"any": {"thing": 1}}
    assert obj["spec"]["replicas"] == 1 and obj["spec"]["port"] == "http"
    assert "status" not in obj
    with pytest.raises(ApiException):
        crs.create_namespaced_custom_object(G, V, "default", P, widget("x", port=1.5))


def test_list_selectors_pagination(crs: kubernetes.client.CustomObjectsApi) -> None:
    for i in range(5):
        body = widget(f"w{i}")
        body["metadata"]["labels"] = {"idx": str(i), "even": str(i % 2 == 0).lower()}
        crs.create_namespaced_custom_object(G, V, "default", P, body)

    def names(**kw: Any) -> list[str]:
        return [o["metadata"]["name"] for o in crs.list_namespaced_custom_object(G, V, "default", P, **kw)["items"]]

    assert names(label_selector="even=true") == ["w0", "w2", "w4"]
    assert names(label_selector="even!=true") == ["w1", "w3"]
    assert names(label_selector="idx in (1,3),even") == ["w1", "w3"]
    assert names(label_selector="idx notin (1,3)") == ["w0", "w2", "w4"]
    assert names(label_selector="!even") == []
    assert names(field_selector="metadata.name=w2") == ["w2"]
    assert names(field_selector="metadata.namespace!=default") == []
    page = crs.list_namespaced_custom_object(G, V, "default", P, limit=2)
    assert len(page["items"]) == 2 and page["metadata"]["continue"]
    rest = crs.list_namespaced_custom_object(G, V, "default", P, limit=10, _continue=page["metadata"]["continue"])
    assert [o["metadata"]["name"] for o in rest["items"]] == ["w2", "w3", "w4"]
    assert int(rest["metadata"]["resourceVersion"]) > 0
    assert len(crs.list_cluster_custom_object(G, V, P)["items"]) == 5


def test_watch_from_resource_version(crs: kubernetes.client.CustomObjectsApi) -> None:
    crs.create_namespaced_custom_object(G, V, "default", P, widget("a"))
    rv = crs.list_namespaced_custom_object(G, V, "default", P)["metadata"]["resourceVersion"]
    crs.patch_namespaced_custom_object(G, V, "default", P, "a", {"spec": {"replicas": 2}})
    crs.delete_namespaced_custom_object(G, V, "default", P, "a")
    events = list(
        kubernetes.watch.Watch().stream(
            crs.list_namespaced_custom_object, G, V, "default", P, resource_version=rv, timeout_seconds=1
        )
    )
    assert [(e["type"], e["object"]["spec"]["replicas"]) for e in events] == [("MODIFIED", 2), ("DELETED", 2)]


def test_gc_of_owned_pods_and_namespace_deletion(crs: kubernetes.client.CustomObjectsApi, k8s_client: Any) -> None:
    core = kubernetes.client.CoreV1Api(k8s_client)
    owner = crs.create_namespaced_custom_object(G, V, "default", P, widget("owner"))
    ref = {"apiVersion": "test.ferry.dev/v1", "kind": "Widget", "name": "owner", "uid": owner["metadata"]["uid"]}
    pod = {"metadata": {"name": "p", "ownerReferences": [ref]}, "spec": {"containers": [{"name": "c", "image": "i"}]}}
    core.create_namespaced_pod("default", pod)
    core.create_namespaced_pod("default", {**pod, "metadata": {"name": "free"}})
    assert core.read_namespaced_pod("p", "default").status.phase == "Pending"
    pending = core.list_namespaced_pod("default", field_selector="status.phase=Pending").items
    assert [p.metadata.name for p in pending] == ["free", "p"]
    crs.delete_namespaced_custom_object(G, V, "default", P, "owner")
    wait_for(lambda: [p.metadata.name for p in core.list_namespaced_pod("default").items] == ["free"])

    core.create_namespace({"metadata": {"name": "gone"}})
    core.create_namespaced_config_map("gone", {"metadata": {"name": "cm"}})
    core.delete_namespace("gone")
    with pytest.raises(ApiException) as e:
        core.read_namespace("gone")
    assert e.value.status == 404
    assert core.list_config_map_for_all_namespaces(field_selector="metadata.namespace=gone").items == []


def test_secret_string_data_and_strategic_merge(k8s_client: Any) -> None:
    core = kubernetes.client.CoreV1Api(k8s_client)
    secret = core.create_namespaced_secret("default", {"metadata": {"name": "s"}, "stringData": {"k": "v"}})
    assert secret.data == {"k": "dg=="} and secret.string_data is None
    pod = {
        "metadata": {"name": "p"},
        "spec": {
            "containers": [
                {"name": "a", "image": "x", "env": [{"name": "A", "value": "1"}]},
                {"name": "b", "image": "y"},
            ]
        },
    }
    core.create_namespaced_pod("default", pod)
    patched = core.patch_namespaced_pod(
        "p", "default", {"spec": {"containers": [{"name": "a", "env": [{"name": "B", "value": "2"}]}]}}
    )
    containers = {c.name: c for c in patched.spec.containers}
    assert set(containers) == {"a", "b"} and containers["a"].image == "x"
    assert [e.name for e in containers["a"].env] == ["A", "B"]


def test_finalizers_block_deletion_until_removed(crs: kubernetes.client.CustomObjectsApi) -> None:
    body = widget("f")
    body["metadata"]["finalizers"] = ["test/f"]
    crs.create_namespaced_custom_object(G, V, "default", P, body)
    deleting = crs.delete_namespaced_custom_object(G, V, "default", P, "f")
    assert deleting["metadata"]["deletionTimestamp"]
    assert crs.get_namespaced_custom_object(G, V, "default", P, "f")["metadata"]["deletionTimestamp"]
    crs.patch_namespaced_custom_object(G, V, "default", P, "f", {"metadata": {"finalizers": []}})
    with pytest.raises(ApiException) as e:
        crs.get_namespaced_custom_object(G, V, "default", P, "f")
    assert e.value.status == 404


def test_concurrent_watches(crs: kubernetes.client.CustomObjectsApi) -> None:
    results: list[int] = []

    def watch() -> None:
        stream = kubernetes.watch.Watch().stream(crs.list_cluster_custom_object, G, V, P, timeout_seconds=2)
        results.append(sum(1 for _ in stream))

    threads = [threading.Thread(target=watch) for _ in range(10)]
    for t in threads:
        t.start()
    for i in range(3):
        crs.create_namespaced_custom_object(G, V, "default", P, widget(f"c{i}"))
    for t in threads:
        t.join(timeout=5)
    assert results == [3] * 10
