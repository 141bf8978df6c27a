"""The BlobCopy worker as a library, independent of Kubernetes.

run_copy() performs (or resumes) one BlobCopy and reports camelCase status patches; cleanup()
aborts what Ferry left pending and releases Ferry's leases. When `stop` is set, run_copy() raises
CopyStopped after checkpointing (staged blocks and the pending marker stay on the destination,
leases stay held); a later run_copy() with the last reported status resumes. Transient failures
that outlast the bounded retries raise TransientWorkerError: run the worker again.

No SAS token, key or connection string is ever reported, raised or logged: texts pass redact().
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from azure.core.exceptions import AzureError, HttpResponseError
from azure.storage.blob import BlobClient, BlobProperties, ContainerClient

from ferry.api.blobcopy import (
    ALLOW_LINK_LOCAL_ENV,
    DESTINATION_ENV_PREFIX,
    SOURCE_ENV_PREFIX,
    BlobCopyMode,
    BlobCopyProgress,
    BlobCopySpec,
    BlobCopyStatus,
    CopyStatus,
)
from ferry.api.common import Failure, parse_duration
from ferry.kinds.blobcopy import locks as leases
from ferry.kinds.blobcopy import serverside
from ferry.kinds.blobcopy.bulk import BulkCopy
from ferry.kinds.blobcopy.identities import refused_failure, source_refusal, token_failure
from ferry.kinds.blobcopy.items import (
    MARK_ID,
    MARK_STATE,
    PAGE_SIZE,
    PENDING,
    BlobFailure,
    CopyItem,
    CopyStopped,
    Endpoints,
    RunContext,
    TransientWorkerError,
    dest_lease_id,
    dest_properties,
    destination_name,
    ferry_copy_id,
    is_single,
    list_sources,
    source_container,
    source_lease_id,
    source_signer,
    url_object_name,
)
from ferry.kinds.blobcopy.manifest import Manifest, ManifestConflict, ManifestState
from ferry.kinds.blobcopy.serverside import SAS_MARGIN
from ferry.kinds.blobcopy.shared import SHARED_PAGE_SIZE, SharedCopy
from ferry.kinds.blobcopy.stream import abort_pending, copy_stream
from ferry.storage.blobs import (
    RetryRecorder,
    credential_free_url,
    describe,
    is_transient,
    redact,
)
from ferry.storage.sources import SourceChangedError, SourceUnavailableError, TransientSourceError
from ferry.timefmt import when
from ferry.workers.outcome import PermanentError
from ferry.workers.podenv import blob_account_from_env

__all__ = [
    "CopyOutcome",
    "CopyStopped",
    "Endpoints",
    "TransientWorkerError",
    "cleanup",
    "endpoints_from_env",
    "run_copy",
]

REPORT_INTERVAL = 1.0
SEND_EVERY = 0.1

# Receives the worker's whole part of the status; True forces it out now (a state change).
ReportFn = Callable[[BlobCopyProgress, bool], None]


@dataclass
class CopyOutcome:
    succeeded: bool
    failure: Failure | None = None
    stats: dict[str, int] = field(default_factory=dict)  # blocksStaged, blocksReused


def endpoints_from_env(env: Mapping[str, str] = os.environ) -> Endpoints:
    destination = blob_account_from_env(env, DESTINATION_ENV_PREFIX)
    if destination is None:
        raise PermanentError(
            "InvalidDestination",
            "the destination's connection string is empty: "
            "fill the Secret key spec.destination.account.secretRef names",
        )
    return Endpoints(
        source_account=blob_account_from_env(env, SOURCE_ENV_PREFIX),
        source_url=env.get("FERRY_SOURCE_URL") or None,
        destination_account=destination,
        allow_link_local=env.get(ALLOW_LINK_LOCAL_ENV, "").lower() == "true",
    )


def _same_blob(a: BlobClient, b: BlobClient) -> bool:
    return credential_free_url(a.url).lower() == credential_free_url(b.url).lower()


def _now() -> str:
    return when(datetime.now(UTC))


class Reporter:
    """The worker's part of the status (BlobCopyProgress), accumulated and sent whole: at state changes,
    and for progress at most every REPORT_INTERVAL."""

    def __init__(self, report: ReportFn, recorder: RetryRecorder, previous: BlobCopyProgress | None = None) -> None:
        self._report = report
        self._recorder = recorder
        self._lock = threading.Lock()
        self._retries_seen = 0
        self._sent_at = 0.0
        self._held: dict[str, Any] = {}  # unforced patches held back until the next send
        self._fields: dict[str, Any] = previous.wire() if previous is not None else {}
        self.bytes_copied = 0
        self.total_bytes = 0
        self.description: str | None = None

    def add_bytes(self, n: int) -> None:
        with self._lock:
            self.bytes_copied += n
        self.send({})

    def drop_total(self, n: int) -> None:
        """A skipped blob leaves the total, so that progress reads X/X when the copy succeeds."""
        with self._lock:
            self.total_bytes -= n

    def note(self, text: str) -> None:
        self.description = redact(text)

    def send(self, patch: dict[str, Any], force: bool = False) -> None:
        with self._lock:
            # Progress of many small blobs arrives hundreds of times a second: build the status part at
            # most every SEND_EVERY unless a state change forces it.
            now = time.monotonic()
            if not force and now - self._sent_at < SEND_EVERY:
                self._held.update(patch)
                return
            self._sent_at = now
            patch, self._held = {**self._held, **patch}, {}
            if self._recorder.count != self._retries_seen and self._recorder.last:
                self._retries_seen = self._recorder.count
                self.description = f"{self._recorder.last} ({self._recorder.count} retried so far)"
            self._fields.update(
                progress=f"{self.bytes_copied}/{self.total_bytes}",
                bytesCopied=self.bytes_copied,
                totalBytes=self.total_bytes,
                lastUpdateTime=_now(),
            )
            if self.description:
                self._fields["statusDescription"] = self.description
            self._fields.update(patch)
            part = BlobCopyProgress.model_validate(
                {k: redact(v) if isinstance(v, str) else v for k, v in self._fields.items()}
            )
        self._report(part, force)


def run_copy(
    spec: BlobCopySpec,
    previous: BlobCopyStatus | None,
    endpoints: Endpoints,
    report: ReportFn,
    stop: threading.Event,
    copy_key: str,
    owner: str | None = None,
    page_size: int = PAGE_SIZE,
    worker_index: int = 0,
) -> CopyOutcome:
    """Perform or resume one BlobCopy; `owner` ("namespace/name") places a multi-blob copy's manifest, whose
    source is listed `page_size` blobs at a time. With spec.workers > 1, `worker_index` says which of the copy's
    workers this is (0: the coordinator, which lists the source; see shared)."""
    recorder = RetryRecorder()
    if worker_index > 0:
        report = _silent  # one writer of the copy's status: the coordinator, from the manifest
    reporter = Reporter(report, recorder, BlobCopyProgress.part_of(previous.wire()) if previous else None)
    resuming = previous is not None and previous.copy_id is not None
    copy_id = ferry_copy_id(copy_key)
    start_time = (previous.start_time if previous is not None else None) or datetime.now(UTC)
    try:
        refused = token_failure(endpoints)
        if refused is not None:
            reporter.send({"copyStatus": "failed"}, force=True)
            return CopyOutcome(succeeded=False, failure=refused)
        outcome = _run(
            spec,
            previous,
            endpoints,
            reporter,
            recorder,
            stop,
            copy_key,
            copy_id,
            start_time,
            resuming,
            owner,
            page_size,
            worker_index,
        )
        outcome.failure = source_refusal(endpoints, outcome.failure)
        return outcome
    except CopyStopped:
        reporter.send({"statusDescription": "stopped; the copy resumes from its checkpoint"}, force=True)
        raise
    except (TransientSourceError, AzureError, OSError) as error:
        if isinstance(error, TransientSourceError) or is_transient(error):
            reporter.send({"statusDescription": f"transient failure, will retry: {describe(error)}"}, force=True)
            raise TransientWorkerError(describe(error)) from None
        failure = refused_failure(endpoints, error) or Failure(reason="StorageError", message=describe(error))
        reporter.send({"copyStatus": "failed"}, force=True)
        return CopyOutcome(succeeded=False, failure=failure)


def _run(
    spec: BlobCopySpec,
    previous: BlobCopyStatus | None,
    endpoints: Endpoints,
    reporter: Reporter,
    recorder: RetryRecorder,
    stop: threading.Event,
    copy_key: str,
    copy_id: str,
    start_time: datetime,
    resuming: bool,
    owner: str | None,
    page_size: int,
    worker_index: int,
) -> CopyOutcome:
    dest_container = endpoints.destination.container_client(spec.destination.container, recorder)
    max_lifetime = parse_duration(spec.max_lifetime)
    ctx = RunContext(
        spec=spec,
        copy_key=copy_key,
        copy_id=copy_id,
        stop=stop,
        recorder=recorder,
        dest_container=dest_container,
        source_signer=source_signer(endpoints, max_lifetime + SAS_MARGIN, recorder),
        start_time=start_time,
        max_lifetime=max_lifetime,
        resuming=resuming,
        add_bytes=reporter.add_bytes,
        note=reporter.note,
    )
    started: dict[str, Any] = {"copyId": copy_id, "copyStatus": "pending"}
    if not is_single(spec):
        return _run_many(ctx, endpoints, previous, reporter, started, owner, page_size, worker_index)
    try:
        sources = list_sources(spec, endpoints, recorder)
    except BlobFailure as failure:
        return _fail(reporter, started, failure)
    items = [
        CopyItem(s, n, dest_container.get_blob_client(n)) for s in sources for n in [destination_name(spec, s.name)]
    ]
    onto_itself = [i.dest_name for i in items if i.source.client is not None and _same_blob(i.source.client, i.dest)]
    if onto_itself:
        # Two Secrets of one account: CEL could not tell. Copying a blob onto itself is a no-op at best, and
        # with lockSource fails on the copy's own lease.
        message = (
            f"the destination is the source (blob {onto_itself[0]}): choose another container, blob name or prefix"
        )
        return _fail(reporter, started, BlobFailure("DestinationIsSource", message))
    single = is_single(spec)
    reporter.total_bytes = sum(i.source.size for i in items)
    counts = {"total": len(items), "pending": len(items), "succeeded": 0, "failed": 0, "skipped": 0}
    if single and items:
        started["sourceETag"] = items[0].source.etag
    reporter.send({**started, "blobs": dict(counts)}, force=True)

    failures: list[tuple[str, BlobFailure]] = []
    skips: list[str] = []
    try:
        if spec.mode == BlobCopyMode.STREAM:
            for item in items:
                ctx.check_stop()
                try:
                    reason = copy_stream(ctx, item)
                except (SourceChangedError, SourceUnavailableError) as error:
                    reason = None
                    code = "SourceChanged" if isinstance(error, SourceChangedError) else "SourceUnavailable"
                    failures.append((item.dest_name, BlobFailure(code, str(error))))
                except BlobFailure as failure:
                    reason = None
                    failures.append((item.dest_name, failure))
                    if failure.reason == "MaxLifetimeExceeded":
                        _abort_expired(ctx, item)
                else:
                    counts["succeeded" if reason is None else "skipped"] += 1
                    if reason is not None:
                        skips.append(reason)
                        reporter.drop_total(item.source.size)
                counts["pending"] -= 1
                counts["failed"] = len(failures)
                reporter.send({"blobs": dict(counts)}, force=True)
        else:
            _server_side(ctx, items, endpoints, previous, reporter, counts, failures, skips)
    except CopyStopped:
        raise
    except BaseException:
        _release_all(ctx, items)
        raise
    _release_all(ctx, items)

    # copyId was reported when known: the service's id for a single server-side copy, else Ferry's.
    done = {**{k: v for k, v in started.items() if k != "copyId"}, "blobs": dict(counts)}
    if failures:
        name, first = failures[0]
        message = (
            first.message if single else f"{len(failures)} of {len(items)} blobs failed; first, {name}: {first.message}"
        )
        return _fail(reporter, done, BlobFailure(first.reason, message), ctx.stats)
    done["copyStatus"] = "skipped" if single and skips else "success"
    if single and skips:
        done["statusDescription"] = f"skipped: {skips[0]}"
    elif skips:
        done["statusDescription"] = f"{len(skips)} blob(s) skipped under overwrite {spec.overwrite.value}"
    elif reporter.description is None and recorder.count == 0:
        done["statusDescription"] = "copied"  # otherwise the final send records the retries
    reporter.send(done, force=True)
    return CopyOutcome(succeeded=True, stats=dict(ctx.stats))


def _run_many(
    ctx: RunContext,
    endpoints: Endpoints,
    previous: BlobCopyStatus | None,
    reporter: Reporter,
    started: dict[str, Any],
    owner: str | None,
    page_size: int,
    worker_index: int,
) -> CopyOutcome:
    """A prefix or whole-container copy: listed page by page, checkpointed in the manifest (see bulk)."""
    spec = ctx.spec
    try:
        source = source_container(spec, endpoints, ctx.recorder)
    except BlobFailure as failure:
        return _fail(reporter, started, failure)
    if _same_container(spec, source, ctx.dest_container):
        # Two Secrets of one account: CEL could not tell. Every blob would be copied onto itself.
        message = (
            f"the destination is the source (container {spec.destination.container}, the same blob names): "
            "choose another container or prefix"
        )
        return _fail(reporter, started, BlobFailure("DestinationIsSource", message))
    manifest = Manifest(endpoints.destination.service_client(ctx.recorder), ctx.copy_key, owner)
    shared = spec.workers > 1
    if shared:
        page_size = min(page_size, SHARED_PAGE_SIZE)
        ctx.resuming = True  # the other workers may have started any blob
    state = manifest.load() if worker_index == 0 else manifest.read()
    if state is None:
        state = ManifestState(started_at=ctx.start_time, page_size=page_size, shared=shared)
        if shared and worker_index == 0:
            state = _start_shared(manifest, state)
    else:
        ctx.resuming = True
        if state.started_at is not None:
            ctx.start_time = min(state.started_at, ctx.start_time)
        page_size = state.page_size or page_size
    ctx.mark_done = spec.mode == BlobCopyMode.STREAM
    reporter.bytes_copied = state.bytes_copied

    def send(blobs: dict[str, Any], failures: list[dict[str, Any]], total_bytes: int, copied: int, force: bool) -> None:
        reporter.total_bytes = total_bytes
        if shared:
            reporter.bytes_copied = copied  # every worker's, as the manifest counts them
        reporter.send({**started, "blobs": blobs, "failures": failures or None}, force)

    previous_id = previous.copy_id if previous else None
    try:
        if shared:
            bulk: BulkCopy = SharedCopy(
                ctx, endpoints, manifest, state, source, previous_id, send, worker_index, page_size
            )
        else:
            bulk = BulkCopy(ctx, endpoints, manifest, state, source, previous_id, send, page_size)
        bulk.run()
    except BlobFailure as failure:
        return _fail(reporter, started, failure)
    if worker_index > 0:
        return CopyOutcome(succeeded=True, stats=dict(ctx.stats))  # no page left; the coordinator tells the outcome
    state = bulk.state
    counts = {"total": state.listed, "pending": 0, "succeeded": state.succeeded, "failed": state.failed}
    counts["skipped"] = state.skipped
    first = [f.wire() for f in state.first_failures] or None
    done: dict[str, Any] = {"blobs": counts, "failures": first}
    if state.failed:
        head = state.first_failures[0]
        message = f"{state.failed} of {state.listed} blobs failed; first, {head.name}: {head.message}"
        return _fail(reporter, done, BlobFailure(head.reason, message), ctx.stats)
    done["copyStatus"] = "success"
    if state.skipped:
        done["statusDescription"] = f"{state.skipped} blob(s) skipped under overwrite {spec.overwrite.value}"
    elif reporter.description is None and ctx.recorder.count == 0:
        done["statusDescription"] = "copied"
    reporter.send(done, force=True)
    return CopyOutcome(succeeded=True, stats=dict(ctx.stats))


def _same_container(spec: BlobCopySpec, source: ContainerClient, dest: ContainerClient) -> bool:
    same_names = spec.destination.prefix is None or spec.destination.prefix == (spec.source.prefix or "")
    return same_names and credential_free_url(source.url).lower() == credential_free_url(dest.url).lower()


def _silent(part: BlobCopyProgress, force: bool) -> None:
    """A helper worker reports nothing into the status; it writes only the manifest."""


def _start_shared(manifest: Manifest, state: ManifestState) -> ManifestState:
    """The coordinator's first state of a shared copy; the one already there if another coordinator came first."""
    try:
        manifest.save(state)
    except ManifestConflict:
        return manifest.load() or state
    return state


