"""Kubernetes Events about Ferry's objects. Messages are built by Ferry and never carry secrets."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from ferry.api.common import printable

REPORTING_COMPONENT = "ferry.dev/operator"
# Event names are the object's name plus a random suffix; the whole must stay within 253 characters.
MAX_PREFIX = 240
MAX_MESSAGE = 1024


def event_body(involved: Mapping[str, Any], reason: str, message: str, warning: bool) -> dict[str, Any]:
    meta = involved["metadata"]
    stamp = datetime.now(UTC)
    seconds = stamp.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name'][:MAX_PREFIX]}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": involved["apiVersion"],
            "kind": involved["kind"],
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
            "resourceVersion": meta.get("resourceVersion"),
        },
        "reason": reason,
        "message": printable(message)[:MAX_MESSAGE],
        "type": "Warning" if warning else "Normal",
        "source": {"component": "ferry-operator"},
        "reportingComponent": REPORTING_COMPONENT,
        "reportingInstance": "ferry-operator",
        "firstTimestamp": seconds,
        "lastTimestamp": seconds,
        "eventTime": stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "action": reason,
        "count": 1,
    }
