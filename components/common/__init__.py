"""Shared building blocks: storage (gs:// and local), logging, downloads, dataset manifests."""
