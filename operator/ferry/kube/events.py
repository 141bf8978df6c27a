"""Kubernetes Events about Ferry's resources. Messages are built by Ferry and never carry secrets."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException

from ferry.kube import client

log = logging.getLogger(__name__)


def emit(obj: dict[str, Any], reason: str, message: str, warning: bool = False) -> None:
    """Record an Event on the object; failing to record one never fails the reconcile that sent it."""
    meta = obj["metadata"]
    stamp = datetime.now(UTC)
    event: Any = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": obj["apiVersion"],
            "kind": obj["kind"],
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
            "resourceVersion": meta.get("resourceVersion"),
        },
        "reason": reason,
        "message": message[:1024],
        "type": "Warning" if warning else "Normal",
        "source": {"component": "ferry-operator"},
        "reportingComponent": "ferry.dev/operator",
        "reportingInstance": "ferry-operator",
        "firstTimestamp": stamp.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "lastTimestamp": stamp.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "eventTime": stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "action": reason,
        "count": 1,
    }
    try:
        client.core().create_namespaced_event(meta["namespace"], event)
    except ApiException as exc:
        log.warning("could not record event %s on %s/%s: %s", reason, meta["namespace"], meta["name"], exc.reason)
