"""InAccountRestore's metrics."""

from __future__ import annotations

from ferry.metrics import define_counter

RESTORE_ITEMS_METRIC = define_counter(
    "ferry_restore_items_restored", "Items restored by InAccountRestores, as instances report them."
)
