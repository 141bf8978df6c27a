"""DatabaseAccount: a Cosmos DB account, its write region, its copy instances and its backup policy."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, ClassVar

from pydantic import Field

from ferry.api.common import (
    BlobContainerName,
    Condition,
    DurationBounds,
    Failure,
    FerryModel,
    SecretKeySelector,
    conditions_field,
    no_credentials_in_url,
)
from ferry.api.identity import WorkloadIdentity
from ferry.api.storageaccount import StorageAccountRef


class AccountCredentials(FerryModel):
    """How Ferry authenticates to the account: a key in a Secret, or a Microsoft Entra workload identity."""

    cel_rules: ClassVar[list[dict[str, str]]] = [
        {
            "rule": "has(self.secretRef) != has(self.workloadIdentity)",
            "message": "give exactly one of secretRef (the account's key) and workloadIdentity",
        },
    ]

    secret_ref: SecretKeySelector | None = Field(
        default=None, description="Secret key holding the account's primary key (MongoDB: its password)."
    )
    workload_identity: WorkloadIdentity | None = Field(
        default=None,
        description="API for NoSQL: the Entra identity Ferry's worker pods authenticate as (no key anywhere); it "
        "needs a federated credential for the worker service account and a Cosmos DB data-plane role.",
    )
    username: str | None = Field(
        default=None,
        min_length=1,
        max_length=255,
        description="MongoDB only: the user of the account's connection string (on Azure, the account's name); "
        "the key is its password.",
    )


class ResourceAmounts(FerryModel):
    cpu: str = Field(default="4", pattern=r"^[0-9]+(\.[0-9]+)?m?$")
    memory: str = Field(default="16Gi", pattern=r"^[0-9]+(\.[0-9]+)?([KMGTPE]i?)?$")


class CopyInstances(FerryModel):
    """The account's copy workers: started when it has work, shared by consecutive jobs."""

    count: int = Field(default=2, ge=1, le=32)
    resources: ResourceAmounts = Field(default_factory=ResourceAmounts)


class BackupTier(StrEnum):
    CONTINUOUS_7_DAYS = "Continuous7Days"
    CONTINUOUS_30_DAYS = "Continuous30Days"


class BackupMode(StrEnum):
    OFF = "Off"
    CONTINUOUS = "Continuous"


RETENTION = {BackupTier.CONTINUOUS_7_DAYS: "168h", BackupTier.CONTINUOUS_30_DAYS: "720h"}
# An annotation only for tests: a retention of minutes instead of days, so that pruning can be watched.
# A retention shorter than the tier's, honoured only where the operator allows it (tests and demos).
RETENTION_OVERRIDE = "ferry.dev/backup-retention"


class BackupLocation(FerryModel):
    """Where the backup is kept: a blob container (and a prefix in it) of a storage account."""

    account: StorageAccountRef
    container: BlobContainerName = Field(min_length=3, max_length=63)
    prefix: str | None = Field(
        default=None,
        max_length=512,
        description="Folder of this account's backup in the container; default NAMESPACE/NAME of the DatabaseAccount. "
        "One account's backup per prefix.",
    )


class BackupPolicy(FerryModel):
    """Ferry's own continuous backup: a capture pod records the account's databases, containers and every item
    version into the blob location, from which InAccountRestores bring deleted resources back."""

    cel_rules: ClassVar[list[dict[str, str]]] = [
        {
            # has(): the rule also checks the `{}` default, in which nested defaults are not applied yet.
            "rule": "!has(self.mode) || self.mode == 'Off' || (has(self.tier) && has(self.location))",
            "message": "continuous backup needs a tier and a location",
        },
    ]

    mode: BackupMode = Field(default=BackupMode.OFF)
    tier: BackupTier | None = Field(default=None, description="The retention: Continuous7Days or Continuous30Days.")
    capture_interval: Annotated[str, DurationBounds("1s", "1h")] = Field(
        default="30s", description="How often changes are captured: the finest time a restore can tell apart."
    )
    deletion_sweep_interval: Annotated[str, DurationBounds("1s", "24h")] = Field(
        default="10m",
        description="Where the account has no all-versions-and-deletes change feed: how often item deletions are "
        "found by listing every item's id; a deletion is then dated to within this interval.",
    )
    location: BackupLocation | None = None


