"""What a kind's controller may read while it observes: the runtime's caches, the time and the settings.

Controllers read through this interface only, so that their decisions can be tested exactly as they run in
the operator: the runtime's own World over in-memory caches and API server (tests/support/memkube.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from ferry.api.kinds import Kind
from ferry.kube.manifests import IdentityMount
from ferry.kube.resources import WorkerResources
from ferry.runtime.objects import ObjectKey
from ferry.runtime.pods import PodView


@dataclass(frozen=True)
class WorkerSettings:
    """How worker pods are built: the image and service account the chart configures."""

    image: str
    service_account: str
    allow_link_local_sources: bool = False
    # The ClusterRole bound to the worker service account in each namespace the operator starts workers in;
    # empty: the accounts are made by the chart (workerNamespaces) and the operator makes none.
    cluster_role: str = ""
    service_account_annotations: tuple[tuple[str, str], ...] = ()
    image_pull_secrets: tuple[str, ...] = ()
    allow_backup_retention_override: bool = False  # see OperatorSettings
    instance: str = "ferry"  # the Helm release: worker pods' app.kubernetes.io/instance label
    resources: WorkerResources = field(default_factory=WorkerResources)
    # Where pods that use a workload identity exchange their token (AZURE_AUTHORITY_HOST), and a CA bundle in the
    # pod to trust for it (empty: the image's).
    identity_authority_host: str = "https://login.microsoftonline.com/"
    identity_authority_ca_file: str = ""
    storage_ca_file: str = ""  # a CA bundle in the pods for storage endpoints (FERRY_STORAGE_CA_FILE)

    def identity_mount(self) -> IdentityMount:
        return IdentityMount(self.identity_authority_host, self.identity_authority_ca_file)


class World(Protocol):
    @property
    def now(self) -> datetime: ...

    @property
    def workers(self) -> WorkerSettings: ...

    def object(self, kind: Kind, namespace: str, name: str) -> Mapping[str, Any] | None: ...

    def referencing(self, kind: Kind, namespace: str, account: str) -> Sequence[Mapping[str, Any]]:
        """Objects of `kind` in the namespace whose spec.accountRef names `account`."""
        ...

    def reading_from(self, kind: Kind, namespace: str, account: str) -> Sequence[Mapping[str, Any]]:
        """Objects of `kind` in the namespace whose spec.source.accountRef names `account` (they read from it)."""
        ...

    def pods(self, owner_uid: str, role: str) -> Sequence[PodView]: ...

    def slots(self, key: ObjectKey, order: tuple[Any, ...], wanted: int = 1) -> int:
        """How many worker slots this key would be given now (0 to `wanted`), in line by `order`."""
        ...
