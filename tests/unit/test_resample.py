"""Resample rules on small hand-built series, with hand-computed expectations."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from crypto_lakehouse import io, layout
from crypto_lakehouse.resample import run_resample, validate_aggregations, validate_targets
from crypto_lakehouse.resample.validation import ResampleValidationError, validate
from crypto_lakehouse.resample.windows import Resampled, resample
from crypto_lakehouse.schema import KLINE_SCHEMA, TIME_TYPE

MIN = 60_000
HOUR = 3_600_000
DAY = 86_400_000
T0 = 1_600_000_000_000 - 1_600_000_000_000 % DAY  # 2020-09-13 00:00 UTC


def series(start_ms: int, count: int, funding: dict[int, float] | None = None):
    """Minute i (from ``start_ms``) has open i, high i + 0.5, low i − 0.5, close i + 0.25,
    volume 1, trade_num i, avg_price i + 0.1; ``funding`` maps minute index → rate."""
    i = np.arange(count, dtype=np.float64)
    cols = {
        "candle_begin_time": start_ms + np.arange(count, dtype=np.int64) * MIN,
        "open": i,
        "high": i + 0.5,
        "low": i - 0.5,
        "close": i + 0.25,
        "volume": np.ones(count),
        "quote_volume": i * 2,
        "trade_num": np.arange(count, dtype=np.int64),
        "taker_buy_base_asset_volume": np.full(count, 0.5),
        "taker_buy_quote_asset_volume": i,
        "avg_price_1m": i + 0.1,
    }
    if funding is not None:
        rate = np.zeros(count)
        for k, v in funding.items():
            rate[k] = v
        cols["funding_rate"] = rate
    return cols


def arith(a: int, b: int) -> int:
    """Sum of the integers a … b inclusive."""
    return (a + b) * (b - a + 1) // 2


# ------------------------------------------------------------------ windows
def test_hourly_windows_cut_at_segment_edges_with_offsets():
    # 00:07 … 02:36 (150 minutes). Offset 0m: only [01:00, 02:00) is complete.
    cols = series(T0 + 7 * MIN, 150)
    out = resample(cols, MIN, HOUR, 0, "avg_price_1m")
    assert out.columns["candle_begin_time"].tolist() == [T0 + HOUR]
    # 01:00 is minute index 53; the window holds indices 53 … 112.
    assert out.columns["open"].tolist() == [53.0]
    assert out.columns["high"].tolist() == [112.5]
    assert out.columns["low"].tolist() == [52.5]
    assert out.columns["close"].tolist() == [112.25]
    assert out.columns["volume"].tolist() == [60.0]
    assert out.columns["trade_num"].tolist() == [arith(53, 112)]
    assert out.columns["trade_num"].dtype == np.int64
    assert out.columns["quote_volume"].tolist() == [2.0 * arith(53, 112)]
    assert out.columns["avg_price_1m"].tolist() == [53.1]
    # Offset 5m: [00:05, 01:05) misses its first minutes, [02:05, 03:05) its last:
    # only [01:05, 02:05) (indices 58 … 117) remains.
    out = resample(cols, MIN, HOUR, 5 * MIN, "avg_price_1m")
    assert out.columns["candle_begin_time"].tolist() == [T0 + HOUR + 5 * MIN]
    assert out.columns["open"].tolist() == [58.0]
    assert out.columns["close"].tolist() == [117.25]
    # Offset 5m at 5m windows: 00:07 is inside [00:05, 00:10); first full window 00:10.
    out = resample(cols, MIN, 5 * MIN, 0, "avg_price_1m")
    assert out.columns["candle_begin_time"][0] == T0 + 10 * MIN
    assert len(out) == (150 - 3) // 5  # indices 3 … 147 form 29 windows; 148, 149 are partial


def test_window_missing_its_first_or_last_minute_is_dropped():
    # 01:01 … 03:00: [01:00, 02:00) lacks 01:00, [03:00, 04:00) has one minute.
    out = resample(series(T0 + HOUR + MIN, 120), MIN, HOUR, 0)
    assert out.columns["candle_begin_time"].tolist() == [T0 + 2 * HOUR]
    # 01:00 … 02:58: [02:00, 03:00) lacks 02:59.
    out = resample(series(T0 + HOUR, 119), MIN, HOUR, 0)
    assert out.columns["candle_begin_time"].tolist() == [T0 + HOUR]
    # Shorter than one window: nothing.
    out = resample(series(T0, 59), MIN, HOUR, 0)
    assert len(out) == 0 and out.columns["open"].dtype == np.float64


def test_funding_first_settled_minute_or_null():
    # 3 hours from 00:00. Hour 0: rates at 00:00 and 00:30 → the 00:00 one. Hour 1: 5e-7 at
    # 01:00 is below 1e-6 and ignored, −0.0002 at 01:10 counts. Hour 2: none → null.
    cols = series(T0, 180, funding={0: 0.0001, 30: 0.0003, 60: 5e-7, 70: -0.0002})
    out = resample(cols, MIN, HOUR, 0, "avg_price_1m")
    assert out.columns["funding_rate"][:2].tolist() == [0.0001, -0.0002]
    assert out.columns["funding_price"][:2].tolist() == [0.0, 70.0]  # the open of that minute
    assert out.columns["funding_time"][:2].tolist() == [T0, T0 + 70 * MIN]
    assert out.valid["funding_rate"].tolist() == [True, True, False]
    # Offset 30m: [00:30, 01:30) starts with the 00:30 event; [01:30, 02:30) has none;
    # the 00:00 event lies in no full window.
    out = resample(cols, MIN, HOUR, 30 * MIN)
    assert out.columns["funding_rate"][0] == 0.0003
    assert out.valid["funding_rate"].tolist() == [True, False]


def test_non_contiguous_input_is_rejected():
    cols = series(T0, 10)
    cols["candle_begin_time"][5:] += MIN
    with pytest.raises(ValueError, match="not a contiguous .* after minute 2020-09-13T00:04:00Z"):
        resample(cols, MIN, 5 * MIN, 0)


def test_custom_aggregations_of_added_columns():
    cols = series(T0, 10)
    cols["open_interest"] = np.array([5, 3, 9, 1, 2, 7, 7, 0, 4, 6], dtype=np.int64)
    aggs = {"open_interest": "max"}
    out = resample(cols, MIN, 5 * MIN, 0, aggregations=aggs)
    assert out.columns["open_interest"].tolist() == [9, 7]
    for func, want in [
        ("first", [5, 7]),
        ("last", [2, 6]),
        ("min", [1, 0]),
        ("sum", [20, 24]),
        ("mean", [4.0, 4.8]),
    ]:
        got = resample(cols, MIN, 5 * MIN, 0, aggregations={"open_interest": func})
        assert got.columns["open_interest"].tolist() == pytest.approx(want)


# ------------------------------------------------------------------ targets
def test_validate_targets_expands_offsets():
    plan = validate_targets(
        [
            {"interval": "1h", "offset_step": "5m"},
            {"interval": "5m", "offset_step": "0m"},
            {"interval": "4h", "offset_step": "1h"},
            {"interval": "1d", "offset_step": "4h"},
        ]
    )
    names = {t.interval: [o.name for o in t.offsets] for t in plan}
    assert names["1h"] == [f"{5 * i}m" for i in range(12)]
    assert names["5m"] == ["0m"]
    assert names["4h"] == ["0h", "1h", "2h", "3h"]
    assert names["1d"] == ["0h", "4h", "8h", "12h", "16h", "20h"]
    assert [o.ms for o in plan[0].offsets][:3] == [0, 5 * MIN, 10 * MIN]


@pytest.mark.parametrize(
    "targets, message",
    [
        ([{"interval": "1h", "offset_step": "1h"}], "must be shorter than the interval"),
        ([{"interval": "1h", "offset_step": "2h"}], "must be shorter than the interval"),
        ([{"interval": "1h", "offset_step": "7m"}], "does not divide the interval"),
        ([{"interval": "1h", "offset_step": "5x"}], "offset_step '5x' is not a number"),
        ([{"interval": "1w", "offset_step": "0m"}], "interval '1w' is not a number"),
        ([{"interval": "1h", "offset_step": "0h"}], "use offset_step '0m'"),
        ([{"interval": "1h"}], "needs both"),
        ([{"interval": "1h", "offset_step": "0m", "x": 1}], "expected"),
        ([], "non-empty list"),
        (
            [{"interval": "1h", "offset_step": "0m"}, {"interval": "1h", "offset_step": "5m"}],
            "listed twice",
        ),
    ],
)
def test_validate_targets_rejects_bad_entries(targets, message):
    with pytest.raises(ValueError, match=message):
        validate_targets(targets)


def test_validate_targets_checks_the_base_interval():
    with pytest.raises(ValueError, match="not a multiple of the base interval '1h'"):
        validate_targets([{"interval": "90m", "offset_step": "0m"}], base_interval="1h")
    with pytest.raises(ValueError, match="offset_step '30m' is not a multiple"):
        validate_targets([{"interval": "4h", "offset_step": "30m"}], base_interval="1h")
    # a target shorter than the base said "is not a multiple", as if 30m were a bad multiple
    with pytest.raises(ValueError, match="interval '30m' is shorter than the base interval '1h'"):
        validate_targets([{"interval": "30m", "offset_step": "0m"}], base_interval="1h")


def test_validate_aggregations():
    assert validate_aggregations({"oi": "mean"}) == {"oi": "mean"}
    assert validate_aggregations(None) == {}
    with pytest.raises(ValueError, match="'median' is not one of"):
        validate_aggregations({"oi": "median"})
    with pytest.raises(ValueError, match="legacy columns keep"):
        validate_aggregations({"volume": "max"}, reserved=("volume",))


# ------------------------------------------------------------------ validation
def test_validation_catches_wrong_sums_extremes_and_counts():
    cols = series(T0, 120)
    good = resample(cols, MIN, HOUR, 0)
    assert validate("f", cols, good, MIN, HOUR, 0)["windows"] == "2"

    def tampered(name, index, value):
        columns = {k: v.copy() for k, v in good.columns.items()}
        columns[name][index] = value
        return Resampled(columns, good.valid, good.first_row, good.rows_per_window)

    with pytest.raises(ResampleValidationError, match="window 2020-09-13T01:00:00Z: volume"):
        validate("f", cols, tampered("volume", 1, 61.0), MIN, HOUR, 0)
    with pytest.raises(ResampleValidationError, match="window 2020-09-13T00:00:00Z: high"):
        validate("f", cols, tampered("high", 0, 58.0), MIN, HOUR, 0)
    with pytest.raises(ResampleValidationError, match="window 2020-09-13T01:00:00Z: trade_num"):
        validate("f", cols, tampered("trade_num", 1, 0), MIN, HOUR, 0)
    short = Resampled({k: v[:1] for k, v in good.columns.items()}, {}, 0, 60)
    with pytest.raises(ResampleValidationError, match="1 windows emitted, 2 fully covered"):
        validate("f", cols, short, MIN, HOUR, 0)


# ------------------------------------------------------------------ run_resample
def write_segment(data_dir, trade_type, name, cols):
    arrays = {}
    for k, v in cols.items():
        if k == "candle_begin_time":
            arrays[k] = pa.array(v).cast(TIME_TYPE)
        else:
            arrays[k] = pa.array(v)
    path = layout.results_klines_dir(data_dir, trade_type, "1m") / f"{name}.pqt"
    io.write_parquet(path, pa.table(arrays))
    return path.relative_to(data_dir).as_posix()


def write_gen_report(data_dir, trade_type, symbol, segments):
    path = data_dir / "lakehouse" / "reports" / "gen_kline" / f"{symbol}.json"
    io.write_json(
        path,
        {
            "trade_type": trade_type,
            "symbol": symbol,
            "interval": "1m",
            "segments": [{"name": n, "file": f} for n, f in segments],
        },
    )
    return path


def run(data_dir, trade_type, symbol, gen_report, targets, aggregations=None):
    return run_resample(
        trade_type=trade_type,
        symbol=symbol,
        interval="1m",
        data_dir=data_dir,
        gen_report=gen_report,
        targets=targets,
        aggregations=aggregations or {},
        report_path=data_dir / "lakehouse" / "reports" / "resample" / f"{symbol}.json",
        stats_path=data_dir / "lakehouse" / "stats" / "resample" / f"{symbol}.json",
    )


def test_run_resample_several_targets_schema_and_metadata(tmp_path):
    seg_old = write_segment(tmp_path, "um_futures", "SP0_BTCUSDT", series(T0, 120, {0: 1e-4}))
    new_cols = series(T0 + 5 * DAY, 180, {60: 2e-4})
    new_cols["open_interest"] = np.arange(180, dtype=np.float64)
    seg_new = write_segment(tmp_path, "um_futures", "BTCUSDT", new_cols)
    report = write_gen_report(
        tmp_path, "um_futures", "BTCUSDT", [("SP0_BTCUSDT", seg_old), ("BTCUSDT", seg_new)]
    )
    targets = [{"interval": "1h", "offset_step": "30m"}, {"interval": "5m", "offset_step": "0m"}]
    stats = run(tmp_path, "um_futures", "BTCUSDT", report, targets, {"open_interest": "last"})
    assert stats["files_written"] == 6
    base = tmp_path / "results_data" / "um_futures" / "resampled_klines"
    files = sorted(p.relative_to(base).as_posix() for p in base.rglob("*.pqt"))
    assert files == [
        f"{ri}/{off}/{name}.pqt"
        for ri, off in [("1h", "0m"), ("1h", "30m"), ("5m", "0m")]
        for name in ("BTCUSDT", "SP0_BTCUSDT")
    ]
    t = pq.read_table(base / "1h" / "0m" / "BTCUSDT.pqt")
    assert t.column_names == [
        *KLINE_SCHEMA.names,
        "avg_price_1m",
        "funding_rate",
        "funding_price",
        "funding_time",
        "open_interest",
    ]
    assert t.schema.field("funding_time").type == TIME_TYPE
    assert t.schema.field("trade_num").type == pa.int64()
    assert t["funding_rate"].to_pylist() == [None, 2e-4, None]
    assert t["funding_price"].to_pylist() == [None, 60.0, None]
    assert t["open_interest"].to_pylist() == [59.0, 119.0, 179.0]
    assert pq.read_table(base / "1h" / "30m" / "BTCUSDT.pqt").num_rows == 2
    assert pq.read_table(base / "5m" / "0m" / "SP0_BTCUSDT.pqt").num_rows == 24
    meta = t.schema.metadata
    assert json.loads(meta[b"validation"]) == {
        "windows": "3",
        "volume_sums": "passed",
        "high_low": "passed",
    }
    assert meta[b"offset"] == b"0m" and meta[b"interval"] == b"1h"


def test_run_resample_is_incremental_per_symbol(tmp_path):
    seg_old = write_segment(tmp_path, "spot", "SP0_BTCUSDT", series(T0, 120))
    seg_new = write_segment(tmp_path, "spot", "BTCUSDT", series(T0 + 5 * DAY, 120))
    both = write_gen_report(
        tmp_path, "spot", "BTCUSDT", [("SP0_BTCUSDT", seg_old), ("BTCUSDT", seg_new)]
    )
    run(tmp_path, "spot", "BTCUSDT", both, [{"interval": "1h", "offset_step": "30m"}])
    base = tmp_path / "results_data" / "spot" / "resampled_klines" / "1h"
    for off in ("0m", "30m"):
        (base / off / "SP0_XBTCUSDT.pqt").write_bytes(b"other")
        (base / off / "XBTCUSDT.pqt").write_bytes(b"other")
    # Re-split: only BTCUSDT remains, and the 30m offsets are no longer configured.
    only_new = write_gen_report(tmp_path, "spot", "BTCUSDT", [("BTCUSDT", seg_new)])
    run(tmp_path, "spot", "BTCUSDT", only_new, [{"interval": "1h", "offset_step": "0m"}])
    rep = json.loads((tmp_path / "lakehouse/reports/resample/BTCUSDT.json").read_text())
    assert rep["removed"] == [
        "results_data/spot/resampled_klines/1h/0m/SP0_BTCUSDT.pqt",
        "results_data/spot/resampled_klines/1h/30m/BTCUSDT.pqt",
        "results_data/spot/resampled_klines/1h/30m/SP0_BTCUSDT.pqt",
    ]
    assert sorted(p.name for p in (base / "0m").iterdir()) == [
        "BTCUSDT.pqt",
        "SP0_XBTCUSDT.pqt",
        "XBTCUSDT.pqt",
    ]
    assert sorted(p.name for p in (base / "30m").iterdir()) == ["SP0_XBTCUSDT.pqt", "XBTCUSDT.pqt"]
    # No gen output at all (gen_report None): this symbol's files go, others stay.
    run(tmp_path, "spot", "BTCUSDT", None, [{"interval": "1h", "offset_step": "0m"}])
    assert sorted(p.name for p in (base / "0m").iterdir()) == ["SP0_XBTCUSDT.pqt", "XBTCUSDT.pqt"]


def test_run_resample_without_targets_removes_the_symbols_resampled_files(tmp_path):
    # A trade type whose targets were all removed from the config: its symbols' resampled
    # files must go, as those of one removed target do, not stay stale for loaders.
    seg = write_segment(tmp_path, "spot", "BTCUSDT", series(T0, 120))
    report = write_gen_report(tmp_path, "spot", "BTCUSDT", [("BTCUSDT", seg)])
    run(tmp_path, "spot", "BTCUSDT", report, [{"interval": "1h", "offset_step": "30m"}])
    base = tmp_path / "results_data" / "spot" / "resampled_klines" / "1h"
    (base / "0m" / "XBTCUSDT.pqt").write_bytes(b"other")
    run(tmp_path, "spot", "BTCUSDT", report, [])
    rep = json.loads((tmp_path / "lakehouse/reports/resample/BTCUSDT.json").read_text())
    assert rep["outputs"] == [] and rep["targets"] == []
    assert rep["removed"] == [
        "results_data/spot/resampled_klines/1h/0m/BTCUSDT.pqt",
        "results_data/spot/resampled_klines/1h/30m/BTCUSDT.pqt",
    ]
    assert sorted(p.name for p in base.rglob("*.pqt")) == ["XBTCUSDT.pqt"]


LEGACY_RESULTS = Path(__file__).parents[1] / "fixtures" / "legacy-v1-real" / "results_data"


def _legacy_dir(tmp_path, trade_type):
    """A data dir holding legacy BHDS V1's real results_data of ``trade_type`` (used in place)."""
    shutil.copytree(LEGACY_RESULTS / trade_type, tmp_path / "results_data" / trade_type)
    return tmp_path / "results_data" / trade_type / "resampled_klines"


