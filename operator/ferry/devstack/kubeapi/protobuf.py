"""Decoding of the Kubernetes protobuf envelope for the few built-in kinds kubectl creates that way.

``kubectl create secret|configmap|namespace|serviceaccount`` send protobuf bodies; client-go has no
fallback to JSON for them, so these kinds are decoded here (field numbers from k8s.io/api generated.proto).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

from ferry.devstack.kubeapi.errors import unsupported_media

MAGIC = b"k8s\x00"
Schema = dict[int, tuple[str, str, Any]]

_OWNER_REF: Schema = {
    1: ("kind", "str", None),
    3: ("name", "str", None),
    4: ("uid", "str", None),
    5: ("apiVersion", "str", None),
    6: ("controller", "bool", None),
    7: ("blockOwnerDeletion", "bool", None),
}
_OBJECT_REF: Schema = {
    1: ("kind", "str", None),
    2: ("namespace", "str", None),
    3: ("name", "str", None),
    4: ("uid", "str", None),
    5: ("apiVersion", "str", None),
    6: ("resourceVersion", "str", None),
    7: ("fieldPath", "str", None),
}
_LOCAL_REF: Schema = {1: ("name", "str", None)}
_META: Schema = {
    1: ("name", "str", None),
    2: ("generateName", "str", None),
    3: ("namespace", "str", None),
    11: ("labels", "map_str", None),
    12: ("annotations", "map_str", None),
    13: ("ownerReferences", "rep_msg", _OWNER_REF),
    14: ("finalizers", "rep_str", None),
}
SCHEMAS: dict[str, Schema] = {
    "Secret": {
        1: ("metadata", "msg", _META),
        2: ("data", "map_bytes", None),
        3: ("type", "str", None),
        4: ("stringData", "map_str", None),
        5: ("immutable", "bool", None),
    },
    "ConfigMap": {
        1: ("metadata", "msg", _META),
        2: ("data", "map_str", None),
        3: ("binaryData", "map_bytes", None),
        4: ("immutable", "bool", None),
    },
    "Namespace": {1: ("metadata", "msg", _META), 2: ("spec", "msg", {1: ("finalizers", "rep_str", None)})},
    "ServiceAccount": {
        1: ("metadata", "msg", _META),
        2: ("secrets", "rep_msg", _OBJECT_REF),
        3: ("imagePullSecrets", "rep_msg", _LOCAL_REF),
        4: ("automountServiceAccountToken", "bool", None),
    },
}


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes) -> Iterator[tuple[int, int | bytes]]:
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        num, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
            yield num, value
        elif wire == 2:
            size, pos = _varint(buf, pos)
            yield num, buf[pos : pos + size]
            pos += size
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise ValueError(f"unsupported wire type {wire}")


def _message(buf: bytes, schema: Schema) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for num, value in _fields(buf):
        if num not in schema:
            continue
        name, kind, sub = schema[num]
        if kind == "str" and isinstance(value, bytes):
            if value:  # gogo-protobuf encodes empty strings; JSON would omit them
                out[name] = value.decode()
        elif kind == "bool":
            out[name] = bool(value)
        elif kind == "msg" and isinstance(value, bytes):
            out[name] = _message(value, sub)
        elif kind == "rep_str" and isinstance(value, bytes):
            out.setdefault(name, []).append(value.decode())
        elif kind == "rep_msg" and isinstance(value, bytes):
            out.setdefault(name, []).append(_message(value, sub))
        elif kind in ("map_str", "map_bytes") and isinstance(value, bytes):
            entry = dict(_fields(value))
            key, val = entry.get(1, b""), entry.get(2, b"")
            assert isinstance(key, bytes) and isinstance(val, bytes)
            decoded = base64.b64encode(val).decode() if kind == "map_bytes" else val.decode()
            out.setdefault(name, {})[key.decode()] = decoded
    return out


def decode(body: bytes) -> dict[str, Any]:
    if not body.startswith(MAGIC):
        raise unsupported_media("the body of the request was not a Kubernetes protobuf envelope")
    envelope = dict(_fields(body[len(MAGIC) :]))
    type_meta = envelope.get(1, b"")
    raw = envelope.get(2, b"")
    assert isinstance(type_meta, bytes) and isinstance(raw, bytes)
    tm = _message(type_meta, {1: ("apiVersion", "str", None), 2: ("kind", "str", None)})
    kind = tm.get("kind", "")
    if kind not in SCHEMAS:
        raise unsupported_media(f"protobuf is not supported for {kind or 'this kind'}; use application/json")
    obj = _message(raw, SCHEMAS[kind])
    return {"apiVersion": tm.get("apiVersion", "v1"), "kind": kind, **obj}
