"""Feature files kept stale by a failed rebuild (docs/features.md) are not served silently:
load_features warns (or raises, or says nothing, as asked) naming the file and the failure,
and duckdb_connect warns and lists them in its table ``stale_features``; once a run rebuilds
them, nothing is said. The stale files come from the real features job, made to fail by an
indicator that raises on one candle file (as tests/unit/test_features_job.py does)."""

from __future__ import annotations

import warnings

import pyarrow.parquet as pq
import pytest

import crypto_lakehouse
from crypto_lakehouse import layout, storage
from crypto_lakehouse.features import job
from crypto_lakehouse.features.job import FeaturesError
from crypto_lakehouse.loading import StaleFeaturesError, StaleFeaturesWarning
from tests.unit.test_features_job import (
    break_indicators_of_aaa,
    features,
    grow_1m_candles,
    make_symbol,
)

AAA_1M = "results_data/spot/features/1m/AAAUSDT.pqt"


@pytest.fixture
def stale_data(tmp_path, monkeypatch):
    """AAAUSDT and BBBUSDT built; then both 1m candle files grow and AAAUSDT's rebuild
    fails in an indicator: its 1m feature file is the 300-row one of the first build."""
    data = tmp_path / "binance_data"
    reports = {
        "AAAUSDT": make_symbol(data, "spot", "AAAUSDT", [300], seed=11),
        "BBBUSDT": make_symbol(data, "spot", "BBBUSDT", [200], seed=12),
    }
    features(data, ["AAAUSDT", "BBBUSDT"], reports)
    grow_1m_candles(data)
    with monkeypatch.context() as patch:
        break_indicators_of_aaa(patch)
        with pytest.raises(FeaturesError, match="kept, stale"):
            features(data, ["AAAUSDT", "BBBUSDT"], reports)
    return data, reports


def test_load_features_warns_naming_the_stale_file_its_failure_and_the_rebuild(stale_data):
    data, _ = stale_data
    with pytest.warns(StaleFeaturesWarning) as caught:
        feats = crypto_lakehouse.load_features(data, "spot", "AAAUSDT")
    assert len(caught) == 1
    message = str(caught[0].message)
    assert str(data / AAA_1M) in message
    assert "RSI: boom" in message
    assert "features run that succeeds rebuilds it" in message
    assert caught[0].filename == __file__  # points at the caller's line
    # What it warns about: the rows of the last good build, fewer than the candles.
    assert len(feats) == 300
    assert len(crypto_lakehouse.load_klines(data, "spot", "AAAUSDT")) == 360