def _fail(
    reporter: Reporter, patch: dict[str, Any], failure: BlobFailure, stats: dict[str, int] | None = None
) -> CopyOutcome:
    result = Failure(reason=failure.reason, message=redact(failure.message))
    reporter.send({**patch, "copyStatus": "failed", "statusDescription": result.message}, force=True)
    return CopyOutcome(succeeded=False, failure=result, stats=dict(stats or {}))


def _server_side(
    ctx: RunContext,
    items: list[CopyItem],
    endpoints: Endpoints,
    previous: BlobCopyStatus | None,
    reporter: Reporter,
    counts: dict[str, int],
    failures: list[tuple[str, BlobFailure]],
    skips: list[str],
) -> None:
    copies = [serverside.ServerCopy(item) for item in items]
    previous_id = previous.copy_id if previous is not None else None

    def schedule(copy: serverside.ServerCopy) -> None:
        ctx.check_stop()
        try:
            serverside.start(ctx, copy, endpoints.source_url, previous_id)
        except BlobFailure as failure:
            copy.state, copy.failure = "failed", failure

    with ThreadPoolExecutor(max_workers=ctx.spec.parallelism, thread_name_prefix="ferry-copy") as pool:
        for done in [pool.submit(schedule, c) for c in copies]:
            done.result()
    if len(copies) == 1 and copies[0].copy_id:
        reporter.send({"copyId": copies[0].copy_id}, force=True)

    def progress() -> None:
        reporter.bytes_copied = sum(c.copied for c in copies)
        reporter.total_bytes = sum(c.item.source.size for c in copies if c.state != "skipped")
        tally = {state: sum(1 for c in copies if c.state == state) for state in ("success", "failed", "skipped")}
        counts.update(
            pending=len(copies) - sum(tally.values()),
            succeeded=tally["success"],
            failed=tally["failed"],
            skipped=tally["skipped"],
        )
        reporter.send({"blobs": dict(counts)})

    serverside.monitor(ctx, copies, endpoints.source_url, progress)
    progress()
    for copy in copies:
        if copy.failure is not None:
            failures.append((copy.item.dest_name, copy.failure))
        if copy.skipped is not None:
            skips.append(copy.skipped)


