"""Frozen-backbone speed-up: run the backbone once, train the head on cached features.

Features are computed batch by batch and appended to a flat binary file (one fixed-length
record per image), so neither the upscaled images nor all the features are ever held in
memory. Training then streams the file with `FixedLengthRecordDataset`. Files are keyed by
everything that determines them and published with an atomic rename, so a re-run reuses them.

With a store, the features of a pretrained backbone are also kept there, content-addressed:
`<store>/features/<dataset version>/<weights sha256>/<cut layer>/<input size>/<dtype>/` holds
each split's `<split>.bin` and `<split>.labels.npy`, then `features.json` (written last, create
only) naming every file with its size and sha256. Any run, retry or head setting with the same
dataset, weights, cut, size and dtype downloads them instead of running the backbone.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from components.common import storage
from components.common.dataset import DataError
from components.common.digest import file_digest, json_digest
from components.common.logging import get_logger
from components.common.names import SHA256_PATTERN, check_file_name, check_name, child_path
from components.common.publish import publish_folder
from components.training.checkpoint import TrainingInterrupted

log = get_logger("training")

SHUFFLE_BYTES = 256 << 20  # cap on the shuffle buffer of feature records
STORE_MANIFEST = "features.json"
STORE_FORMAT = 1
SPLITS = ("train", "validation")
DTYPES = ("float16", "float32")


@dataclass(frozen=True)
class FeatureFile:
    """A split's features on disk and its labels."""

    path: Path
    labels: np.ndarray  # int64 [N]
    shape: tuple[int, ...]  # one record's feature shape
    dtype: str

    @property
    def record_bytes(self) -> int:
        """Bytes per image."""
        return int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize


def cache_key(**facts) -> str:
    """A short hash of everything the features depend on."""
    return json_digest(facts)[:16]


def cached(folder: Path, split: str) -> FeatureFile | None:
    """A split's features already in the local folder (its meta file is written last)."""
    path, meta_path = folder / f"{split}.bin", folder / f"{split}.json"
    if not (path.exists() and meta_path.exists()):
        return None
    meta = json.loads(meta_path.read_text())
    labels = np.load(folder / f"{split}.labels.npy", allow_pickle=False)
    return FeatureFile(path, labels, tuple(meta["shape"]), meta["dtype"])


def extract(feature_model, dataset, folder: Path, split: str, dtype: str, preemption=None):
    """Write the backbone features of a batched (images, labels) dataset; reuse a previous run."""
    import tensorflow as tf

    folder.mkdir(parents=True, exist_ok=True)
    path, meta_path = folder / f"{split}.bin", folder / f"{split}.json"
    previous = cached(folder, split)
    if previous is not None:
        log.info("features_cache_hit", split=split, path=str(path))
        return previous

    forward = tf.function(lambda images: feature_model(images, training=False))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    labels, shape = [], None
    try:
        with open(tmp, "wb") as handle:
            for images, batch_labels in dataset:
                if preemption is not None and preemption.noticed():
                    raise TrainingInterrupted("SIGTERM during feature extraction")
                features = forward(images).numpy().astype(dtype)
                shape = features.shape[1:]
                handle.write(features.tobytes())
                labels.append(batch_labels.numpy())
        labels_array = np.concatenate(labels).astype(np.int64)
        np.save(folder / f"{split}.labels.npy", labels_array)
        meta_path.with_suffix(".tmp").write_text(json.dumps({"shape": list(shape), "dtype": dtype}))
        os.replace(tmp, path)
        os.replace(meta_path.with_suffix(".tmp"), meta_path)
    finally:
        if tmp.exists():
            tmp.unlink()
    log.info("features_extracted", split=split, images=len(labels_array), shape=list(shape))
    return FeatureFile(path, labels_array, tuple(shape), dtype)