def test_stale_raise_refuses_and_ignore_is_silent(stale_data):
    data, _ = stale_data
    with pytest.raises(StaleFeaturesError, match="RSI: boom"):
        crypto_lakehouse.load_features(data, "spot", "AAAUSDT", stale="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(crypto_lakehouse.load_features(data, "spot", "AAAUSDT", stale="ignore")) == 300
    with warnings.catch_warnings():  # the warning class turned into an error
        warnings.simplefilter("error", StaleFeaturesWarning)
        with pytest.raises(StaleFeaturesWarning):
            crypto_lakehouse.load_features(data, "spot", "AAAUSDT")
    with pytest.raises(ValueError, match="stale='maybe'"):
        crypto_lakehouse.load_features(data, "spot", "AAAUSDT", stale="maybe")


def test_only_the_stale_files_read_are_told(stale_data):
    """BBBUSDT was rebuilt, and AAAUSDT's resampled files were (only its 1m file failed)."""
    data, _ = stale_data
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(crypto_lakehouse.load_features(data, "spot", "BBBUSDT")) == 260
        crypto_lakehouse.load_features(data, "spot", "AAAUSDT", resample="5m")


def test_a_stale_resampled_file_is_told_too(tmp_path, monkeypatch):
    data = tmp_path / "binance_data"
    reports = {"AAAUSDT": make_symbol(data, "spot", "AAAUSDT", [300], seed=11)}
    features(data, ["AAAUSDT"], reports)
    # A day later: 60 more minutes, resampled again (the 5m file: 60 -> 72 windows).
    reports = {"AAAUSDT": make_symbol(data, "spot", "AAAUSDT", [360], seed=13)}
    compute = job.compute_indicators

    def broken_on_5m(specs, inputs):
        if len(inputs["close"]) == 72:  # the 5m file of 360 minutes
            raise ValueError("EMA: boom")
        return compute(specs, inputs)

    monkeypatch.setattr(job, "compute_indicators", broken_on_5m)
    with pytest.raises(FeaturesError, match="kept, stale"):
        features(data, ["AAAUSDT"], reports)
    with pytest.warns(StaleFeaturesWarning, match="resampled_features/5m/0m/AAAUSDT.pqt"):
        feats = crypto_lakehouse.load_features(data, "spot", "AAAUSDT", resample="5m")
    assert len(feats) == 60  # the last good build's 5m rows
    with warnings.catch_warnings():  # the 1m file was rebuilt
        warnings.simplefilter("error")
        assert len(crypto_lakehouse.load_features(data, "spot", "AAAUSDT")) == 360


def test_after_a_good_rebuild_nothing_is_said_and_no_record_is_left(stale_data):
    data, reports = stale_data
    stats = features(data, ["AAAUSDT", "BBBUSDT"], reports)  # the indicator fixed
    assert stats["failures"] == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(crypto_lakehouse.load_features(data, "spot", "AAAUSDT")) == 360
        con = crypto_lakehouse.duckdb_connect(data)
    assert con.sql("SELECT count(*) FROM stale_features").fetchall() == [(0,)]
    assert not storage.exists(layout.stale_features_path(data, "spot", "1m", "AAAUSDT"))


def test_duckdb_connect_warns_and_lists_the_stale_files_with_the_views_columns(stale_data):
    data, _ = stale_data
    with pytest.warns(StaleFeaturesWarning, match="table stale_features lists") as caught:
        con = crypto_lakehouse.duckdb_connect(data)
    assert len(caught) == 1 and "RSI: boom" in str(caught[0].message)
    rows = con.sql(
        'SELECT view, trade_type, interval, "offset", symbol, segment, file, failure '
        "FROM stale_features"
    ).fetchall()
    assert rows == [
        (
            "features",
            "spot",
            "1m",
            None,
            "AAAUSDT",
            0,
            str((data / AAA_1M).absolute()),
            "results_data/spot/klines/1m/AAAUSDT.pqt: RSI: boom",
        )
    ]
    assert con.sql("SELECT failed_at IS NOT NULL FROM stale_features").fetchall() == [(True,)]
    # The views still hold the stale file; the table leaves it out of a query.
    count = """SELECT count(*) FROM features f
        WHERE symbol = 'AAAUSDT' AND NOT EXISTS (SELECT 1 FROM stale_features s
            WHERE s.view = 'features' AND s.trade_type = f.trade_type
            AND s.interval = f.interval AND s.symbol = f.symbol AND s.segment = f.segment)"""
    assert con.sql("SELECT count(*) FROM features WHERE symbol = 'AAAUSDT'").fetchall() == [
        (pq.read_metadata(data / AAA_1M).num_rows,)
    ]
    assert con.sql(count).fetchall() == [(0,)]
    with pytest.raises(StaleFeaturesError):
        crypto_lakehouse.duckdb_connect(data, stale="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        con = crypto_lakehouse.duckdb_connect(data, stale="ignore")
    assert con.sql("SELECT count(*) FROM stale_features").fetchall() == [(1,)]


def test_on_s3_a_load_asks_one_listing_more_and_warns_as_locally(s3_root):
    """On an s3:// data dir: the stale record is found (the warning as locally), and what
    looking for it costs a load is one listing of the symbol's record folder (no record:
    nothing else), whatever the universe."""
    from tests.unit.test_loading_while_writing import candles as minute_candles
    from tests.unit.test_loading_while_writing import put

    root = storage.data_path(s3_root)
    table = minute_candles(1_704_067_200_000, 1440).select(["candle_begin_time", "open"])
    for symbol in ("AAAUSDT", "BBBUSDT"):
        put(layout.features_dir(root, "spot", "1m") / f"{symbol}.pqt", table)
    storage.write_json(
        layout.stale_features_path(root, "spot", "1m", "AAAUSDT"),
        job.stale_record("spot", "1m", "AAAUSDT", {AAA_1M: "x.pqt: RSI: boom"}),
    )

    def requests(**kwargs) -> dict[str, int]:
        storage.request_stats(reset=True)
        crypto_lakehouse.load_features(s3_root, "spot", "BBBUSDT", **kwargs)
        return {k: v["count"] for k, v in storage.request_stats(reset=True).items()}

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ignored, told = requests(stale="ignore"), requests()
    assert told == {**ignored, "list": ignored["list"] + 1}
    with pytest.warns(StaleFeaturesWarning, match=f"{root / AAA_1M}.*RSI: boom"):
        crypto_lakehouse.load_features(s3_root, "spot", "AAAUSDT")
    with pytest.warns(StaleFeaturesWarning, match="table stale_features lists"):
        con = crypto_lakehouse.duckdb_connect(s3_root)
    assert con.sql("SELECT view, symbol, segment, file FROM stale_features").fetchall() == [
        ("features", "AAAUSDT", 0, str(root / AAA_1M))
    ]
