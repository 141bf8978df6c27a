"""BlobCopy's place in Ferry: its controller and its worker pods (the copy, and the cleanup after it)."""

from __future__ import annotations

import argparse

from ferry.api.kinds import BLOB_COPY
from ferry.kinds.blobcopy.controller import CLEANUP_ROLE, COPY_ROLE, BlobCopyController
from ferry.kinds.plugin import KindPlugin, WorkerRole, namespace_and_name


def _arguments(parser: argparse.ArgumentParser) -> None:
    namespace_and_name(parser, "the BlobCopy")


def _copy(args: argparse.Namespace) -> int:
    from ferry.kinds.blobcopy import worker

    return worker.main(args.namespace, args.name, do_cleanup=False)


def _cleanup(args: argparse.Namespace) -> int:
    from ferry.kinds.blobcopy import worker

    return worker.main(args.namespace, args.name, do_cleanup=True)


PLUGIN = KindPlugin(
    kind=BLOB_COPY,
    controller=BlobCopyController,
    workers=(
        WorkerRole(COPY_ROLE, "copy the blobs of one BlobCopy, reporting into its status", _arguments, _copy),
        WorkerRole(CLEANUP_ROLE, "abort the BlobCopy's pending copies and release its leases", _arguments, _cleanup),
    ),
)
