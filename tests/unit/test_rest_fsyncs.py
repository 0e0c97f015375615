"""What a REST shard job fsyncs (session 30, api): every data file and record as before,
not its two caches (``lakehouse/state/``: the archive days of a klines symbol, the funding
coverage of a funding symbol), which are written atomically after the record barrier but
not fsynced (``io.write_cache``): a lost or torn one only redoes work."""

from __future__ import annotations

import json
import os
import stat

import pytest

from crypto_lakehouse import io, layout, storage
from crypto_lakehouse.rest import archive_days
from crypto_lakehouse.rest.funding import coverage_record_path
from tests.unit.test_rest_funding import (
    DAY,
    D,
    _host_shard_args,
    _rest_with_klines_and_funding,
    write_first_kline,
)


@pytest.fixture
def fsynced(monkeypatch):
    """Paths fsynced (a folder as 'dir:' + path), and renames ('rename:' + target), in order."""
    seen: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        path = os.readlink(f"/proc/self/fd/{fd}")
        seen.append(("dir:" if stat.S_ISDIR(os.fstat(fd).st_mode) else "") + path)
        real_fsync(fd)

    def replace(src, dst):
        seen.append(f"rename:{dst}")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    io.configure(fsync=True)
    yield seen
    io.configure(fsync=True)


def test_rest_shard_job_fsyncs_its_data_and_records_but_not_its_caches(emulator, tmp_path, fsynced):
    from crypto_lakehouse.rest.host import run_host_shard

    symbols = ["AUSDT", "BUSDT"]
    emu = emulator(rest=_rest_with_klines_and_funding(symbols))
    io.write_json(tmp_path / "parse.json", {})
    for symbol in symbols:
        write_first_kline(tmp_path, symbol, "um_futures", D * DAY)
    fsynced.clear()
    # As the job script runs it: one commit group (io.with_deferred_dir_syncs).
    shard = io.with_deferred_dir_syncs(run_host_shard)(
        **_host_shard_args(tmp_path, emu.base_url, symbols)
    )
    assert shard["failed"] == []
    state = str(tmp_path / "lakehouse" / "state")
    files = [p for p in fsynced if not p.startswith(("dir:", "rename:"))]
    # The caches: written (readable), never fsynced, nor their folders.
    caches = [archive_days.record_path(tmp_path, "um_futures", s, "1m") for s in symbols]
    caches += [coverage_record_path(tmp_path, "um_futures", s) for s in symbols]
    for cache in caches:
        assert storage.read_state(cache), cache
    assert [p for p in fsynced if state in p and not p.startswith("rename:")] == []
    # Everything else is durable as before: each day file, provenance, funding file, report
    # and stats was fsynced (its temporary file, just before its rename).
    targets = [io.temp_target(os.path.basename(p)) for p in files]
    for symbol in symbols:
        days = sorted(layout.api_klines_dir(tmp_path, "um_futures", symbol, "1m").glob("*.pqt"))
        assert len(days) == 2
        durable = [*(d.name for d in days), f"{symbol}.pqt", f"{symbol}.json"]
        for name in durable:
            assert name in targets, name
    assert targets.count("AUSDT.json") == 4  # the klines and funding reports and stats
    assert targets.count("AUSDT.pqt") == 2  # the provenance and the funding file


def test_a_cache_written_after_data_waits_for_the_data_folder_and_is_not_fsynced(tmp_path, fsynced):
    with io.deferred_dir_syncs():
        io.write_bytes(tmp_path / "data" / "1.pqt", b"1")
        storage.write_cache_json(tmp_path / "state" / "c.json", {"covered_from_ms": 1})
        assert storage.write_cache_json_if_changed(tmp_path / "state" / "c.json", {"a": 1})
        assert not storage.write_cache_json_if_changed(tmp_path / "state" / "c.json", {"a": 1})
    rel = [p.replace(str(tmp_path) + "/", "") for p in fsynced]
    # The data file: fsynced, renamed, its folder synced by the barrier before the cache is
    # renamed (a cache never vouches for a file a crash could lose); the cache: renamed only.
    assert rel[1:] == [
        "rename:data/1.pqt",
        "dir:data",
        "rename:state/c.json",
        "rename:state/c.json",
    ], rel
    assert json.loads((tmp_path / "state" / "c.json").read_text()) == {"a": 1}


def test_a_torn_cache_reads_as_absent_and_the_archive_days_are_read_again(tmp_path, caplog):
    write_first_kline(tmp_path, "AUSDT", "um_futures", D * DAY)
    first = archive_days.load(tmp_path, "um_futures", "AUSDT", "1m")
    record = archive_days.record_path(tmp_path, "um_futures", "AUSDT", "1m")
    record.write_bytes(b"")  # what a crash may leave of a cache that was not fsynced
    again = archive_days.load(tmp_path, "um_futures", "AUSDT", "1m")
    assert again.counts == first.counts == {D: 1}
    assert json.loads(record.read_text())["partitions"]
