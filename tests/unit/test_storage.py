"""The storage seam (crypto_lakehouse.storage) on a local folder and on a real S3 store
(SeaweedFS, tests/s3_helpers.py): the same operations, the same atomicity."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from crypto_lakehouse import layout, storage
from crypto_lakehouse.storage import ObjectPath


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path):
    """A data dir: a local folder, or s3://<fresh bucket>/prefix on SeaweedFS."""
    if request.param == "local":
        return tmp_path / "data"
    return storage.data_path(request.getfixturevalue("s3_root"))


def test_paths_keep_the_s3_scheme_and_pathlib_arithmetic():
    p = storage.data_path("s3://bkt/pre")
    assert isinstance(p, ObjectPath) and str(p) == "s3://bkt/pre"
    q = p / "aws_data" / "x.zip"
    assert str(q) == "s3://bkt/pre/aws_data/x.zip" and (q.bucket, q.key) == (
        "bkt",
        "pre/aws_data/x.zip",
    )
    assert isinstance(q.parent, ObjectPath) and q.with_name("y").name == "y"
    # The form pathlib collapses an s3:// string to is still S3, never a local folder.
    assert (
        storage.is_remote(Path("s3://bkt/pre/x"))
        and storage.uri(Path("s3://bkt/k")) == "s3://bkt/k"
    )
    assert isinstance(storage.data_path("/tmp/x"), Path) and not storage.is_remote("/tmp/x")
    with pytest.raises(ValueError, match="s3://bucket"):
        storage.data_path("s3://")


def test_requests_overlap_on_object_storage_only(tmp_path):
    """A job's requests run several at a time on S3 (round trips overlap) and one at a time
    locally (CPU-bound; the cores already run a job each), whatever the path's form."""
    assert storage.at_once("s3://bkt/pre/x", 5) == 5
    assert storage.at_once(storage.data_path("s3://bkt/pre")) == storage.HEADS_AT_ONCE
    assert storage.at_once(Path("s3://bkt/pre/x"), 3) == 3
    assert storage.at_once(tmp_path, 5) == 1 and storage.at_once(str(tmp_path), 16) == 1


def test_write_read_list_delete(root):
    storage.write_bytes(root / "a" / "x.bin", b"abc")
    storage.write_json(root / "a" / "b" / "state.json", {"z": 1, "a": [1, 2]})
    table = pa.table({"t": [1, 2, 3], "v": [0.5, 1.5, 2.5]})
    storage.write_parquet(root / "p" / "202401.pqt", table, metadata={"source": "test"})
    storage.touch(root / "a" / "x.bin.verified")

    assert storage.read_bytes(root / "a" / "x.bin") == b"abc"
    assert storage.read_json(root / "a" / "b" / "state.json") == {"z": 1, "a": [1, 2]}
    assert storage.read_json(root / "nothing.json", default={}) == {}
    back = storage.read_parquet(root / "p" / "202401.pqt")
    assert back.select(["t", "v"]).equals(table)
    assert back.schema.metadata[b"source"] == b"test"
    assert storage.exists(root / "a" / "x.bin") and storage.is_file(root / "a" / "x.bin")
    assert storage.size(root / "a" / "x.bin") == 3 and storage.size(root / "nope") is None
    assert not storage.exists(root / "a" / "nope")

    names = [str(p)[len(str(root)) + 1 :] for p in storage.list_files(root)]
    assert names == ["a/b/state.json", "a/x.bin", "a/x.bin.verified", "p/202401.pqt"]
    assert [p.name for p in storage.list_files(root / "a", recursive=False)] == [
        "x.bin",
        "x.bin.verified",
    ]
    assert [p.name for p in storage.list_files(root, suffix=".pqt")] == ["202401.pqt"]
    assert storage.list_files(root / "absent") == []
    # Folder by folder (a folder's files, then its sub-folders): the same files
    walked = [str(p)[len(str(root)) + 1 :] for p in storage.walk_files(root)]
    assert walked == ["a/x.bin", "a/x.bin.verified", "a/b/state.json", "p/202401.pqt"]
    assert [p.name for p in storage.walk_files(root, suffix=".pqt")] == ["202401.pqt"]
    assert list(storage.walk_files(root / "absent")) == []
    assert all(type(p) is type(storage.data_path(root)) for p in storage.walk_files(root))
    # Sizes of a folder's files in one listing; sub-folders are not files.
    assert storage.file_sizes(root / "a") == {"x.bin": 3, "x.bin.verified": 0}
    assert storage.file_sizes(root / "absent") == {}
    assert all(type(p) is type(storage.data_path(root)) for p in storage.list_files(root))

    assert storage.write_json_if_changed(root / "s.json", {"a": 1})
    assert not storage.write_json_if_changed(root / "s.json", {"a": 1})

    storage.move(root / "a" / "x.bin", root / "q" / "x.bin")
    assert storage.read_bytes(root / "q" / "x.bin") == b"abc" and not storage.exists(
        root / "a" / "x.bin"
    )
    with pytest.raises(FileNotFoundError):
        storage.move(root / "a" / "x.bin", root / "q" / "y.bin")  # moved away already
    storage.delete(root / "q" / "x.bin")
    storage.delete(root / "q" / "x.bin")  # missing_ok
    with pytest.raises(FileNotFoundError):
        storage.delete(root / "q" / "x.bin", missing_ok=False)
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(root / "q" / "x.bin")


