"""The ``aws_download_shard`` job function (``sync.run_sync_shard``) and the concurrent shard
runner under it (``shards.run_shard_concurrently``): the symbols of a shard download at once,
sharing the job's ``concurrency`` requests in flight, each with its own report and failure."""

import asyncio
import hashlib
import json
import zipfile
from datetime import date
from pathlib import Path

import pytest
from crypto_lakehouse_emulator import Faults

from crypto_lakehouse.archive import http
from crypto_lakehouse.archive.listing import run_listing
from crypto_lakehouse.archive.sync import run_sync_shard
from crypto_lakehouse.shards import ShardFailed, run_shard_concurrently

SYMBOLS = ["AAAUSDT", "BBBUSDT", "CCCUSDT"]


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    monkeypatch.setattr(http, "BACKOFF_BASE_S", 0.001)


def _mirror(
    root: Path, days: int, symbols=SYMBOLS, first=date(2024, 3, 1), rows: int = 50
) -> dict[str, list[str]]:
    """Daily spot 1m zips (one CSV member of ``rows`` lines each) with ``sha256sum``-style
    CHECKSUMs, ``days`` days from ``first``."""
    keys: dict[str, list[str]] = {}
    for n, symbol in enumerate(symbols):
        for i in range(days):
            day = date.fromordinal(first.toordinal() + i).isoformat()
            key = f"data/spot/daily/klines/{symbol}/1m/{symbol}-1m-{day}.zip"
            path = root / key
            path.parent.mkdir(parents=True, exist_ok=True)
            with zipfile.ZipFile(path, "w") as zf:
                zf.writestr(path.name[:-4] + ".csv", f"{symbol},{day},{n}\n" * rows)
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            (root / f"{key}.CHECKSUM").write_text(f"{digest}  {path.name}\n")
            keys.setdefault(symbol, []).append(key)
    return keys


def list_spot_klines(emu, tmp: Path, symbols) -> Path:
    """List the emulator's spot 1m klines of ``symbols`` into ``tmp/listing``: the
    listing details folder a download shard reads."""
    details = tmp / "listing" / "klines-1m"
    run_listing(
        trade_type="spot", dataset="klines", interval="1m", symbols=list(symbols),
        listing_url=emu.base_url, out_index=tmp / "listing" / "klines-1m.json",
        details_dir=details, concurrency=2, timeout_s=5, max_retries=2,
    )  # fmt: skip
    return details


def _shard(emu, tmp: Path, concurrency: int, symbols=SYMBOLS):
    details = list_spot_klines(emu, tmp, SYMBOLS)
    emu.reset_counts()
    reports = tmp / "reports" / "aws_download" / "spot" / "klines-1m"
    args = dict(
        symbols=list(symbols), shard_report=tmp / "shard.json",
        symbol_paths={"report_path": str(reports), "details_path": str(details)}, shard=0,
        trade_type="spot", dataset="klines", interval="1m", data_dir=tmp / "data",
        archive_url=emu.base_url, concurrency=concurrency, max_retries=2, timeout_s=5,
    )  # fmt: skip
    return args, reports


def test_every_symbol_is_verified_with_its_own_report(tmp_path, emulator):
    keys = _mirror(tmp_path / "mirror", 4)
    emu = emulator(mirror_dir=tmp_path / "mirror")
    args, reports = _shard(emu, tmp_path, concurrency=8)
    shard = run_sync_shard(**args)
    assert shard["failed"] == [] and sorted(shard["symbols"]) == SYMBOLS
    for symbol in SYMBOLS:
        report = json.loads((reports / f"{symbol}.json").read_text())
        assert report["symbol"] == symbol
        assert sorted(report["files"]) == keys[symbol]
        for key in keys[symbol]:
            body = (tmp_path / "mirror" / key).read_bytes()
            local = tmp_path / "data" / "aws_data" / key
            assert local.read_bytes() == body
            assert report["files"][key]["sha256"] == hashlib.sha256(body).hexdigest()
            assert Path(f"{local}.verified").exists()
        stats_file = tmp_path / "stats" / "aws_download" / "spot" / "klines-1m" / f"{symbol}.json"
        assert json.loads(stats_file.read_text())["files_downloaded"] == 4
        # The shard report records the bytes of the zips it holds (the parse's work).
        held = sum((tmp_path / "mirror" / key).stat().st_size for key in keys[symbol])
        assert shard["symbols"][symbol]["archive_bytes"] == held
    # Each archive once: a zip and its CHECKSUM.
    assert sum(emu.get_counts.values()) == 2 * 4 * len(SYMBOLS)


