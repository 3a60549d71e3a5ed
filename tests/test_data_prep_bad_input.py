"""Every bad input gets a clear error naming the file and the problem, and nothing is published."""

from __future__ import annotations

import gzip
import io
import socket
import struct
import tarfile
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from components.common.dataset import DataError
from components.common.http import DownloadError
from components.data_prep.__main__ import main
from components.data_prep.prep import PrepConfig, run
from tests.conftest import idx_bytes, make_idx_dataset, make_image_tree


def assert_nothing_published(store: Path) -> None:
    manifests = list(store.rglob("manifest.json")) if store.exists() else []
    shards = list(store.rglob("*.tfrecord")) if store.exists() else []
    assert manifests == [] and shards == []


def prep_fails(source: Path | str, store: Path, match: str, **config) -> DataError:
    with pytest.raises((DataError, DownloadError), match=match) as info:
        run(PrepConfig(store=str(store), source=str(source), **config))
    assert_nothing_published(store)
    return info.value


# --- IDX ---------------------------------------------------------------------------------


def rewrite(folder: Path, name: str, data: bytes, compress: bool = True) -> None:
    (folder / name).write_bytes(gzip.compress(data) if compress else data)


def test_wrong_idx_magic(idx_source: Path, tmp_path: Path):
    images = np.zeros((60, 8, 8), np.uint8)
    rewrite(idx_source, "train-images-idx3-ubyte.gz", b"\x00\x00\x08\x02" + idx_bytes(images)[4:])
    prep_fails(idx_source, tmp_path / "store", r"train-images-idx3-ubyte\.gz: wrong IDX magic")


def test_idx_size_does_not_match_header(idx_source: Path, tmp_path: Path):
    data = idx_bytes(np.zeros((60, 8, 8), np.uint8))
    rewrite(idx_source, "train-images-idx3-ubyte.gz", data[:-5])
    prep_fails(idx_source, tmp_path / "store", r"train-images.*file size .* does not match")


def test_idx_wrong_dimensions(idx_source: Path, tmp_path: Path):
    data = bytearray(idx_bytes(np.zeros((60, 8, 8), np.uint8)))
    data[8:12] = struct.pack(">I", 9)  # claims 9 rows
    rewrite(idx_source, "train-images-idx3-ubyte.gz", bytes(data))
    prep_fails(idx_source, tmp_path / "store", r"train-images.*does not match the header")


def test_truncated_gzip(idx_source: Path, tmp_path: Path):
    path = idx_source / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-12])
    prep_fails(idx_source, tmp_path / "store", r"t10k-labels-idx1-ubyte\.gz: truncated gzip")


def test_not_gzip(idx_source: Path, tmp_path: Path):
    rewrite(idx_source, "t10k-labels-idx1-ubyte.gz", b"<html>404</html>", compress=False)
    prep_fails(idx_source, tmp_path / "store", r"t10k-labels-idx1-ubyte\.gz: not a valid gzip")


def test_image_and_label_counts_differ(idx_source: Path, tmp_path: Path):
    rewrite(idx_source, "train-labels-idx1-ubyte.gz", idx_bytes(np.zeros(59, np.uint8)))
    prep_fails(idx_source, tmp_path / "store", r"has 60 images but .*train-labels.* has 59 labels")


def test_label_out_of_range(idx_source: Path, tmp_path: Path):
    labels = np.zeros(20, np.uint8)
    labels[7] = 10
    rewrite(idx_source, "t10k-labels-idx1-ubyte.gz", idx_bytes(labels))
    prep_fails(idx_source, tmp_path / "store", r"t10k-labels.*label 10 at index 7 is out of range")


def test_missing_idx_file(idx_source: Path, tmp_path: Path):
    (idx_source / "t10k-images-idx3-ubyte.gz").unlink()
    prep_fails(idx_source, tmp_path / "store", r"t10k-images-idx3-ubyte\.gz: missing IDX file")


# --- image folders -----------------------------------------------------------------------


