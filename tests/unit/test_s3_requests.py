"""The HTTP requests the storage seam and the S3 stages really send (issue 18: on a remote
bucket every sequential request is a round trip): counted by a relay between the client
and SeaweedFS (tests/s3_helpers.RequestCounter), not by ``storage.request_stats``, which
counts one per call whatever pyarrow does inside it."""

from __future__ import annotations

import os
import secrets

import pytest

from crypto_lakehouse import storage
from tests.s3_helpers import RequestCounter, put_verified_archives, weed_binary

pytestmark = pytest.mark.skipif(weed_binary() is None, reason="needs the weed binary")


@pytest.fixture
def counted(seaweed, seaweed_bucket, request):
    """``(root, counter)``: a fresh ``s3://`` prefix, ``storage`` pointed at it through a
    ``RequestCounter``."""
    import re

    counter = RequestCounter(seaweed.port)
    storage.configure(dict(seaweed.storage_settings, endpoint_url=counter.endpoint_url))
    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:50].strip("-")
    try:
        yield f"s3://{seaweed_bucket}/{name}-{secrets.token_hex(3)}", counter
    finally:
        storage.configure(None)
        counter.close()


def _of(requests, key: str, method: str | None = None) -> list:
    """The requests naming ``key`` (path-style: ``/bucket/key``), of ``method`` if given."""
    return [
        (m, t)
        for m, t in requests
        if t.split("?", 1)[0].endswith("/" + key) and (method is None or m == method)
    ]


def test_a_whole_object_read_is_one_get(counted):
    """A 1 MiB object read whole (read-ahead, as the parse reads archives and gen_kline its
    partitions): one GET, not one ranged GET per 256 KiB as pyarrow's input stream did,
    and no HEAD before it (pyarrow's ``open_input_file`` asks the size first: one more
    round trip per object)."""
    root, counter = counted
    body = bytes(range(256)) * 4096  # 1 MiB
    paths = [storage.join(root, f"obj{i}.bin") for i in range(2)]
    for p in paths:
        storage.write_bytes(p, body)
    counter.take()
    with storage.read_ahead(paths):
        assert [storage.read_bytes(p) for p in paths] == [body, body]
    assert storage.read_bytes(paths[0]) == body  # outside read-ahead too
    seen = counter.take()
    assert len(_of(seen, "obj0.bin", "GET")) == 2, seen
    assert len(_of(seen, "obj1.bin", "GET")) == 1, seen
    assert sorted(m for m, _ in seen) == ["GET"] * 3, seen  # no HEAD (the size) first


def test_a_whole_object_read_sees_the_object_as_it_is_and_names_errors(counted, monkeypatch):
    """The plain GET returns the object as the store holds it when the GET is served (a
    replaced object is read whole, shorter or longer: nothing is read by a size known
    beforehand); a missing object is a FileNotFoundError naming it; a refused read (wrong
    secret) a StorageError naming the object and saying where credentials come from."""
    root, _ = counted
    path = storage.join(root, "obj.bin")
    for body in (b"a" * 5000, b"b" * 7000, b"c" * 10, b""):
        storage.write_bytes(path, body)
        with storage.read_ahead([path]):
            assert storage.read_bytes(path) == body
    with pytest.raises(FileNotFoundError, match="obj-missing.bin"):
        storage.read_bytes(storage.join(root, "obj-missing.bin"))
    assert storage.read_json(storage.join(root, "obj-missing.json"), "absent") == "absent"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", os.environ["AWS_ACCESS_KEY_ID"] + "x")
    with pytest.raises(storage.StorageError, match=r"obj\.bin.*refused"):
        storage.read_bytes(path)


def _kline_archives(tmp_path, days: list[str]) -> dict[str, bytes]:
    from crypto_lakehouse_emulator.generate import write_kline_day

    out = {}
    for day in days:
        key = write_kline_day(tmp_path / "mirror", "spot", "BTCUSDT", "1m", day, seed=3)
        out[key] = (tmp_path / "mirror" / key).read_bytes()
    return out