def test_a_failed_staged_write_publishes_nothing_and_keeps_the_old_content(root):
    target = root / "p" / "part.pqt"
    storage.write_bytes(target, b"old")
    with pytest.raises(RuntimeError):
        with storage.staged_path(target) as tmp:
            tmp.write_bytes(b"half of a new file")
            raise RuntimeError("writer failed")
    assert storage.read_bytes(target) == b"old"
    assert [p.name for p in storage.list_files(root)] == ["part.pqt"]
    with storage.staged_path(target) as tmp:
        pq.write_table(pa.table({"a": [7]}), tmp)
    assert storage.read_parquet(target).column("a").to_pylist() == [7]


def test_s3_objects_are_what_an_independent_client_sees(seaweed, s3_root):
    """Written through the seam, read with a plain pyarrow S3 client (and the reverse)."""
    inner = s3_root.removeprefix("s3://")
    storage.write_parquet(f"{s3_root}/r/x.pqt", pa.table({"a": [1, 2]}))
    fs = seaweed.client()
    assert pq.read_table(f"{inner}/r/x.pqt", filesystem=fs).column("a").to_pylist() == [1, 2]
    with fs.open_output_stream(f"{inner}/r/y.json") as out:
        out.write(b'{"k": 3}')
    assert storage.read_json(f"{s3_root}/r/y.json") == {"k": 3}


def test_s3_listing_pages_beyond_1000_keys(seaweed, s3_root):
    """S3 answers at most 1,000 keys per ListObjectsV2 call: 1,234 keys need two pages."""
    fs = seaweed.client()
    inner = s3_root.removeprefix("s3://")
    names = [f"k{i:05d}.zip" for i in range(1234)]

    def put(name):
        with fs.open_output_stream(f"{inner}/many/{name}") as out:
            out.write(b"x")

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, names))
    listed = storage.list_files(f"{s3_root}/many")
    assert [p.name for p in listed] == names