def test_undecodable_image(image_tree: Path, tmp_path: Path):
    (image_tree / "train" / "cat" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    prep_fails(image_tree, tmp_path / "store", r"train/cat/1\.png: (cannot decode|corrupt)")


def test_zero_byte_image(image_tree: Path, tmp_path: Path):
    (image_tree / "test" / "dog" / "2.png").write_bytes(b"")
    prep_fails(image_tree, tmp_path / "store", r"test/dog/2\.png: zero-byte image")


def test_other_format_with_png_name(image_tree: Path, tmp_path: Path):
    buffer = io.BytesIO()
    Image.new("L", (6, 5)).save(buffer, format="GIF")
    (image_tree / "train" / "dog" / "0.png").write_bytes(buffer.getvalue())
    prep_fails(image_tree, tmp_path / "store", r"train/dog/0\.png: format GIF, only PNG and JPEG")


def test_other_extension(image_tree: Path, tmp_path: Path):
    Image.new("L", (6, 5)).save(image_tree / "train" / "dog" / "x.bmp")
    prep_fails(image_tree, tmp_path / "store", r"train/dog/x\.bmp: not a PNG or JPEG")


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims a huge size (decompression bomb shape)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_decompression_bomb_header(image_tree: Path, tmp_path: Path):
    (image_tree / "train" / "cat" / "0.png").write_bytes(png_claiming(100_000, 100_000))
    prep_fails(image_tree, tmp_path / "store", r"train/cat/0\.png: image too large")


def test_bomb_warning_threshold_is_an_error(image_tree: Path, tmp_path: Path):
    # 6x5 = 30 pixels is over a 20-pixel limit but under twice it: Pillow only warns.
    prep_fails(image_tree, tmp_path / "store", r"\.png: image too large", max_image_pixels=20)


def test_empty_class_folder(image_tree: Path, tmp_path: Path):
    (image_tree / "train" / "bird").mkdir()
    prep_fails(image_tree, tmp_path / "store", r"train/bird: empty class folder")


def test_train_and_test_classes_differ(tmp_path: Path):
    tree = make_image_tree(tmp_path / "t")
    (tree / "test" / "dog").rename(tree / "test" / "wolf")
    prep_fails(tree, tmp_path / "store", r"different classes .*only in train: \['dog'\]")


def test_mixed_sizes_are_resized_without_a_flag(image_tree: Path, tmp_path: Path):
    Image.new("L", (7, 7)).save(image_tree / "train" / "dog" / "big.png")
    auto = run(PrepConfig(store=str(tmp_path / "auto"), source=str(image_tree)))
    assert auto.manifest.image_shape == (150, 150, 1)
    assert auto.manifest.preprocessing["resize"] == "centre_crop"
    ok = run(PrepConfig(store=str(tmp_path / "ok"), source=str(image_tree), image_size=(4, 4)))
    assert ok.manifest.image_shape == (4, 4, 1)


# --- archives ----------------------------------------------------------------------------


def tar_with(tmp_path: Path, add) -> Path:
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        data = b"x"
        info = tarfile.TarInfo("train/cat/0.png")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        add(tar)
    return archive


def tar_member(name: str, kind=tarfile.REGTYPE, linkname: str = ""):
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.linkname = linkname
        data = b"" if kind != tarfile.REGTYPE else b"evil"
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))

    return add


@pytest.mark.parametrize(
    ("member", "message"),
    [
        (tar_member("../escape.png"), r"'\.\./escape\.png' escapes the target folder"),
        (tar_member("train/../../x.png"), r"'train/\.\./\.\./x\.png' escapes the target folder"),
        (tar_member("/etc/evil.png"), r"'/etc/evil\.png' has an absolute path"),
        (
            tar_member("train/cat/l.png", tarfile.SYMTYPE, "/etc/passwd"),
            r"'train/cat/l\.png' is a link",
        ),
        (
            tar_member("train/cat/h.png", tarfile.LNKTYPE, "train/cat/0.png"),
            r"'train/cat/h\.png' is a link",
        ),
        (tar_member("train/cat/fifo", tarfile.FIFOTYPE), r"'train/cat/fifo' is not a file"),
    ],
)
def test_malicious_tar(tmp_path: Path, member, message: str):
    archive = tar_with(tmp_path, member)
    prep_fails(archive, tmp_path / "store", rf"evil\.tar\.gz: entry {message}")
    assert not (tmp_path / "escape.png").exists()


