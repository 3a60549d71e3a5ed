"""Data prep: ingest and validate a source, write versioned TFRecord shards and a manifest."""
