"""InAccountRestore's place in Ferry: its controller. Its restores run on its account's restore instances (the
DatabaseAccount's `restore` worker role)."""

from __future__ import annotations

from ferry.api.kinds import IN_ACCOUNT_RESTORE
from ferry.kinds.inaccountrestore.controller import InAccountRestoreController
from ferry.kinds.plugin import KindPlugin

PLUGIN = KindPlugin(kind=IN_ACCOUNT_RESTORE, controller=InAccountRestoreController, account_scoped=True)
