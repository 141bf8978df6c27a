"""The one status writer: server-side apply of the part of an object's status one field manager owns.

The operator's runtime (in a thread of its pool) and the workers (synchronously) both write through
apply_status(); each manager owns exactly the fields it sends, and fields it leaves out are dropped.
"""

from __future__ import annotations

from typing import Any

from ferry.api.kinds import Kind
from ferry.kube import client

APPLY_PATCH = "application/apply-patch+yaml"


def apply_status(kind: Kind, namespace: str, name: str, status: dict[str, Any], manager: str) -> dict[str, Any]:
    """Apply `status` as `manager` (taking over fields from other managers); returns the object as written."""
    body = {
        "apiVersion": f"{kind.group}/{kind.version}",
        "kind": kind.kind,
        "metadata": {"name": name, "namespace": namespace},
        "status": status,
    }
    written: Any = client.custom().patch_namespaced_custom_object_status(
        kind.group,
        kind.version,
        namespace,
        kind.plural,
        name,
        body,
        field_manager=manager,
        force=True,
        _content_type=APPLY_PATCH,
    )
    return dict(written)
