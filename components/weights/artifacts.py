"""The weights step's KFP artifact: a Model whose file is a JSON record of the weights."""

from __future__ import annotations

from components.common.artifacts import write_json
from components.common.lineage import as_metadata, lineage
from components.weights.fetch import WeightsResult

RECORD_KEYS = ("uri", "source", "sha256", "md5", "size", "backbone", "pretrained", "filename")


def record(result: WeightsResult) -> dict:
    """The artifact's record and metadata: where the weights are, their hashes and size."""
    values = {key: getattr(result, key) for key in RECORD_KEYS}
    return {**values, "cache_hit": result.cache_hit}


def publish(result: WeightsResult, weights) -> tuple[str, bool]:
    """Write the record into the Model artifact; return (weights URI or "", pretrained)."""
    values = record(result)
    write_json(weights, values)
    weights.metadata.update({key: value for key, value in values.items() if value is not None})
    weights.metadata.update(as_metadata(lineage()))
    return result.uri or "", result.pretrained