class AccountApi(StrEnum):
    """The account's API: NoSQL (the document endpoint) or MongoDB (the wire protocol)."""

    NOSQL = "NoSQL"
    MONGODB = "MongoDB"


_MONGO = "(has(self.api) && self.api == 'MongoDB')"


class DatabaseAccountSpec(FerryModel):
    cel_rules: ClassVar[list[dict[str, str]]] = [
        {"rule": "self.endpoint == oldSelf.endpoint", "message": "endpoint is immutable"},
        no_credentials_in_url(
            "endpoint",
            "endpoint must not carry credentials (user:password@host): the account's key goes in a Secret named by "
            "credentials.secretRef",
        ),
        {"rule": "self.api == oldSelf.api", "message": "api is immutable"},
        {
            "rule": f"{_MONGO} == self.endpoint.startsWith('mongodb')",
            "message": "an account of api MongoDB has a mongodb:// or mongodb+srv:// endpoint (its connection string "
            "without user or password: credentials.username and the Secret hold them), an account of api NoSQL an "
            "https:// one",
            "fieldPath": ".endpoint",
        },
        {
            "rule": f"!{_MONGO} || !has(self.backup) || !has(self.backup.mode) || self.backup.mode == 'Off'",
            "message": "continuous backup (and so InAccountRestore) is for API for NoSQL accounts: set backup.mode "
            "Off for an account of api MongoDB",
            "fieldPath": ".backup.mode",
        },
        {
            "rule": f"!{_MONGO} || has(self.credentials.secretRef)",
            "message": "an account of api MongoDB authenticates with its key (credentials.secretRef)",
            "fieldPath": ".credentials",
        },
        {
            "rule": f"!has(self.credentials.username) || {_MONGO}",
            "message": "credentials.username is for accounts of api MongoDB",
            "fieldPath": ".credentials.username",
        },
    ]

    api: AccountApi = Field(
        default=AccountApi.NOSQL,
        description="NoSQL (the default) or MongoDB: which API Ferry speaks to the account with.",
    )
    endpoint: str = Field(
        pattern=r"^(https?|mongodb(\+srv)?)://",
        max_length=2048,
        description="NoSQL: the account's document endpoint (https://). MongoDB: its connection string without "
        "user and password (mongodb://HOST:PORT/?OPTIONS): the user is credentials.username, the password the key "
        "in credentials.secretRef.",
    )
    credentials: AccountCredentials
    insecure_skip_tls_verify: bool = Field(
        default=False,
        alias="insecureSkipTLSVerify",
        description="Accept any TLS certificate from the endpoint. Only for local emulators.",
    )
    copy_instances: CopyInstances = Field(default_factory=CopyInstances)
    idle_timeout: Annotated[str, DurationBounds("1s", "168h")] = Field(
        default="15m", description="Instances without work are removed after this."
    )
    region_poll_interval: Annotated[str, DurationBounds("1s", "24h")] = Field(
        default="60s", description="How often the write region is read."
    )
    backup: BackupPolicy = Field(default_factory=BackupPolicy)


# Worker pods get the name and key of the account key's Secret (never its value) beside the value itself,
# so that an error about the key can say where it comes from.
# A worker's environment names an account with a prefix: FERRY_COSMOS for its own, FERRY_SOURCE_COSMOS for the
# source of a cross-account copy; <prefix>_ENDPOINT, _KEY (a Secret reference), _KEY_SECRET and _KEY_SECRET_KEY
# (where the key comes from, for errors that name it), _VERIFY_TLS and _API (the account's spec.api).
ACCOUNT_ENV_PREFIX = "FERRY_COSMOS"
SOURCE_ACCOUNT_ENV_PREFIX = "FERRY_SOURCE_COSMOS"
SOURCE_ACCOUNT_NAME_ENV = "FERRY_SOURCE_ACCOUNT"  # which DatabaseAccount the FERRY_SOURCE_COSMOS_* variables are of
KEY_SECRET_ENV = f"{ACCOUNT_ENV_PREFIX}_KEY_SECRET"
KEY_SECRET_KEY_ENV = f"{ACCOUNT_ENV_PREFIX}_KEY_SECRET_KEY"


