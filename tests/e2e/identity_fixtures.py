"""Workload identity in the end-to-end tests: the worker service account, and the chart-wide identity its
annotations name (which a workloadIdentity without IDs stands for)."""

from __future__ import annotations

WORKER_SERVICE_ACCOUNT = "ferry-worker"  # the chart's, for the release "ferry"
DEFAULT_CLIENT_ID = "5b0c1f3e-7a1d-4c2b-9e8f-0d6a4b3c2e1f"
DEFAULT_TENANT_ID = "0e4f7c2a-1b3d-4e5f-8a9b-6c7d8e9f0a1b"


def subject(namespace: str) -> str:
    """The subject of a worker pod's projected token in `namespace`: what a federated credential names."""
    return f"system:serviceaccount:{namespace}:{WORKER_SERVICE_ACCOUNT}"