def test_the_symbols_share_the_jobs_requests_in_flight(tmp_path, emulator):
    # 3 archives per symbol: one symbol alone never has more than 6 requests out.
    _mirror(tmp_path / "mirror", 3)
    emu = emulator(mirror_dir=tmp_path / "mirror", faults=Faults(latency=0.05))
    args, _ = _shard(emu, tmp_path / "wide", concurrency=32)
    run_sync_shard(**args)
    assert emu.peak_in_flight > 6  # the symbols were fetched at the same time

    args, _ = _shard(emu, tmp_path / "narrow", concurrency=4)
    run_sync_shard(**args)
    # 4 for the whole job, not 4 per symbol (which would allow 12).
    assert 2 <= emu.peak_in_flight <= 4


def test_a_failing_symbol_fails_the_job_after_the_others(tmp_path, emulator):
    _mirror(tmp_path / "mirror", 2)
    emu = emulator(mirror_dir=tmp_path / "mirror")
    args, reports = _shard(emu, tmp_path, concurrency=8, symbols=[*SYMBOLS, "DDDUSDT"])
    (reports / "DDDUSDT.json").parent.mkdir(parents=True, exist_ok=True)
    (reports / "DDDUSDT.json").write_text("{}")  # a previous run's report
    with pytest.raises(ShardFailed, match="1 of 4 symbols failed: DDDUSDT"):
        run_sync_shard(**args)  # DDDUSDT is not listed: no details file
    shard = json.loads((tmp_path / "shard.json").read_text())
    assert shard["failed"] == ["DDDUSDT"]
    assert "FileNotFoundError" in shard["symbols"]["DDDUSDT"]["error"]
    assert not (reports / "DDDUSDT.json").exists()
    for symbol in SYMBOLS:
        assert shard["symbols"][symbol]["status"] == "ok"
        assert len(json.loads((reports / f"{symbol}.json").read_text())["files"]) == 2


def test_a_symbol_whose_listing_failed_fails_with_that_error_and_fetches_nothing(
    tmp_path, emulator
):
    keys = _mirror(tmp_path / "mirror", 2)
    emu = emulator(mirror_dir=tmp_path / "mirror")
    args, reports = _shard(emu, tmp_path, concurrency=8)
    error = (
        "listing failed after 2 retries: http://x/?prefix=data/spot/daily/klines/BBBUSDT/1m/: 500"
    )
    args["symbol_values"] = {"listing_error": {"BBBUSDT": error}}
    with pytest.raises(ShardFailed, match="1 of 3 symbols failed: BBBUSDT"):
        run_sync_shard(**args)
    shard = json.loads((tmp_path / "shard.json").read_text())
    assert shard["symbols"]["BBBUSDT"]["error"] == (
        f"SyncError: spot klines-1m BBBUSDT: not downloaded, its listing failed: {error}"
    )
    assert shard["symbols"]["AAAUSDT"]["status"] == shard["symbols"]["CCCUSDT"]["status"] == "ok"
    assert not (reports / "BBBUSDT.json").exists()
    for symbol in SYMBOLS:  # nothing fetched for it (its details exist: listed earlier)
        for key in keys[symbol]:
            assert (tmp_path / "data" / "aws_data" / key).exists() == (symbol != "BBBUSDT")


