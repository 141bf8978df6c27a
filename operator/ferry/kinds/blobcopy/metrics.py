"""BlobCopy's metrics."""

from __future__ import annotations

from ferry.metrics import define_counter, define_histogram

BLOBCOPY_BYTES_METRIC = define_counter(
    "ferry_blobcopy_bytes_copied", "Bytes copied by BlobCopies, as their workers report them."
)
BLOBCOPY_DURATION_METRIC = define_histogram(
    "ferry_blobcopy_duration_seconds",
    "Time from a BlobCopy's start to its completion.",
    buckets=(1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600, 14 * 24 * 3600),
)
