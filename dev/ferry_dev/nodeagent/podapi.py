"""The few Kubernetes API calls the pod runner makes, on plain JSON dicts.

Objects stay dicts (not client models) so that fields unknown to the client survive and status
patches can be sent as JSON merge patches, which replace lists wholesale as a kubelet's full
status write would.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import urllib3
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

JSON = dict[str, Any]

MERGE_PATCH = "application/merge-patch+json"
# Bounds every request so that a vanished API server cannot hang a pod's thread forever.
REQUEST_TIMEOUT = (5.0, 15.0)


def _client(kubeconfig: Path) -> kubernetes.client.ApiClient:
    client: kubernetes.client.ApiClient = kubernetes.config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(kubeconfig)
    )
    return client


class PodAPI:
    """Two identities, as in a cluster: the scheduler's sees every pod and binds the unscheduled ones; the
    node's (system:node:<name>, under the Node authorizer and NodeRestriction) does everything else."""

    def __init__(self, node_kubeconfig: Path, scheduler_kubeconfig: Path) -> None:
        self._client = _client(node_kubeconfig)
        self._scheduler = _client(scheduler_kubeconfig)

    def close(self) -> None:
        self._client.close()  # type: ignore[no-untyped-call]
        self._scheduler.close()  # type: ignore[no-untyped-call]

    def _send(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, Any]] | None = None,
        body: JSON | None = None,
        content_type: str = "application/json",
        timeout: tuple[float, float] = REQUEST_TIMEOUT,
        scheduler: bool = False,
    ) -> urllib3.HTTPResponse:
        """One request, its response left unread; errors raise ApiException as the client's own calls do."""
        headers = {"Accept": "application/json", "Content-Type": content_type}
        api = self._scheduler if scheduler else self._client
        request = api.param_serialize(
            method, path, query_params=query or [], header_params=headers, body=body, auth_settings=["BearerToken"]
        )
        response = api.call_api(*request, _request_timeout=timeout)
        raw: urllib3.HTTPResponse = response.response
        if not 200 <= response.status <= 299:
            text = raw.data.decode(errors="replace")
            raise ApiException.from_response(http_resp=response, body=text, data=None)
        return raw

    def request(self, method: str, path: str, **kwargs: Any) -> JSON:
        """Any API request with a JSON answer; keyword arguments as for `_send`."""
        raw = self._send(method, path, **kwargs)
        try:
            data: JSON = json.loads(raw.data or b"{}")
            return data
        finally:
            raw.release_conn()

    def list_pods(self) -> JSON:
        return self.request("GET", "/api/v1/pods", scheduler=True)

    def watch_pods(self, resource_version: str) -> urllib3.HTTPResponse:
        """Opens a watch stream; read it with `iter_events`, interrupt it with `resp.shutdown()`."""
        query: list[tuple[str, Any]] = [("watch", "true"), ("allowWatchBookmarks", "true"), ("timeoutSeconds", 300)]
        if resource_version:
            query.append(("resourceVersion", resource_version))
        return self._send("GET", "/api/v1/pods", query=query, timeout=(5.0, 330.0), scheduler=True)

    @staticmethod
    def iter_events(resp: urllib3.HTTPResponse) -> Iterator[JSON]:
        for line in iter_resp_lines(resp):  # type: ignore[no-untyped-call]
            if line.strip():
                event: JSON = json.loads(line)
                yield event

    def _read_or_none(self, path: str) -> JSON | None:
        try:
            return self.request("GET", path)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def read_pod(self, namespace: str, name: str) -> JSON | None:
        return self._read_or_none(f"/api/v1/namespaces/{namespace}/pods/{name}")

    def read_secret(self, namespace: str, name: str) -> JSON | None:
        return self._read_or_none(f"/api/v1/namespaces/{namespace}/secrets/{name}")

    def read_config_map(self, namespace: str, name: str) -> JSON | None:
        return self._read_or_none(f"/api/v1/namespaces/{namespace}/configmaps/{name}")

    def patch_pod_status(self, namespace: str, name: str, status: JSON) -> None:
        path = f"/api/v1/namespaces/{namespace}/pods/{name}/status"
        self.request("PATCH", path, body={"status": status}, content_type=MERGE_PATCH)

    def bind_pod(self, namespace: str, name: str, node_name: str) -> None:
        """Assigns the pod to the node with a Binding, as a scheduler does."""
        binding = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": name, "namespace": namespace},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node_name},
        }
        self.request("POST", f"/api/v1/namespaces/{namespace}/pods/{name}/binding", body=binding, scheduler=True)

    def delete_pod_now(self, namespace: str, name: str, uid: str) -> None:
        """Removes a pod whose containers are gone; the uid precondition spares a recreated namesake."""
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0, "preconditions": {"uid": uid}}
        try:
            self.request("DELETE", f"/api/v1/namespaces/{namespace}/pods/{name}", body=body)
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise

    def create_event(self, namespace: str, event: JSON) -> None:
        self.request("POST", f"/api/v1/namespaces/{namespace}/events", body=event)

    def request_token(
        self, namespace: str, account: str, bound: JSON, seconds: int, audiences: list[str]
    ) -> tuple[str, datetime.datetime]:
        """A service-account token bound to a pod (TokenRequest), as the kubelet gets projected tokens."""
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"audiences": audiences, "expirationSeconds": seconds, "boundObjectRef": bound},
        }
        answer = self.request("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token", body=body)
        status = answer["status"]
        expires = datetime.datetime.fromisoformat(status["expirationTimestamp"].replace("Z", "+00:00"))
        return str(status["token"]), expires

    def register_node(self, name: str, status: JSON, labels: dict[str, str]) -> None:
        """Create this node's Node object (or take over an existing one) and publish its status."""
        body = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}}
        try:
            self.request("POST", "/api/v1/nodes", body=body)
        except ApiException as exc:
            if exc.status != 409:
                raise
        self.request("PATCH", f"/api/v1/nodes/{name}/status", body={"status": status}, content_type=MERGE_PATCH)
