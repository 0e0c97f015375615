"""Background uploads of the storage seam (``storage.background_uploads`` / ``flush``) on a
real S3 store (SeaweedFS): a data write returns before its PUT; every record (state,
marker, report) waits for the pending uploads; a failed upload raises at the barrier,
naming the object, and no record vouching for it is written; bytes in flight are capped.

Uploads are held back or made to fail by wrapping the seam's one upload function
(``storage._put``) around the real one; everything else talks to SeaweedFS."""

from __future__ import annotations

import threading
import time

import pyarrow as pa
import pytest

from crypto_lakehouse import io, storage
from tests.s3_helpers import put_verified_archives
from tests.unit.test_storage_stages import _archives, _parse


class HeldUploads:
    """Wraps storage._put: uploads of objects whose key ends with ``held`` wait for
    ``release``; counts uploads running at the same time."""

    def __init__(self, monkeypatch, held: str = "", pause_s: float = 0.0):
        self.real = storage._put
        self.release = threading.Event()
        self.held, self.pause_s = held, pause_s
        self.lock = threading.Lock()
        self.running = self.max_running = 0
        self.started: list[str] = []
        monkeypatch.setattr(storage, "_put", self)

    def __call__(self, dest, body):
        with self.lock:
            self.running += 1
            self.max_running = max(self.max_running, self.running)
            self.started.append(dest.name)
        try:
            if self.held and str(dest).endswith(self.held):
                assert self.release.wait(30), "never released"
            time.sleep(self.pause_s)
            self.real(dest, body)
        finally:
            with self.lock:
                self.running -= 1


def _independent_exists(seaweed, path) -> bool:
    """A HEAD of the object by a separate client, as another process would see it (the
    seam's own reads wait for their pending uploads)."""
    import pyarrow.fs as pafs

    inner = str(path).removeprefix("s3://")
    return seaweed.client().get_file_info(inner).type != pafs.FileType.NotFound


def test_a_write_returns_before_its_upload_and_a_record_waits_for_it(seaweed, s3_root, monkeypatch):
    held = HeldUploads(monkeypatch, held="2024-01.pqt")
    part = storage.join(s3_root, "parsed/2024-01.pqt")
    state = storage.join(s3_root, "state.json")
    table = pa.table({"x": [1, 2, 3]})
    seen_while_held: list[bool] = []

    def release_later():
        time.sleep(0.3)  # the job is in write_json by now, at the barrier
        seen_while_held.append(_independent_exists(seaweed, state))
        held.release.set()

    with storage.background_uploads():
        storage.write_parquet(part, table)  # returns while its upload is held
        assert not _independent_exists(seaweed, part)
        releaser = threading.Thread(target=release_later)
        releaser.start()
        storage.write_json(state, {"partitions": ["2024-01"]})  # waits for the partition
        releaser.join(30)
        assert seen_while_held == [False]  # the record was not stored before its data
        assert _independent_exists(seaweed, part) and _independent_exists(seaweed, state)
    assert storage.read_parquet(part).equals(table)
    assert storage.read_json(state) == {"partitions": ["2024-01"]}


def test_a_failed_upload_raises_at_the_barrier_naming_the_object_and_no_record_is_written(
    s3_root, tmp_path
):
    # A real failure: the store refuses the PUT (an invalid bucket name).
    lost = storage.data_path("s3://Invalid_Bucket/parsed/2024-02.pqt")
    state = storage.join(s3_root, "state.json")
    report = tmp_path / "report.json"
    with pytest.raises(storage.StorageError, match="Invalid_Bucket/parsed/2024-02.pqt"):
        with storage.background_uploads():
            storage.write_parquet(lost, pa.table({"x": [1]}))  # returns: the PUT is pending
            storage.write_json(state, {"partitions": ["2024-02"]})
    assert not storage.exists(state)
    # The local report (io.write_json) is a record too: the same barrier stops it.
    with pytest.raises(storage.StorageError, match="2024-02.pqt"):
        with storage.background_uploads():
            storage.write_bytes(lost, b"data")
            io.write_json(report, {"ok": True})
    assert not report.exists()
    # A block that is left without a record still ends with the barrier.
    with pytest.raises(storage.StorageError, match="2024-02.pqt"):
        with storage.background_uploads():
            storage.write_bytes(lost, b"data")
    # Outside a block, writes are synchronous and fail in place.
    with pytest.raises(storage.StorageError, match="2024-02.pqt"):
        storage.write_bytes(lost, b"data")