def _release_item(ctx: RunContext, item: CopyItem) -> None:
    if ctx.spec.lock_source and item.source.client is not None:
        leases.release(item.source.client, ctx.source_lease_id)
    if ctx.spec.lock_destination:
        leases.release(item.dest, ctx.dest_lease_id)


def _release_all(ctx: RunContext, items: list[CopyItem]) -> None:
    for item in items:
        try:
            _release_item(ctx, item)
        except HttpResponseError as error:
            ctx.note(f"lease release on {item.dest_name} failed: {describe(error)}")


def _abort_expired(ctx: RunContext, item: CopyItem) -> None:
    props = dest_properties(item.dest)
    if props is not None and (props.metadata or {}).get(MARK_ID) == ctx.copy_id:
        abort_pending(item.dest, props, ctx.dest_lease_id if ctx.spec.lock_destination else None)


def cleanup(
    spec: BlobCopySpec,
    previous: BlobCopyStatus | None,
    endpoints: Endpoints,
    report: ReportFn,
    copy_key: str,
) -> None:
    """Abort Ferry's pending copies (destination left empty) and release Ferry's leases; idempotent."""
    if previous is None or not previous.copy_id:
        return  # nothing was started, so nothing of ours can be pending or leased
    copy_id = ferry_copy_id(copy_key)
    recorder = RetryRecorder()
    dest = endpoints.destination.container_client(spec.destination.container, recorder)
    lease = dest_lease_id(copy_id)
    aborted = 0
    if is_single(spec):
        name = spec.destination.blob or spec.source.blob or url_object_name(endpoints.source_url or "")
        try:
            props = dest.get_blob_client(name).get_blob_properties()
        except HttpResponseError:
            props = None
        found: Iterable[BlobProperties] = [props] if props is not None else []
    else:
        # Page by page: the listing carries metadata, copy details and lease state, so no blob is read twice
        # and nothing but the current page is in memory.
        prefix = spec.destination.prefix if spec.destination.prefix is not None else spec.source.prefix
        found = dest.list_blobs(name_starts_with=prefix, include=["metadata", "copy"], results_per_page=PAGE_SIZE)
    for props in found:
        aborted += _clean_blob(spec, dest, props, copy_id, previous.copy_id, lease)
    if spec.lock_source and endpoints.source is not None and spec.source.container:
        src = endpoints.source.container_client(spec.source.container, recorder)
        if spec.source.blob:
            leases.release(src.get_blob_client(spec.source.blob), source_lease_id(copy_id))
        else:
            for props in src.list_blobs(name_starts_with=spec.source.prefix, results_per_page=PAGE_SIZE):
                if str(props.lease.state or "") == "leased":
                    leases.release(src.get_blob_client(props.name), source_lease_id(copy_id))
    part = BlobCopyProgress.part_of(previous.wire())
    part.last_update_time = datetime.now(UTC)
    if aborted:
        part.copy_status = CopyStatus.ABORTED
        part.status_description = f"aborted {aborted} pending copy(ies)"
    elif part.copy_status == CopyStatus.PENDING:
        part.copy_status = CopyStatus.ABORTED
        part.status_description = "nothing was left pending on the destination; Ferry's leases are released"
    report(part, True)