def _files(base) -> dict[str, bytes]:
    return {p.relative_to(base).as_posix(): p.read_bytes() for p in sorted(base.rglob("*.pqt"))}


def test_legacy_resampled_files_of_unconfigured_targets_are_kept(tmp_path):
    # A legacy data dir used in place, with resample.targets not listing legacy's: its
    # resampled files at the other targets and offsets are not the pipeline's to delete
    # (before 2026-12-06 the first run removed them all).
    base = _legacy_dir(tmp_path, "um_futures")
    legacy = _files(base)
    assert len(legacy) == 13  # 1h at the 12 offsets of 5m, and 5m/0m
    seg = "results_data/um_futures/klines/1m/BTCUSDT.pqt"  # legacy's generated file
    report = write_gen_report(tmp_path, "um_futures", "BTCUSDT", [("BTCUSDT", seg)])
    rep_path = tmp_path / "lakehouse/reports/resample/BTCUSDT.json"
    run(tmp_path, "um_futures", "BTCUSDT", report, [{"interval": "1h", "offset_step": "0m"}])
    rep = json.loads(rep_path.read_text())
    assert rep["removed"] == []
    others = sorted(f for f in legacy if f != "1h/0m/BTCUSDT.pqt")
    assert rep["kept"] == [f"results_data/um_futures/resampled_klines/{f}" for f in others]
    now = _files(base)
    assert sorted(now) == sorted(legacy)
    assert all(now[f] == legacy[f] for f in others)  # untouched, byte for byte
    assert now["1h/0m/BTCUSDT.pqt"] != legacy["1h/0m/BTCUSDT.pqt"]  # rewritten: configured
    # 5m configured again: the pipeline rewrites 5m/0m, which is then its own; removed
    # once the target goes, while legacy's other offsets still stay.
    targets = [{"interval": "1h", "offset_step": "0m"}, {"interval": "5m", "offset_step": "0m"}]
    run(tmp_path, "um_futures", "BTCUSDT", report, targets)
    run(tmp_path, "um_futures", "BTCUSDT", report, [{"interval": "1h", "offset_step": "0m"}])
    rep = json.loads(rep_path.read_text())
    assert rep["removed"] == ["results_data/um_futures/resampled_klines/5m/0m/BTCUSDT.pqt"]
    assert sorted(_files(base)) == sorted(f for f in legacy if f != "5m/0m/BTCUSDT.pqt")
    # All targets removed (the trade type's resample leftovers): only the pipeline's go.
    run(tmp_path, "um_futures", "BTCUSDT", report, [])
    rep = json.loads(rep_path.read_text())
    assert rep["removed"] == ["results_data/um_futures/resampled_klines/1h/0m/BTCUSDT.pqt"]
    now = _files(base)
    assert sorted(now) == sorted(f for f in others if f != "5m/0m/BTCUSDT.pqt")
    assert all(now[f] == legacy[f] for f in now)