def test_kline_parse_and_gen_kline_read_each_input_with_one_get(counted, tmp_path):
    """The parse reads each archive, gen_kline each partition, with one GET and no HEAD
    before it (each HEAD was one more round trip per object, ~0.6 ms of the store's CPU)."""
    from crypto_lakehouse.generate import run_gen_kline
    from crypto_lakehouse.parse.klines import run_parse_klines

    root, counter = counted
    archives = _kline_archives(tmp_path, ["2024-01-30", "2024-01-31", "2024-02-01"])
    report = put_verified_archives(root, archives)
    counter.take()
    run_parse_klines(
        trade_type="spot", symbol="BTCUSDT", interval="1m", data_dir=root,
        download_report=report, report_path=tmp_path / "r.json", stats_path=tmp_path / "s.json",
    )  # fmt: skip
    seen = counter.take()
    for key in archives:
        assert [m for m, _ in _of(seen, key)] == ["GET"], (key, seen)
    run_gen_kline(
        trade_type="spot", symbol="BTCUSDT", interval="1m", data_dir=root,
        split_gaps=True, with_vwap=True, with_funding_rates=False,
        report_path=tmp_path / "g.json", stats_path=tmp_path / "gs.json",
    )  # fmt: skip
    seen = counter.take()
    for month in ("202401", "202402"):
        assert [m for m, _ in _of(seen, f"BTCUSDT/1m/{month}.pqt")] == ["GET"], seen


def test_a_parquet_read_by_its_listed_size_is_one_get_and_never_cut(counted):
    """``read_parquet(listed_size=...)`` (the parse's partitions, sizes from its listing):
    one GET, no HEAD. A stale size (the object replaced since the listing, larger or
    smaller) still reads the object as it is, whole: the size only picks the whole read
    over ranged ones. Above ``WHOLE_PARQUET_READ_BYTES`` the ranged read (HEAD first)."""
    import pyarrow as pa

    root, counter = counted
    path = storage.join(root, "part.pqt")
    small = pa.table({"x": list(range(10))})
    large = pa.table({"x": list(range(100_000)), "y": [str(i) for i in range(100_000)]})
    storage.write_parquet(path, small)
    [listed] = storage.file_sizes(root, sized=".pqt").values()
    counter.take()
    assert storage.read_parquet(path, listed_size=listed).equals(small)
    assert [m for m, _ in counter.take()] == ["GET"]
    storage.write_parquet(path, large)  # replaced: the listed size is stale (smaller)
    assert storage.read_parquet(path, listed_size=listed).equals(large)
    big = storage.file_sizes(root, sized=".pqt")["part.pqt"]
    storage.write_parquet(path, small)  # and the other way round
    assert storage.read_parquet(path, listed_size=big).equals(small)
    counter.take()
    too_big = storage.WHOLE_PARQUET_READ_BYTES + 1
    assert storage.read_parquet(path, listed_size=too_big).equals(small)
    assert "HEAD" in [m for m, _ in counter.take()]


def test_kline_parse_asks_no_existence_before_its_reads(counted, tmp_path):
    """The klines parse knows from its one listing which monthly partitions exist: no HEAD
    of a partition before reading (or instead of reading) it, one after the other per
    month, and none of the quality record before its read."""
    from crypto_lakehouse.parse.klines import run_parse_klines

    root, counter = counted
    archives = _kline_archives(tmp_path, ["2024-01-30", "2024-01-31", "2024-02-01"])
    report = put_verified_archives(root, archives)

    def parse(report):
        return run_parse_klines(
            trade_type="spot", symbol="BTCUSDT", interval="1m", data_dir=root,
            download_report=report, report_path=tmp_path / "r.json",
            stats_path=tmp_path / "s.json",
        )  # fmt: skip

    counter.take()
    assert parse(report)["partitions_written"] == 2
    first = counter.take()
    parts = [(m, t) for m, t in first if "/parsed_data/" in t and ".pqt" in t]
    quality_key = [(m, t) for m, t in first if "quality" in t]
    # Nothing there yet: each partition and the quality record is one PUT, nothing else.
    assert sorted(m for m, _ in parts) == ["PUT", "PUT"], parts
    assert [m for m, _ in quality_key] == ["PUT"], quality_key

    # One more day of February: that partition is read (one GET: its size is in the
    # parse's listing, no HEAD), January's is not touched, the quality record read (one
    # GET: a symbol's record is small; it was a HEAD for its size first) and written once.
    report = put_verified_archives(root, _kline_archives(tmp_path, ["2024-02-02"]), report)
    counter.take()
    assert parse(report)["partitions_written"] == 1
    again = counter.take()
    feb = _of(again, "BTCUSDT/1m/202402.pqt")
    assert sorted(m for m, _ in feb) == ["GET", "PUT"], feb
    assert not _of(again, "BTCUSDT/1m/202401.pqt"), again
    quality_key = [(m, t) for m, t in again if "quality" in t]
    assert [m for m, _ in quality_key] == ["GET", "PUT"], quality_key


