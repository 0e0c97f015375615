"""Tail builds of the feature files (issue 11): when gen_kline grew a 1m file by a tail build,
the features of its leading blocks are kept and only the last block and the new rows are
computed; the files are byte for byte those of a full build of the same inputs."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import talib

from crypto_lakehouse import layout
from crypto_lakehouse.features import job as features_job
from crypto_lakehouse.features import run_features
from crypto_lakehouse.features.microstructure import compute_microstructure
from crypto_lakehouse.generate import parquet_append
from crypto_lakehouse.resample import tail as resample_tail
from tests.unit import test_generate_tail as gt
from tests.unit.test_features_job import DEFAULTS

BLOCK = 2048
RESAMPLED_BLOCK = 64
WINDOWS = [60, 15]


@pytest.fixture(autouse=True)
def small_row_groups(monkeypatch):
    monkeypatch.setattr(parquet_append, "ROW_GROUP_ROWS", 5000)
    monkeypatch.setattr(resample_tail, "ROW_GROUP_ROWS", 1000)
    monkeypatch.setattr(features_job, "BLOCK_ROWS", BLOCK)
    monkeypatch.setattr(features_job, "RESAMPLED_BLOCK_ROWS", RESAMPLED_BLOCK)


def features(data: Path) -> dict:
    rep = data / "rep"
    return run_features(
        trade_type=gt.TT,
        interval="1m",
        data_dir=data,
        symbols=[gt.SYM],
        gen_reports=[str(rep / "report.json")],
        resample_reports=[str(rep / "resample.json")],
        indicators=DEFAULTS,
        windows=WINDOWS,
        report_path=rep / "features.json",
        stats_path=rep / "features_stats.json",
    )


def feature_files(data: Path) -> dict[str, bytes]:
    root = data / "results_data" / gt.TT
    found = sorted(root.glob("features/**/*.pqt")) + sorted(
        root.glob("resampled_features/**/*.pqt")
    )
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in found}


def build(data: Path, archive_days: int) -> None:
    """gen_kline and resample (incremental) on the archive's first ``archive_days`` days and
    REST until noon of the next day."""
    gt.write_state(
        data, gt.master(), archive_days, gt.T0 + archive_days * gt.DAY + 12 * gt.HOUR, gt.RATES
    )
    gt.gen(data, incremental=True)
    gt.resample(data, incremental=True)


def full_build_copy(inc: Path, ref: Path) -> None:
    """``ref``: ``inc`` with no features state (its next features run is a full build)."""
    shutil.copytree(inc, ref)
    layout.state_path(ref, "features", gt.TT, "klines-1m", gt.SYM).unlink()


def test_a_grown_1m_file_keeps_its_leading_blocks_and_matches_a_full_build(tmp_path, monkeypatch):
    inc, ref = tmp_path / "inc", tmp_path / "ref"
    build(inc, 8)
    first = features(inc)
    n_files = len(feature_files(inc))
    assert first["files_by_mode"] == {"kept": 0, "tail": 0, "full": n_files}
    build(inc, 9)  # one more archive day: gen_kline's tail build
    full_build_copy(inc, ref)

    kept = {}  # feature file (below results_data/{T}) -> (row groups kept, rows per group)
    append_rows = parquet_append.append_rows

    def spy(path, previous, keep_groups, *args, **kwargs):
        name = Path(path).relative_to(inc / "results_data" / gt.TT).as_posix()
        kept[name] = (keep_groups, kwargs["rows_per_group"])
        return append_rows(path, previous, keep_groups, *args, **kwargs)

    monkeypatch.setattr(parquet_append, "append_rows", spy)
    stats = features(inc)
    # The 1m file (gen_kline's tail build) in blocks of BLOCK rows, the 5m and 1h files
    # (resample's) in blocks of RESAMPLED_BLOCK; the 1d files are shorter than a block.
    one_minute = f"features/1m/{gt.SYM}.pqt"
    assert kept[one_minute][0] >= 5 and kept[one_minute][1] == BLOCK
    assert kept[f"resampled_features/5m/0m/{gt.SYM}.pqt"][0] >= 10
    assert sum(name.startswith("resampled_features/1h/") for name in kept) == 4
    assert stats["files_by_mode"] == {"kept": 0, "tail": len(kept), "full": n_files - len(kept)}
    # Only the rows from the first block not kept on were computed.
    kept_rows = sum(groups * size for groups, size in kept.values())
    assert stats["rows_computed"] == stats["rows_written"] - kept_rows

    reference = features(ref)
    assert reference["files_by_mode"]["tail"] == 0
    got, want = feature_files(inc), feature_files(ref)
    assert got.keys() == want.keys()
    for name in want:
        assert got[name] == want[name], name

    # Nothing changed since: every file is kept, the symbol skipped as unchanged.
    assert features(inc)["skipped_unchanged"] == 1


def test_a_changed_feature_file_or_a_full_gen_kline_build_means_a_full_build(tmp_path):
    inc, ref = tmp_path / "inc", tmp_path / "ref"
    build(inc, 8)
    features(inc)
    build(inc, 9)
    full_build_copy(inc, ref)
    features(ref)
    # The feature files were touched since the last build (verify --remove and a rebuild,
    # a copy): their identity differs, so nothing of them is trusted.
    for path in (inc / "results_data" / gt.TT).glob("*features/**/*.pqt"):
        path.write_bytes(path.read_bytes())
    stats = features(inc)
    assert stats["files_by_mode"]["tail"] == 0
    assert feature_files(inc) == feature_files(ref)

    # gen_kline rebuilt the 1m file in full (no tail record for this version): full build.
    build(inc, 10)
    gt.gen(inc, incremental=False)
    gt.resample(inc, incremental=True)
    assert features(inc)["files_by_mode"]["tail"] == 0


@pytest.mark.parametrize(
    ("candles_rel", "block"),
    [(f"klines/1m/{gt.SYM}.pqt", BLOCK), (f"resampled_klines/5m/0m/{gt.SYM}.pqt", RESAMPLED_BLOCK)],
)
def test_blocks_give_talib_exactly_and_the_single_pass_microstructure(tmp_path, candles_rel, block):
    """Indicators are TA-Lib's on the whole series, bit for bit; the microstructure, which
    restarts pandas' running sums at each block (here also blocks shorter than the 60-candle
    window), equals the single pass up to rounding; every row group is one block."""
    data = tmp_path / "d"
    build(data, 8)
    features(data)
    root = data / "results_data" / gt.TT
    feature_rel = candles_rel.replace("klines/", "features/", 1)
    feat = pq.read_table(root / feature_rel)
    c = pq.read_table(root / candles_rel).to_pandas()
    assert feat.num_rows == len(c) > 5 * block
    close = c["close"].to_numpy(np.float64)
    np.testing.assert_array_equal(feat["ema_200"].to_numpy(), talib.EMA(close, 200))
    np.testing.assert_array_equal(feat["rsi_14"].to_numpy(), talib.RSI(close, 14))
    np.testing.assert_array_equal(
        feat["macd_signal_12_26_9"].to_numpy(), talib.MACD(close, 12, 26, 9)[1]
    )
    candles = {k: c[k].to_numpy(np.float64) for k in features_job.INPUT_COLUMNS}
    vwap = c["avg_price_1m"]
    if candles_rel.startswith("resampled_"):  # each window against its own VWAP
        own = (c["quote_volume"] / c["volume"]).where(c["volume"] > 0, c["open"])
        vwap = own.clip(c["low"], c["high"])
    single = compute_microstructure(
        candles, WINDOWS, candles["quote_volume"], vwap.to_numpy(np.float64)
    )
    for name, expected in single.items():
        got = feat[name].to_numpy()
        np.testing.assert_array_equal(np.isnan(got), np.isnan(expected), err_msg=name)
        np.testing.assert_allclose(
            got, expected, rtol=1e-9, atol=1e-15, equal_nan=True, err_msg=name
        )
    meta = pq.ParquetFile(root / feature_rel).metadata
    sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    assert sizes[:-1] == [block] * (len(sizes) - 1) and 0 < sizes[-1] <= block


def test_a_build_killed_mid_way_rebuilds_in_full_only_the_files_it_rewrote(tmp_path, monkeypatch):
    """The state of a symbol whose features build was killed keeps the previous build's
    per-file records (but no fingerprint): the rerun tail-builds the files the killed
    build had not reached, rebuilds the one it rewrote in full, and equals a full build.
    Before, the state was deleted when the build started, and the rerun built every file
    in full."""
    inc, ref = tmp_path / "inc", tmp_path / "ref"
    build(inc, 8)
    n_files = features(inc)["files_by_mode"]["full"]
    build(inc, 9)  # one more archive day: gen_kline's and resample's tail builds
    full_build_copy(inc, ref)
    shutil.copytree(inc, tmp_path / "not-killed")
    normal = features(tmp_path / "not-killed")["files_by_mode"]
    assert normal["tail"] >= 5 and normal["kept"] == 0

    class Killed(BaseException):  # as a SIGKILL: nothing of the job's own handling runs
        pass

    written = []
    write_features = features_job._write_features

    def killed_on_the_second_file(source, path, *args, **kwargs):
        if written:
            raise Killed
        written.append(path)
        return write_features(source, path, *args, **kwargs)

    monkeypatch.setattr(features_job, "_write_features", killed_on_the_second_file)
    with pytest.raises(Killed):
        features(inc)
    monkeypatch.setattr(features_job, "_write_features", write_features)
    assert len(written) == 1
    rerun = features(inc)
    # The rewritten file's identity no longer matches its record: in full; the others as
    # in a run that was not killed.
    assert rerun["files_by_mode"] == {
        "kept": 0,
        "tail": normal["tail"] - 1,
        "full": normal["full"] + 1,
    }, (rerun["files_by_mode"], normal)
    assert sum(rerun["files_by_mode"].values()) == n_files
    features(ref)
    got, want = feature_files(inc), feature_files(ref)
    assert got.keys() == want.keys()
    for name in want:
        assert got[name] == want[name], name
    assert features(inc)["skipped_unchanged"] == 1