def _wait_for_line(proc, expected: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.strip() == expected:
            return
        if not line and proc.poll() is not None:
            raise AssertionError(f"child exited: {proc.stderr.read()}")
    raise AssertionError(f"no {expected!r} from the child")


def test_s3_upload_killed_midway_leaves_no_object(seaweed, s3_root):
    """kill -9 while a multipart upload is open (parts sent, not completed): no listing
    and no GET shows the object; a later write of the same key succeeds."""
    code = (
        "import sys, time\n"
        "from crypto_lakehouse import storage\n"
        "storage.configure(dict(endpoint_url=sys.argv[1], addressing_style='path'))\n"
        "fs, inner = storage.filesystem(sys.argv[2])\n"
        "out = fs.open_output_stream(inner)\n"
        "out.write(b'x' * (12 << 20))\n"  # two 5 MiB parts uploaded, the rest buffered
        "out.flush()\n"
        "print('parts sent', flush=True)\n"
        "time.sleep(60)\n"
    )
    target = f"{s3_root}/aws_data/big.zip"
    env = {**os.environ, **seaweed.env, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-c", code, seaweed.endpoint_url, target],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        _wait_for_line(proc, "parts sent")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not storage.exists(target)
    assert storage.list_files(s3_root) == []
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(target)
    storage.write_bytes(target, b"complete")
    assert storage.read_bytes(target) == b"complete"


def test_s3_put_killed_at_any_moment_is_absent_or_complete(seaweed, s3_root):
    """The real write path (staged file, one upload) killed after a random delay: the key
    is either absent or holds the whole body, never a prefix of it."""
    body_mb = 24
    code = (
        "import sys\n"
        "from crypto_lakehouse import storage\n"
        "storage.configure(dict(endpoint_url=sys.argv[1], addressing_style='path'))\n"
        "print('start', flush=True)\n"
        f"storage.write_bytes(sys.argv[2], bytes(range(256)) * ({body_mb} << 12))\n"
        "print('done', flush=True)\n"
    )
    env = {**os.environ, **seaweed.env, "PYTHONPATH": os.pathsep.join(sys.path)}
    outcomes = set()
    for i, delay in enumerate((0.05, 0.2, 0.4)):
        target = f"{s3_root}/k{i}.bin"
        proc = subprocess.Popen(
            [sys.executable, "-c", code, seaweed.endpoint_url, target],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        _wait_for_line(proc, "start")
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        size = storage.size(target)
        assert size in (None, body_mb << 20), size
        outcomes.add(size)
    assert outcomes  # at least one attempt observed


def test_credentials_never_appear_in_errors(seaweed, s3_root, monkeypatch, caplog):
    """Errors name the object; neither the key id nor the secret shows in them or the log
    (of both S3 clients: pyarrow's and the lease's)."""
    errors = []
    with pytest.raises(FileNotFoundError) as err:
        storage.read_bytes(f"{s3_root}/absent.json")
    errors.append(str(err.value))
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweed.secret_key[::-1])  # a wrong secret
    storage.configure(dict(seaweed.storage_settings, region="eu-west-1"))  # a new client
    with pytest.raises(storage.StorageError) as err:
        storage.write_bytes(f"{s3_root}/x.json", b"{}")
    errors.append(str(err.value))
    with pytest.raises(storage.StorageError) as err:  # the lease's client (botocore)
        storage.put_if_absent(f"{s3_root}/x.json", b"{}")
    errors.append(str(err.value))
    assert all(s3_root.removeprefix("s3://") in e for e in errors), errors
    for text in [*errors, caplog.text]:
        assert seaweed.secret_key not in text and seaweed.secret_key[::-1] not in text
        assert seaweed.access_key not in text
    # A refused request says what to check; credentials are set, so: their rights.
    assert all("may read and write this bucket" in e for e in errors[1:]), errors


def test_a_refusal_without_any_credentials_says_where_they_come_from(
    seaweed, s3_root, monkeypatch, tmp_path
):
    """No key in the environment, no profile, no AWS files: the store refuses the request
    and the error says which sources were looked for (not that the bucket is wrong)."""
    for variable in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_PROFILE",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
    ):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    storage.configure(dict(seaweed.storage_settings, region="eu-west-2"))  # a new client
    with pytest.raises(storage.StorageError) as err:
        storage.write_bytes(f"{s3_root}/x.json", b"{}")
    text = str(err.value)
    assert s3_root.removeprefix("s3://") in text
    assert "neither AWS_ACCESS_KEY_ID nor AWS_PROFILE is set" in text
    assert str(tmp_path / "no-credentials") in text
    # Copied (pickled by a process pool, re-raised as is): the hint is not repeated.
    again = storage.StorageError(text)
    assert str(again).count("the request was refused") == 1


def test_other_storage_errors_get_no_credentials_hint():
    assert str(storage.StorageError("s3://b/k: upload failed: connection reset")) == (
        "s3://b/k: upload failed: connection reset"
    )


def test_job_settings_select_the_endpoint(seaweed, s3_root):
    """A job's storage settings (config block `storage`) are what the S3 client uses."""
    storage.configure({"endpoint_url": "http://127.0.0.1:9", "addressing_style": "path"})
    with pytest.raises(OSError):
        storage.write_bytes(f"{s3_root}/x", b"x")  # nothing listens on port 9
    storage.configure(seaweed.storage_settings)
    storage.write_bytes(f"{s3_root}/x", b"x")
    assert json.loads(json.dumps(storage.settings()))["endpoint_url"] == seaweed.endpoint_url


def test_local_writers_refuse_s3_paths_instead_of_making_a_local_folder(tmp_path, monkeypatch):
    """A call site that bypasses the seam with an S3 path fails loudly (no ./s3:/ folder)."""
    from crypto_lakehouse import io

    monkeypatch.chdir(tmp_path)
    p = storage.data_path("s3://bkt/pre") / "lakehouse" / "state.json"
    for call in (
        lambda: io.write_json(p, {}),
        lambda: io.read_json(p),
        lambda: io.touch(p),
        lambda: io.write_bytes(str(p), b""),
        lambda: io.new_temp_path(p),
    ):
        with pytest.raises(ValueError, match="storage"):
            call()
    assert list(tmp_path.iterdir()) == []


def test_read_ahead_gives_each_object_once_and_errors_in_place(s3_root):
    paths = [storage.join(s3_root, f"z/{i}.zip") for i in range(20)]
    for i, p in enumerate(paths):
        storage.write_bytes(p, f"body {i}".encode())
    missing = storage.join(s3_root, "z/missing.zip")
    with storage.read_ahead([*paths[:10], missing, *paths[10:]], window=4):
        assert storage.settings()["endpoint_url"]  # the S3 client of the test
        got = [storage.read_bytes(p) for p in paths[:10]]
        with pytest.raises(FileNotFoundError, match="missing.zip"):
            storage.read_bytes(missing)
        got += [storage.read_bytes(p) for p in paths[10:]]
        # Read again inside the block: fetched anew (read-ahead holds each object once).
        storage.write_bytes(paths[0], b"changed")
        assert storage.read_bytes(paths[0]) == b"changed"
    assert got == [f"body {i}".encode() for i in range(20)]


def test_a_damaged_parquet_file_is_named_and_the_size_written_is_returned(root):
    # pyarrow's "Parquet magic bytes not found" says nothing of which file: a job's error
    # listed the symbol only and the user had to search for the damaged partition.
    path = root / "parsed" / "202001.pqt"
    written = storage.write_parquet(path, pa.table({"a": [1, 2, 3]}))
    assert written == storage.size(path) > 0
    storage.write_bytes(path, storage.read_bytes(path)[:20])
    for read in (storage.read_parquet, storage.parquet_metadata):
        with pytest.raises(pa.ArrowInvalid) as caught:
            read(path)
        assert str(path) in str(caught.value) and "magic bytes" in str(caught.value)
    with pytest.raises(FileNotFoundError):
        storage.read_parquet(root / "parsed" / "missing.pqt")


def test_a_torn_state_record_reads_as_none_and_is_named(root, caplog, monkeypatch):
    # A state record is a cache of what a stage did. Torn by a crash with storage.fsync
    # off, or zeroed by a disk fault, it failed its symbol's stage at every later run with
    # a bare "JSONDecodeError: Unterminated string" (aws_download, gen_kline, resample,
    # features, agg_klines): now the stage redoes the symbol and writes a good record.
    path = root / "lakehouse" / "state" / "aws_download" / "spot" / "klines-1m" / "BTCUSDT.json"
    assert storage.read_state(path) == {}
    storage.write_json(path, {"verified": {"k": 1}})
    assert storage.read_state(path) == {"verified": {"k": 1}}
    text = storage.read_bytes(path)
    damaged = {"torn": text[: len(text) // 2], "zeroed": bytes(len(text)), "empty": b"",
               "not an object": b"[1, 2]"}  # fmt: skip
    for how, content in damaged.items():
        storage.write_bytes(path, content)
        caplog.clear()
        assert storage.read_state(path) == {}, how
        assert f"{storage.uri(path)}: unreadable" in caplog.text, how
    # A failing storage is not a damaged record: redoing years of work is no answer to it.
    monkeypatch.setattr(
        storage, "read_bytes", lambda p: (_ for _ in ()).throw(storage.StorageError("503"))
    )
    with pytest.raises(storage.StorageError):
        storage.read_state(path)


def _put_many(seaweed, inner: str, keys: list[str]) -> None:
    fs = seaweed.client()

    def put(key):
        with fs.open_output_stream(f"{inner}/{key}") as out:
            out.write(b"x")

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, keys))


