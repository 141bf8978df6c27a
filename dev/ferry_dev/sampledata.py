"""Sample data for the demo: blobs of every type in the source account and what the examples should produce."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.storage.blob import BlobSasPermissions, BlobServiceClient, BlobType, generate_blob_sas

from ferry_dev.emulators import StorageAccount

SOURCE_CONTAINER = "photos"
DEST_CONTAINER = "archive"


def _bytes(label: str, size: int) -> bytes:
    """Deterministic, incompressible-looking content of a given size."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{label}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


@dataclass(frozen=True)
class ExpectedBlob:
    container: str
    name: str
    content: bytes
    blob_type: BlobType


@dataclass(frozen=True)
class BlobSamples:
    sas_url: str  # a read SAS for one source blob, for the SAS-URL example
    expected: list[ExpectedBlob]  # what the destination must hold once every example succeeded


def seed_blobs(source: StorageAccount, destination: StorageAccount) -> BlobSamples:
    src = BlobServiceClient.from_connection_string(source.connection_string)
    dst = BlobServiceClient.from_connection_string(destination.connection_string)
    photos = src.get_container_client(SOURCE_CONTAINER)
    if not photos.exists():
        photos.create_container()
    archive = dst.get_container_client(DEST_CONTAINER)
    if not archive.exists():
        archive.create_container()

    report = _bytes("report", 3 * 1024 * 1024 + 123)
    photos.upload_blob("2026/report.pdf", report, overwrite=True)
    pictures = {f"2026/img-{i:02d}.jpg": _bytes(f"img{i}", 200_000 + i * 7919) for i in range(6)}
    for name, data in pictures.items():
        photos.upload_blob(name, data, overwrite=True)
    # A sparse page blob: only two page ranges hold data.
    disk = photos.get_blob_client("2026/disk.vhd")
    disk.create_page_blob(size=4 * 1024 * 1024)
    first, second = _bytes("page-a", 512 * 8), _bytes("page-b", 512 * 4)
    disk.upload_page(first, offset=0, length=len(first))
    disk.upload_page(second, offset=3 * 1024 * 1024, length=len(second))
    disk_content = bytearray(4 * 1024 * 1024)
    disk_content[0 : len(first)] = first
    disk_content[3 * 1024 * 1024 : 3 * 1024 * 1024 + len(second)] = second
    log = photos.get_blob_client("2026/audit.log")
    log.create_append_blob()
    lines = [f"{i:04d} event\n".encode() for i in range(300)]
    for start in range(0, len(lines), 100):
        log.append_block(b"".join(lines[start : start + 100]))
    # A destination blob that exists already: `overwrite: Never` must leave it as it is.
    photos.upload_blob("2026/keep.txt", b"new source text\n", overwrite=True)
    kept = b"destination text that must survive\n"
    archive.upload_blob("photos/2026/keep.txt", kept, overwrite=True)
    cover = _bytes("cover", 700_000)
    photos.upload_blob("cover.jpg", cover, overwrite=True)

    sas = generate_blob_sas(
        account_name=source.name,
        container_name=SOURCE_CONTAINER,
        blob_name="cover.jpg",
        account_key=source.key,
        permission=BlobSasPermissions(read=True),
        expiry=datetime.now(UTC) + timedelta(hours=2),
    )
    expected = [
        ExpectedBlob(DEST_CONTAINER, "reports/2026-report.pdf", report, BlobType.BLOCKBLOB),
        ExpectedBlob(DEST_CONTAINER, "photos/2026/report.pdf", report, BlobType.BLOCKBLOB),
        ExpectedBlob(DEST_CONTAINER, "photos/2026/disk.vhd", bytes(disk_content), BlobType.PAGEBLOB),
        ExpectedBlob(DEST_CONTAINER, "photos/2026/audit.log", b"".join(lines), BlobType.APPENDBLOB),
        ExpectedBlob(DEST_CONTAINER, "photos/2026/keep.txt", kept, BlobType.BLOCKBLOB),
        ExpectedBlob(DEST_CONTAINER, "covers/cover.jpg", cover, BlobType.BLOCKBLOB),
        *(ExpectedBlob(DEST_CONTAINER, "photos/" + name, data, BlobType.BLOCKBLOB) for name, data in pictures.items()),
    ]
    return BlobSamples(sas_url=f"{photos.url}/cover.jpg?{sas}", expected=expected)


def check_blobs(destination: StorageAccount, expected: list[ExpectedBlob]) -> list[str]:
    """Differences between the destination and what it should hold (empty when all is right)."""
    dst = BlobServiceClient.from_connection_string(destination.connection_string)
    problems = []
    for blob in expected:
        client = dst.get_blob_client(blob.container, blob.name)
        if not client.exists():
            problems.append(f"{blob.container}/{blob.name}: missing")
            continue
        props = client.get_blob_properties()
        if props.blob_type != blob.blob_type:
            problems.append(f"{blob.container}/{blob.name}: type {props.blob_type}, expected {blob.blob_type}")
        if client.download_blob().readall() != blob.content:
            problems.append(f"{blob.container}/{blob.name}: content differs from the source")
    return problems


