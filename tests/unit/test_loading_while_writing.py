"""load_klines / load_features while a run writes the symbol's files (docs/loading.md,
"Reading while a run writes").

A run rewrites a symbol's segment files one after the other: SP0 first, SYM.pqt next, the
stale ones removed last. A reader in between sees an old and a new segment covering the
same minutes; on S3 a file can also be replaced between the reader's footer read and its
row-group reads (ranged GETs of two versions). The loaders must then read again, and give
either the old or the new state, never a mix; a mix that does not resolve is refused.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

import crypto_lakehouse
from crypto_lakehouse import layout, loading, storage
from crypto_lakehouse.loading import DataChangedError
from crypto_lakehouse.schema import TIME_TYPE

MIN = 60_000
DAY = 86_400_000
T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC


def candles(first_ms: int, n: int, version: float = 0.0) -> pa.Table:
    t = first_ms + np.arange(n, dtype=np.int64) * MIN
    return pa.table(
        {
            "candle_begin_time": pa.array(t).cast(TIME_TYPE),
            "open": (t // MIN).astype(np.float64) + version,
            "close": (t // MIN).astype(np.float64) + version + 0.5,
            "volume": np.ones(n),
        }
    )


def put(path, table: pa.Table, row_group_size: int = 500) -> None:
    """Written as a run writes it (one atomic write through the storage seam), with the
    metadata keys its kline and feature writers put in (a file without them is one no run
    wrote, which the loaders warn about)."""
    stamp = {"interval": "1m", "indicators": "[]"}
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **stamp})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, row_group_size=row_group_size)
    storage.ensure_dir(storage.data_path(path).parent)
    storage.write_bytes(path, sink.getvalue().to_pybytes())


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch):
    monkeypatch.setattr(loading, "READ_RETRY_WAITS", (0.01, 0.01, 0.01))


# Before the run: one segment of three days. The run's new data has a gap of two days
# after day one: SP0 = day 1, then the latest segment from day 4 on.
def old_state(kdir):
    put(kdir / "BTCUSDT.pqt", candles(T0, 3 * 1440))


def split_half_way(kdir):
    put(kdir / "SP0_BTCUSDT.pqt", candles(T0, 1440))  # written first; SYM.pqt still old


def split_done(kdir):
    put(kdir / "BTCUSDT.pqt", candles(T0 + 4 * DAY, 2 * 1440, version=0.25))


def expected_new() -> np.ndarray:
    return np.concatenate(
        [candles(T0, 1440)["open"].to_numpy(), candles(T0 + 4 * DAY, 2880, 0.25)["open"].to_numpy()]
    )


def _listing_that_finishes_the_run(monkeypatch, kdir, on_call: int):
    """``layout.segment_files`` (the loader's listing of the symbol) whose ``on_call``-th
    call first lets the run finish its split: the writer is deterministic, not a timer."""
    real = layout.segment_files
    calls = []

    def listing(directory, symbol):
        calls.append(symbol)
        if len(calls) == on_call:
            split_done(kdir)
        return real(directory, symbol)

    monkeypatch.setattr(layout, "segment_files", listing)
    return calls


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_reader_between_two_segment_writes_gets_the_finished_state(
    where, tmp_path, request, monkeypatch
):
    root = tmp_path / "data" if where == "local" else request.getfixturevalue("s3_root")
    kdir = layout.results_klines_dir(root, "spot", "1m")
    old_state(kdir)
    split_half_way(kdir)
    # The reader lists SP0 (new) and BTCUSDT.pqt (old: days 1-3, SP0's day included); the
    # run writes the new BTCUSDT.pqt just after (at the loader's second listing).
    _listing_that_finishes_the_run(monkeypatch, kdir, on_call=2)
    df = crypto_lakehouse.load_klines(root, "spot", "BTCUSDT")
    # Before: days 1-3 twice over (1440 + 4320 rows, day 1 duplicated), silently.
    assert not df["candle_begin_time"].duplicated().any()
    np.testing.assert_array_equal(df["open"].to_numpy(), expected_new())
    assert list(df.groupby("segment").size()) == [1440, 2880]


def test_overlapping_segments_that_stay_are_refused_not_returned(tmp_path):
    root = tmp_path / "data"
    kdir = layout.results_klines_dir(root, "spot", "1m")
    old_state(kdir)
    split_half_way(kdir)  # and the run never gets further (killed, or a long build)
    with pytest.raises(DataChangedError) as caught:
        crypto_lakehouse.load_klines(root, "spot", "BTCUSDT")
    message = str(caught.value)
    assert "segment BTCUSDT.pqt starts at 2024-01-01 00:00:00" in message
    assert "before SP0_BTCUSDT.pqt ends (2024-01-01 23:59:00" in message
    assert "a run is writing this data dir" in message
    # A range that holds no overlapping minute reads fine: day 3 is in the old file only.
    day3 = crypto_lakehouse.load_klines(root, "spot", "BTCUSDT", start="2024-01-03")
    assert len(day3) == 1440


def test_a_stale_segment_removed_after_the_listing_is_read_again(tmp_path, monkeypatch):
    """A merge: the run wrote the whole history as BTCUSDT.pqt and removes the stale SP0
    just after the reader listed it (its read then fails: FileNotFoundError)."""
    root = tmp_path / "data"
    kdir = layout.results_klines_dir(root, "spot", "1m")
    put(kdir / "SP0_BTCUSDT.pqt", candles(T0, 1440))
    put(kdir / "BTCUSDT.pqt", candles(T0 + 4 * DAY, 1440))
    real = layout.segment_files
    calls = []

    def listing(directory, symbol):
        found = real(directory, symbol)
        calls.append(symbol)
        if len(calls) == 1:  # the run, between the reader's listing and its reads
            put(kdir / "BTCUSDT.pqt", candles(T0, 5 * 1440, version=0.5))
            storage.delete(kdir / "SP0_BTCUSDT.pqt")
        return found

    monkeypatch.setattr(layout, "segment_files", listing)
    df = crypto_lakehouse.load_klines(root, "spot", "BTCUSDT")
    np.testing.assert_array_equal(df["open"].to_numpy(), candles(T0, 5 * 1440, 0.5)["open"])
    assert set(df["segment"]) == {0}


class _ReplacedWhileOpen(pafs.FileSystemHandler):
    """The store's file system, except that the first time ``target`` is opened for
    reading, the run's new version of it is uploaded right after the reader opened it
    (the reader then fetches its row groups by ranges of a file that changed)."""

    def __init__(self, fs, target: str, replace):
        self.fs, self.target, self.replace = fs, target, replace
        self.done = False

    def open_input_file(self, path):
        f = self.fs.open_input_file(path)
        if path == self.target and not self.done:
            self.done = True
            pq.read_metadata(f)  # the reader has the old footer: the row groups' offsets
            self.replace()
        return f

    def get_type_name(self):
        return "replaced-while-open"

    def get_file_info(self, paths):
        return self.fs.get_file_info(paths)

    def get_file_info_selector(self, selector):
        return self.fs.get_file_info(selector)

    def normalize_path(self, path):
        return self.fs.normalize_path(path)

    def open_input_stream(self, path):
        return self.fs.open_input_stream(path)

    def create_dir(self, path, recursive):
        raise NotImplementedError

    def delete_dir(self, path):
        raise NotImplementedError

    def delete_dir_contents(self, path, missing_dir_ok=False):
        raise NotImplementedError

    def delete_root_dir_contents(self):
        raise NotImplementedError

    def delete_file(self, path):
        raise NotImplementedError

    def move(self, src, dest):
        raise NotImplementedError

    def copy_file(self, src, dest):
        raise NotImplementedError

    def open_output_stream(self, path, metadata):
        raise NotImplementedError

    def open_append_stream(self, path, metadata):
        raise NotImplementedError


def test_an_object_replaced_during_its_read_on_s3_is_read_again(s3_root, monkeypatch):
    """S3 has no open file handle: an object rewritten by a tail build after the reader
    read its footer gives bytes of the new version at the old offsets. Before, load_klines
    failed (`Parquet magic bytes not found in footer` here; `Unexpected end of stream` when
    the footer was read first) and called the good file damaged (`crypto-lakehouse verify
    --remove` ... `--forcerun aws_download_shard`)."""
    path = layout.results_klines_dir(s3_root, "spot", "1m") / "BTCUSDT.pqt"
    put(path, candles(T0, 3 * 1440))
    new = candles(T0, 4 * 1440, version=0.75)
    real_filesystem = storage.filesystem
    fs, inner = real_filesystem(path)

    def replace():  # the run's upload (the store's own client: storage.filesystem is patched)
        sink = pa.BufferOutputStream()
        pq.write_table(new.replace_schema_metadata({"interval": "1m"}), sink, row_group_size=700)
        with fs.open_output_stream(inner) as out:
            out.write(sink.getvalue())

    handler = _ReplacedWhileOpen(fs, inner, replace)
    wrapped = pafs.PyFileSystem(handler)

    def filesystem(p):
        got_fs, got_inner = real_filesystem(p)
        return (wrapped, got_inner) if got_inner == inner else (got_fs, got_inner)

    monkeypatch.setattr(storage, "filesystem", filesystem)
    df = crypto_lakehouse.load_klines(s3_root, "spot", "BTCUSDT")
    assert handler.done
    np.testing.assert_array_equal(df["open"].to_numpy(), new["open"].to_numpy())


def test_load_dataset_reads_again_a_month_file_replaced_during_its_read_on_s3(s3_root, monkeypatch):
    """The current month's price klines file is rewritten by every daily update. Before,
    a load during the rewrite on S3 failed and called the good file damaged."""
    folder = layout.parsed_klines_dir(s3_root, "um_futures", "BTCUSDT", "1m", "markPriceKlines")
    path = folder / "202401.pqt"
    put(path, candles(T0, 3 * 1440))
    new = candles(T0, 4 * 1440, version=0.75)
    real_filesystem = storage.filesystem
    fs, inner = real_filesystem(path)

    def replace():  # the run's upload (the store's own client: storage.filesystem is patched)
        sink = pa.BufferOutputStream()
        pq.write_table(new.replace_schema_metadata({"interval": "1m"}), sink, row_group_size=700)
        with fs.open_output_stream(inner) as out:
            out.write(sink.getvalue())

    handler = _ReplacedWhileOpen(fs, inner, replace)
    wrapped = pafs.PyFileSystem(handler)
    monkeypatch.setattr(storage, "filesystem", lambda p: (wrapped, real_filesystem(p)[1]))
    df = crypto_lakehouse.load_dataset(
        s3_root, "um_futures", "markPriceKlines", "BTCUSDT", interval="1m", engine="arrow"
    )
    assert handler.done
    np.testing.assert_array_equal(df["open"].to_numpy(), new["open"].to_numpy())


def test_a_damaged_file_that_does_not_change_is_not_read_again(tmp_path, monkeypatch):
    """The retries are for files that change: an unreadable file that stays as it is
    raises at once, naming the repair (as before)."""
    root = tmp_path / "data"
    kdir = layout.results_klines_dir(root, "spot", "1m")
    put(kdir / "BTCUSDT.pqt", candles(T0, 1440))
    (kdir / "BTCUSDT.pqt").write_bytes(b"PAR1 not really")
    reads = []
    real = loading.read_segments_table
    monkeypatch.setattr(
        loading, "read_segments_table", lambda *a, **k: reads.append(1) or real(*a, **k)
    )
    with pytest.raises(pa.ArrowInvalid, match="verify .* --remove"):
        crypto_lakehouse.load_klines(root, "spot", "BTCUSDT")
    assert len(reads) == 1


def test_features_are_read_the_same_way(tmp_path, monkeypatch):
    root = tmp_path / "data"
    fdir = layout.features_dir(root, "spot", "1m")
    old_state(fdir)
    split_half_way(fdir)
    _listing_that_finishes_the_run(monkeypatch, fdir, on_call=2)
    feats = crypto_lakehouse.load_features(root, "spot", "BTCUSDT")
    np.testing.assert_array_equal(feats["open"].to_numpy(), expected_new())


# ---------------------------------------------------------------- an S3 data dir mistyped
def test_a_mistyped_s3_prefix_names_the_prefixes_next_to_it(s3_root):
    """Before: `no generated klines of spot in s3://…/lak (…; trade types with generated
    klines: none)`, which says nothing of the typo."""
    put(layout.results_klines_dir(s3_root, "spot", "1m") / "BTCUSDT.pqt", candles(T0, 10))
    typo = s3_root[:-1]
    expected = f"no lakehouse data in {typo}: no object below it (did you mean {s3_root}? "
    for load in (crypto_lakehouse.load_klines, crypto_lakehouse.load_features):
        with pytest.raises(loading.DataNotFoundError) as caught:
            load(typo, "spot", "BTCUSDT")
        assert str(caught.value).startswith(expected)
        assert "prefixes in the bucket: " in str(caught.value)
    with pytest.raises(loading.DataNotFoundError) as caught:
        crypto_lakehouse.duckdb_connect(typo)
    assert str(caught.value).startswith(expected)
    below = f"{s3_root}/results"
    with pytest.raises(loading.DataNotFoundError) as caught:
        crypto_lakehouse.load_klines(below, "spot", "BTCUSDT")
    assert str(caught.value) == (
        f"no lakehouse data in {below}: no object below it (did you mean "
        f"{s3_root}/results_data? prefixes in {s3_root}: results_data)"
    )


def test_a_missing_bucket_is_named(s3_root, monkeypatch):
    """AWS answers HeadBucket of a missing bucket with 404 (SeaweedFS 4.48 answers 200, so
    the answer is simulated here, in botocore's own error type)."""
    from botocore.exceptions import ClientError

    real = storage._conditional_client()

    class NoBucket:
        def head_bucket(self, Bucket):  # noqa: N803 - botocore's argument name
            raise ClientError(
                {"Error": {"Code": "404", "Message": "Not Found"},
                 "ResponseMetadata": {"HTTPStatusCode": 404}}, "HeadBucket",
            )  # fmt: skip

        def __getattr__(self, name):
            return getattr(real, name)

    monkeypatch.setattr(storage, "_conditional_client", lambda: NoBucket())
    # The listings go to the store itself, which answers them with NoSuchBucket. Before
    # 2026-12-07 duckdb_connect raised `StorageError: s3://…/parsed_data/spot/funding: list
    # failed: NoSuchBucket …` and load_dataset `no aggTrades of spot in s3://… (…; trade
    # types with aggTrades: none; …)`, neither saying that the bucket is missing.
    lake = "s3://no-such-bucket-here/lake"
    for read in (
        lambda: crypto_lakehouse.load_klines(lake, "spot", "BTCUSDT"),
        lambda: crypto_lakehouse.duckdb_connect(lake),
        lambda: crypto_lakehouse.load_dataset(lake, "spot", "aggTrades", "BTCUSDT"),
        lambda: next(iter(crypto_lakehouse.iter_dataset(lake, "spot", "trades", "BTCUSDT"))),
    ):
        with pytest.raises(loading.DataNotFoundError) as caught:
            read()
        assert str(caught.value) == (
            "no lakehouse data in s3://no-such-bucket-here/lake: the bucket "
            "'no-such-bucket-here' does not exist (or is not visible with these credentials)"
        )


def test_a_mistyped_s3_prefix_is_named_by_the_dataset_loaders(s3_root):
    """Before 2026-12-07: `no aggTrades of spot in s3://…/lak (no symbol folder in …; trade
    types with aggTrades: none; …)`, as if the datasets target had not run."""
    put(layout.parsed_day_dir(s3_root, "spot", "aggTrades", "BTCUSDT") / "20240101.pqt",
        candles(T0, 10))  # fmt: skip
    typo = s3_root[:-1]
    with pytest.raises(loading.DataNotFoundError) as caught:
        crypto_lakehouse.load_dataset(typo, "spot", "aggTrades", "BTCUSDT")
    # (other tests' prefixes in the session's bucket may be named beside it)
    assert str(caught.value).startswith(
        f"no lakehouse data in {typo}: no object below it (did you mean "
    )
    assert s3_root in str(caught.value)