def _count_listed_pages(monkeypatch) -> list[int]:
    """The number of keys of every page the botocore listings of ``storage`` receive from
    now on (``storage._conditional_client`` wrapped): the list returned grows by one entry
    per page."""
    pages: list[int] = []
    real_client = storage._conditional_client

    class CountingPaginator:
        def __init__(self, paginator):
            self.paginator = paginator

        def paginate(self, **kwargs):
            for page in self.paginator.paginate(**kwargs):
                pages.append(len(page.get("Contents", [])))
                yield page

    class Client:
        def __init__(self, client):
            self.client = client

        def get_paginator(self, name):
            return CountingPaginator(self.client.get_paginator(name))

        def __getattr__(self, name):
            return getattr(self.client, name)

    class Signed(_Forwarding):  # listings by signed GETs (storage._WholeObjects)
        def list_pages(self, folder, prefix):
            for page in self.inner.list_pages(folder, prefix):
                pages.append(len(page))
                yield page

    monkeypatch.setattr(storage, "_conditional_client", lambda: Client(real_client()))
    real_signed = storage._whole_objects
    monkeypatch.setattr(storage, "_whole_objects", lambda: Signed.around(real_signed()))
    return pages


def test_a_symbols_files_in_a_shared_folder_are_listed_without_the_others(
    seaweed, s3_root, tmp_path, monkeypatch
):
    """A results folder holds every symbol's files: finding one symbol's (to remove its
    stale ones) lists only the keys that start with its name or with SP, never the folder,
    whose listing grows with the universe (1,100 other symbols here: two pages)."""
    from crypto_lakehouse.generate.outputs import symbol_files

    mine = ["BTCUSDT.pqt", "SP0_BTCUSDT.pqt", "SP12_BTCUSDT.pqt"]
    near = ["XBTCUSDT.pqt", "SP0_XBTCUSDT.pqt", "BTCUSDT_240329.pqt", "BTCUSDT.pqt.json"]
    others = [f"A{i:04d}USDT.pqt" for i in range(1100)]
    deeper = ["sub/BTCUSDT.pqt"]
    inner = s3_root.removeprefix("s3://")
    _put_many(seaweed, inner, [f"res/1h/{k}" for k in mine + near + others + deeper])
    local = tmp_path / "res" / "1h"
    for key in mine + near + others[:5] + deeper:
        (local / key).parent.mkdir(parents=True, exist_ok=True)
        (local / key).write_bytes(b"x")
    assert [p.name for p in symbol_files(local, "BTCUSDT")] == sorted(mine)

    listed_keys = _count_listed_pages(monkeypatch)
    monkeypatch.setattr(storage, "_file_infos", None)  # no folder listing through pyarrow
    got = symbol_files(storage.join(s3_root, "res/1h"), "BTCUSDT")
    assert [p.name for p in got] == sorted(mine)
    assert all(isinstance(p, ObjectPath) for p in got)
    # Two LISTs (the symbol's prefix, then SP): 3 + 3 keys, not the 1,107 of the folder.
    assert sum(listed_keys) == 6 and len(listed_keys) == 2