COSMOS_ORDERS = 150
COSMOS_CUSTOMERS = 60
COSMOS_REVIEWS = 120
COSMOS_SUPPLIERS = 12
REGIONS = ("north", "south", "east", "west")
SYSTEM_PROPERTIES = ("_rid", "_self", "_etag", "_attachments", "_ts")


def _cosmos(endpoint: str, key: str) -> Any:
    from ferry.storage.cosmos import CosmosAccess

    return CosmosAccess(endpoint, key, verify_tls=False).client()  # the local server's certificate is self-signed


def seed_cosmos(endpoint: str, key: str) -> None:
    """The shop: orders partitioned by customer (to be repartitioned by region), customers and suppliers (to be
    copied into shop-v2 by one job of two tasks) and reviews (to be deleted by mistake and restored)."""
    from azure.cosmos import PartitionKey

    cosmos = _cosmos(endpoint, key)
    shop = cosmos.create_database_if_not_exists("shop")
    orders = shop.create_container_if_not_exists("orders", PartitionKey("/customerId"))
    shop.create_container_if_not_exists("orders-by-region", PartitionKey("/region"))
    customers = shop.create_container_if_not_exists("customers", PartitionKey("/id"))
    suppliers = shop.create_container_if_not_exists("suppliers", PartitionKey("/id"))
    shop_v2 = cosmos.create_database_if_not_exists("shop-v2")
    shop_v2.create_container_if_not_exists("clients", PartitionKey("/id"))
    shop_v2.create_container_if_not_exists("suppliers", PartitionKey("/country"))
    for i in range(COSMOS_ORDERS):
        orders.upsert_item(
            {
                "id": f"order-{i:04d}",
                "customerId": f"customer-{i % COSMOS_CUSTOMERS:03d}",
                "region": REGIONS[i % len(REGIONS)],
                "total": round(10 + i * 1.37, 2),
                "lines": [{"sku": f"sku-{i % 17}", "qty": 1 + i % 3}],
            }
        )
    for i in range(COSMOS_CUSTOMERS):
        customers.upsert_item({"id": f"customer-{i:03d}", "name": f"Customer {i}", "ttl": -1})
    for i in range(COSMOS_SUPPLIERS):
        suppliers.upsert_item({"id": f"supplier-{i:02d}", "country": REGIONS[i % len(REGIONS)]})
    reviews = shop.create_container_if_not_exists("reviews", PartitionKey("/sku"), default_ttl=90 * 24 * 3600)
    for i in range(COSMOS_REVIEWS):
        reviews.upsert_item({"id": f"review-{i:04d}", "sku": f"sku-{i % 17}", "stars": 1 + i % 5, "ttl": -1})


def delete_container(endpoint: str, key: str, database: str, container: str) -> dict[str, dict[str, Any]]:
    """Delete a container (the mistake the demo's restore undoes); its items as they were."""
    found = _cosmos(endpoint, key).get_database_client(database)
    items = _items(found.get_container_client(container))
    found.delete_container(container)
    return items


def check_restored(endpoint: str, key: str, expected: dict[tuple[str, str], dict[str, dict[str, Any]]]) -> list[str]:
    """Differences between what restored containers hold and what they held before the deletion."""
    from azure.cosmos.exceptions import CosmosResourceNotFoundError

    cosmos = _cosmos(endpoint, key)
    problems = []
    for (database, container), items in expected.items():
        try:
            found = _items(cosmos.get_database_client(database).get_container_client(container))
        except CosmosResourceNotFoundError:
            problems.append(f"{database}/{container}: not restored")
            continue
        if found != items:
            problems.append(f"{database}/{container}: {len(found)} of {len(items)} items as they were before")
    return problems


def _items(container: Any) -> dict[str, dict[str, Any]]:
    items = container.query_items("SELECT * FROM c", enable_cross_partition_query=True)
    return {item["id"]: {k: v for k, v in item.items() if k not in SYSTEM_PROPERTIES} for item in items}


def check_cosmos(endpoint: str, key: str) -> list[str]:
    """Differences between each job's source and destination (empty when every item arrived unchanged)."""
    cosmos = _cosmos(endpoint, key)
    pairs = (
        (("shop", "orders"), ("shop", "orders-by-region")),
        (("shop", "customers"), ("shop-v2", "clients")),
        (("shop", "suppliers"), ("shop-v2", "suppliers")),
    )
    problems = []
    for (sdb, sc), (ddb, dc) in pairs:
        source = _items(cosmos.get_database_client(sdb).get_container_client(sc))
        dest = _items(cosmos.get_database_client(ddb).get_container_client(dc))
        if source != dest:
            missing = sorted(set(source) - set(dest))[:5]
            differ = sorted(i for i in set(source) & set(dest) if source[i] != dest[i])[:5]
            problems.append(f"{ddb}/{dc}: {len(dest)} of {len(source)} items; missing {missing}, differing {differ}")
    return problems