def test_concurrent_shard_runner_starts_every_symbol_before_any_ends(tmp_path):
    started: list[str] = []
    everyone_started = asyncio.Event()

    async def run_symbol(*, symbol, report_path, stats_path):
        started.append(symbol)
        if len(started) == 3:
            everyone_started.set()
        # One after another, the first symbol would wait here for ever (bounded below).
        await asyncio.wait_for(everyone_started.wait(), 10)
        if symbol == "B":
            raise ValueError("bad data in B")
        Path(report_path).write_text(symbol)

    async def main():
        return await run_shard_concurrently(
            run_symbol, symbols=["A", "B", "C"], shard_report=tmp_path / "shard.json",
            symbol_paths={"report_path": str(tmp_path / "reports")}, shard=3,
        )  # fmt: skip

    (tmp_path / "reports").mkdir()
    with pytest.raises(ShardFailed, match="1 of 3 symbols failed: B"):
        asyncio.run(main())
    report = json.loads((tmp_path / "shard.json").read_text())
    assert report["shard"] == 3
    assert {s: e["status"] for s, e in report["symbols"].items()} == {
        "A": "ok",
        "B": "failed",
        "C": "ok",
    }
    assert (tmp_path / "reports" / "A.json").read_text() == "A"


def test_concurrent_shard_runner_runs_at_most_at_once_symbols(tmp_path):
    active, peak, done = 0, 0, []

    async def run_symbol(*, symbol, report_path, stats_path):
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.01)  # every symbol yields: the runner could start them all
        active -= 1
        done.append(symbol)
        Path(report_path).write_text(symbol)

    (tmp_path / "reports").mkdir()
    symbols = [f"S{i}" for i in range(7)]
    report = asyncio.run(
        run_shard_concurrently(
            run_symbol,
            symbols=symbols,
            shard_report=tmp_path / "shard.json",
            symbol_paths={"report_path": str(tmp_path / "reports")},
            at_once=3,
        )  # fmt: skip
    )
    assert peak == 3
    assert sorted(done) == symbols
    assert list(report["symbols"]) == symbols  # the shard report in the shard's order


def test_concurrent_shard_runner_isolates_a_symbol_raising_cancelled_error(tmp_path):
    # A CancelledError out of one symbol's own code (a library cancelling its own inner
    # task, a wait_for race) is a BaseException: not caught by ``except Exception``, it
    # would end the gather and lose the other symbols' entries and the shard report.
    async def run_symbol(*, symbol, report_path, stats_path):
        await asyncio.sleep(0.01 if symbol != "B" else 0)
        if symbol == "B":
            raise asyncio.CancelledError("B's inner task cancelled")
        Path(report_path).write_text(symbol)

    async def main():
        return await run_shard_concurrently(
            run_symbol, symbols=["A", "B", "C"], shard_report=tmp_path / "shard.json",
            symbol_paths={"report_path": str(tmp_path / "reports")}, shard=0,
        )  # fmt: skip

    (tmp_path / "reports").mkdir()
    with pytest.raises(ShardFailed, match="1 of 3 symbols failed: B"):
        asyncio.run(main())
    report = json.loads((tmp_path / "shard.json").read_text())
    assert {s: e["status"] for s, e in report["symbols"].items()} == {
        "A": "ok",
        "B": "failed",
        "C": "ok",
    }
    assert (tmp_path / "reports" / "C.json").read_text() == "C"


def test_concurrent_shard_runner_still_honours_its_own_cancellation(tmp_path):
    # The job itself cancelled (not a symbol's error): the cancellation propagates.
    async def run_symbol(*, symbol, report_path, stats_path):
        await asyncio.sleep(10)

    async def main():
        task = asyncio.ensure_future(
            run_shard_concurrently(
                run_symbol,
                symbols=["A", "B"],
                shard_report=tmp_path / "shard.json",
                symbol_paths={"report_path": str(tmp_path / "reports")},
                shard=0,
            )  # fmt: skip
        )
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    (tmp_path / "reports").mkdir()
    asyncio.run(asyncio.wait_for(main(), 5))
