"""ContainerCopyJob's place in Ferry: its controller. Its copies run on its account's copy instances (the
DatabaseAccount's `copy` worker role)."""

from __future__ import annotations

from ferry.api.kinds import CONTAINER_COPY_JOB
from ferry.kinds.containercopyjob.controller import ContainerCopyJobController
from ferry.kinds.plugin import KindPlugin

PLUGIN = KindPlugin(kind=CONTAINER_COPY_JOB, controller=ContainerCopyJobController, account_scoped=True)
