"""DatabaseAccount: a Cosmos DB account, its write region, its copy instances and its backup policy."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import ClassVar

from pydantic import Field

from ferry.api.common import (
    Condition,
    Duration,
    FerryModel,
    LocalObjectReference,
    SecretKeySelector,
    conditions_field,
)


class AccountCredentials(FerryModel):
    """How Ferry authenticates to the account: a key in a Secret (workload identity comes later)."""

    cel_rules: ClassVar[list[dict[str, str]]] = [
        {
            "rule": "has(self.secretRef)",
            "message": "secretRef is required (the only supported method so far)",
        },
    ]

    secret_ref: SecretKeySelector | None = Field(
        default=None, description="Secret key holding the account's primary key."
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


class BackupLocation(FerryModel):
    """Blob location for backup data."""

    account: LocalObjectReference = Field(description="Secret holding the storage connection string.")
    container: str = Field(min_length=3, max_length=63)
    prefix: str | None = None


class BackupPolicy(FerryModel):
    cel_rules: ClassVar[list[dict[str, str]]] = [
        {
            # has(): the rule also checks the `{}` default, in which nested defaults are not applied yet.
            "rule": "!has(self.mode) || self.mode == 'Off' || (has(self.tier) && has(self.location))",
            "message": "continuous backup needs a tier and a location",
        },
    ]

    mode: BackupMode = Field(default=BackupMode.OFF)
    tier: BackupTier | None = None
    capture_interval: Duration = Field(default="30s")
    location: BackupLocation | None = None


class DatabaseAccountSpec(FerryModel):
    cel_rules: ClassVar[list[dict[str, str]]] = [
        {"rule": "self.endpoint == oldSelf.endpoint", "message": "endpoint is immutable"},
    ]

    endpoint: str = Field(pattern=r"^https?://", description="The account's document endpoint.")
    credentials: AccountCredentials
    insecure_skip_tls_verify: bool = Field(
        default=False,
        alias="insecureSkipTLSVerify",
        description="Accept any TLS certificate from the endpoint. Only for local emulators.",
    )
    copy_instances: CopyInstances = Field(default_factory=CopyInstances)
    idle_timeout: Duration = Field(default="15m", description="Instances without work are removed after this.")
    region_poll_interval: Duration = Field(default="60s", description="How often the write region is read.")
    backup: BackupPolicy = Field(default_factory=BackupPolicy)


class ConnectionState(StrEnum):
    CONNECTED = "Connected"
    UNAUTHORIZED = "Unauthorized"  # the account refused the key
    LOCAL_AUTH_DISABLED = "LocalAuthDisabled"  # the account refuses keys altogether (401 substatus 5202)
    UNREACHABLE = "Unreachable"


class AccountConnection(FerryModel):
    state: ConnectionState
    message: str = ""


class AccountObservation(FerryModel):
    """The part of the status the monitor pod writes: what the account itself reports."""

    write_region: str | None = None
    read_regions: list[str] | None = None
    connection: AccountConnection | None = None


class DatabaseAccountOperatorStatus(FerryModel):
    """The part of the status the operator writes."""

    observed_write_region: str | None = Field(
        default=None, description="The write region the operator last acted on (a change fails incomplete jobs)."
    )
    active_copy_job: str | None = None
    queued_copy_jobs: list[str] | None = None
    instances: list[str] | None = None
    idle_since: datetime | None = Field(default=None, description="When the instances last ran out of work.")
    conditions: list[Condition] | None = conditions_field()
    observed_generation: int | None = None


class DatabaseAccountStatus(DatabaseAccountOperatorStatus, AccountObservation):
    """The whole status: each part has one writer (server-side apply, one field manager per part)."""
