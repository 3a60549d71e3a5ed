"""The data-prep step: source -> validated, versioned TFRecord shards plus a manifest."""

from __future__ import annotations

import datetime as dt
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from components.common import storage
from components.common.dataset import (
    MANIFEST_NAME,
    DataError,
    Manifest,
    Split,
    dataset_uri,
    load_manifest,
)
from components.common.digest import json_digest
from components.common.http import RetryPolicy
from components.common.logging import get_logger, step
from components.common.publish import publish_folder
from components.data_prep import folder, photos
from components.data_prep import images as image_folder
from components.data_prep.balance import class_warnings
from components.data_prep.config import PrepConfig
from components.data_prep.encoding import choose_encoding
from components.data_prep.idx import FASHION_MNIST_CLASSES, FASHION_MNIST_FILES, load_pair
from components.data_prep.shards import balanced_subset, stratified_split, write_records
from components.data_prep.sources import ResolvedSource, resolve

log = get_logger("data_prep")


@dataclass(frozen=True)
class PrepResult:
    """Where the dataset is, its manifest, and whether it was already there."""

    uri: str
    manifest: Manifest
    cache_hit: bool


def dataset_version(source_sha256: str, config: PrepConfig) -> str:
    """The version: a hash of the source content plus the versioned prep parameters."""
    return json_digest({"source": source_sha256, "params": config.versioned_params()})[:16]


def _load_idx(source: ResolvedSource, config: PrepConfig):
    """Class names and {split: (images, labels)} of an IDX source (small enough for memory)."""
    class_names = config.class_names or FASHION_MNIST_CLASSES
    files = {key: source.local_dir / name for key, name in FASHION_MNIST_FILES.items()}
    data = {
        split: load_pair(
            files[f"{split}_images"].read_bytes(),
            files[f"{split}_labels"].read_bytes(),
            str(files[f"{split}_images"]),
            str(files[f"{split}_labels"]),
            len(class_names),
        )
        for split in ("train", "test")
    }
    return tuple(class_names), data


def _plan_folder(source: ResolvedSource, config: PrepConfig):
    """Class names and pass one over an image-folder tree (headers only)."""
    root = image_folder.find_root(source.local_dir)
    listing = {split: image_folder.list_split(root, split) for split in ("train", "test")}
    if set(listing["train"]) != set(listing["test"]):
        only_train = sorted(set(listing["train"]) - set(listing["test"]))
        only_test = sorted(set(listing["test"]) - set(listing["train"]))
        raise DataError(
            f"{root}: train and test have different classes "
            f"(only in train: {only_train}, only in test: {only_test})"
        )
    class_names = tuple(sorted(listing["train"]))
    found = folder.plan(listing, class_names, config.max_image_pixels, config.image_size or None)
    return class_names, found


def _split_info(labels: np.ndarray, class_names: tuple[str, ...], shards) -> Split:
    counts = np.bincount(labels, minlength=len(class_names))
    return Split(
        count=len(labels),
        per_class={name: int(n) for name, n in zip(class_names, counts, strict=True)},
        shards=tuple(shards),
    )


def _build(source: ResolvedSource, config: PrepConfig, version: str, out: Path) -> Manifest:
    try:
        return _build_named(source, config, version, out)
    except DataError as error:
        local = str(source.local_dir)
        if local == source.description or local not in str(error):
            raise
        # Name files by where the user put them (inside the archive, under gs://), not by
        # the scratch copy they were unpacked into.
        raise DataError(str(error).replace(local, source.description.rstrip("/"))) from None