def test_a_killed_resample_job_leaves_its_files_owned(tmp_path, monkeypatch):
    # The outputs are recorded before they are written: a job killed after writing one
    # leaves it the pipeline's, removed by a later run that no longer configures it.
    from crypto_lakehouse.resample import job

    seg = write_segment(tmp_path, "spot", "BTCUSDT", series(T0, 120))
    report = write_gen_report(tmp_path, "spot", "BTCUSDT", [("BTCUSDT", seg)])
    written = []

    def killed_after_one(path, table, metadata):
        # The outputs may be written a few at a time (job.OutputWrites): the kill is told by
        # the output, not by the order the writes start in.
        if path.parent.name != "0m":
            raise KeyboardInterrupt  # the job is killed
        io.write_parquet(path, table)
        written.append(path)

    monkeypatch.setattr(job, "write_output", killed_after_one)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, "spot", "BTCUSDT", report, [{"interval": "1h", "offset_step": "30m"}])
    monkeypatch.undo()
    assert [p.parent.name for p in written] == ["0m"]
    run(tmp_path, "spot", "BTCUSDT", report, [{"interval": "5m", "offset_step": "0m"}])
    base = tmp_path / "results_data" / "spot" / "resampled_klines"
    assert sorted(_files(base)) == ["5m/0m/BTCUSDT.pqt"]