def store_uri(
    store: str,
    *,
    dataset_version: str,
    weights_sha256: str,
    cut_layer: str,
    input_size: int,
    dtype: str,
) -> str:
    """`<store>/features/<dataset version>/<weights sha256>/<cut layer>/<input size>/<dtype>`."""
    check_name(dataset_version, "dataset version")
    if not SHA256_PATTERN.fullmatch(weights_sha256 or ""):
        raise DataError(f"weights sha256 must be 64 hex digits, got {weights_sha256!r}")
    check_file_name(cut_layer, "cut layer")
    if dtype not in DTYPES:
        raise DataError(f"feature dtype must be one of {DTYPES}, got {dtype!r}")
    size = int(input_size)
    return storage.join(
        store, "features", dataset_version, weights_sha256, cut_layer, str(size), dtype
    )


def _manifest(folder: Path, files: dict[str, FeatureFile], facts: dict) -> dict:
    splits = {}
    for split, feature_file in files.items():
        labels = folder / f"{split}.labels.npy"
        splits[split] = {
            "count": len(feature_file.labels),
            "shape": list(feature_file.shape),
            "files": {
                name: {"size": (folder / name).stat().st_size, "sha256": file_digest(folder / name)}
                for name in (feature_file.path.name, labels.name)
            },
        }
    return {"format": STORE_FORMAT, **facts, "splits": splits}


def publish(folder: Path, files: dict[str, FeatureFile], uri: str, facts: dict) -> bool:
    """Publish the local features at `uri`; False if another run published them first.

    GCS: each file is a create-only upload, then `features.json` is created last with a
    does-not-exist precondition, so a reader never trusts features without their manifest.
    Local: a staging folder renamed into place in one step.
    """
    manifest = json.dumps(_manifest(folder, files, facts), indent=1, sort_keys=True)
    names = [name for split in files for name in (f"{split}.bin", f"{split}.labels.npy")]
    return publish_folder(folder, names, (STORE_MANIFEST, manifest), uri)


def _check_split(entry: object, where: str, split: str, dtype: str) -> None:
    """One split's entry of the store manifest: count, shape, exactly its two files, sizes."""
    if not isinstance(entry, dict):
        raise DataError(f"{where}: not an object")
    count, shape, files = entry.get("count"), entry.get("shape"), entry.get("files")
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise DataError(f"{where}: count must be a positive integer, got {count!r}")
    if (
        not isinstance(shape, list)
        or not 1 <= len(shape) <= 4
        or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape)
    ):
        raise DataError(f"{where}: shape must be 1 to 4 positive integers, got {shape!r}")
    expected = {f"{split}.bin", f"{split}.labels.npy"}
    if not isinstance(files, dict) or set(files) != expected:
        raise DataError(f"{where}: files must be exactly {sorted(expected)}")
    for name, info in files.items():
        check_file_name(name, f"{where}: file name")
        if not (
            isinstance(info, dict)
            and isinstance(info.get("size"), int)
            and info["size"] >= 0
            and SHA256_PATTERN.fullmatch(str(info.get("sha256", "")))
        ):
            raise DataError(f"{where}: {name} needs an integer size and a sha256")
    record = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if files[f"{split}.bin"]["size"] != count * record:
        raise DataError(
            f"{where}: {split}.bin has {files[f'{split}.bin']['size']} bytes, "
            f"expected {count} records of {record} bytes"
        )


def _check_manifest(raw: object, origin: str, facts: dict) -> dict:
    """The store manifest's splits, every field checked (it is untrusted input)."""
    if not isinstance(raw, dict) or raw.get("format") != STORE_FORMAT:
        raise DataError(f"{origin}: not a format-{STORE_FORMAT} features manifest")
    for key, value in facts.items():
        if raw.get(key) != value:
            raise DataError(f"{origin}: {key} is {raw.get(key)!r}, expected {value!r}")
    splits = raw.get("splits")
    if not isinstance(splits, dict) or sorted(splits) != sorted(SPLITS):
        raise DataError(f"{origin}: splits must be exactly {list(SPLITS)}")
    for split, entry in splits.items():
        _check_split(entry, f"{origin}: split {split}", split, facts["dtype"])
    return splits


