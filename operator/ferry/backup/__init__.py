"""Ferry's own continuous backup of a Cosmos DB account: its format, capture, timeline and restore planning."""
