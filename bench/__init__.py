"""Benchmarks: printed tables, ratios measured side by side in one run."""