@pytest.mark.parametrize(
    ("name", "symlink", "message"),
    [
        ("../escape.png", False, "escapes the target folder"),
        ("/abs/evil.png", False, "has an absolute path"),
        ("train/cat/link.png", True, "is a symbolic link"),
    ],
)
def test_malicious_zip(tmp_path: Path, name: str, symlink: bool, message: str):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        info = zipfile.ZipInfo(name)
        if symlink:
            info.external_attr = 0o120777 << 16
        zipped.writestr(info, "/etc/passwd")
    prep_fails(archive, tmp_path / "store", rf"evil\.zip: entry .* {message}")


def test_corrupt_archive(tmp_path: Path):
    archive = tmp_path / "broken.tar.gz"
    archive.write_bytes(b"\x1f\x8b\x08\x00 not really")
    prep_fails(archive, tmp_path / "store", r"broken\.tar\.gz: corrupt or unreadable archive")


# --- unreachable source, CLI -------------------------------------------------------------


def test_unreachable_source_fails_after_retries(tmp_path: Path):
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    error = prep_fails(
        f"http://127.0.0.1:{port}/fmnist",
        tmp_path / "store",
        r"127\.0\.0\.1:\d+/fmnist/train-images-idx3-ubyte\.gz: ConnectionError",
        download_attempts=3,
        download_initial_wait_s=0.01,
    )
    assert "gave up after 3 attempts" in str(error)


def test_missing_source(tmp_path: Path):
    prep_fails(tmp_path / "nowhere", tmp_path / "store", r"nowhere: source not found")


def test_cli_bad_input_exits_nonzero_with_message(idx_source: Path, tmp_path: Path, capsys):
    rewrite(idx_source, "t10k-labels-idx1-ubyte.gz", idx_bytes(np.full(20, 42, np.uint8)))
    store = tmp_path / "store"
    code = main(["--store", str(store), "--source", str(idx_source), "--log-format", "json"])
    assert code == 1
    assert (
        "t10k-labels-idx1-ubyte.gz: label 42 at index 0 is out of range" in capsys.readouterr().err
    )
    assert_nothing_published(store)


def test_fixture_sanity(tmp_path: Path):
    # The generated source is valid, so the failures above come from the injected faults.
    run(PrepConfig(store=str(tmp_path / "s"), source=str(make_idx_dataset(tmp_path / "ok"))))
    assert list((tmp_path / "s").rglob("manifest.json"))


def test_bad_image_inside_archive_is_named_by_its_place_in_the_archive(tmp_path: Path):
    tree = make_image_tree(tmp_path / "tree")
    (tree / "train" / "dog" / "3.png").write_bytes(b"")
    archive = tmp_path / "photos.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tree, arcname=".")
    prep_fails(archive, tmp_path / "store", rf"^{archive}/train/dog/3\.png: zero-byte image$")


def test_gzip_with_trailing_member_is_refused(idx_source: Path, tmp_path: Path):
    path = idx_source / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes() + gzip.compress(b"\x00" * 1000))
    prep_fails(idx_source, tmp_path / "store", r"t10k-labels.*trailing data after the gzip")


def test_archive_bomb_is_refused_before_extraction(tmp_path: Path, monkeypatch):
    from components.data_prep import sources

    monkeypatch.setattr(sources, "MAX_ARCHIVE_BYTES", 1000)
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zipped:
        zipped.writestr("train/a/0.png", b"\x00" * 5000)
    prep_fails(archive, tmp_path / "store", r"bomb\.zip: unpacks to 5000 bytes, more than 1000")
