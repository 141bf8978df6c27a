"""Ferry: a Kubernetes operator that copies Cosmos DB containers, restores deleted ones and copies blobs."""

__version__ = "0.1.0"
