"""Storage against local disk and the GCS emulator through the real client."""

from __future__ import annotations

from pathlib import Path

import pytest

from components.common import storage


@pytest.fixture(params=["local", "gcs"])
def base(request, tmp_path: Path) -> str:
    if request.param == "local":
        return str(tmp_path / "store")
    return request.getfixturevalue("gcs_bucket") + "/prefix"


def test_join():
    assert storage.join("gs://b/p/", "/a/", "b") == "gs://b/p/a/b"
    assert storage.join("/tmp/x", "y") == "/tmp/x/y"
    assert storage.join("rel", "", "y") == "rel/y"


def test_write_read_list_exists_delete(base: str, tmp_path: Path):
    uri = storage.join(base, "a", "b.txt")
    assert not storage.exists(uri)
    storage.write_text(uri, "hello")
    assert storage.exists(uri)
    assert storage.read_text(uri) == "hello"
    local = tmp_path / "up.bin"
    local.write_bytes(b"\x00" * 1000 + b"end")
    storage.upload_file(local, storage.join(base, "c", "d.bin"))
    assert storage.list_uris(base) == [
        storage.join(base, "a", "b.txt"),
        storage.join(base, "c", "d.bin"),
    ]
    copy = storage.download_file(storage.join(base, "c", "d.bin"), tmp_path / "down" / "d.bin")
    assert copy.read_bytes() == local.read_bytes()
    storage.delete(uri)
    assert not storage.exists(uri)
    storage.delete(uri)  # deleting a missing object is fine


def test_read_missing_names_uri(base: str):
    uri = storage.join(base, "missing.json")
    with pytest.raises(storage.NotFoundError, match=r"missing\.json"):
        storage.read_bytes(uri)


def test_local_write_leaves_no_temp_files(tmp_path: Path):
    uri = str(tmp_path / "x" / "y.json")
    storage.write_text(uri, "{}")
    storage.write_text(uri, '{"a": 1}')
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == ["y.json"]


def test_compare_and_swap_local(tmp_path: Path):
    # The GCS emulator ignores generation preconditions; the GCS path is tested against
    # an enforcing emulator in the reliability suite.
    uri = str(tmp_path / "champion.json")
    assert storage.generation(uri) == 0
    storage.write_text(uri, "first", if_generation_match=0)
    with pytest.raises(storage.PreconditionFailedError):
        storage.write_text(uri, "again", if_generation_match=0)
    gen = storage.generation(uri)
    storage.write_text(uri, "second", if_generation_match=gen)
    assert storage.read_text(uri) == "second"
    with pytest.raises(storage.PreconditionFailedError):
        storage.write_text(uri, "stale", if_generation_match=gen)
    assert storage.read_text(uri) == "second"


def test_gcs_generation_changes(gcs_bucket: str):
    uri = f"{gcs_bucket}/g.txt"
    assert storage.generation(uri) == 0
    storage.write_text(uri, "a")
    first = storage.generation(uri)
    storage.write_text(uri, "b")
    assert storage.generation(uri) not in (0, first)


def test_local_files_get_umask_modes_not_private_temp_modes(tmp_path: Path, idx_source: Path):
    from components.data_prep.prep import PrepConfig, run

    uri = str(tmp_path / "shared" / "x.json")
    storage.write_text(uri, "{}")
    assert Path(uri).stat().st_mode & 0o777 == storage.file_mode()
    result = run(PrepConfig(store=str(tmp_path / "store"), source=str(idx_source)))
    assert Path(result.uri).stat().st_mode & 0o777 == storage.dir_mode()
    assert (Path(result.uri) / "manifest.json").stat().st_mode & 0o777 == storage.file_mode()
