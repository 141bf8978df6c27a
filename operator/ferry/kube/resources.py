"""Requests and limits of the pods the operator starts itself, by role (the chart's workers.resources)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field


def _quantities(value: Any) -> Any:
    """Kubernetes quantities as strings: a chart value written `cpu: 1` arrives as a number."""
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else value


Quantities = Annotated[dict[str, str], BeforeValidator(_quantities)]


class PodResources(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    requests: Quantities = Field(default_factory=dict)
    limits: Quantities = Field(default_factory=dict)


class WorkerResources(BaseModel):
    """The defaults fit a small node: a monitor per account runs for the account's lifetime, so it asks for
    little. Copy and restore instances are sized per account (spec.copyInstances.resources)."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    monitor: PodResources = PodResources(requests={"cpu": "50m", "memory": "96Mi"}, limits={"memory": "256Mi"})
    backup: PodResources = PodResources(requests={"cpu": "100m", "memory": "256Mi"}, limits={"memory": "2Gi"})
    # A BlobCopy worker's memory limit, when not set here, follows its blocks in flight (blockSizeMiB by parallelism).
    blob_copy: PodResources = Field(default=PodResources(requests={"cpu": "250m", "memory": "256Mi"}), alias="blobCopy")