def _build_named(source: ResolvedSource, config: PrepConfig, version: str, out: Path) -> Manifest:
    """Choose each split's indices from the labels, then stream the images into shards."""
    if source.kind == "idx":
        class_names, data = _load_idx(source, config)
        labels = {split: split_labels for split, (_, split_labels) in data.items()}
        image_shape = tuple(int(d) for d in data["test"][0].shape[1:])
        image_encoding = "raw"
        preprocessing = {"resize": "native", "size": list(image_shape[:2]), "requested": "auto"}

        def records(split: str, indices: np.ndarray):
            images, split_labels = data[split]
            return ((images[i].tobytes(), int(split_labels[i])) for i in indices)
    else:
        class_names, found = _plan_folder(source, config)
        labels = {split: found.splits[split].labels for split in ("train", "test")}
        image_shape = found.image_shape
        image_encoding = choose_encoding(config.shard_encoding, found.sizing.size)
        preprocessing = {
            "resize": found.sizing.policy,
            "size": list(found.sizing.size),
            "requested": found.sizing.requested,
            "exif_orientation": "applied",
            "alpha_background": list(photos.BACKGROUND),
            "sixteen_bit": "top 8 bits (value / 257)",
        }

        def records(split: str, indices: np.ndarray):
            return folder.records(found, split, indices, config.max_image_pixels, image_encoding)

    keep = {
        split: balanced_subset(labels[split], config.limit or None, config.seed) for split in labels
    }
    train_idx, val_idx = stratified_split(
        labels["train"][keep["train"]], config.val_fraction, config.seed
    )
    plan = {
        "train": ("train", keep["train"][train_idx]),
        "validation": ("train", keep["train"][val_idx]),
        "test": ("test", keep["test"]),
    }
    splits = {}
    for split, (source_split, indices) in plan.items():
        shards = write_records(
            records(source_split, indices), len(indices), split, out, config.records_per_shard
        )
        splits[split] = _split_info(labels[source_split][indices], class_names, shards)
    found_warnings = class_warnings(splits)
    for warning in found_warnings:
        log.warning("dataset_warning", warning=warning)
    return Manifest(
        name=config.dataset_name,
        version=version,
        class_names=class_names,
        image_shape=image_shape,
        splits=splits,
        source={"description": source.description, "kind": source.kind, "sha256": source.sha256},
        params=config.versioned_params(),
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        image_encoding=image_encoding,
        preprocessing=preprocessing,
        warnings=tuple(found_warnings),
    )


def _publish(out: Path, manifest: Manifest, uri: str) -> bool:
    """Publish shards, then the manifest, which must not exist yet. False if another run won."""
    shards = [shard.file for split in manifest.splits.values() for shard in split.shards]
    return publish_folder(out, shards, (MANIFEST_NAME, manifest.to_json()), uri)


def run(config: PrepConfig) -> PrepResult:
    """Prepare the dataset; a re-run with the same source content and parameters is a no-op."""
    with step(log, "data_prep", source=config.source, store=config.store) as figures:
        with tempfile.TemporaryDirectory(prefix="data-prep-", dir=config.work_dir or None) as tmp:
            work = Path(tmp)
            policy = RetryPolicy(
                attempts=config.download_attempts,
                initial_wait_s=config.download_initial_wait_s,
                max_bytes=config.max_download_bytes,
                deadline_s=config.download_deadline_s,
                redirect_hosts=tuple(config.redirect_hosts),
            )
            source = resolve(config.source, work, policy, config.local_roots)
            version = dataset_version(source.sha256, config)
            uri = dataset_uri(config.store, config.dataset_name, version)
            figures.update(version=version, uri=uri, source_kind=source.kind)
            if storage.exists(storage.join(uri, MANIFEST_NAME)):
                manifest = load_manifest(uri)
                log.info("dataset_cache_hit", uri=uri, version=version)
                figures.update(cache_hit=True, **_counts(manifest))
                return PrepResult(uri, manifest, cache_hit=True)
            out = work / "shards"
            out.mkdir()
            manifest = _build(source, config, version, out)
            published = _publish(out, manifest, uri)
        if not published:
            # A concurrent run published the same version first; its shards equal ours.
            log.info("dataset_published_concurrently", uri=uri, version=version)
            manifest = load_manifest(uri)
        figures.update(cache_hit=False, **_counts(manifest))
        return PrepResult(uri, manifest, cache_hit=False)


def _counts(manifest: Manifest) -> dict:
    return {
        **{f"{name}_images": split.count for name, split in manifest.splits.items()},
        "classes": manifest.num_classes,
        "image_shape": list(manifest.image_shape),
    }