def test_subdirs_on_s3_lists_folders_not_the_files_below(seaweed, s3_root, monkeypatch):
    """The resampled folders (interval/offset) of a trade type, found without listing the
    files below them (every symbol's); the same answer as on a local disk."""
    inner = s3_root.removeprefix("s3://")
    keys = [f"rs/{i}/{o}/S{n}.pqt" for i in ("1h", "4h") for o in ("0m", "5m") for n in range(3)]
    _put_many(seaweed, inner, [*keys, "rs/top.json", "rs/1h/note.txt"])
    real = storage._file_infos
    recursive_flags: list[bool] = []

    def file_infos(base, recursive):
        recursive_flags.append(recursive)
        return real(base, recursive)

    monkeypatch.setattr(storage, "_file_infos", file_infos)
    got = storage.subdirs(storage.join(s3_root, "rs"), depth=2)
    assert [p.relative_to(storage.data_path(s3_root)).as_posix() for p in got] == [
        "rs/1h/0m", "rs/1h/5m", "rs/4h/0m", "rs/4h/5m"
    ]  # fmt: skip
    assert recursive_flags == [False, False, False]  # rs/, then rs/1h/ and rs/4h/
    assert [p.name for p in storage.subdirs(storage.join(s3_root, "rs"))] == ["1h", "4h"]
    assert storage.subdirs(storage.join(s3_root, "absent"), depth=2) == []


