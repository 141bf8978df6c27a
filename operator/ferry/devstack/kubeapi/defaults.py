"""Server-side defaulting of built-in objects, as the real registries do on create/update."""

from __future__ import annotations

import base64
import itertools
from typing import Any

_ips = itertools.count(10)


def prepare(group: str, plural: str, obj: dict[str, Any], creating: bool) -> None:
    if group == "" and plural == "secrets":
        string_data = obj.pop("stringData", None) or {}
        data = obj.setdefault("data", {}) or {}
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()
        obj["data"] = data
        obj.setdefault("type", "Opaque")
    elif group == "" and plural == "pods" and creating:
        spec = obj.setdefault("spec", {})
        spec.setdefault("restartPolicy", "Always")
        spec.setdefault("terminationGracePeriodSeconds", 30)
        spec.setdefault("dnsPolicy", "ClusterFirst")
        spec.setdefault("schedulerName", "default-scheduler")
        for container in spec.get("containers") or []:
            container.setdefault("imagePullPolicy", "IfNotPresent")
            container.setdefault("terminationMessagePath", "/dev/termination-log")
        obj["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
    elif group == "" and plural == "namespaces":
        obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
        if creating:
            obj["status"] = {"phase": "Active"}
    elif group == "" and plural == "services" and creating:
        spec = obj.setdefault("spec", {})
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        if spec.get("clusterIP") != "None":
            n = next(_ips)
            spec["clusterIP"] = f"10.96.{(n // 250) % 250}.{n % 250 + 1}"
            spec["clusterIPs"] = [spec["clusterIP"]]
        obj["status"] = {"loadBalancer": {}}
    elif group == "apps" and plural == "deployments":
        spec = obj.setdefault("spec", {})
        spec.setdefault("replicas", 1)
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)
        if creating:
            obj["status"] = {}
