"""``crypto-lakehouse plan`` counts the archive files present with one listing per archive
folder of a symbol, as the download job does, not two stat calls (on an ``s3://`` data
dir two HEAD requests) per archive file of the history."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import pytest

from crypto_lakehouse import layout, preview, storage

SYMBOLS = ["AAAUSDT", "BBBUSDT", "CCCUSDT"]
DAYS = [(date(2024, 3, 1) + timedelta(days=i)).isoformat() for i in range(20)]
SIZE = 100


def write_listing_and_archive(data, missing: set[str], wrong_size: set[str]):
    """A listing index with details for SYMBOLS × DAYS, and aws_data holding every zip
    with its ``.verified`` marker but the ``missing`` keys (and ``wrong_size`` keys with
    another size than the listing's)."""
    index = Path(layout.run_listing_index_path(data / "lakehouse", "spot", "klines-1h"))
    details_dir = layout.listing_details_dir(index)
    details_dir.mkdir(parents=True)
    for symbol in SYMBOLS:
        details = []
        for day in DAYS:
            key = layout.daily_kline_key("spot", symbol, "1h", day)
            details += [
                {"key": key, "size": SIZE, "last_modified": "2024-04-01T00:00:00.000Z"},
                {"key": key + ".CHECKSUM", "size": 10, "last_modified": "2024-04-01T00:00:00.000Z"},
            ]
            if key in missing:
                continue
            local = layout.aws_path(data, key)
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_bytes(b"z" * (SIZE + 1 if key in wrong_size else SIZE))
            layout.aws_path(data, key + ".CHECKSUM").write_bytes(b"c" * 10)
            layout.aws_path(data, key + ".verified").write_text("")
        (details_dir / f"{symbol}.json").write_text(json.dumps(details))
    payload = {"symbols": {s: {} for s in SYMBOLS}, "filtered_out": [], "refused": []}
    index.write_text(json.dumps(payload))
    return index, payload


def plan_config(data) -> dict:
    return {
        "data_dir": str(data),
        "run_dir": str(data / "lakehouse"),
        "interval": "1h",
        "start_date": DAYS[0],
        "end_date": DAYS[-1],
        "lookback_days": None,
        "download": {"use_monthly_klines": False},
        "shards": "auto",
        "trade_types": ["spot"],
    }


@pytest.fixture
def per_file_calls(monkeypatch):
    """Counts the calls that ask one file at a time (a stat or an S3 HEAD each)."""
    calls = []
    for name in ("exists", "size", "is_file", "stat"):
        original = getattr(storage, name)

        def counted(path, *args, _original=original, _name=name, **kwargs):
            calls.append((_name, str(path)))
            return _original(path, *args, **kwargs)

        monkeypatch.setattr(storage, name, counted)
    return calls


def test_plan_counts_present_files_without_asking_each_file(tmp_path, per_file_calls):
    data = tmp_path / "data"
    missing = {layout.daily_kline_key("spot", "BBBUSDT", "1h", DAYS[3])}
    wrong = {layout.daily_kline_key("spot", "CCCUSDT", "1h", DAYS[7])}
    index, payload = write_listing_and_archive(data, missing, wrong)
    out = preview.DatasetPlan("spot", "klines-1h", "test")

    preview.count_dataset(
        plan_config(data), "spot", "klines-1h", payload, index, DAYS[-1], date(2024, 3, 21), out
    )

    n_files = len(SYMBOLS) * len(DAYS)
    assert (out.files_present, out.files_to_download) == (n_files - 2, 2)
    assert out.bytes_present == (n_files - 2) * (SIZE + 10)
    asked = [path for _, path in per_file_calls if ".zip" in path]
    # Before: an exists() of the marker and a size() of the zip per archive file (118
    # present × 2 + the missing one's marker), each an S3 HEAD on an s3:// data dir.
    assert asked == []


def test_plan_counts_no_rest_day_after_the_archive_of_a_symbol_that_no_longer_trades(tmp_path):
    """api_download asks a symbol the run's exchangeInfo says no longer trades (absent, or
    a status such as BREAK) for no day after its last archived day; plan counted every day
    to the end date for it: with `symbols: all`, years of days per delisted symbol."""
    from crypto_lakehouse import io
    from crypto_lakehouse.rest.exchange_info import summarize_exchange_info

    data = tmp_path / "data"
    index, payload = write_listing_and_archive(data, set(), set())
    config = plan_config(data) | {"end_date": None}
    today = date.fromisoformat(DAYS[-1]) + timedelta(days=11)  # 10 closed days after the archive
    end = today.isoformat()

    def rest_days() -> int:
        out = preview.DatasetPlan("spot", "klines-1h", "test")
        preview.count_dataset(config, "spot", "klines-1h", payload, index, end, today, out)
        return out.rest_days

    # No exchangeInfo summary yet (no run): whether a symbol trades is not known.
    assert rest_days() == 3 * 10
    # A summary whose request failed (it holds the error) tells nothing either.
    path = layout.exchange_info_path(config["run_dir"], "spot")
    io.write_json(path, {"trade_type": "spot", "error": "HostStopped: 418", "failed_at_unix": 1})
    assert rest_days() == 3 * 10
    raw = {
        "rateLimits": [],
        "symbols": [
            {"symbol": "AAAUSDT", "status": "TRADING"},
            {"symbol": "BBBUSDT", "status": "BREAK"},  # CCCUSDT: absent (delisted)
        ],
    }
    io.write_json(path, summarize_exchange_info(raw, "spot"))
    assert rest_days() == 10  # AAAUSDT's only


def test_plan_rest_weight_counts_the_server_time_of_each_rest_job(tmp_path):
    """Each REST shard job asks /time (weight 1) once before its days; plan's weight was the
    klines requests' alone."""
    import zlib

    from crypto_lakehouse.rest.klines import plan_weight

    data = tmp_path / "data"
    index, payload = write_listing_and_archive(data, set(), set())
    today = date.fromisoformat(DAYS[-1]) + timedelta(days=3)  # 2 closed days after the archive
    epoch = date(1970, 1, 1).toordinal()
    first, last = date.fromisoformat(DAYS[-1]).toordinal(), today.toordinal()
    klines_per_symbol = plan_weight("spot", "1h", [o - epoch for o in range(first + 1, last)])[1]
    assert klines_per_symbol > 0

    def plan_for(shards) -> preview.DatasetPlan:
        config = plan_config(data) | {"end_date": None, "shards": shards}
        out = preview.DatasetPlan("spot", "klines-1h", "test")
        preview.count_dataset(
            config, "spot", "klines-1h", payload, index, today.isoformat(), today, out
        )
        return out

    one = plan_for(1)  # one job asks the time once
    assert one.rest_days == 3 * 2
    assert (one.rest_jobs, one.rest_weight) == (1, 3 * klines_per_symbol + 1)
    jobs = len({zlib.crc32(s.encode()) % 64 for s in SYMBOLS})
    many = plan_for(64)
    assert (many.rest_jobs, many.rest_weight) == (jobs, 3 * klines_per_symbol + jobs)
    assert plan_for("auto").rest_jobs == 1  # 3 symbols: one shard


def test_plan_text_says_when_delisted_symbols_may_be_counted(tmp_path):
    """Without an exchangeInfo summary the REST line says that its days may include days
    of delisted symbols, which api_download does not fetch; with one it does not."""
    base = {
        "trade_type": "spot", "dataset": "klines-1h", "listing": "listed now", "kept": 1,
        "filtered": [], "refused": [], "not_listed": [], "no_files": [],
        "files_to_download": 0, "files_quarantined": 0, "bytes_to_download": 0,
        "files_present": 1, "bytes_present": 1, "rest_days": 5, "rest_weight": 5,
        "rest_symbols": 0, "download_seconds": 0.0, "rest_seconds": 1.0,
        "rates": {"rest_weight_s": 80.0, "rest_source": "x"},
    }  # fmt: skip
    plan = {
        "data_dir": "d", "interval": "1h", "start_date": None, "end_date": "2024-03-21",
        "lookback_days": None, "download_seconds": 0.0, "rest_seconds": 1.0,
    }  # fmt: skip
    unknown = preview.format_plan(plan | {"datasets": [base | {"exchange_info": None}]})
    known = preview.format_plan(plan | {"datasets": [base | {"exchange_info": "x.json"}]})
    assert "no exchangeInfo summary from a run yet" in unknown
    assert "exchangeInfo" not in known


@pytest.mark.parametrize("trade_type", ["spot", "um_futures", "cm_futures"])
@pytest.mark.parametrize("interval", ["1m", "5m", "1h", "1d"])
def test_plan_weight_is_the_weight_of_the_request_plan(trade_type, interval):
    """plan's REST weight without building every window equals that of the windows
    api_download plans (plan_chunks), over runs of days of many lengths."""
    import numpy as np

    from crypto_lakehouse.rest.klines import plan_chunks, plan_weight

    rng = np.random.default_rng(7)
    days = sorted(set((19000 + np.cumsum(rng.integers(1, 4, 900))).tolist()))  # gaps
    days += list(range(21000, 21000 + 433))  # a long run
    chunks = plan_chunks(trade_type, interval, days)
    expected = (len(chunks), sum(w.weight for c in chunks for w in c.windows))
    assert plan_weight(trade_type, interval, days) == expected
    assert plan_weight(trade_type, interval, []) == (0, 0)


def test_plan_builds_no_request_window_per_day(monkeypatch):
    """plan sums the REST weight of millions of days in a universe: one window computation
    per chunk length, not one per chunk (75 s for 3.2 million days)."""
    from crypto_lakehouse.rest import klines

    calls = []
    original = klines._windows
    monkeypatch.setattr(klines, "_windows", lambda *a: calls.append(a) or original(*a))

    class File:  # one archived day; REST fills every closed day after it
        first_day = last_day = "2022-01-08"

    today = date(2027, 6, 1)
    config = {"interval": "1m", "data_dir": "/nonexistent"}
    n, weight = preview._rest_days(config, "spot", "AAAUSDT", [File()], "2027-12-31", today)
    assert n == (today - date(2022, 1, 8)).days - 1
    # spot 1m: 2-day chunks of three 960-candle requests, weight 2 each (an odd day last)
    assert weight == (n // 2) * 3 * 2 + (n % 2) * 2 * 2
    assert len(calls) <= 2  # before: one per chunk, ~970