def test_legacy_segments_of_a_configured_target_are_rebuilt_as_the_pipeline_splits(tmp_path):
    # In the folder of a configured target and offset the job rebuilds the symbol's set of
    # files: a legacy SP0_ file its own segments do not have would mix two splits there.
    base = _legacy_dir(tmp_path, "spot")
    seg = "results_data/spot/klines/1m/BTCUSDT.pqt"
    report = write_gen_report(tmp_path, "spot", "BTCUSDT", [("BTCUSDT", seg)])
    run(tmp_path, "spot", "BTCUSDT", report, [{"interval": "5m", "offset_step": "0m"}])
    rep = json.loads((tmp_path / "lakehouse/reports/resample/BTCUSDT.json").read_text())
    assert rep["removed"] == ["results_data/spot/resampled_klines/5m/0m/SP0_BTCUSDT.pqt"]
    legacy_1h = sorted(
        f for f in _files(LEGACY_RESULTS / "spot/resampled_klines") if f[:3] == "1h/"
    )
    assert len(legacy_1h) == 24  # BTCUSDT and SP0_BTCUSDT at the 12 offsets: kept
    assert rep["kept"] == [f"results_data/spot/resampled_klines/{f}" for f in legacy_1h]
    assert sorted(_files(base)) == sorted(["5m/0m/BTCUSDT.pqt", *legacy_1h])


