"""Runs the operator: kopf's watches and indexes feeding Ferry's reconcile runtime, and the metrics endpoint."""

from __future__ import annotations

import asyncio

import kopf

from ferry import metrics
from ferry.kinds.registry import PLUGINS
from ferry.runtime import handlers
from ferry.runtime.engine import Runtime
from ferry.runtime.kubeapi import KubeApi
from ferry.runtime.slots import SlotLimits
from ferry.runtime.world import WorkerSettings
from ferry.settings import OperatorSettings


def build_runtime(settings: OperatorSettings) -> Runtime:
    return Runtime(
        controllers=[plugin.controller() for plugin in PLUGINS],
        workers=WorkerSettings(
            image=settings.worker_image,
            service_account=settings.worker_service_account,
            allow_link_local_sources=settings.allow_link_local_sources,
            cluster_role=settings.worker_cluster_role,
            service_account_annotations=tuple(sorted(settings.worker_service_account_annotations.items())),
            image_pull_secrets=tuple(settings.image_pull_secrets),
            allow_backup_retention_override=settings.allow_backup_retention_override,
            instance=settings.instance,
            resources=settings.worker_resources,
            identity_authority_host=settings.identity_authority_host,
            identity_authority_ca_file=settings.identity_authority_ca_file,
            storage_ca_file=settings.storage_ca_file,
        ),
        limits=SlotLimits(total=settings.max_workers, per_namespace=settings.max_workers_per_namespace),
        api=KubeApi(),
        concurrency=settings.reconcilers,
    )


def run(namespaces: list[str], metrics_port: int, metrics_host: str, liveness: str | None) -> None:
    runtime = build_runtime(OperatorSettings())
    registry = kopf.OperatorRegistry()
    handlers.register(registry, runtime, account_scoped=tuple(p.kind for p in PLUGINS if p.account_scoped))
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