def test_gen_kline_lists_each_folder_once_and_its_stale_files_before_writing(counted, tmp_path):
    """A full gen_kline build on S3 lists its input folder once (its file list and the
    inputs' identities were a listing each) and lists its symbol's old output files before
    it uploads the new one: a listing of the output folder waits for the uploads pending
    below it, so taken after the writes it was one more round trip after the upload. A
    stale file is still removed, and the output is the local build's, byte for byte."""
    from crypto_lakehouse import layout
    from crypto_lakehouse.generate import run_gen_kline
    from crypto_lakehouse.parse.klines import run_parse_klines

    root, counter = counted
    local = tmp_path / "local"
    archives = _kline_archives(tmp_path, ["2024-01-30", "2024-01-31", "2024-02-01"])
    for data_dir in (root, local):
        run_parse_klines(
            trade_type="spot", symbol="BTCUSDT", interval="1m", data_dir=data_dir,
            download_report=put_verified_archives(data_dir, archives),
            report_path=tmp_path / "p.json", stats_path=tmp_path / "ps.json",
        )  # fmt: skip
    out_dir = layout.results_klines_dir(root, "spot", "1m")
    storage.write_bytes(out_dir / "SP7_BTCUSDT.pqt", b"stale")  # an old segment file

    def gen(data_dir):
        return run_gen_kline(
            trade_type="spot", symbol="BTCUSDT", interval="1m", data_dir=data_dir,
            split_gaps=True, with_vwap=True, with_funding_rates=False,
            report_path=tmp_path / "g.json", stats_path=tmp_path / "gs.json",
        )  # fmt: skip

    counter.take()
    stats = gen(root)
    seen = counter.take()
    assert stats["files_written"] == 1 and stats["files_removed"] == 1
    lists = [t for m, t in seen if m == "GET" and "list-type=2" in t]
    parsed_lists = [t for t in lists if "prefix=" in t and "/parsed_data/" in t]
    assert len(parsed_lists) == 1, lists
    put = next(i for i, (m, t) in enumerate(seen) if m == "PUT" and "/results_data/" in t)
    out_lists = [i for i, (m, t) in enumerate(seen) if "list-type=2" in t and "results_data" in t]
    assert out_lists and max(out_lists) < put, seen
    assert not storage.exists(out_dir / "SP7_BTCUSDT.pqt")

    gen(local)
    [name] = [p.name for p in (local / "results_data/spot/klines/1m").iterdir()]
    assert (
        storage.read_bytes(out_dir / name)
        == (local / "results_data/spot/klines/1m" / name).read_bytes()
    )


def test_gen_kline_tail_build_lists_its_stale_files_before_writing(counted, tmp_path):
    """A tail build (one more day) lists the symbol's output files at the same time as it
    asks its previous outputs' identities, not after the upload of its rewritten newest
    file (a listing of the folder waits for that upload: one more round trip)."""
    from crypto_lakehouse.generate import run_gen_kline
    from crypto_lakehouse.parse.klines import run_parse_klines

    root, counter = counted

    def parse_and_gen(report):
        run_parse_klines(
            trade_type="spot", symbol="BTCUSDT", interval="1m", data_dir=root,
            download_report=report, report_path=tmp_path / "p.json",
            stats_path=tmp_path / "ps.json",
        )  # fmt: skip
        counter.take()
        return run_gen_kline(
            trade_type="spot", symbol="BTCUSDT", interval="1m", data_dir=root,
            split_gaps=True, with_vwap=True, with_funding_rates=False, incremental=True,
            report_path=tmp_path / "g.json", stats_path=tmp_path / "gs.json",
        )  # fmt: skip

    report = put_verified_archives(root, _kline_archives(tmp_path, ["2024-01-30", "2024-01-31"]))
    assert parse_and_gen(report)["files_written"] == 1
    report = put_verified_archives(root, _kline_archives(tmp_path, ["2024-02-01"]), report)
    stats = parse_and_gen(report)
    seen = counter.take()
    assert stats["incremental"]["mode"] == "tail", stats
    put = next(i for i, (m, t) in enumerate(seen) if m == "PUT" and "/results_data/" in t)
    out_lists = [i for i, (m, t) in enumerate(seen) if "list-type=2" in t and "results_data" in t]
    assert out_lists and max(out_lists) < put, seen