def fetch(uri: str, folder: Path, facts: dict, num_classes: int) -> dict[str, FeatureFile] | None:
    """Download published features into the local `folder`; None if none are published.

    Every file is checked against the manifest (size and sha256) and the labels against the
    count and the class range before the local meta file, which marks them usable, is written.
    """
    manifest_uri = storage.join(uri, STORE_MANIFEST)
    if not storage.exists(manifest_uri):
        return None
    try:
        raw = json.loads(storage.read_text(manifest_uri))
    except json.JSONDecodeError as error:
        raise DataError(f"{manifest_uri}: not JSON ({error})") from error
    splits = _check_manifest(raw, manifest_uri, facts)
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for split in SPLITS:
        entry = splits[split]
        for name, info in entry["files"].items():
            local = child_path(folder, name, f"{manifest_uri}: file name")
            storage.download_file(storage.join(uri, name), local)
            size, digest = local.stat().st_size, file_digest(local)
            if size != info["size"] or digest != info["sha256"]:
                local.unlink()
                raise DataError(
                    f"{storage.join(uri, name)}: {size} bytes, sha256 {digest}; the manifest "
                    f"says {info['size']} bytes, sha256 {info['sha256']}"
                )
        labels = np.load(folder / f"{split}.labels.npy", allow_pickle=False)
        if (
            labels.ndim != 1
            or len(labels) != entry["count"]
            or labels.dtype.kind not in "iu"
            or (len(labels) and not 0 <= labels.min() <= labels.max() < num_classes)
        ):
            raise DataError(
                f"{storage.join(uri, f'{split}.labels.npy')}: expected {entry['count']} integer "
                f"labels in [0, {num_classes})"
            )
        meta = {"shape": entry["shape"], "dtype": facts["dtype"]}
        storage.write_text(str(folder / f"{split}.json"), json.dumps(meta))
        files[split] = FeatureFile(
            folder / f"{split}.bin", labels.astype(np.int64), tuple(entry["shape"]), facts["dtype"]
        )
    return files


def _records(feature_file: FeatureFile):
    """(raw record, label) pairs of a feature file, and the function that decodes a batch."""
    import tensorflow as tf

    shape, dtype = list(feature_file.shape), tf.as_dtype(feature_file.dtype)
    records = tf.data.FixedLengthRecordDataset(
        str(feature_file.path), feature_file.record_bytes, buffer_size=8 << 20
    )
    labels = tf.data.Dataset.from_tensor_slices(feature_file.labels)
    dataset = tf.data.Dataset.zip((records, labels)).apply(
        tf.data.experimental.assert_cardinality(len(feature_file.labels))
    )

    def decode(raw, label):
        features = tf.reshape(tf.io.decode_raw(raw, dtype), [-1, *shape])
        return tf.cast(features, tf.float32), label

    return dataset, decode


def shuffle_buffer(feature_file: FeatureFile) -> int:
    """Records in the shuffle buffer: all of them, up to SHUFFLE_BYTES."""
    return max(1, min(len(feature_file.labels), SHUFFLE_BYTES // feature_file.record_bytes))


def feature_dataset(feature_file: FeatureFile, batch_size: int):
    """Stream (features, label) batches from a feature file in order (validation)."""
    import tensorflow as tf

    dataset, decode = _records(feature_file)
    dataset = dataset.batch(batch_size).map(decode, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def feature_epochs(feature_file: FeatureFile, batch_size: int, *, seed: int, first: int, end: int):
    """Shuffled training batches of epochs `first` .. `end - 1` (see data.per_epoch)."""
    from components.training import data

    dataset, decode = _records(feature_file)
    return data.per_epoch(
        dataset,
        batch_size,
        seed=seed,
        shuffle_buffer=shuffle_buffer(feature_file),
        first=first,
        end=end,
        then=decode,
    )
