"""Kubernetes API access: configuration loading and the API objects Ferry's code uses."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from ferry.api.kinds import Kind


@cache
def api_client() -> client.ApiClient:
    """An API client from the in-cluster service account, else from KUBECONFIG / ~/.kube/config."""
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config()  # type: ignore[no-untyped-call]
        return client.ApiClient()
    api: client.ApiClient = config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=os.environ.get("KUBECONFIG")
    )
    return api


def core() -> client.CoreV1Api:
    return client.CoreV1Api(api_client())


def custom() -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api_client())


def rbac() -> client.RbacAuthorizationV1Api:
    return client.RbacAuthorizationV1Api(api_client())


def is_not_found(exc: BaseException) -> bool:
    return isinstance(exc, ApiException) and exc.status == 404


def is_conflict(exc: BaseException) -> bool:
    return isinstance(exc, ApiException) and exc.status == 409


@dataclass(frozen=True)
class ObjectRef:
    """Where one custom object lives."""

    kind: Kind
    namespace: str
    name: str

    def get(self) -> dict[str, Any]:
        obj: Any = custom().get_namespaced_custom_object(
            self.kind.group, self.kind.version, self.namespace, self.kind.plural, self.name
        )
        return dict(obj)