def _monthly_partitions(root, n: int) -> list:
    """``n`` tiny parsed partitions (two rows each, values ``i``) written to ``root``."""
    import pyarrow as pa

    from crypto_lakehouse.schema import KLINE_SCHEMA

    paths = []
    for i in range(n):
        table = pa.table({f.name: pa.array([i, i], pa.int64()).cast(f.type) for f in KLINE_SCHEMA})
        paths.append(storage.join(root, f"parsed/{2024 + i // 12}{1 + i % 12:02d}.pqt"))
        storage.write_parquet(paths[-1], table)
    return paths


def test_footers_beyond_the_read_ahead_window_are_asked_at_once(counted, monkeypatch):
    """gen_kline reads every input's footer (row counts) before the files: on S3 those in
    the read-ahead window (``merge.INPUTS_AHEAD`` objects) come from its GETs, and the
    others (21 files here, five years and a half of monthly partitions would be more) were
    read one after the other, a HEAD and a ranged GET each. Now at once. The files' rows
    are read as before."""
    import threading
    import time

    from crypto_lakehouse.generate.merge import INPUTS_AHEAD, read_kline_files

    root, _ = counted
    paths = _monthly_partitions(root, INPUTS_AHEAD + 5)
    real, lock, active, most = storage.parquet_metadata, threading.Lock(), [0], [0]

    def slow_metadata(path):
        with lock:
            active[0] += 1
            most[0] = max(most[0], active[0])
        try:
            time.sleep(0.05)  # a remote store's round trip
            return real(path)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(storage, "parquet_metadata", slow_metadata)
    store, [n_rows], problems = read_kline_files(paths)
    assert (n_rows, problems) == (2 * len(paths), [])
    assert list(store["open"]) == [float(i) for i in range(len(paths)) for _ in (0, 1)]
    assert most[0] >= 5, most  # the five beyond the window at once


def test_a_year_of_partitions_is_one_get_each_and_no_footer_request(counted):
    """A year of monthly partitions (13 files, gen_kline's inputs of a one-year history) is
    read with one GET each, all in one read-ahead window. With a window of 8 the other five
    were asked their footer first (a suffix-range GET each: one more request per file, and
    on a remote store one more round trip before the rows) and fetched whole only once the
    reader had taken the first files (a second round of GETs)."""
    from crypto_lakehouse.generate.merge import read_kline_files

    root, counter = counted
    paths = _monthly_partitions(root, 13)
    counter.take()
    store, [n_rows], problems = read_kline_files(paths)
    assert (n_rows, problems) == (26, [])
    assert list(store["open"]) == [float(i) for i in range(13) for _ in (0, 1)]
    seen = counter.take()
    for path in paths:
        key = storage.data_path(path).key
        assert _of(seen, key) == [("GET", f"/{storage.data_path(path).bucket}/{key}")], seen
    assert len(seen) == 13, seen


