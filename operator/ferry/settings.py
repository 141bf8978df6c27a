"""Operator settings, read from the environment (the Helm chart sets it) and the command line."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ferry import __version__
from ferry.kube.resources import WorkerResources


def _flag(value: Any) -> bool:
    """Only "true" (in any case) turns a flag on; anything else, empty included, leaves it off."""
    return value if isinstance(value, bool) else str(value).lower() == "true"


def _empty_object(value: Any) -> Any:
    """A JSON object setting that is null or empty is the empty object: its fields keep their defaults."""
    return value or {}


def _pull_secrets(value: Any) -> Any:
    """The chart's imagePullSecrets ([{name: ...}]) as names."""
    return [str(s["name"]) if isinstance(s, dict) else str(s) for s in value or []]


class OperatorSettings(BaseSettings):
    """Each field is read from FERRY_<FIELD NAME> (e.g. FERRY_MAX_WORKERS); an empty variable is unset."""

    model_config = SettingsConfigDict(env_prefix="FERRY_", env_ignore_empty=True, extra="ignore")

    worker_image: str = f"ferry:{__version__}"
    worker_service_account: str = "ferry-worker"
    # Worker pods (copies, cleanups, copy instances) running at once; account monitors do not count.
    max_workers: int = 50
    max_workers_per_namespace: int = 20
    # Reconcile passes in flight at once (each borrows an API thread only while it waits for a call).
    reconcilers: int = 8
    # The worker service account is made in each namespace on first use, bound to this ClusterRole.
    worker_cluster_role: str = ""
    # Annotations of those service accounts (workload identity) and their image pull secrets, as JSON.
    worker_service_account_annotations: Annotated[dict[str, str], BeforeValidator(_empty_object)] = Field(
        default_factory=dict
    )
    image_pull_secrets: Annotated[list[str], BeforeValidator(_pull_secrets)] = Field(default_factory=list)
    # Requests and limits of the monitor, capture and BlobCopy worker pods, as JSON (the chart's workers.resources).
    worker_resources: Annotated[WorkerResources, BeforeValidator(_empty_object)] = WorkerResources()
    # The Helm release the operator belongs to: its worker pods' app.kubernetes.io/instance label.
    instance: str = "ferry"
    # Workload identity: the Entra authority worker pods exchange their token with (AZURE_AUTHORITY_HOST; another
    # cloud's, or a local stand-in's), and a CA bundle file in the pods to trust it with (empty: the image's).
    identity_authority_host: str = "https://login.microsoftonline.com/"
    identity_authority_ca_file: str = ""
    # A CA bundle file in worker pods for their storage clients (blob endpoints behind a private CA).
    storage_ca_file: str = ""
    # Stream workers refuse source URLs whose host is link-local (the cloud metadata service) unless allowed.
    allow_link_local_sources: Annotated[bool, NoDecode, BeforeValidator(_flag)] = False
    # Honour the ferry.dev/backup-retention annotation on DatabaseAccounts (a retention shorter than the tier's).
    # For tests and demos only: a production backup keeps what its tier promises.
    allow_backup_retention_override: Annotated[bool, NoDecode, BeforeValidator(_flag)] = False
