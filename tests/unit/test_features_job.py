"""run_features on a small data folder: one feature file per candle file (generated segments
and real resampled outputs), segments on their own, stale files, reruns, failures."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest
import talib

from crypto_lakehouse import io, layout
from crypto_lakehouse.features import run_features
from crypto_lakehouse.features.job import FeaturesError
from crypto_lakehouse.resample import run_resample
from tests.unit.test_features_microstructure import candles, write_candles

DEFAULTS = [
    {"name": "RSI", "timeperiod": 14},
    {"name": "MACD", "fastperiod": 12, "slowperiod": 26, "signalperiod": 9},
    {"name": "BBANDS", "timeperiod": 20, "nbdevup": 2, "nbdevdn": 2},
    {"name": "EMA", "timeperiod": 20},
    {"name": "EMA", "timeperiod": 50},
    {"name": "EMA", "timeperiod": 200},
]
INDICATOR_COLUMNS = [
    "rsi_14",
    "macd_12_26_9",
    "macd_signal_12_26_9",
    "macd_hist_12_26_9",
    "bb_upper_20_2",
    "bb_middle_20_2",
    "bb_lower_20_2",
    "ema_20",
    "ema_50",
    "ema_200",
]
MICRO_COLUMNS = [
    "log_return",
    "taker_buy_ratio",
    "order_flow_imbalance",
    "avg_trade_size",
    "vwap_deviation",
] + [
    f"{c}_60"
    for c in (
        "realized_vol",
        "parkinson_vol",
        "garman_klass_vol",
        "cs_spread",
        "roll_spread",
        "amihud",
        "kyle_lambda",
    )
]
TARGETS = [{"interval": "5m", "offset_step": "0m"}, {"interval": "1h", "offset_step": "30m"}]


def make_symbol(data, trade_type, symbol, sizes, seed=0):
    """Segment files of ``symbol`` (rows per segment), its gen_kline report, then the real
    resample job on them; returns (gen report path, resample report path)."""
    names = [f"SP{i}_{symbol}" for i in range(len(sizes))] if len(sizes) > 1 else [symbol]
    out_dir = layout.results_klines_dir(data, trade_type, "1m")
    out_dir.mkdir(parents=True, exist_ok=True)
    segments = []
    for i, (name, n) in enumerate(zip(names, sizes, strict=True)):
        path = out_dir / f"{name}.pqt"
        write_candles(path, candles(n, seed=seed + i, zero_volume=(7, 8)))
        segments.append({"name": name, "file": path.relative_to(data).as_posix(), "rows": n})
    lh = data / "lakehouse"
    gen_report = lh / f"reports/gen_kline/{trade_type}/klines-1m/{symbol}.json"
    io.write_json(
        gen_report,
        {"trade_type": trade_type, "symbol": symbol, "interval": "1m", "segments": segments},
    )
    res_report = lh / f"reports/resample/{trade_type}/klines-1m/{symbol}.json"
    run_resample(
        trade_type=trade_type,
        symbol=symbol,
        interval="1m",
        data_dir=data,
        gen_report=gen_report,
        targets=TARGETS,
        report_path=res_report,
        stats_path=lh / f"stats/resample/{trade_type}/klines-1m/{symbol}.json",
    )
    return str(gen_report), str(res_report)


def features(data, symbols, reports, trade_type="spot", tag="x", **kwargs):
    args = dict(
        trade_type=trade_type,
        interval="1m",
        data_dir=str(data),
        symbols=symbols,
        gen_reports=[reports[s][0] for s in symbols],
        resample_reports=[reports[s][1] for s in symbols],
        indicators=DEFAULTS,
        windows=[60],
        report_path=str(data / f"lakehouse/reports/features/{tag}.json"),
        stats_path=str(data / f"lakehouse/stats/features/{tag}.json"),
    )
    args.update(kwargs)
    return run_features(**args)


def candle_files(data, trade_type="spot"):
    root = data / "results_data" / trade_type
    return sorted(
        list((root / "klines").rglob("*.pqt")) + list((root / "resampled_klines").rglob("*.pqt"))
    )


def feature_path(candle_path):
    rel = candle_path.as_posix()
    for kind in ("/klines/", "/resampled_klines/"):
        if kind in rel:
            return type(candle_path)(rel.replace(kind, kind.replace("klines", "features"), 1))
    raise AssertionError(rel)


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def data(tmp_path):
    return tmp_path / "binance_data"


def test_every_candle_file_gets_its_features_with_the_same_rows(data):
    reports = {"AAAUSDT": make_symbol(data, "spot", "AAAUSDT", [400, 250], seed=1)}
    sources = candle_files(data)
    # 2 segments × (1m + 5m + 1h at offsets 0m and 30m).
    assert len(sources) == 8
    before = {p: digest(p) for p in sources}
    stats = features(data, ["AAAUSDT"], reports)
    assert stats["files_written"] == 8 and stats["failures"] == []
    for src in sources:
        assert digest(src) == before[src]  # candle files untouched
        feat = pq.read_table(feature_path(src))
        cand = pq.read_table(src, columns=["candle_begin_time"])
        assert feat.column_names == ["candle_begin_time", *INDICATOR_COLUMNS, *MICRO_COLUMNS]
        assert feat.schema.field("candle_begin_time").type == cand.schema[0].type
        assert feat.column("candle_begin_time").equals(cand.column("candle_begin_time"))
        assert all(str(t) == "double" for t in feat.schema.types[1:])
    report = io.read_json(data / "lakehouse/reports/features/x.json")
    assert report["symbol"] == "AAAUSDT"
    assert len(report["symbols"]["AAAUSDT"]["outputs"]) == 8


def test_each_segment_and_resampled_file_is_computed_on_its_own(data):
    reports = {"AAAUSDT": make_symbol(data, "spot", "AAAUSDT", [400, 250], seed=2)}
    features(data, ["AAAUSDT"], reports)
    for src in candle_files(data):
        close = pq.read_table(src, columns=["close"]).column("close").to_numpy()
        feat = pq.read_table(feature_path(src))
        # TA-Lib called once on this file's close: same values, same warm-up NaN.
        for col, expected in (
            ("ema_20", talib.EMA(close, 20)),
            ("rsi_14", talib.RSI(close, 14)),
            ("macd_hist_12_26_9", talib.MACD(close, 12, 26, 9)[2]),
            ("bb_lower_20_2", talib.BBANDS(close, 20, 2, 2)[2]),
        ):
            np.testing.assert_array_equal(feat.column(col).to_numpy(), expected, err_msg=col)
        ema = feat.column("ema_20").to_numpy()
        assert np.isnan(ema[: min(19, len(ema))]).all()  # warm-up restarts in every file
        assert np.isnan(feat.column("log_return").to_numpy()[0])  # no return across the cut


@pytest.mark.parametrize(
    ("trade_type", "symbol"), [("spot", "AAAUSDT"), ("cm_futures", "AAAUSD_PERP")]
)
def test_vwap_deviation_of_a_resampled_file_is_against_the_windows_own_vwap(
    data, trade_type, symbol
):
    # docs/features.md: a resampled file keeps the 1m VWAP column, the VWAP of the window's
    # first minute (resample takes the first value, legacy behaviour). Its vwap_deviation
    # was the window's close against that minute's VWAP (about the window's return since its
    # open); it is against the window's own VWAP: quote volume over volume (COIN-M:
    # contracts × contract size over the coin amount), the open without trades, within
    # [low, high].
    reports = {symbol: make_symbol(data, trade_type, symbol, [400], seed=3)}
    contract_size = 10.0
    info = data / f"lakehouse/exchange_info/{trade_type}.json"
    io.write_json(info, {"symbols": {symbol: {"contractSize": contract_size}}})
    extra = {"exchange_info": str(info)} if trade_type == "cm_futures" else {}
    features(data, [symbol], reports, trade_type=trade_type, **extra)
    hourly = data / f"results_data/{trade_type}/resampled_klines/1h/0m/{symbol}.pqt"
    w = pq.read_table(hourly).to_pandas()
    assert "avg_price_1h" not in w.columns and "avg_price_1m" in w.columns
    if trade_type == "cm_futures":
        own = w["volume"] * contract_size / w["quote_volume"]
    else:
        own = w["quote_volume"] / w["volume"]
    own = own.where(w["volume"] > 0, w["open"]).clip(w["low"], w["high"])
    expected = (w["close"] / own - 1).to_numpy()
    got = pq.read_table(feature_path(hourly)).column("vwap_deviation").to_numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    first_minute = (w["close"] / w["avg_price_1m"] - 1).to_numpy()
    assert not np.allclose(got, first_minute)  # no longer the first minute's VWAP


def test_stale_feature_files_are_removed_and_nothing_else(data):
    reports = {
        "AAAUSDT": make_symbol(data, "spot", "AAAUSDT", [300, 200], seed=3),
        "BBBUSDT": make_symbol(data, "spot", "BBBUSDT", [150], seed=9),
    }
    features(data, ["AAAUSDT", "BBBUSDT"], reports)
    # AAAUSDT becomes one segment: its SP1 candles disappear (gen_kline and resample remove them).
    reports["AAAUSDT"] = make_symbol(data, "spot", "AAAUSDT", [300], seed=3)
    for p in candle_files(data):
        if p.name.startswith("SP"):
            p.unlink()
    feat_1m = layout.features_dir(data, "spot", "1m")
    old_target = layout.resampled_features_dir(data, "spot", "15m", "0m")
    old_target.mkdir(parents=True)
    (old_target / "SP0_AAAUSDT.pqt").write_bytes(b"old")
    (old_target / "BBBUSDT.pqt").write_bytes(b"other symbol")
    (feat_1m / "XAAAUSDT.pqt").write_bytes(b"other symbol with a similar name")
    (feat_1m / "notes.txt").write_text("not ours")
    stats = features(data, ["AAAUSDT"], reports)
    report = io.read_json(data / "lakehouse/reports/features/x.json")
    removed = report["symbols"]["AAAUSDT"]["removed"]
    assert sorted(removed) == sorted(
        [
            "results_data/spot/features/1m/SP0_AAAUSDT.pqt",
            "results_data/spot/features/1m/SP1_AAAUSDT.pqt",
            "results_data/spot/resampled_features/15m/0m/SP0_AAAUSDT.pqt",
            "results_data/spot/resampled_features/1h/0m/SP0_AAAUSDT.pqt",
            "results_data/spot/resampled_features/1h/0m/SP1_AAAUSDT.pqt",
            "results_data/spot/resampled_features/1h/30m/SP0_AAAUSDT.pqt",
            "results_data/spot/resampled_features/1h/30m/SP1_AAAUSDT.pqt",
            "results_data/spot/resampled_features/5m/0m/SP0_AAAUSDT.pqt",
            "results_data/spot/resampled_features/5m/0m/SP1_AAAUSDT.pqt",
        ]
    )
    assert stats["files_removed"] == len(removed)
    assert (feat_1m / "AAAUSDT.pqt").exists() and (feat_1m / "BBBUSDT.pqt").exists()
    assert (feat_1m / "XAAAUSDT.pqt").exists() and (feat_1m / "notes.txt").exists()
    assert (old_target / "BBBUSDT.pqt").exists()
    for src in candle_files(data):
        assert feature_path(src).exists()


def test_rerun_with_nothing_changed_rebuilds_nothing(data):
    reports = {"AAAUSDT": make_symbol(data, "spot", "AAAUSDT", [300], seed=4)}
    features(data, ["AAAUSDT"], reports)
    outputs = [feature_path(p) for p in candle_files(data)]
    mtimes = {p: p.stat().st_mtime_ns for p in outputs}
    report_path = data / "lakehouse/reports/features/x.json"
    built_report = report_path.read_bytes()
    stats = features(data, ["AAAUSDT"], reports)
    assert stats["skipped_unchanged"] == 1 and stats["files_written"] == 0
    # The report is the rebuild's, byte for byte: a rerun (after a kill, say) changes no report.
    assert report_path.read_bytes() == built_report
    assert {p: p.stat().st_mtime_ns for p in outputs} == mtimes
    # Another indicator list is a change: everything is rebuilt with the new columns.
    stats = features(data, ["AAAUSDT"], reports, indicators=[{"name": "EMA", "timeperiod": 5}])
    assert stats["skipped_unchanged"] == 0 and stats["files_written"] == len(outputs)
    assert "ema_5" in pq.read_schema(outputs[0]).names
    # So is a changed candle file (a newer gen_kline output).
    stats = features(data, ["AAAUSDT"], reports, indicators=[{"name": "EMA", "timeperiod": 5}])
    assert stats["skipped_unchanged"] == 1
    src = candle_files(data)[0]
    write_candles(src, candles(300, seed=99))
    os.utime(src, ns=(1, 1))  # a new size/mtime, whatever the clock resolution
    stats = features(data, ["AAAUSDT"], reports, indicators=[{"name": "EMA", "timeperiod": 5}])
    assert stats["skipped_unchanged"] == 0


def test_a_broken_symbol_does_not_stop_the_others(data):
    reports = {
        "AAAUSDT": make_symbol(data, "spot", "AAAUSDT", [200], seed=5),
        "BBBUSDT": make_symbol(data, "spot", "BBBUSDT", [200], seed=6),
        "CCCUSDT": make_symbol(data, "spot", "CCCUSDT", [200], seed=7),
    }
    broken = layout.results_klines_dir(data, "spot", "1m") / "BBBUSDT.pqt"
    broken.write_bytes(b"not parquet")
    with pytest.raises(FeaturesError, match="BBBUSDT.pqt"):
        features(data, ["AAAUSDT", "BBBUSDT", "CCCUSDT"], reports)
    feat_1m = layout.features_dir(data, "spot", "1m")
    assert (feat_1m / "AAAUSDT.pqt").exists() and (feat_1m / "CCCUSDT.pqt").exists()
    assert not (feat_1m / "BBBUSDT.pqt").exists()
    # BBB's resampled files (written before its 1m file broke) still get their features.
    assert (layout.resampled_features_dir(data, "spot", "5m", "0m") / "BBBUSDT.pqt").exists()
    stats = io.read_json(data / "lakehouse/stats/features/x.json")
    assert len(stats["failures"]) == 1 and "BBBUSDT" in stats["failures"][0]
    # The failed symbol is retried on the next run, the good ones are skipped.
    write_candles(broken, candles(200, seed=6))
    stats = features(data, ["AAAUSDT", "BBBUSDT", "CCCUSDT"], reports)
    assert stats["skipped_unchanged"] == 2 and stats["failures"] == []
    assert (feat_1m / "BBBUSDT.pqt").exists()


def test_coin_margined_notional_uses_the_contract_size(data):
    reports = {"AAAUSD_PERP": make_symbol(data, "cm_futures", "AAAUSD_PERP", [120], seed=8)}
    info = data / "lakehouse/exchange_info/cm_futures.json"
    io.write_json(info, {"symbols": {"AAAUSD_PERP": {"contractSize": 10}}})
    features(data, ["AAAUSD_PERP"], reports, trade_type="cm_futures", exchange_info=str(info))
    src = layout.results_klines_dir(data, "cm_futures", "1m") / "AAAUSD_PERP.pqt"
    c = pq.read_table(src).to_pandas()
    feat = pq.read_table(feature_path(src)).to_pandas()
    illiquidity = (np.log(c["close"] / c["close"].shift(1)).abs() / (c["volume"] * 10.0)).where(
        c["volume"] > 0
    )
    expected = illiquidity.rolling(60, min_periods=30).mean().to_numpy()
    np.testing.assert_allclose(feat["amihud_60"].to_numpy(), expected, rtol=1e-9, equal_nan=True)
    # A config override gives the size of a symbol exchangeInfo lacks (delisted) ...
    io.write_json(info, {"symbols": {}})
    overrides = {"AAAUSD_PERP": 20}
    features(
        data,
        ["AAAUSD_PERP"],
        reports,
        trade_type="cm_futures",
        exchange_info=str(info),
        contract_size_overrides=overrides,
    )
    feat = pq.read_table(feature_path(src)).to_pandas()
    np.testing.assert_allclose(feat["amihud_60"].to_numpy(), expected / 2, rtol=1e-9)
    # ... and a symbol with neither fails naming the config key.
    with pytest.raises(FeaturesError, match="contract_sizes"):
        features(data, ["AAAUSD_PERP"], reports, trade_type="cm_futures", exchange_info=str(info))


def test_report_and_stats_are_json_for_the_summary(data):
    reports = {"AAAUSDT": make_symbol(data, "spot", "AAAUSDT", [100], seed=10)}
    features(data, ["AAAUSDT"], reports)
    stats = json.loads((data / "lakehouse/stats/features/x.json").read_text())
    assert stats["rows_written"] == sum(
        pq.read_metadata(feature_path(p)).num_rows for p in candle_files(data)
    )
    assert stats["seconds"]["total"] >= 0


def test_unset_settings_mean_the_documented_defaults(data):
    reports = {"AAAUSDT": make_symbol(data, "spot", "AAAUSDT", [100], seed=12)}
    features(data, ["AAAUSDT"], reports, indicators=None, windows=None)
    src = layout.results_klines_dir(data, "spot", "1m") / "AAAUSDT.pqt"
    names = pq.read_schema(feature_path(src)).names
    assert names == ["candle_begin_time", *INDICATOR_COLUMNS, *MICRO_COLUMNS]


def test_feature_files_are_lz4_plain_without_dictionary(data):
    """The documented file format (docs/features.md): LZ4 pages, no dictionary."""
    reports = {"AAAUSDT": make_symbol(data, "spot", "AAAUSDT", [300], seed=3)}
    features(data, ["AAAUSDT"], reports)
    for src in candle_files(data):
        meta = pq.ParquetFile(feature_path(src)).metadata
        for g in range(meta.num_row_groups):
            for c in range(meta.num_columns):
                column = meta.row_group(g).column(c)
                assert column.compression == "LZ4", column.path_in_schema
                assert not column.has_dictionary_page, column.path_in_schema


def test_the_job_process_allocator_settings_take_effect():
    """keep_freed_memory (run where a features job process starts) in a fresh interpreter:
    pyarrow allocates from the system allocator, glibc accepts the mallopt settings and numpy
    no longer asks for transparent huge pages."""
    import platform
    import subprocess
    import sys

    code = (
        "from crypto_lakehouse.features.allocator import keep_freed_memory\n"
        "import numpy as np, pyarrow as pa\n"
        "ok = keep_freed_memory()\n"
        "core = getattr(np, '_core', None) or np.core\n"  # numpy 2 / 1.26 (pyproject allows)
        "huge = core.multiarray._set_madvise_hugepage(False)\n"  # returns the setting
        "print(ok, pa.default_memory_pool().backend_name, huge)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout.split()
    expected_ok = platform.libc_ver()[0] == "glibc"
    assert out == [str(expected_ok), "system", "False"]


def test_a_full_disk_writing_features_is_not_blamed_on_the_candle_file(data, monkeypatch):
    # ENOSPC while writing a feature file (a full disk) was taken for an unreadable candle
    # file: "…/klines/1m/AUSDT.pqt, written by gen_kline, is unreadable (OSError: [Errno
    # 28] …)", and the good candle file was removed for gen_kline to rebuild.
    import errno

    from crypto_lakehouse import storage
    from crypto_lakehouse.shards import DamagedInput

    reports = {"AUSDT": make_symbol(data, "spot", "AUSDT", [300])}
    sources = candle_files(data)
    before = {p: digest(p) for p in sources}

    def full_disk(path, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(storage, "write_parquet", full_disk)
    with pytest.raises(FeaturesError) as info:
        features(data, ["AUSDT"], reports)
    assert not isinstance(info.value, DamagedInput) and "unreadable" not in str(info.value)
    # the error names the file that could not be written, not the candle file read
    assert "[Errno 28] No space left on device: '" in str(info.value)
    assert str(data / "results_data/spot/features/1m/AUSDT.pqt") in str(info.value)
    assert {p: digest(p) for p in sources} == before  # every candle file kept as it was
    monkeypatch.undo()  # room again: the same call builds them
    assert features(data, ["AUSDT"], reports)["files_written"] == len(sources)


def test_a_damaged_candle_file_is_the_writer_s_to_rebuild(data):
    # One symbol (a shard job's call): the shard has the file rebuilt (shards.DamagedInput);
    # a list of symbols keeps going and names the file among its failures.
    from crypto_lakehouse.shards import DamagedInput

    reports = {"AUSDT": make_symbol(data, "spot", "AUSDT", [300]),
               "BUSDT": make_symbol(data, "spot", "BUSDT", [300], seed=3)}  # fmt: skip
    resampled = next((data / "results_data/spot/resampled_klines").rglob("AUSDT.pqt"))
    resampled.write_bytes(resampled.read_bytes()[:64])
    with pytest.raises(DamagedInput) as info:
        features(data, ["AUSDT"], reports)
    assert info.value.stage == "resample" and info.value.path == str(resampled)
    # raised after the symbol's other files, as any failure of one file
    assert feature_path(next((data / "results_data/spot/klines").rglob("AUSDT.pqt"))).exists()
    with pytest.raises(FeaturesError, match="AUSDT: .*written by resample, is unreadable"):
        features(data, ["AUSDT", "BUSDT"], reports, tag="y")
    assert feature_path(next((data / "results_data/spot/klines").rglob("BUSDT.pqt"))).exists()


def grow_1m_candles(data) -> None:
    """AAAUSDT's and BBBUSDT's 1m candle files replaced by longer ones (360 and 260 rows), as
    a day later."""
    klines = layout.results_klines_dir(data, "spot", "1m")
    for symbol, rows, seed in (("AAAUSDT", 360, 13), ("BBBUSDT", 260, 14)):
        write_candles(klines / f"{symbol}.pqt", candles(rows, seed=seed))
        os.utime(klines / f"{symbol}.pqt", ns=(1, 1))


def break_indicators_of_aaa(patch) -> None:
    """With ``patch`` (a monkeypatch), the indicators raise "RSI: boom" on AAAUSDT's grown 1m
    file (``grow_1m_candles``) only."""
    from crypto_lakehouse.features import job

    compute = job.compute_indicators

    def broken_on_aaa(specs, inputs):
        if len(inputs["close"]) == 360:  # AAAUSDT's new 1m file only
            raise ValueError("RSI: boom")
        return compute(specs, inputs)

    patch.setattr(job, "compute_indicators", broken_on_aaa)


def test_a_failed_rebuild_keeps_the_previous_feature_file_marked_stale(data, monkeypatch):
    """An exception in one indicator while a symbol's changed candle file is rebuilt: the
    feature file of the last good build stays (it was removed before: the user lost the
    features they had until the bug was fixed), the report marks it stale, the failure
    names the symbol and the file, the other symbol is rebuilt, and the next run, the
    indicator fixed, rebuilds it."""

    reports = {
        "AAAUSDT": make_symbol(data, "spot", "AAAUSDT", [300], seed=11),
        "BBBUSDT": make_symbol(data, "spot", "BBBUSDT", [200], seed=12),
    }
    features(data, ["AAAUSDT", "BBBUSDT"], reports)
    feat_1m = layout.features_dir(data, "spot", "1m")
    good = digest(feat_1m / "AAAUSDT.pqt")
    grow_1m_candles(data)  # a day later: both 1m candle files changed (new rows)
    break_indicators_of_aaa(monkeypatch)
    with pytest.raises(FeaturesError) as info:
        features(data, ["AAAUSDT", "BBBUSDT"], reports)
    message = str(info.value)
    assert message.startswith("AAAUSDT: results_data/spot/klines/1m/AAAUSDT.pqt: RSI: boom")
    assert "previous feature file results_data/spot/features/1m/AAAUSDT.pqt kept, stale" in message
    assert "BBBUSDT" not in message
    assert digest(feat_1m / "AAAUSDT.pqt") == good  # the last good build's file, untouched
    report = io.read_json(data / "lakehouse/reports/features/x.json")
    section = report["symbols"]["AAAUSDT"]
    assert section["stale"] == ["results_data/spot/features/1m/AAAUSDT.pqt"]
    assert section["removed"] == []
    assert "stale" not in report["symbols"]["BBBUSDT"]
    assert pq.read_metadata(feat_1m / "BBBUSDT.pqt").num_rows == 260
    monkeypatch.undo()  # the indicator fixed: the next run rebuilds the stale file
    stats = features(data, ["AAAUSDT", "BBBUSDT"], reports)
    assert stats["failures"] == [] and stats["skipped_unchanged"] == 1
    assert pq.read_metadata(feat_1m / "AAAUSDT.pqt").num_rows == 360
    report = io.read_json(data / "lakehouse/reports/features/x.json")
    assert "stale" not in report["symbols"]["AAAUSDT"]