def test_legacy_files_kept_are_counted_on_the_console_and_the_report_page(tmp_path, capsys):
    # The kept legacy files (targets no longer configured: stale, still read by the
    # loaders) were named only under `kept` in the symbol's resample report and its job
    # log: the closing lines and the report page said nothing of them.
    from crypto_lakehouse import plan
    from crypto_lakehouse.report.job import run_report
    from crypto_lakehouse.summary import summarize

    _legacy_dir(tmp_path, "spot")
    seg = "results_data/spot/klines/1m/BTCUSDT.pqt"
    report = write_gen_report(tmp_path, "spot", "BTCUSDT", [("BTCUSDT", seg)])
    run_dir = tmp_path / "lakehouse"
    legacy_1h = [f for f in _files(LEGACY_RESULTS / "spot/resampled_klines") if f[:3] == "1h/"]
    offsets = sorted({f.split("/")[1] for f in legacy_1h})
    assert len(legacy_1h) == 24 and len(offsets) == 12  # two files (segments) per offset
    for attempt in ("first run", "second run"):
        run(tmp_path, "spot", "BTCUSDT", report, [{"interval": "5m", "offset_step": "0m"}])
        summary = summarize("resample", "spot", [run_dir / "reports/resample/BTCUSDT.json"])
        folders = {f"results_data/spot/resampled_klines/1h/{o}": 2 for o in offsets}
        assert summary["legacy_kept"] == folders, attempt
    path = Path(layout.run_summary_path(str(run_dir), "resample", "spot"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary))
    plan.print_summaries(run_dir)
    lines = [line for line in capsys.readouterr().out.splitlines() if "legacy resampled" in line]
    assert len(lines) == 1  # one line, not one per file
    assert "24 legacy resampled file(s) at resample targets or offsets not configured" in lines[0]
    assert "results_data/spot/resampled_klines/1h/0m/ (2)" in lines[0]
    assert "(2 more folders)" in lines[0]  # 12 folders, 10 named
    index = run_dir / "report" / "index.html"
    run_report(
        data_dir=str(tmp_path), interval="1m", trade_types=["spot"], end_date="2024-01-10",
        stale_after_hours=48, index=str(index), coverage=str(run_dir / "report/c.parquet"),
        figures_dir=str(run_dir / "report/figures"),
        stages={"gen_kline": ["spot"], "resample": ["spot"]},
    )  # fmt: skip
    checks = index.read_text().split('<section id="checks">')[1].split("</section>")[0]
    assert "<h3>Stale legacy resampled files (24)</h3>" in checks
    assert "results_data/spot/resampled_klines/1h/15m/ (2)" in checks