def test_gen_kline_keeps_its_outputs_version_from_the_put_instead_of_a_head(counted, tmp_path):
    """gen_kline's tail record holds each output's identity ``[size, ETag]``. It HEADed the
    output once its upload had finished: one more round trip between the upload and the
    record's PUT. The signed PUT's answer carries the ETag, so the output is one PUT and
    nothing else, and the recorded identity is the one the store gives afterwards."""
    import json

    from crypto_lakehouse import layout
    from crypto_lakehouse.generate import run_gen_kline, tail
    from crypto_lakehouse.parse.klines import run_parse_klines

    root, counter = counted
    archives = _kline_archives(tmp_path, ["2024-01-30", "2024-01-31"])
    run_parse_klines(
        trade_type="spot", symbol="BTCUSDT", interval="1m", data_dir=root,
        download_report=put_verified_archives(root, archives),
        report_path=tmp_path / "p.json", stats_path=tmp_path / "ps.json",
    )  # fmt: skip
    counter.take()
    stats = run_gen_kline(
        trade_type="spot", symbol="BTCUSDT", interval="1m", data_dir=root,
        split_gaps=True, with_vwap=True, with_funding_rates=False,
        report_path=tmp_path / "g.json", stats_path=tmp_path / "gs.json",
    )  # fmt: skip
    seen = counter.take()
    assert stats["files_written"] == 1
    [segment] = json.loads((tmp_path / "g.json").read_text())["segments"]
    assert [m for m, _ in _of(seen, segment["file"])] == ["PUT"], seen
    assert not [t for m, t in seen if m == "HEAD"], seen
    record = storage.read_json(tail.record_path(root, "spot", "BTCUSDT", "1m"))
    output = storage.join(root, segment["file"])
    assert record["outputs"][segment["file"]] == storage.identity(output)  # a HEAD now
    listed = storage.listed_identities(layout.results_klines_dir(root, "spot", "1m"))
    assert record["outputs"][segment["file"]] == listed[output]


def test_a_stored_version_is_kept_only_until_the_object_changes(counted, monkeypatch):
    """Inside a job's upload block the identity of an object it stored comes from the PUT's
    answer, no HEAD; for an object over SeaweedFS's 8 MB chunk too, the ETag being the one
    the store gives later. A delete or a new write by the process forgets it, and so does
    the block's end. An object over ``SIGNED_PUT_MAX_BYTES`` goes through pyarrow's
    multipart upload, which gives no ETag: asked by a HEAD."""
    root, counter = counted
    big, small, large = (storage.join(root, n) for n in ("big.bin", "small.bin", "large.bin"))
    monkeypatch.setattr(storage, "SIGNED_PUT_MAX_BYTES", 10 << 20, raising=False)

    def methods() -> list[str]:
        return [m for m, _ in counter.take()]

    with storage.background_uploads():
        storage.write_bytes(big, os.urandom(9 << 20))
        storage.write_bytes(small, b"x" * 100)
        storage.write_bytes(large, b"y" * (11 << 20))
        storage.flush()
        counter.take()
        kept = storage.identities([big, small], by_listing=False)
        assert methods() == []
        assert (kept[big][0], kept[small][0]) == (9 << 20, 100)
        assert storage.identity(large)[0] == 11 << 20
        assert methods() == ["HEAD"]
        storage.delete(small)
        assert storage.identity(small) is None
        storage.write_bytes(big, b"z" * 10)
        newer = storage.identity(big)
        assert newer[0] == 10 and newer[1] != kept[big][1]
    counter.take()
    assert storage.identities([big, small], by_listing=False) == {big: newer, small: None}
    assert methods() == ["HEAD", "HEAD"]  # the block has ended: asked
    with storage.background_uploads():
        storage.write_bytes(big, os.urandom(9 << 20))
        stored = storage.identity(big)
    assert storage.identity(big) == stored  # the store's ETag of a 9 MB object: the PUT's
    # A tail build's rewrite (the kept prefix copied inside the store, a multipart upload):
    # the identity from its completion's answer.
    with storage.background_uploads():
        counter.take()
        assert storage.write_prefix_and_rest(large, big, 6 << 20, b"tail")
        completed = storage.identity(large)
        assert "HEAD" not in methods()
    assert completed[0] == (6 << 20) + 4
    assert storage.identity(large) == completed


