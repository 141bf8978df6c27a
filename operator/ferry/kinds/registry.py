"""Every kind Ferry serves, in the order `ferry status` lists them (accounts first)."""

from __future__ import annotations

from ferry.kinds.blobcopy.plugin import PLUGIN as BLOB_COPY
from ferry.kinds.containercopyjob.plugin import PLUGIN as CONTAINER_COPY_JOB
from ferry.kinds.databaseaccount.plugin import PLUGIN as DATABASE_ACCOUNT
from ferry.kinds.inaccountrestore.plugin import PLUGIN as IN_ACCOUNT_RESTORE
from ferry.kinds.plugin import KindPlugin

PLUGINS: tuple[KindPlugin, ...] = (DATABASE_ACCOUNT, CONTAINER_COPY_JOB, IN_ACCOUNT_RESTORE, BLOB_COPY)
BY_KIND: dict[str, KindPlugin] = {p.kind.kind: p for p in PLUGINS}
