"""A pod's volumes on the local node, made as the kubelet makes them: emptyDir directories, and the files of
projected (service-account token, ConfigMap, downward API), Secret and ConfigMap volumes, read through the
API with the node's own credentials (the Node authorizer lets a node read only what its pods reference).
"""

from __future__ import annotations

import base64
import datetime
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ferry_dev.nodeagent.podenv import ContainerConfigError

JSON = dict[str, Any]
ReadObject = Callable[[str, str], JSON | None]
RequestToken = Callable[[str, str, JSON, int, list[str]], tuple[str, datetime.datetime]]
REFRESH_AT = 0.8  # of a token's lifetime, as the kubelet refreshes projected tokens


@dataclass(frozen=True)
class Mount:
    source: Path
    target: str
    read_only: bool


class PodVolumes:
    def __init__(
        self,
        pod: JSON,
        root: Path,
        *,
        read_secret: ReadObject,
        read_config_map: ReadObject,
        request_token: RequestToken,
    ) -> None:
        self._pod = pod
        self._root = root
        self._read_secret = read_secret
        self._read_config_map = read_config_map
        self._request_token = request_token
        self._refresh_after: datetime.datetime | None = None
        meta = pod["metadata"]
        self._namespace: str = meta.get("namespace") or "default"

    @property
    def _volumes(self) -> list[JSON]:
        return list((self._pod.get("spec") or {}).get("volumes") or [])

    def prepare(self) -> None:
        """Create every volume's content; ContainerConfigError when a referenced object is missing."""
        for volume in self._volumes:
            target = self._root / volume["name"]
            target.mkdir(parents=True, exist_ok=True)
            if "emptyDir" in volume:
                target.chmod(0o1777)  # writable by whatever user the container runs as
            elif "projected" in volume:
                self._projected(volume["projected"], target)
            elif "secret" in volume:
                self._keys("Secret", volume["secret"].get("secretName", ""), volume["secret"], target)
            elif "configMap" in volume:
                self._keys("ConfigMap", volume["configMap"].get("name", ""), volume["configMap"], target)
            else:
                kinds = ", ".join(k for k in volume if k != "name")
                raise ContainerConfigError(f"volume {volume['name']}: {kinds} volumes are not supported on this node")

    def refresh(self) -> None:
        """Renew projected tokens once 80% of their lifetime has passed."""
        if self._refresh_after is not None and datetime.datetime.now(datetime.UTC) >= self._refresh_after:
            self.prepare()

    def mounts(self, container: JSON) -> list[Mount]:
        return [
            Mount(self._root / m["name"], m["mountPath"], bool(m.get("readOnly")))
            for m in container.get("volumeMounts") or []
        ]

    def _projected(self, projected: JSON, target: Path) -> None:
        for source in projected.get("sources") or []:
            if "serviceAccountToken" in source:
                self._token(source["serviceAccountToken"], target)
            elif "configMap" in source:
                self._keys("ConfigMap", source["configMap"].get("name", ""), source["configMap"], target)
            elif "secret" in source:
                self._keys("Secret", source["secret"].get("name", ""), source["secret"], target)
            elif "downwardAPI" in source:
                for item in source["downwardAPI"].get("items") or []:
                    path = item.get("fieldRef", {}).get("fieldPath", "")
                    value = {"metadata.namespace": self._namespace, "metadata.name": self._pod["metadata"]["name"]}
                    if path not in value:
                        raise ContainerConfigError(f"unsupported downward API field {path}")
                    _write(target / item["path"], value[path].encode())

    def _token(self, spec: JSON, target: Path) -> None:
        meta = self._pod["metadata"]
        account = (self._pod.get("spec") or {}).get("serviceAccountName") or "default"
        seconds = int(spec.get("expirationSeconds") or 3600)
        audiences = [spec["audience"]] if spec.get("audience") else []
        bound = {"apiVersion": "v1", "kind": "Pod", "name": meta["name"], "uid": meta["uid"]}
        token, expires = self._request_token(self._namespace, account, bound, seconds, audiences)
        _write(target / spec.get("path", "token"), token.encode())
        now = datetime.datetime.now(datetime.UTC)
        refresh = now + (expires - now) * REFRESH_AT
        self._refresh_after = refresh if self._refresh_after is None else min(self._refresh_after, refresh)

    def _keys(self, kind: str, name: str, source: JSON, target: Path) -> None:
        reader = self._read_secret if kind == "Secret" else self._read_config_map
        obj = reader(self._namespace, name)
        if obj is None:
            if source.get("optional"):
                return
            raise ContainerConfigError(f'{kind.lower()} "{name}" not found')
        data = (
            {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
            if kind == "Secret"
            else {
                **{k: str(v).encode() for k, v in (obj.get("data") or {}).items()},
                **{k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()},
            }
        )
        items = source.get("items") or [{"key": k, "path": k} for k in data]
        for item in items:
            if item["key"] not in data:
                if source.get("optional"):
                    continue
                raise ContainerConfigError(f"couldn't find key {item['key']} in {kind} {self._namespace}/{name}")
            _write(target / item["path"], data[item["key"]])


def _write(path: Path, data: bytes) -> None:
    """Replace a file atomically, as the kubelet swaps a projected volume's contents."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.tmp")
    scratch.write_bytes(data)
    scratch.chmod(0o644)
    os.replace(scratch, path)