def test_is_dir_on_s3_asks_one_page_whatever_is_below(seaweed, s3_root, monkeypatch):
    """The loaders ask whether ``results_data/{T}/resampled_klines`` (every symbol's files at
    every offset) exists before each load. Before 2026-12-07 the answer was the listing of
    every key below, 1,000 per sequential request (10 pages for 9,600 files: 0.21 s instead
    of 0.03 s for a one-symbol load on a loopback SeaweedFS, each page a round trip on
    AWS); now one request."""
    inner = s3_root.removeprefix("s3://")
    _put_many(seaweed, inner, [f"rk/1h/{o}m/S{n:04d}.pqt" for o in (0, 5) for n in range(600)])
    seaweed.client().create_dir(f"{inner}/marker/only")  # a folder marker object: no file
    real_infos = storage._file_infos
    recursive_listings: list[str] = []

    def file_infos(base, recursive):
        if recursive:
            recursive_listings.append(str(base))
        return real_infos(base, recursive)

    monkeypatch.setattr(storage, "_file_infos", file_infos)
    pages = _count_listed_pages(monkeypatch)
    assert storage.is_dir(f"{s3_root}/rk")
    assert recursive_listings == [] and len(pages) == 1
    assert storage.is_dir(f"{s3_root}/rk/1h/5m")
    assert not storage.is_dir(f"{s3_root}/absent")
    assert not storage.is_dir(f"{s3_root}/marker")
    assert not storage.is_dir(f"{s3_root}/r")  # a prefix of "rk", not a folder
    assert not storage.is_dir("s3://no-such-bucket-for-is-dir/x")
    assert recursive_listings == []