def test_a_put_cut_after_its_headers_stores_nothing(counted, seaweed):
    """A process killed between the headers of its PUT and the body (urllib3 sends them
    apart) must leave no object: SeaweedFS stores such a PUT as an empty object unless
    it carries the body's checksum. A relay that passes only the headers, then closes both
    ends, stands for the kill; the object is absent afterwards, as is one cut mid-body."""
    import contextlib
    import socket
    import socketserver
    import threading

    root, _ = counted

    class HeadersOnly(socketserver.BaseRequestHandler):
        keep_body_bytes = 0

        def handle(self):
            upstream = socket.create_connection(("127.0.0.1", seaweed.port))
            data = b""
            while b"\r\n\r\n" not in data and (chunk := self.request.recv(1 << 16)):
                data += chunk
            end = data.find(b"\r\n\r\n") + 4
            upstream.sendall(data[: end + self.keep_body_bytes])
            upstream.shutdown(socket.SHUT_WR)
            upstream.settimeout(5)
            with contextlib.suppress(OSError):
                upstream.recv(1 << 16)  # the store's answer (or its close): it has seen it all
            upstream.close()
            self.request.close()

    for keep in (0, 100):
        HeadersOnly.keep_body_bytes = keep
        server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), HeadersOnly)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        path = storage.join(root, f"cut{keep}.bin")
        try:
            storage.configure(
                dict(
                    seaweed.storage_settings,
                    endpoint_url=f"http://127.0.0.1:{server.server_address[1]}",
                )
            )
            with pytest.raises(storage.StorageError, match=f"cut{keep}.bin"):
                storage.write_bytes(path, b"x" * 5000)
        finally:
            server.shutdown()
            server.server_close()
        storage.configure(seaweed.storage_settings)
        assert not storage.exists(path)


def test_a_folder_listing_pages_names_and_versions_as_the_store_gives_them(counted, seaweed):
    """A folder's listing (signed ListObjectsV2 GETs, parsed here instead of by botocore,
    whose parser spent ~0.1 s of CPU on 1,100 keys): every page (SeaweedFS gives 1,000 keys
    a page), the names directly in the folder only (not those below it, nor another folder
    that starts with its name), each with the size and ETag a HEAD gives; names needing
    escapes in the query and its signature; a missing bucket is an error naming it."""
    from concurrent.futures import ThreadPoolExecutor

    root, counter = counted
    folder = storage.join(root, "a b+c=d")
    names = [f"k{i:04d}.bin" for i in range(1005)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda n: storage.write_bytes(folder / n, n.encode()), names))
    storage.write_bytes(folder / "sub" / "below.bin", b"x")
    storage.write_bytes(storage.join(root, "a b+c=d2", "other.bin"), b"x")
    counter.take()
    listed = storage.listed_identities(folder)
    lists = [t for m, t in counter.take() if "list-type=2" in t]
    assert len(lists) == 2, lists  # two pages
    assert [p.name for p in listed] == names
    assert storage.file_names(folder) == set(names)
    for name in ("k0000.bin", "k1004.bin"):
        assert listed[folder / name] == storage.identity(folder / name)
        assert listed[folder / name][0] == len(name)
    with pytest.raises(storage.StorageError, match="no-such-bucket-here"):
        storage.file_names(f"s3://no-such-bucket-here/{root.split('/', 3)[3]}")


def test_a_footer_is_read_by_its_last_bytes_without_a_head(counted):
    """A Parquet footer outside the read-ahead window (gen_kline's inputs beyond it, tail
    builds' previous outputs) was a HEAD for the size, then a ranged GET of the last 64
    KiB, one after the other: now a GET of the last 64 KiB alone, and a second one only for
    a footer longer than that. The metadata is the file's; an empty or non-Parquet object
    is a damaged file, a missing one missing, each named."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root, counter = counted
    small, wide = storage.join(root, "small.pqt"), storage.join(root, "wide.pqt")
    storage.write_parquet(small, pa.table({"a": list(range(1000))}))
    # 400 columns: a footer well over 64 KiB.
    storage.write_parquet(wide, pa.table({f"column_{i:03d}": [i, i] for i in range(400)}))
    counter.take()
    assert storage.parquet_metadata(small).num_rows == 1000
    assert [m for m, _ in counter.take()] == ["GET"]
    meta = storage.parquet_metadata(wide)
    assert [m for m, _ in counter.take()] == ["GET", "GET"]
    local = pq.ParquetFile(pa.BufferReader(storage.read_bytes(wide))).metadata
    assert meta.serialized_size > 64 << 10 and meta.equals(local)
    for name, body in (("empty.pqt", b""), ("text.pqt", b"not parquet at all")):
        storage.write_bytes(storage.join(root, name), body)
        with pytest.raises(Exception, match=name) as err:
            storage.parquet_metadata(storage.join(root, name))
        assert storage.is_damaged_file_error(err.value), err.value
    with pytest.raises(FileNotFoundError, match="missing.pqt"):
        storage.parquet_metadata(storage.join(root, "missing.pqt"))
