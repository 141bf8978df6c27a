"""Reading one key of a Secret with the caller's own Kubernetes credentials (for the user's commands)."""

from __future__ import annotations

import base64
from typing import Any

from ferry.api.common import SecretKeySelector
from ferry.kube import client


def secret_value(namespace: str, ref: SecretKeySelector) -> str:
    secret: Any = client.core().read_namespaced_secret(ref.name, namespace)
    encoded = (secret.data or {}).get(ref.key)
    if encoded is None:
        raise ValueError(f'Secret {namespace}/{ref.name} has no key "{ref.key}"')
    return base64.b64decode(encoded).decode()
