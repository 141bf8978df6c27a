"""A container's environment and command line, resolved as the kubelet resolves them."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

JSON = dict[str, Any]
ReadObject = Callable[[str, str], JSON | None]

POD_IP = "127.0.0.1"
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
# $(VAR) is replaced when VAR is defined, $$ escapes a dollar; anything else stays as written.
_REFERENCE = re.compile(r"\$\$|\$\(([^)]*)\)")


class ContainerConfigError(Exception):
    """The kubelet's CreateContainerConfigError: a referenced Secret, ConfigMap or key is missing."""


def expand(text: str, env: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env[name] if name in env else match.group(0)

    return _REFERENCE.sub(replace, text)


def command_line(container: JSON, entrypoint: Sequence[str], env: Mapping[str, str]) -> list[str]:
    """`command` replaces the image entrypoint, `args` follow it; both expand $(VAR)."""
    command = [expand(part, env) for part in container.get("command") or []]
    args = [expand(part, env) for part in container.get("args") or []]
    return (command or list(entrypoint)) + args


def _decode(value: str) -> str:
    # surrogateescape keeps non-UTF-8 bytes intact on their way into the process environment.
    return base64.b64decode(value).decode(errors="surrogateescape")


def _source_data(kind: str, obj: JSON) -> dict[str, str]:
    if kind == "Secret":
        return {k: _decode(v) for k, v in (obj.get("data") or {}).items()} | {
            k: str(v) for k, v in (obj.get("stringData") or {}).items()
        }
    binary = {k: _decode(v) for k, v in (obj.get("binaryData") or {}).items()}
    return binary | {k: str(v) for k, v in (obj.get("data") or {}).items()}


class EnvResolver:
    """Reads Secrets and ConfigMaps once per resolution, as one container start sees them."""

    def __init__(self, pod: JSON, read_secret: ReadObject, read_config_map: ReadObject) -> None:
        self._pod = pod
        self._namespace: str = pod["metadata"].get("namespace") or "default"
        self._readers = {"Secret": read_secret, "ConfigMap": read_config_map}
        self._cache: dict[tuple[str, str], dict[str, str] | None] = {}

    def _data(self, kind: str, name: str) -> dict[str, str] | None:
        key = (kind, name)
        if key not in self._cache:
            obj = self._readers[kind](self._namespace, name)
            self._cache[key] = None if obj is None else _source_data(kind, obj)
        return self._cache[key]

    def _key_ref(self, kind: str, ref: JSON) -> str | None:
        name, key = ref.get("name", ""), ref["key"]
        optional = bool(ref.get("optional"))
        data = self._data(kind, name)
        if data is None:
            if optional:
                return None
            raise ContainerConfigError(f'{kind.lower()} "{name}" not found')
        if key not in data:
            if optional:
                return None
            raise ContainerConfigError(f"couldn't find key {key} in {kind} {self._namespace}/{name}")
        return data[key]

    def _field_ref(self, path: str) -> str:
        meta, spec = self._pod["metadata"], self._pod.get("spec") or {}
        match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']*)'\]", path)
        if match:
            return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
        values = {
            "metadata.name": meta.get("name"),
            "metadata.namespace": meta.get("namespace"),
            "metadata.uid": meta.get("uid"),
            "spec.nodeName": spec.get("nodeName"),
            "spec.serviceAccountName": spec.get("serviceAccountName") or "default",
            "status.podIP": POD_IP,
            "status.podIPs": POD_IP,
            "status.hostIP": POD_IP,
            "status.hostIPs": POD_IP,
        }
        if path not in values:
            raise ContainerConfigError(f"unsupported fieldRef {path}")
        return str(values[path] or "")

    def resolve(self, container: JSON, base: Mapping[str, str]) -> dict[str, str]:
        """base (the runner's env) < envFrom < env; later env values may reference earlier ones."""
        env = dict(base)
        for source in container.get("envFrom") or []:
            prefix = source.get("prefix") or ""
            kind, ref = (
                ("Secret", source["secretRef"])
                if "secretRef" in source
                else (
                    "ConfigMap",
                    source.get("configMapRef") or {},
                )
            )
            data = self._data(kind, ref.get("name", ""))
            if data is None:
                if ref.get("optional"):
                    continue
                raise ContainerConfigError(f'{kind.lower()} "{ref.get("name", "")}" not found')
            env.update({prefix + k: v for k, v in data.items() if _ENV_NAME.match(prefix + k)})
        for var in container.get("env") or []:
            value = self._value(var, env, container)
            if value is not None:
                env[var["name"]] = value
        return env

    def _value(self, var: JSON, env: Mapping[str, str], container: JSON) -> str | None:
        if "valueFrom" not in var:
            return expand(str(var.get("value") or ""), env)
        source: JSON = var["valueFrom"]
        if "secretKeyRef" in source:
            return self._key_ref("Secret", source["secretKeyRef"])
        if "configMapKeyRef" in source:
            return self._key_ref("ConfigMap", source["configMapKeyRef"])
        if "fieldRef" in source:
            return self._field_ref(source["fieldRef"]["fieldPath"])
        if "resourceFieldRef" in source:
            # No resource accounting here: report the declared limit, "0" when unset.
            ref = source["resourceFieldRef"]
            target = ref.get("containerName") or container.get("name")
            for candidate in (self._pod.get("spec") or {}).get("containers") or []:
                if candidate.get("name") == target:
                    limits = (candidate.get("resources") or {}).get("limits") or {}
                    return str(limits.get(ref["resource"].removeprefix("limits."), "0"))
            return "0"
        return None
