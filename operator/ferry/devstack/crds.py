"""Installs Ferry's CRDs into a (local) API server and waits until they are served."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from ferry.api.crdgen import crd_for
from ferry.api.kinds import ALL_KINDS


def install_crds(kubeconfig: Path, timeout: float = 30.0) -> None:
    api = client.ApiextensionsV1Api(config.new_client_from_config(config_file=str(kubeconfig)))  # type: ignore[no-untyped-call]
    for kind in ALL_KINDS:
        body: Any = crd_for(kind)
        try:
            api.create_custom_resource_definition(body)
        except ApiException as exc:
            if exc.status != 409:
                raise
            current: Any = api.read_custom_resource_definition(kind.crd_name)
            body["metadata"]["resourceVersion"] = current.metadata.resource_version
            api.replace_custom_resource_definition(kind.crd_name, body)
    deadline = time.monotonic() + timeout
    for kind in ALL_KINDS:
        while True:
            crd = api.read_custom_resource_definition(kind.crd_name)
            conditions = (crd.status.conditions if crd.status else None) or []
            if any(c.type == "Established" and c.status == "True" for c in conditions):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"CRD {kind.crd_name} was not established within {timeout:.0f}s")
            time.sleep(0.1)
