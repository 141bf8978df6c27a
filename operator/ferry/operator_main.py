"""Runs the operator: kopf with Ferry's handlers, settings and metrics endpoint."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from ferry import metrics

FINALIZER = "ferry.dev/finalizer"


def _import_controllers() -> None:
    # Importing registers the handlers with kopf's default registry.
    import ferry.controllers.blobcopy
    import ferry.controllers.copyjobs  # noqa: F401


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="ferry.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="ferry.dev", key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 60
    settings.watching.client_timeout = 70
    settings.execution.max_workers = 20


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    return kopf.login_via_client(**kwargs)


def run(namespaces: list[str], metrics_port: int, metrics_host: str, liveness: str | None) -> None:
    _import_controllers()
    if metrics_port:
        metrics.serve(metrics_port, metrics_host)
    asyncio.run(
        kopf.operator(
            standalone=True,
            clusterwide=not namespaces,
            namespaces=namespaces,
            liveness_endpoint=liveness,
        )
    )