def test_a_job_sees_its_own_pending_writes(s3_root, monkeypatch):
    held = HeldUploads(monkeypatch, pause_s=0.05)
    folder = storage.join(s3_root, "results")
    a, b = folder / "a.pqt", folder / "b.bin"
    with storage.background_uploads():
        storage.write_parquet(a, pa.table({"v": [1.5]}))
        storage.write_bytes(b, b"first")
        storage.write_bytes(b, b"second")  # two versions: stored in their order
        assert storage.read_bytes(b) == b"second"
        assert storage.read_parquet(a).column("v").to_pylist() == [1.5]
        assert [p.name for p in storage.list_files(folder)] == ["a.pqt", "b.bin"]
        storage.write_bytes(folder / "c.bin", b"gone")
        storage.delete(folder / "c.bin")  # after its upload, not before
    assert held.started.count("b.bin") == 2
    assert [p.name for p in storage.list_files(folder)] == ["a.pqt", "b.bin"]
    assert storage.read_bytes(b) == b"second"


@pytest.mark.parametrize("max_bytes, most_at_once", [(100, 1), (10_000, 4)])
def test_bytes_in_flight_are_capped(s3_root, monkeypatch, max_bytes, most_at_once):
    held = HeldUploads(monkeypatch, pause_s=0.1)
    bodies = [bytes([i]) * 60 for i in range(8)]
    with storage.background_uploads(workers=4, max_bytes=max_bytes):
        for i, body in enumerate(bodies):
            storage.write_bytes(storage.join(s3_root, f"f/{i}"), body)
    # 60-byte objects under a 100-byte cap go one at a time; a roomy cap lets the four
    # upload threads work together.
    assert held.max_running == most_at_once
    assert [storage.read_bytes(storage.join(s3_root, f"f/{i}")) for i in range(8)] == bodies


def test_a_failed_writer_in_the_background_publishes_nothing_and_leaves_no_spool(s3_root):
    import tempfile
    from pathlib import Path

    target = storage.join(s3_root, "x.pqt")
    before = set(Path(tempfile.gettempdir()).glob(".tmp-crypto_lakehouse-*.part"))
    with storage.background_uploads():
        with pytest.raises(RuntimeError):
            with storage.staged_path(target) as tmp:
                tmp.write_bytes(b"half")
                raise RuntimeError("writer failed")
        storage.write_parquet(storage.join(s3_root, "y.pqt"), pa.table({"x": [1]}))
    assert not storage.exists(target) and storage.exists(storage.join(s3_root, "y.pqt"))
    assert set(Path(tempfile.gettempdir()).glob(".tmp-crypto_lakehouse-*.part")) <= before


def test_parse_whose_partition_upload_fails_writes_no_state_and_names_the_partition(
    tmp_path, s3_root, monkeypatch
):
    report = put_verified_archives(s3_root, _archives())
    real = storage._put

    def refuse_partitions(dest, body):
        if dest.name.endswith(".pqt") and "parsed_data" in str(dest):
            raise storage.StorageError(f"{dest}: upload failed: store refused (test)")
        real(dest, body)

    monkeypatch.setattr(storage, "_put", refuse_partitions)
    with pytest.raises(storage.StorageError, match=r"parsed_data/.*/202001\.pqt: upload failed"):
        _parse(s3_root, report, tmp_path / "out")
    state = [p for p in storage.list_files(s3_root) if p.name.endswith(".json")]
    assert state == [] and not (tmp_path / "out" / "report.json").exists()
    # The next run (store healthy again) parses everything.
    monkeypatch.setattr(storage, "_put", real)
    stats, _ = _parse(s3_root, report, tmp_path / "out")
    assert stats["files_parsed"] == 3 and stats["partitions_written"] == 1


