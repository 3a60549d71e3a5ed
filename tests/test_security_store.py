"""Trust boundaries of the store and of shown text: planted names, planted records, escaping.

Each test plants what a user with write access to the store (or to a run's outputs) could
write, and checks that nothing lands outside its folder, nothing unverified is served, and
nothing is rendered as Markdown or HTML.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import h5py
import numpy as np
import pytest

from components.common import storage
from components.common.dataset import SPLITS, DataError, Manifest, fetch_split, load_manifest
from components.common.names import check_name, child_path
from components.compare.champion import champion_uri
from components.compare.compare import CompareConfig
from components.compare.compare import run as compare_run
from components.data_prep.prep import PrepConfig
from components.weights.fetch import WeightsConfig, run, weights_uri
from tests.fixtures_compare import TEST_SPLIT, write_pair

# --- names ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["fashion_mnist", "a", "my-photos.v2", "0" * 63])
def test_valid_names(name):
    assert check_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "..", "a..b", "../x", "a/b", "a\nb", "a\n", "Upper", "-a", ".a", "a b", "0" * 64]
)
def test_invalid_names_are_refused_by_every_step(name):
    with pytest.raises(ValueError, match="must match"):
        check_name(name)
    with pytest.raises(ValueError, match="dataset_name must match"):
        PrepConfig(dataset_name=name)
    with pytest.raises(ValueError, match="dataset_name must match"):
        CompareConfig(cnn_dir="a", transfer_dir="b", dataset_name=name)


def test_child_path_stays_in_its_folder(tmp_path):
    assert child_path(tmp_path, "latest.weights.h5") == tmp_path / "latest.weights.h5"
    for name in ("/etc/passwd", "../x", "a/b", "..", ".hidden", ""):
        with pytest.raises(ValueError):
            child_path(tmp_path, name)


# --- planted checkpoint pointer -------------------------------------------------------------


@pytest.mark.parametrize("kind", ["absolute", "dotdot", "folder"])
def test_planted_latest_json_writes_nothing_outside_the_working_copy(tmp_path, kind):
    from components.training.checkpoint import RunFlags, StoreCheckpoint

    store_dir = tmp_path / "ckpt" / "head"
    outside = tmp_path / "outside" / "pwned.txt"
    folder, name = "state-0001-abcdef12", "history.json"
    if kind == "absolute":
        name = str(outside)
    elif kind == "dotdot":
        name = "../../outside/pwned.txt"
    else:
        folder = "../../outside"
    storage.write_text(storage.join(str(store_dir), folder, name), "{}")
    pointer = {"epoch": 1, "folder": folder, "files": [name], "done": False, "extra": {}}
    storage.write_text(str(store_dir / "LATEST.json"), json.dumps(pointer))
    work = tmp_path / "work" / "copy"
    backup = StoreCheckpoint(
        str(store_dir), work, history={}, extra={}, flags=RunFlags(), resumables={}
    )
    outside.unlink(missing_ok=True)
    with pytest.raises(ValueError, match="refusing the checkpoint pointer"):
        backup.pull()
    assert not outside.exists()
    assert list(work.iterdir()) == []


def test_planted_previous_pointer_deletes_nothing_outside_the_checkpoint(tmp_path):
    from components.training.checkpoint import RunFlags, StoreCheckpoint

    store_dir = tmp_path / "ckpt" / "head"
    victim = tmp_path / "outside" / "victim.txt"
    victim.parent.mkdir(parents=True)
    victim.write_text("keep me")
    pointer = {"epoch": 1, "folder": "../../outside", "files": ["victim.txt"], "done": False}
    storage.write_text(str(store_dir / "LATEST.json"), json.dumps(pointer))
    work = tmp_path / "work"
    work.mkdir()
    (work / "state.json").write_text("{}")
    backup = StoreCheckpoint(
        str(store_dir), work, history={}, extra={}, flags=RunFlags(), resumables={}
    )
    with pytest.raises(ValueError, match="refusing the checkpoint pointer"):
        backup.push()
    assert victim.read_text() == "keep me"


# --- planted manifests ----------------------------------------------------------------------


def manifest_text(name="ds", version="0123456789abcdef", shard="train-00000-of-00001.tfrecord",
                  sha256="0" * 64) -> str:  # fmt: skip
    split = {
        "count": 1,
        "per_class": {"a": 1},
        "shards": [{"file": shard, "sha256": sha256, "count": 1, "bytes": 4}],
    }
    return json.dumps(
        {
            "name": name,
            "version": version,
            "class_names": ["a"],
            "image_shape": [2, 2, 1],
            "splits": dict.fromkeys(SPLITS, split),
            "source": {},
            "params": {},
            "created_at": "2026-01-01T00:00:00+00:00",
            "format_version": 1,
        }
    )


@pytest.mark.parametrize(
    "fields",
    [
        {"name": "../../escaped"},
        {"version": "../../../escaped"},
        {"shard": "/tmp/escaped.tfrecord"},
        {"shard": "../../../escaped.tfrecord"},
        {"sha256": "not-a-hash"},
    ],
)
def test_planted_manifest_names_are_refused(tmp_path, fields):
    with pytest.raises(DataError, match=r"^planted: .*(not a valid|not a plain|no valid)"):
        Manifest.from_json(manifest_text(**fields), origin="planted")


def test_shard_with_a_wrong_hash_never_reaches_the_cache(gcs_bucket, tmp_path):
    uri = f"{gcs_bucket}/datasets/ds/0123456789abcdef"
    shard = "train-00000-of-00001.tfrecord"
    storage.write_bytes(f"{uri}/{shard}", b"planted bytes")
    storage.write_text(f"{uri}/manifest.json", manifest_text(sha256="1" * 64))
    manifest = load_manifest(uri)
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="differs from the manifest"):
        fetch_split(uri, manifest, "train", cache)
    assert [p.name for p in (cache / "ds" / "0123456789abcdef").iterdir()] == []
    # With the right hash the shard is moved into place.
    good = hashlib.sha256(b"planted bytes").hexdigest()
    storage.write_text(f"{uri}/manifest.json", manifest_text(sha256=good))
    paths = fetch_split(uri, load_manifest(uri), "train", cache)
    assert [p.read_bytes() for p in paths] == [b"planted bytes"]


# --- planted weights index records ----------------------------------------------------------


def h5_bytes(tmp_path: Path) -> bytes:
    path = tmp_path / "real.h5"
    with h5py.File(path, "w") as handle:
        handle["kernel"] = np.random.default_rng(1).random(1024)
    return path.read_bytes()


@pytest.mark.parametrize("planted_sha256", ["ffff", "e" * 64])
@pytest.mark.parametrize("on_gcs", [False, True])
def test_planted_index_record_and_file_are_not_served(
    http_server, tmp_path, planted_sha256, on_gcs, request
):
    store = request.getfixturevalue("gcs_bucket") if on_gcs else str(tmp_path / "store")
    body = h5_bytes(tmp_path)
    md5 = hashlib.md5(body).hexdigest()
    url = http_server.add("/w.h5", body)
    planted = {"sha256": planted_sha256, "md5": md5, "filename": "w.h5", "size": 12}
    storage.write_text(
        storage.join(store, "weights", "index", f"md5-{md5}.json"), json.dumps(planted)
    )
    storage.write_bytes(weights_uri(store, planted_sha256, "w.h5"), b"not an HDF5 file")
    config = WeightsConfig(store=store, weights_url=url, md5=md5, use_keras_cache=False)
    result = run(config)
    assert not result.cache_hit and result.fetched_from == "source"
    assert result.sha256 == hashlib.sha256(body).hexdigest()
    assert storage.read_bytes(result.uri) == body
    # The index now names the verified copy, and the next run is a (re-verified) cache hit.
    again = run(config)
    assert again.cache_hit and again.sha256 == result.sha256
    assert http_server.count("/w.h5") == 1


# --- summary.md escaping --------------------------------------------------------------------

HOSTILE = "<img src=x onerror=alert(1)>|`code`*bold*[link](http://x)\n# heading"


def test_summary_escapes_names_and_champion_fields(tmp_path):
    cnn, transfer = write_pair(tmp_path / "runs", 0.85, 0.9, display_name=HOSTILE)
    store = str(tmp_path / "store")
    champion = {
        "model": "inception_v3",
        "display_name": "<script>alert(2)</script>|champ",
        "test_accuracy": 0.99,
        "test_split_sha256": TEST_SPLIT,
    }
    storage.write_text(champion_uri(store, "fashion_mnist"), json.dumps(champion))
    out = tmp_path / "out"
    result = compare_run(
        CompareConfig(
            cnn_dir=str(cnn), transfer_dir=str(transfer), output_dir=str(out), store=store
        )
    )
    assert result.champion["decision"] == "keep"
    summary = Path(result.summary_md).read_text()
    assert "<img" not in summary and "<script" not in summary
    assert "&lt;img src=x onerror=alert(1)&gt;" in summary
    assert "&lt;script&gt;" in summary  # the champion's name, quoted in the gate's reason
    assert "\\`code\\`" in summary and "\\*bold\\*" in summary and "\\[link\\]" in summary
    assert not re.search(r"^#+ heading", summary, re.MULTILINE)
    report = Path(result.report_html).read_text()  # the HTML report escapes every string too
    assert "<img src=x" not in report and "<script>alert" not in report
    table = [line for line in summary.splitlines() if line.startswith("|")]
    assert table and all(len(re.findall(r"(?<!\\)\|", line)) == 4 for line in table)