def _clean_blob(
    spec: BlobCopySpec, dest: ContainerClient, props: BlobProperties, copy_id: str, previous_id: str, lease: str
) -> int:
    """Abort this copy's pending copy of one destination blob and release Ferry's lease on it; 1 if aborted."""
    held = spec.lock_destination and str(props.lease.state or "") == "leased"
    metadata = dict(props.metadata or {})
    ours_pending = metadata.get(MARK_STATE) == PENDING and metadata.get(MARK_ID) == copy_id
    service_pending = (
        props.copy is not None
        and str(props.copy.status or "") == PENDING
        and props.copy.id
        in (copy_id, previous_id, *([props.copy.id] if _from_our_source(spec, props.copy.source) else []))
    )
    if not (ours_pending or service_pending or held):
        return 0
    client = dest.get_blob_client(props.name)
    aborted = 0
    try:
        if ours_pending:
            abort_pending(client, props, lease if held else None)
            aborted = 1
        elif service_pending:
            client.abort_copy(str(props.copy.id), **({"lease": lease} if held else {}))
            aborted = 1
    except HttpResponseError as error:
        if error.status_code not in (404, 409, 412):
            raise
    if held:
        leases.release(client, lease)
    return aborted


def _from_our_source(spec: BlobCopySpec, copy_source: str | None) -> bool:
    return bool(copy_source) and spec.source.container is not None and f"/{spec.source.container}/" in str(copy_source)
