"""ContainerCopyJob's metrics."""

from __future__ import annotations

from ferry.metrics import define_counter

COPYJOB_ITEMS_METRIC = define_counter(
    "ferry_copyjob_items_copied", "Items copied by ContainerCopyJobs, as instances report them."
)
THROTTLED_METRIC = define_counter(
    "ferry_cosmos_throttled_requests", "429 responses met by copy instances (each was retried)."
)