def test_read_ahead_lets_the_reader_skip_objects_it_does_not_need(s3_root, monkeypatch):
    paths = [storage.join(s3_root, f"z/{i:02d}.zip") for i in range(30)]
    for i, p in enumerate(paths):
        storage.write_bytes(p, f"body {i}".encode())
    fetched: list[tuple[str, str]] = []  # (object, thread that fetched it)
    real_get = storage._get

    def get(p, admit=None):
        fetched.append((p.name, threading.current_thread().name))
        return real_get(p, admit)

    monkeypatch.setattr(storage, "_get", get)
    wanted = [i for i in range(30) if i % 3 == 0 or 20 <= i < 24]  # gaps, then a run
    with storage.read_ahead(paths, window=4):
        got = {i: storage.read_bytes(paths[i]) for i in wanted}
    assert got == {i: f"body {i}".encode() for i in wanted}
    # Every wanted object was fetched ahead, once, on the read-ahead threads: skipped ones
    # are dropped instead of holding the window (the reader would then fetch the rest
    # itself, one round trip at a time).
    wanted_fetches = [(n, t) for n, t in fetched if int(n[:2]) in wanted]
    assert sorted(n for n, _ in wanted_fetches) == [f"{i:02d}.zip" for i in wanted]
    assert all(t.startswith("read-ahead") for _, t in wanted_fetches)


def test_parquet_footers_and_files_come_from_one_read_ahead_fetch(s3_root, monkeypatch):
    tables = [pa.table({"t": list(range(i, i + 5)), "v": [float(i)] * 5}) for i in range(6)]
    paths = [storage.join(s3_root, f"p/{i}.pqt") for i in range(6)]
    for p, t in zip(paths, tables, strict=True):
        storage.write_parquet(p, t)
    fetched: list[str] = []
    real_get = storage._get
    monkeypatch.setattr(
        storage, "_get", lambda p, admit=None: fetched.append(p.name) or real_get(p, admit)
    )
    requests_before = storage.request_stats()
    with storage.read_ahead(paths, window=8):
        rows = [storage.parquet_metadata(p).num_rows for p in paths]  # footers first
        got = [storage.read_parquet(p) for p in paths]  # then the files, in order
    assert rows == [5] * 6 and all(g.equals(t) for g, t in zip(got, tables, strict=True))
    assert sorted(fetched) == sorted(p.name for p in paths)  # one GET per object
    # No ranged Parquet reads besides: every footer and file came from those GETs.
    assert storage.request_stats().get("parquet_read") == requests_before.get("parquet_read")


def test_another_threads_record_neither_waits_nor_takes_the_jobs_upload_failure(s3_root):
    """A lease renewed by a lock's thread during the job: written at once, and the job's
    failed upload still stops the job's own record."""
    lost = storage.data_path("s3://Invalid_Bucket/parsed/2024-03.pqt")
    lease = storage.join(s3_root, "lease.json")
    state = storage.join(s3_root, "state.json")
    outcome: list = []

    def renew():
        try:
            storage.write_json(lease, {"renewed": True})
            outcome.append("written")
        except Exception as exc:  # the job's failure must not land here
            outcome.append(exc)

    with pytest.raises(storage.StorageError, match="2024-03.pqt"):
        with storage.background_uploads():
            storage.write_parquet(lost, pa.table({"x": [1]}))
            renewer = threading.Thread(target=renew)
            renewer.start()
            renewer.join(30)
            storage.write_json(state, {"partitions": ["2024-03"]})
    assert outcome == ["written"] and storage.read_json(lease) == {"renewed": True}
    assert not storage.exists(state)


def test_the_stage_entry_points_run_in_background_uploads():
    # The decorator once slid onto a helper inserted above run_parse_klines; nothing failed,
    # only the parse's PUTs on S3 no longer overlapped its work.
    from crypto_lakehouse.features import job as features_job
    from crypto_lakehouse.generate import kline
    from crypto_lakehouse.parse import klines
    from crypto_lakehouse.resample import job as resample_job

    entries = (klines.run_parse_klines, kline.run_gen_kline, resample_job.run_resample,
               features_job.run_features)  # fmt: skip
    for entry in entries:
        assert entry.__wrapped__.__name__ == entry.__name__  # wrapped by uploads_in_background
        assert entry.__code__ is not entry.__wrapped__.__code__


