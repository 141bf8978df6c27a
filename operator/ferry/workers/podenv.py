"""What worker pods read from their environment: how to reach the Cosmos DB account."""

from __future__ import annotations

import os
from collections.abc import Mapping

from ferry.storage.cosmos import CosmosAccess


def cosmos_access_from_env(env: Mapping[str, str] = os.environ) -> CosmosAccess:
    """FERRY_COSMOS_ENDPOINT and FERRY_COSMOS_KEY (a Secret reference in the pod spec)."""
    return CosmosAccess(
        endpoint=env["FERRY_COSMOS_ENDPOINT"],
        key=env["FERRY_COSMOS_KEY"],
        verify_tls=env.get("FERRY_COSMOS_VERIFY_TLS", "true").lower() != "false",
    )