def test_resampled_leftovers_names_the_configured_symbols_files(tmp_path):
    from crypto_lakehouse.plan import resampled_leftovers
    from crypto_lakehouse.resample import owned

    assert resampled_leftovers(tmp_path, "um_futures", "all") == []
    for name in ("SP0_BTCUSDT.pqt", "BTCUSDT.pqt", "ETHUSDT.pqt"):
        path = layout.resampled_dir(tmp_path, "um_futures", "1h", "5m") / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    # Files no run of the pipeline wrote (a legacy data dir's) are no leftovers of it.
    assert resampled_leftovers(tmp_path, "um_futures", "all") == []
    base = "results_data/um_futures/resampled_klines/1h/5m"
    owned.write(
        tmp_path, "um_futures", "BTCUSDT", [f"{base}/BTCUSDT.pqt", f"{base}/SP0_BTCUSDT.pqt"]
    )
    owned.write(tmp_path, "um_futures", "ETHUSDT", [f"{base}/ETHUSDT.pqt"])
    assert resampled_leftovers(tmp_path, "um_futures", ["BTCUSDT"]) == [
        "1h/5m/BTCUSDT.pqt",
        "1h/5m/SP0_BTCUSDT.pqt",
    ]
    assert len(resampled_leftovers(tmp_path, "um_futures", "all")) == 3
    assert resampled_leftovers(tmp_path, "spot", "all") == []
    # Written by a run before the ownership record existed: its tail-build record says so.
    owned.record_path(tmp_path, "um_futures", "ETHUSDT").unlink()
    assert resampled_leftovers(tmp_path, "um_futures", ["ETHUSDT"]) == []
    resume = layout.state_path(tmp_path, "resample_resume", "um_futures", "klines-5m", "ETHUSDT")
    io.write_json(resume, {"version": 1, "outputs": {f"{base}/ETHUSDT.pqt": [1, 2]}})
    assert resampled_leftovers(tmp_path, "um_futures", ["ETHUSDT"]) == ["1h/5m/ETHUSDT.pqt"]