def test_deleting_the_last_object_of_a_folder_leaves_nothing_behind(seaweed, s3_root):
    """One DeleteObject: no "directory" marker object appears in its place (pyarrow's
    delete_file writes one for an emptied parent, an extra round trip and key)."""
    import pyarrow.fs as pafs

    storage.write_bytes(f"{s3_root}/d/e/only.bin", b"x")
    storage.delete(f"{s3_root}/d/e/only.bin")
    inner = s3_root.removeprefix("s3://")
    left = seaweed.client().get_file_info(
        pafs.FileSelector(inner, recursive=True, allow_not_found=True)
    )
    assert [i.path for i in left] == []
    storage.delete(f"{s3_root}/d/e/only.bin")  # missing: fine by default
    with pytest.raises(FileNotFoundError, match="only.bin"):
        storage.delete(f"{s3_root}/d/e/only.bin", missing_ok=False)


def test_concurrent_heads_keep_their_connections(seaweed, s3_root, caplog):
    """Rounds of concurrent HEADs (storage.identities) from symbols running at once: the
    client's connection pool holds them all, so no connection is discarded (botocore's
    default pool of 10 threw the others away, each a new handshake, with a warning)."""
    import logging
    import threading

    inner = s3_root.removeprefix("s3://")
    _put_many(seaweed, inner, [f"heads/{i}.bin" for i in range(48)])
    paths = [storage.join(s3_root, f"heads/{i}.bin") for i in range(48)]
    caplog.set_level(logging.WARNING, logger="urllib3")
    results = []

    def symbol():  # two symbols' rounds at the same time
        results.append(storage.identities(paths, by_listing=False))

    for _ in range(3):
        threads = [threading.Thread(target=symbol) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert len(results) == 6 and all(all(v == [1, v[1]] for v in r.values()) for r in results)
    assert not [r for r in caplog.records if "pool is full" in r.getMessage()]


def test_a_symbols_files_in_a_local_folder_are_found_by_name_without_a_stat_of_each(
    tmp_path, monkeypatch
):
    """Locally the names alone tell a symbol's files: pyarrow's folder listing stats every
    file (12 ms for 2,000 symbols' files, for each output folder of each symbol of a daily
    run), so it is not used."""
    from crypto_lakehouse.generate.outputs import symbol_files

    folder = tmp_path / "res" / "1h"
    folder.mkdir(parents=True)
    mine = ["BTCUSDT.pqt", "SP0_BTCUSDT.pqt", "SP12_BTCUSDT.pqt"]
    near = ["XBTCUSDT.pqt", "SP0_XBTCUSDT.pqt", "BTCUSDT_240329.pqt", "BTCUSDT.pqt.json"]
    temp = [".tmp-BTCUSDT.pqt.1-2-3.part"]  # a writer's temporary file: not data
    for name in mine + near + temp + [f"A{i:04d}USDT.pqt" for i in range(50)]:
        (folder / name).write_bytes(b"x")
    (folder / "SP1_BTCUSDT.pqt").mkdir()  # a folder of that name is not a file
    monkeypatch.setattr(storage, "_file_infos", None)  # no listing through pyarrow
    assert [p.name for p in symbol_files(folder, "BTCUSDT")] == sorted(mine)
    # load_klines' list of a symbol's segments, in time order, the same way
    assert [p.name for p in layout.segment_files(folder, "BTCUSDT")] == [
        "SP0_BTCUSDT.pqt", "SP12_BTCUSDT.pqt", "BTCUSDT.pqt"]  # fmt: skip
    assert storage.files_named(tmp_path / "absent", ("BTCUSDT",)) == []
    assert storage.files_named(folder / "BTCUSDT.pqt", ("BTCUSDT",)) == []  # a file


class _Forwarding:
    """A wrapper of ``inner`` forwarding what it does not define."""

    def __init__(self, inner, *args):
        self.inner = inner
        self.args = args

    @classmethod
    def around(cls, inner, *args):
        return None if inner is None else cls(inner, *args)

    def __getattr__(self, name):
        return getattr(self.inner, name)


class _CountingSigned(_Forwarding):
    """storage's signed requests (``_WholeObjects``: GETs, PUTs, listings), its listings
    counted by prefix as ``_CountingClient`` counts botocore's."""

    def list_pages(self, folder, prefix):
        self.args[0].append(("list", prefix.rstrip("/")))
        return self.inner.list_pages(folder, prefix)


def count_asked(monkeypatch, asked: list) -> None:
    """Count the HEADs and LISTs storage sends into ``asked``: ``("head", key)``,
    ``("list", prefix)``, whichever client sends them."""
    real_client, real_signed = storage._conditional_client, storage._whole_objects
    monkeypatch.setattr(
        storage, "_conditional_client", lambda: _CountingClient(real_client(), asked)
    )
    monkeypatch.setattr(
        storage, "_whole_objects", lambda: _CountingSigned.around(real_signed(), asked)
    )


class _CountingClient:
    """A boto3 client that counts the HEADs and LISTs it sends, by key or prefix."""

    def __init__(self, client, asked: list):
        self.client, self.asked = client, asked

    def head_object(self, **kwargs):
        self.asked.append(("head", kwargs["Key"]))
        return self.client.head_object(**kwargs)

    def get_paginator(self, name):
        paginator, asked = self.client.get_paginator(name), self.asked

        class Counting:
            def paginate(self, **kwargs):
                asked.append(("list", kwargs["Prefix"].rstrip("/")))
                yield from paginator.paginate(**kwargs)

        return Counting()

    def __getattr__(self, name):
        return getattr(self.client, name)


def test_a_jobs_inputs_are_asked_about_once_on_s3(s3_root, monkeypatch):
    """Inside ``inputs_asked_once`` an input folder is listed once and an input file's
    identity asked once, also from the helper threads of ``concurrently`` (the digest, the
    file list and the tail's checks each asked again: a round trip each). A write by this
    process shows in the next answer; other paths and answers outside the block are asked
    each time."""
    root = storage.data_path(s3_root)
    for rel in ("in/a.pqt", "in/b.pqt", "funding.pqt", "out/x.pqt"):
        storage.write_bytes(root / rel, rel.encode())
    asked: list = []
    count_asked(monkeypatch, asked)
    monkeypatch.setattr(storage, "_file_infos", None)  # a flat listing is a delimited LIST
    key = root.key

    def list_and_head():
        folder = storage.listed_identities(root / "in")
        assert storage.list_files(root / "in", recursive=False) == sorted(folder, key=str)
        assert (
            storage.identities([root / "in/a.pqt"])[root / "in/a.pqt"] == folder[root / "in/a.pqt"]
        )
        return storage.identity(root / "funding.pqt"), storage.identity(root / "out/x.pqt")

    with storage.inputs_asked_once([root / "in", root / "funding.pqt"]):
        answers = storage.concurrently(lambda _: list_and_head(), range(3))
        answers.append(list_and_head())
        assert asked.count(("list", f"{key}/in")) == 1, asked
        assert asked.count(("head", f"{key}/funding.pqt")) == 1, asked
        assert asked.count(("head", f"{key}/out/x.pqt")) == 4, asked  # not an input
        storage.write_bytes(root / "in/c.pqt", b"new")
        storage.write_bytes(root / "funding.pqt", b"changed")
        assert [p.name for p in storage.list_files(root / "in", recursive=False)] == [
            "a.pqt", "b.pqt", "c.pqt"]  # fmt: skip
        assert storage.identity(root / "funding.pqt")[0] == len(b"changed")
        assert asked.count(("list", f"{key}/in")) == 2, asked
    assert len({tuple(a) for a in answers[0]} | {tuple(a) for a in answers[-1]}) == 2
    asked.clear()
    storage.list_files(root / "in", recursive=False)
    storage.list_files(root / "in", recursive=False)
    assert asked.count(("list", f"{key}/in")) == 2  # outside the block: asked each time
