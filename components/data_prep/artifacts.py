"""The data-prep step's KFP artifact: the Dataset holds the manifest, its metadata the counts."""

from __future__ import annotations

from pathlib import Path

from components.data_prep.prep import PrepResult


def publish(result: PrepResult, dataset) -> tuple[str, str]:
    """Write the manifest into the Dataset artifact; return (dataset URI, version)."""
    manifest = result.manifest
    Path(dataset.path).parent.mkdir(parents=True, exist_ok=True)
    Path(dataset.path).write_text(manifest.to_json())
    dataset.metadata.update(
        {
            "uri": result.uri,
            "version": manifest.version,
            "cache_hit": result.cache_hit,
            "classes": manifest.num_classes,
            "image_shape": list(manifest.image_shape),
            "image_encoding": manifest.image_encoding,
            "resize": manifest.preprocessing.get("resize", "native"),
            "warnings": len(manifest.warnings),
            **{f"{name}_images": split.count for name, split in manifest.splits.items()},
        }
    )
    return result.uri, manifest.version


def summary(result: PrepResult) -> dict:
    """The CLI's --output-json record."""
    return {
        "uri": result.uri,
        "version": result.manifest.version,
        "cache_hit": result.cache_hit,
        "splits": {name: split.count for name, split in result.manifest.splits.items()},
    }