def test_last_listed_symbols_for_all_are_those_of_the_last_listing(tmp_path):
    from crypto_lakehouse.plan import last_listed_symbols

    config = {"interval": "1m", "symbols": {"spot": ["ETHUSDT", "BTCUSDT"]}}
    assert last_listed_symbols(config, "spot", str(tmp_path)) == ["BTCUSDT", "ETHUSDT"]
    assert last_listed_symbols(config, "um_futures", str(tmp_path)) == "all"  # no listing
    index = layout.run_listing_index_path(str(tmp_path), "um_futures", "klines-1m")
    io.write_json(index, {"symbols": {"XRPUSDT": {}, "BTCUSDT": {}}})
    assert last_listed_symbols(config, "um_futures", str(tmp_path)) == ["BTCUSDT", "XRPUSDT"]


def test_run_resample_rejects_invalid_targets_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="does not divide"):
        run(tmp_path, "spot", "BTCUSDT", None, [{"interval": "1h", "offset_step": "7m"}])
    assert not (tmp_path / "lakehouse").exists()


def test_run_resample_bad_segment_fails_the_job_after_the_others(tmp_path):
    holed = series(T0, 120)
    holed["candle_begin_time"][60:] += MIN  # 01:00 missing
    bad = write_segment(tmp_path, "spot", "SP0_BTCUSDT", holed)
    good = write_segment(tmp_path, "spot", "BTCUSDT", series(T0 + 5 * DAY, 120))
    report = write_gen_report(
        tmp_path, "spot", "BTCUSDT", [("SP0_BTCUSDT", bad), ("BTCUSDT", good)]
    )
    with pytest.raises(
        ResampleValidationError,
        match=r"results_data/spot/klines/1m/SP0_BTCUSDT.pqt: .* after minute 2020-09-13T00:59:00Z",
    ):
        run(tmp_path, "spot", "BTCUSDT", report, [{"interval": "1h", "offset_step": "0m"}])
    out = tmp_path / "results_data" / "spot" / "resampled_klines" / "1h" / "0m"
    assert sorted(p.name for p in out.iterdir()) == ["BTCUSDT.pqt"]


def test_a_damaged_or_missing_segment_is_the_gen_kline_s_to_rebuild(tmp_path):
    # Not one more validation failure: the shard job removes the file and has gen_kline
    # rebuild it in the next run (shards.DamagedInput), which no validation failure does.
    from crypto_lakehouse.shards import DamagedInput

    seg = write_segment(tmp_path, "spot", "BTCUSDT", series(T0, 120))
    other = write_segment(tmp_path, "spot", "SP0_BTCUSDT", series(T0 - 5 * DAY, 120))
    report = write_gen_report(
        tmp_path, "spot", "BTCUSDT", [("SP0_BTCUSDT", other), ("BTCUSDT", seg)]
    )
    path = tmp_path / seg
    path.write_bytes(path.read_bytes()[:64])
    with pytest.raises(DamagedInput) as info:
        run(tmp_path, "spot", "BTCUSDT", report, [{"interval": "1h", "offset_step": "0m"}])
    assert info.value.stage == "gen_kline" and not info.value.missing
    assert info.value.path == str(path)
    out = tmp_path / "results_data" / "spot" / "resampled_klines" / "1h" / "0m"
    assert sorted(p.name for p in out.iterdir()) == ["SP0_BTCUSDT.pqt"]  # the others still run
    path.unlink()
    with pytest.raises(DamagedInput, match="written by gen_kline, is missing"):
        run(tmp_path, "spot", "BTCUSDT", report, [{"interval": "1h", "offset_step": "0m"}])


