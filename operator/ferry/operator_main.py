"""Runs the operator: kopf's watches and indexes feeding Ferry's reconcile runtime, and the metrics endpoint."""

from __future__ import annotations

import asyncio

import kopf

from ferry import metrics
from ferry.api.kinds import CONTAINER_COPY_JOB, IN_ACCOUNT_RESTORE
from ferry.controllers.blobcopy import BlobCopyController
from ferry.controllers.containercopyjob import ContainerCopyJobController
from ferry.controllers.databaseaccount import DatabaseAccountController
from ferry.controllers.inaccountrestore import InAccountRestoreController
from ferry.runtime import handlers
from ferry.runtime.api import KubeApi
from ferry.runtime.engine import Runtime
from ferry.runtime.slots import SlotLimits
from ferry.runtime.world import WorkerSettings
from ferry.settings import OperatorSettings


def build_runtime(settings: OperatorSettings) -> Runtime:
    return Runtime(
        controllers=[
            BlobCopyController(),
            DatabaseAccountController(),
            ContainerCopyJobController(),
            InAccountRestoreController(),
        ],
        workers=WorkerSettings(
            image=settings.worker_image,
            service_account=settings.worker_service_account,
            allow_link_local_sources=settings.allow_link_local_sources,
            cluster_role=settings.worker_cluster_role,
            service_account_annotations=tuple(sorted(settings.worker_service_account_annotations.items())),
            image_pull_secrets=tuple(settings.image_pull_secrets),
            instance=settings.instance,
        ),
        limits=SlotLimits(total=settings.max_workers, per_namespace=settings.max_workers_per_namespace),
        api=KubeApi(),
        concurrency=settings.reconcilers,
    )


def run(namespaces: list[str], metrics_port: int, metrics_host: str, liveness: str | None) -> None:
    runtime = build_runtime(OperatorSettings())
    registry = kopf.OperatorRegistry()
    handlers.register(registry, runtime, account_scoped=(CONTAINER_COPY_JOB, IN_ACCOUNT_RESTORE))
    if metrics_port:
        metrics.register_collector(runtime.collector())
        metrics.serve(metrics_port, metrics_host)
    asyncio.run(
        kopf.operator(
            registry=registry,
            standalone=True,
            clusterwide=not namespaces,
            namespaces=namespaces,
            liveness_endpoint=liveness,
            memo=kopf.Memo(),
        )
    )