class ConnectionState(StrEnum):
    CONNECTED = "Connected"
    UNAUTHORIZED = "Unauthorized"  # the account refused the key
    INVALID_CREDENTIALS = "InvalidCredentials"  # the Secret's key cannot be an account key (not base64)
    LOCAL_AUTH_DISABLED = "LocalAuthDisabled"  # the account refuses keys altogether (401 substatus 5202)
    IDENTITY_NOT_FEDERATED = "IdentityNotFederated"  # Entra refused to exchange the pod's token for the identity
    FORBIDDEN = "Forbidden"  # the identity has no data-plane role on the account (403 substatus 5301)
    IDENTITY_NOT_CONFIGURED = "IdentityNotConfigured"  # no clientId, and no annotation of the worker account names one
    UNREACHABLE = "Unreachable"


class AccountConnection(FerryModel):
    state: ConnectionState
    message: str = ""


class AccountObservation(FerryModel):
    """The part of the status the monitor pod writes: what the account itself reports."""

    write_region: str | None = None
    read_regions: list[str] | None = None
    connection: AccountConnection | None = None


class BackupGap(FerryModel):
    """A stretch of time without a capture: restores to a time in it are refused."""

    start: datetime
    end: datetime


class BackupReport(FerryModel):
    last_capture_time: datetime | None = Field(default=None, description="When the last capture completed.")
    last_capture_seconds: float | None = Field(default=None, description="How long the last capture took.")
    capture_lag_seconds: float | None = Field(
        default=None, description="How far the latest restorable time was behind the end of the last capture."
    )
    versions_captured: int | None = Field(default=None, description="Item versions and deletions recorded so far.")
    deletion_precision_seconds: float | None = Field(
        default=None,
        description="How closely item deletions are dated: 0 from the all-versions-and-deletes change feed, "
        "spec.backup.deletionSweepInterval where a container's deletions are swept.",
    )
    gaps: list[BackupGap] | None = Field(default=None, description="Gaps in the restorable window.")
    error: Failure | None = Field(default=None, description="Why the last capture failed, if it did.")


class BackupObservation(FerryModel):
    """The part of the status the capture pod writes: the restorable window and how capturing goes."""

    earliest_restorable_time: datetime | None = None
    latest_restorable_time: datetime | None = Field(default=None, description="The last complete capture.")
    backup: BackupReport | None = None


class DatabaseAccountOperatorStatus(FerryModel):
    """The part of the status the operator writes."""

    observed_write_region: str | None = Field(
        default=None, description="The write region the operator last acted on (a change fails incomplete jobs)."
    )
    active_copy_job: str | None = None
    queued_copy_jobs: list[str] | None = None
    active_restores: list[str] | None = Field(default=None, description="Restores running now (three at most).")
    queued_restores: list[str] | None = None
    instances: list[str] | None = Field(default=None, description="The copy instance pods.")
    idle_since: datetime | None = Field(default=None, description="When the copy instances last ran out of work.")
    restore_instances: list[str] | None = Field(default=None, description="The restore instance pods.")
    restore_idle_since: datetime | None = Field(
        default=None, description="When the restore instances last ran out of work."
    )
    conditions: list[Condition] | None = conditions_field()
    observed_generation: int | None = None


class DatabaseAccountStatus(DatabaseAccountOperatorStatus, AccountObservation, BackupObservation):
    """The whole status: each part has one writer (server-side apply, one field manager per part)."""