def _outputs_written_at_once(tmp_path, monkeypatch, fsync: bool):
    """Two segments to 1h at every 5m offset and 5m (26 outputs): the most outputs being
    written at the same time, whether the report existed while any was, and the files."""
    import threading
    import time as clock

    from crypto_lakehouse.resample import job

    data_dir = tmp_path / ("fsync" if fsync else "nofsync")
    seg_old = write_segment(data_dir, "um_futures", "SP0_BTCUSDT", series(T0, 300, {0: 1e-4}))
    seg_new = write_segment(data_dir, "um_futures", "BTCUSDT", series(T0 + 5 * DAY, 400))
    report = write_gen_report(
        data_dir, "um_futures", "BTCUSDT", [("SP0_BTCUSDT", seg_old), ("BTCUSDT", seg_new)]
    )
    report_path = data_dir / "lakehouse" / "reports" / "resample" / "BTCUSDT.json"
    lock, running, seen = threading.Lock(), [0], {"most": 0, "report_before": False}
    write_output = job.write_output

    def counted(path, table, metadata):
        with lock:
            running[0] += 1
            seen["most"] = max(seen["most"], running[0])
        clock.sleep(0.02)  # an fsync on a busy disk
        write_output(path, table, metadata)
        with lock:
            running[0] -= 1
            seen["report_before"] |= report_path.exists()

    monkeypatch.setattr(job, "write_output", counted)
    io.configure(fsync=fsync)
    try:
        targets = [{"interval": "1h", "offset_step": "5m"}, {"interval": "5m", "offset_step": "0m"}]
        stats = run(data_dir, "um_futures", "BTCUSDT", report, targets)
    finally:
        io.configure(fsync=True)
    assert stats["files_written"] == 26
    base = data_dir / "results_data" / "um_futures" / "resampled_klines"
    files = {f: (base / f).read_bytes() for f in _files(base)}
    return seen, files, json.loads(report_path.read_text())


def test_a_full_build_writes_its_outputs_a_few_at_a_time_with_fsync(tmp_path, monkeypatch):
    """Each output waited for its fsync before the next was computed (13 per segment, one
    after another); locally with fsync on they are written LOCAL_OUTPUTS_AT_ONCE at a time,
    all before the report. Without fsync, one after another as before: the same bytes."""
    from crypto_lakehouse.resample import job

    at_once, files, report = _outputs_written_at_once(tmp_path, monkeypatch, fsync=True)
    assert at_once == {"most": job.LOCAL_OUTPUTS_AT_ONCE, "report_before": False}
    one, files_one, report_one = _outputs_written_at_once(tmp_path, monkeypatch, fsync=False)
    assert one == {"most": 1, "report_before": False}
    assert files == files_one and len(files) == 26
    assert report == report_one


def test_a_failed_output_write_fails_the_symbol_after_the_others(tmp_path, monkeypatch):
    """A write failing on its thread fails the symbol as one failing in line did: the
    exception is raised, no report is written, and no write is left running."""
    import threading

    from crypto_lakehouse.resample import job

    seg = write_segment(tmp_path, "spot", "BTCUSDT", series(T0, 300))
    report = write_gen_report(tmp_path, "spot", "BTCUSDT", [("BTCUSDT", seg)])
    write_output, done = job.write_output, []

    def disk_full_at_15m(path, table, metadata):
        if path.parent.name == "15m":
            raise OSError(28, "No space left on device")
        write_output(path, table, metadata)
        done.append(path.parent.name)

    monkeypatch.setattr(job, "write_output", disk_full_at_15m)
    with pytest.raises(OSError, match="No space left"):
        run(tmp_path, "spot", "BTCUSDT", report, [{"interval": "1h", "offset_step": "5m"}])
    assert not (tmp_path / "lakehouse" / "reports" / "resample" / "BTCUSDT.json").exists()
    assert [t.name for t in threading.enumerate() if t.name.startswith("resample-write")] == []
    assert "0m" in done and "15m" not in done