def test_symbols_on_threads_each_have_their_own_uploads_and_failures(s3_root, monkeypatch):
    """Two symbols of one shard job at once (storage.symbols_at_once): both write in the
    background at the same time; one's failed upload stops its own record only, and the
    other's record still waits for its own pending data."""
    held = HeldUploads(monkeypatch, held="good/2024-01.pqt")
    lost = storage.data_path("s3://Invalid_Bucket/bad/2024-01.pqt")
    good_part = storage.join(s3_root, "good/2024-01.pqt")
    good_state, bad_state = storage.join(s3_root, "good.json"), storage.join(s3_root, "bad.json")
    both_writing = threading.Barrier(2, timeout=30)
    outcome: dict[str, object] = {}

    def symbol(name, part, state):
        try:
            with storage.background_uploads():
                storage.write_parquet(part, pa.table({"x": [1]}))
                both_writing.wait()  # each thread has its own block open now
                if name == "good":
                    threading.Timer(0.3, held.release.set).start()
                storage.write_json(state, {"done": name})
            outcome[name] = "ok"
        except Exception as exc:
            outcome[name] = exc

    threads = [
        threading.Thread(target=symbol, args=("good", good_part, good_state)),
        threading.Thread(target=symbol, args=("bad", lost, bad_state)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert outcome["good"] == "ok", outcome
    assert isinstance(outcome["bad"], storage.StorageError)
    assert "Invalid_Bucket/bad/2024-01.pqt" in str(outcome["bad"])
    assert storage.read_json(good_state) == {"done": "good"}
    assert storage.read_parquet(good_part).equals(pa.table({"x": [1]}))
    assert not storage.exists(bad_state)


def test_read_ahead_blocks_of_two_threads_do_not_mix(s3_root, monkeypatch):
    """Each symbol's thread announces its own objects; a block ending in one thread leaves
    the other's intact, and neither reads the other's announced objects."""
    names = {"a": [f"a/{i}.bin" for i in range(4)], "b": [f"b/{i}.bin" for i in range(4)]}
    for keys in names.values():
        for key in keys:
            storage.write_bytes(storage.join(s3_root, key), key.encode())
    fetched: list[str] = []
    real_get = storage._get

    def counting_get(p, admit=None):
        ahead = threading.current_thread().name.startswith("read-ahead")
        fetched.append((p.parent.name + "/" + p.name, ahead))
        return real_get(p, admit)

    monkeypatch.setattr(storage, "_get", counting_get)
    started = threading.Barrier(2, timeout=30)
    a_done = threading.Event()
    got: dict[str, list[bytes]] = {}

    def reader(who):
        paths = [storage.join(s3_root, k) for k in names[who]]
        with storage.read_ahead(paths):
            started.wait()
            if who == "b":
                assert a_done.wait(30)  # a's block has ended: b's must still serve it
            got[who] = [storage.read_bytes(p) for p in paths]
        if who == "a":
            a_done.set()

    threads = [threading.Thread(target=reader, args=(w,)) for w in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert got == {w: [k.encode() for k in keys] for w, keys in names.items()}
    # One GET each, every one in the background (none by the reading threads themselves).
    assert sorted(fetched) == sorted((k, True) for k in names["a"] + names["b"])


def test_a_symbols_own_head_waits_for_its_upload_while_another_threads_listing_waits_too(
    s3_root, monkeypatch
):
    """Symbols at once share output folders: another symbol's listing of the folder waits
    for this symbol's pending upload, and this symbol's HEAD of its own output must still
    wait for it too. (It once returned at once with the object's previous version, and the
    next daily update took a full build: "previous output … changed or missing".)"""
    folder = storage.join(s3_root, "results")
    mine = folder / "mine.pqt"
    storage.write_parquet(mine, pa.table({"x": [0]}))  # the previous version
    held = HeldUploads(monkeypatch, held="mine.pqt")
    listed: list = []

    def other_symbol():  # lists the shared folder (as files_named or listed_identities do)
        listed.append(storage.listed_identities(folder))

    with storage.background_uploads():
        storage.write_parquet(mine, pa.table({"x": [1, 2, 3, 4]}))  # held
        lister = threading.Thread(target=other_symbol)
        lister.start()
        time.sleep(0.3)  # the listing waits for the held upload now
        assert lister.is_alive()
        threading.Timer(0.3, held.release.set).start()
        identity = storage.identity(mine)
        lister.join(30)
    now = storage.identity(mine)
    assert identity == now
    assert storage.read_parquet(mine).equals(pa.table({"x": [1, 2, 3, 4]}))
    assert listed == [{mine: now}]


def test_another_threads_wait_for_a_failed_upload_leaves_the_failure_to_its_owner(s3_root):
    """A listing by another symbol's thread waits for an upload that fails: the failure is
    the owner's, raised at the owner's barrier; the other thread's listing goes on."""
    lost = storage.data_path("s3://Invalid_Bucket/results/lost.pqt")
    outcome: list = []

    def other_symbol():
        try:
            storage._settle_below(lost.parent)
            outcome.append("went on")
        except Exception as exc:
            outcome.append(exc)

    with pytest.raises(storage.StorageError, match="Invalid_Bucket/results/lost.pqt"):
        with storage.background_uploads():
            storage.write_parquet(lost, pa.table({"x": [1]}))
            t = threading.Thread(target=other_symbol)
            t.start()
            t.join(30)
    assert outcome == ["went on"]


def _large_objects(monkeypatch, size: int, n: int):
    """``n`` announced objects of ``size`` declared bytes behind a fake ``_get`` (no store:
    the bytes are counted, not allocated). Returns (paths, counts): ``held`` is the bytes
    fetched and not yet done with by the reader (it subtracts what it finished), ``max`` its
    largest value, ``ahead`` the objects fetched on read-ahead threads."""
    paths = [storage.data_path(f"s3://bucket/big/{i}.zip") for i in range(n)]
    lock = threading.Lock()
    counts = {"held": 0, "max": 0, "ahead": 0}

    def fake_get(p, admit=None):
        if admit is not None and not admit(size):
            return None
        time.sleep(0.01)  # the GET's round trip
        with lock:
            counts["held"] += size
            counts["max"] = max(counts["max"], counts["held"])
            counts["ahead"] += threading.current_thread().name.startswith("read-ahead")
        return p.name.encode()

    monkeypatch.setattr(storage, "_get", fake_get)

    def done_with_one():
        with lock:
            counts["held"] -= size

    return paths, counts, done_with_one


def test_read_ahead_of_large_objects_holds_its_byte_budget_not_its_window(monkeypatch):
    """Six monthly 1s kline zips (~130 MB each) announced by an S3 parse: fetched ahead
    while the reader works, but never more than the budget (or one object) ahead of it;
    before, the window of 8 fetched all six at once (+780 MB at the parse's peak)."""
    size = 100 << 20
    monkeypatch.setattr(storage, "READ_AHEAD_BYTES", 128 << 20, raising=False)  # one object
    paths, counts, done_with_one = _large_objects(monkeypatch, size, 6)
    got = []
    with storage.read_ahead(paths, window=8):
        for p in paths:
            time.sleep(0.1)  # the reader parses the previous object: the fetches run ahead
            got.append(storage.read_bytes(p))
            done_with_one()
    assert got == [p.name.encode() for p in paths]
    # Still read ahead (each object fetched on a read-ahead thread, none by the reader)...
    assert counts["ahead"] == len(paths)
    # ... but at most the one the reader works on and one more (the budget) are held.
    assert counts["max"] <= 2 * size


def test_read_ahead_footers_first_with_large_objects_does_not_wait_for_the_budget(monkeypatch):
    """gen_kline reads the footers of its files (peek) before the files: an object waiting
    for the budget is not waited for (the footer is read from the store instead), and every
    file is still read, by the read-ahead or by the reader."""
    monkeypatch.setattr(storage, "READ_AHEAD_BYTES", 128 << 20, raising=False)
    paths, counts, done_with_one = _large_objects(monkeypatch, 100 << 20, 5)
    peeked: list = []
    got: list = []

    def reader():
        with storage.read_ahead(paths, window=8):
            ahead = storage._read_ahead()
            peeked.extend(ahead.peek(str(p)) for p in paths)
            for p in paths:
                got.append(storage.read_bytes(p))
                done_with_one()

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive(), "the reader waits for ever"
    assert got == [p.name.encode() for p in paths]
    assert peeked[0] == paths[0].name.encode()  # the first object is never refused
