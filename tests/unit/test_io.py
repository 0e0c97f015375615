"""Atomic writes (crypto_lakehouse.io): a failed or killed write never leaves a file that
looks complete."""

from __future__ import annotations

import os
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from crypto_lakehouse import io


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "a" / "x.pqt"
    io.write_bytes(target, b"old")
    with pytest.raises(RuntimeError):
        with io.atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in target.parent.iterdir()) == ["x.pqt"]


def test_temp_names_are_never_matched_by_data_globs(tmp_path):
    target = tmp_path / "202401.pqt"
    with io.atomic_path(target) as tmp:
        assert tmp.parent == target.parent
        assert not tmp.match("*.pqt") and not tmp.match("*.zip") and tmp.name.startswith(".tmp-")
        # A leftover of a killed run is found and removed by remove_stale_temps.
        leftover = tmp.with_name(tmp.name + "x.part")
        leftover.write_bytes(b"")
        tmp.write_bytes(b"data")
    assert io.remove_stale_temps(tmp_path) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["202401.pqt"]


def test_stale_temps_are_removed_at_any_depth_and_nothing_else(tmp_path):
    deep = tmp_path / "a" / "b" / "c"
    deep.mkdir(parents=True)
    leftovers = [tmp_path / ".tmp-x.zip.1-2-3.part", deep / ".tmp-202401.pqt.9-9-9.part"]
    kept = [deep / "202401.pqt", deep / "tmp-y.part", tmp_path / "a" / ".tmp-z.pqt"]
    for p in leftovers + kept:
        p.write_bytes(b"x")
    assert io.remove_stale_temps(tmp_path) == 2
    assert not any(p.exists() for p in leftovers) and all(p.exists() for p in kept)


def test_touch_and_writes_survive_a_removed_folder(tmp_path):
    marker = tmp_path / "d" / "k.zip.verified"
    io.touch(marker)
    assert marker.exists() and marker.stat().st_size == 0
    shutil.rmtree(tmp_path / "d")  # the folder disappears after it was first seen
    io.touch(marker)
    io.write_json(tmp_path / "d" / "r.json", {"b": 1, "a": 2})
    assert (tmp_path / "d" / "r.json").read_text() == '{\n "a": 2,\n "b": 1\n}\n'
    assert not io.write_json_if_changed(tmp_path / "d" / "r.json", {"a": 2, "b": 1})


def test_write_parquet_adds_metadata(tmp_path):
    table = pa.table({"x": [1, 2]})
    io.write_parquet(tmp_path / "t.pqt", table, metadata={"interval": "1m"})
    meta = pq.read_schema(tmp_path / "t.pqt").metadata
    assert meta[b"interval"] == b"1m"


def test_a_full_disk_error_names_the_file_it_was_writing(tmp_path, monkeypatch):
    """ENOSPC from os.write, or pyarrow's "Error writing bytes to file", names no file;
    the error raised names the target (errno kept), the old file stays, no temp is left."""
    import errno
    import os

    target = tmp_path / "state" / "BTCUSDT.json"
    io.write_bytes(target, b"old")

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(OSError) as info:
        io.write_json(target, {"a": 1})
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
    assert str(info.value) == f"[Errno 28] No space left on device: '{target}'"
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert [p.name for p in target.parent.iterdir()] == ["BTCUSDT.json"]

    def arrow_full(table, where, **kw):
        raise OSError(errno.ENOSPC, "Error writing bytes to file. Detail: [errno 28] No space")

    monkeypatch.setattr(pq, "write_table", arrow_full)
    out = tmp_path / "results" / "BTCUSDT.pqt"
    with pytest.raises(OSError, match=r"Error writing bytes to file.*: '.*/results/BTCUSDT\.pqt'"):
        io.write_parquet(out, pa.table({"x": [1]}))
    assert not out.parent.exists() or list(out.parent.iterdir()) == []
    # An error that already names its file is left as it is.
    monkeypatch.setattr(
        pq, "write_table", lambda *a, **k: (_ for _ in ()).throw(FileNotFoundError(2, "gone", "/x"))
    )
    with pytest.raises(FileNotFoundError) as info:
        io.write_parquet(out, pa.table({"x": [1]}))
    assert info.value.filename == "/x"


def _walk_reference(directory) -> list[str]:
    """What remove_stale_temps removed before 2026-12-07: os.walk, names by TEMP_GLOB."""
    import fnmatch

    return sorted(
        os.path.join(folder, name)
        for folder, _dirs, names in os.walk(directory)
        for name in fnmatch.filter(names, io.TEMP_GLOB)
    )


def test_stale_temps_are_those_os_walk_found(tmp_path):
    root = tmp_path / "root"
    (root / "a" / "b").mkdir(parents=True)
    (root / ".tmp-folder.1-1-1.part").mkdir()  # a folder so named is no temp file
    (root / ".tmp-folder.1-1-1.part" / ".tmp-in.1-1-1.part").write_bytes(b"x")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / ".tmp-elsewhere.1-1-1.part").write_bytes(b"x")
    (root / "linked").symlink_to(outside, target_is_directory=True)  # not followed
    (root / ".tmp-link.1-1-1.part").symlink_to(outside, target_is_directory=True)
    (root / ".tmp-dangling.1-1-1.part").symlink_to(tmp_path / "nothing")
    names = [".tmp-.part", ".tmp-part", ".tmp.part", "x.tmp-y.part", ".tmp-y.part.zip",
             ".tmp-202401.pqt.9-9-9.part", ".TMP-y.part", ".tmp-y.PART"]  # fmt: skip
    for folder in (root, root / "a", root / "a" / "b"):
        for name in names:
            (folder / name).write_bytes(b"x")
    expected = _walk_reference(root)
    assert len(expected) == 3 * 2 + 2  # ".tmp-.part" and the pqt temp per folder, + 2 inside
    assert io.remove_stale_temps(root) == len(expected)
    assert not any(os.path.lexists(p) for p in expected)
    assert _walk_reference(root) == [] and (outside / ".tmp-elsewhere.1-1-1.part").exists()
    assert (root / ".tmp-link.1-1-1.part").is_symlink()  # a link to a folder: kept
    left = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    assert ".tmp-folder.1-1-1.part" in left and "a/b/.tmp-part" in left


def test_the_sweep_lists_each_folder_once_without_os_walk(tmp_path, monkeypatch):
    # The start's sweep over the data dir (issue 11): one os.scandir per folder.
    for i in range(3):
        (tmp_path / f"d{i}" / "e").mkdir(parents=True)
    listed = []
    scandir = os.scandir
    monkeypatch.setattr(os, "walk", lambda *a, **k: (_ for _ in ()).throw(AssertionError))
    monkeypatch.setattr(os, "scandir", lambda p: listed.append(p) or scandir(p))
    io.remove_stale_temps(tmp_path)
    assert len(listed) == 7
