"""Klines and features no run of this pipeline wrote are not served silently: a legacy data
dir used in place holds files of symbols the config does not list (or no longer lists), which
no job of a run touches, so no record names them. The loaders tell them by the files' own
Parquet metadata (every writer of the pipeline puts in a key legacy's files lack,
``loading.PIPELINE_STAMP``): ``LegacyUnownedWarning`` (or ``LegacyUnownedError`` / nothing, as
``stale=`` asks), at no request more. The legacy files are legacy BHDS V1's real ones; the
pipeline's are written by the real gen_kline, resample and features jobs."""

from __future__ import annotations

import json
import shutil
import warnings

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import crypto_lakehouse
from crypto_lakehouse import layout, loading, storage
from crypto_lakehouse.loading import (
    LegacyResampledWarning,
    LegacyUnownedError,
    LegacyUnownedWarning,
    StaleDataError,
    StaleDataWarning,
)
from tests.unit.test_features_job import features
from tests.unit.test_generate_job import T0, gen, kline_table, minutes, write_archive
from tests.unit.test_resample import LEGACY_RESULTS, run

T = "um_futures"
LEGACY_1M = f"results_data/{T}/klines/1m/BTCUSDT.pqt"
LEGACY_1H_15M = f"results_data/{T}/resampled_klines/1h/15m/BTCUSDT.pqt"
ONLY_1H_0M = [{"interval": "1h", "offset_step": "0m"}]


def build_aaa(data) -> dict[str, tuple]:
    """AAAUSDT (configured) built by the real jobs: gen_kline from two days of archive
    candles, resample to 1h/0m, features of both."""
    write_archive(data, T, "AAAUSDT", "20200913", kline_table(minutes(T0, 2 * 1440)))
    gen(data, T, "AAAUSDT", with_funding_rates=False)
    gen_report = data / "lakehouse/reports/AAAUSDT.json"
    run(data, T, "AAAUSDT", gen_report, ONLY_1H_0M)
    reports = {"AAAUSDT": (str(gen_report), str(data / "lakehouse/reports/resample/AAAUSDT.json"))}
    features(data, ["AAAUSDT"], reports, trade_type=T)
    return reports


@pytest.fixture
def data(tmp_path):
    """Legacy V1's real um_futures results_data used in place: BTCUSDT, which the config
    does not list (no job of the run touches its files), beside AAAUSDT, which the real jobs
    built."""
    shutil.copytree(LEGACY_RESULTS / T, tmp_path / "results_data" / T)
    build_aaa(tmp_path)
    return tmp_path


def test_legacy_files_of_a_symbol_no_run_touches_warn_naming_them(data):
    with pytest.warns(StaleDataWarning) as caught:
        frame = crypto_lakehouse.load_klines(data, T, "BTCUSDT")
    assert len(caught) == 1 and isinstance(caught[0].message, LegacyUnownedWarning)
    message = str(caught[0].message)
    assert str(data / LEGACY_1M) in message and "did not write" in message
    assert "config's symbols" in message  # what makes the pipeline build it
    assert caught[0].filename == __file__  # points at the caller's line
    assert len(frame) > 0  # the data still comes back
    with pytest.warns(LegacyUnownedWarning, match="resampled_klines/1h/15m/BTCUSDT.pqt"):
        crypto_lakehouse.load_klines(data, T, "BTCUSDT", resample="1h", offset="15m")


def test_the_files_the_pipeline_wrote_say_nothing(data):
    # The real writers' files carry the key the loaders look for.
    for path, kind in (
        (layout.results_klines_dir(data, T, "1m") / "AAAUSDT.pqt", "klines"),
        (layout.resampled_dir(data, T, "1h", "0m") / "AAAUSDT.pqt", "klines"),
        (layout.features_dir(data, T, "1m") / "AAAUSDT.pqt", "features"),
        (layout.resampled_features_dir(data, T, "1h", "0m") / "AAAUSDT.pqt", "features"),
    ):
        assert loading.PIPELINE_STAMP[kind] in pq.read_schema(path).metadata, path
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(crypto_lakehouse.load_klines(data, T, "AAAUSDT")) == 2 * 1440
        assert len(crypto_lakehouse.load_klines(data, T, "AAAUSDT", resample="1h")) == 48
        assert len(crypto_lakehouse.load_features(data, T, "AAAUSDT")) == 2 * 1440
        assert len(crypto_lakehouse.load_features(data, T, "AAAUSDT", resample="1h")) == 48


def test_stale_raise_refuses_and_ignore_is_silent(data):
    with pytest.raises(LegacyUnownedError, match="klines/1m/BTCUSDT.pqt") as raised:
        crypto_lakehouse.load_klines(data, T, "BTCUSDT", stale="raise")
    assert isinstance(raised.value, StaleDataError)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        crypto_lakehouse.load_klines(data, T, "BTCUSDT", stale="ignore")
        crypto_lakehouse.load_klines(data, T, "BTCUSDT", resample="5m", stale="ignore")


def test_duckdb_connect_warns_and_lists_them_with_the_views_columns(data):
    with pytest.warns(LegacyUnownedWarning, match="table unowned_files lists them"):
        con = crypto_lakehouse.duckdb_connect(data)
    rows = con.sql(
        'SELECT view, trade_type, interval, "offset", symbol, segment, file FROM unowned_files '
        "ORDER BY file"
    ).fetchall()
    legacy = sorted((LEGACY_RESULTS / T).rglob("*.pqt"))  # BTCUSDT's: 1m, 5m/0m, 1h at 12
    assert len(rows) == len(legacy) == 14
    assert {r[4] for r in rows} == {"BTCUSDT"} and {r[5] for r in rows} == {0}
    assert ("klines", T, "1m", None, "BTCUSDT", 0, str(data.absolute() / LEGACY_1M)) in rows
    assert ("resampled_klines", T, "1h", "15m", "BTCUSDT", 0,
            str(data.absolute() / LEGACY_1H_15M)) in rows  # fmt: skip
    # What the table is for: the views' rows of the pipeline's files only.
    left = con.sql(
        "SELECT DISTINCT symbol FROM klines k WHERE NOT EXISTS (SELECT 1 FROM unowned_files u "
        "WHERE u.view = 'klines' AND u.symbol = k.symbol AND u.segment = k.segment)"
    ).fetchall()
    assert left == [("AAAUSDT",)]
    with pytest.raises(LegacyUnownedError):
        crypto_lakehouse.duckdb_connect(data, stale="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        con = crypto_lakehouse.duckdb_connect(data, stale="ignore")
    assert con.sql("SELECT count(*) FROM unowned_files").fetchall() == [(14,)]


def test_a_feature_file_no_run_wrote_warns(data):
    # Copied in, or another tool's: a features file of a symbol no run built.
    legacy = pq.read_table(data / LEGACY_1M).select(["candle_begin_time", "close"])
    path = layout.features_dir(data, T, "1m") / "BTCUSDT.pqt"
    pq.write_table(legacy, path)
    with pytest.warns(LegacyUnownedWarning, match="features/1m/BTCUSDT.pqt"):
        crypto_lakehouse.load_features(data, T, "BTCUSDT")


def test_a_kept_legacy_resampled_file_is_told_once_as_kept(tmp_path):
    # BTCUSDT configured (its resample job ran, 1h/0m only): its kept 1h/15m file is named by
    # the job's record (LegacyResampledWarning), not a second time by its metadata.
    shutil.copytree(LEGACY_RESULTS / T, tmp_path / "results_data" / T)
    from tests.unit.test_resample import write_gen_report

    report = write_gen_report(tmp_path, T, "BTCUSDT", [("BTCUSDT", LEGACY_1M)])
    run(tmp_path, T, "BTCUSDT", report, ONLY_1H_0M)
    with pytest.warns(StaleDataWarning) as caught:
        crypto_lakehouse.load_klines(tmp_path, T, "BTCUSDT", resample="1h", offset="15m")
    assert [type(w.message) for w in caught] == [LegacyResampledWarning]
    # The views: in stale_resampled_klines, not again in unowned_files (which has the base
    # file here: legacy's own, no gen_kline ran in this test).
    with pytest.warns(StaleDataWarning):
        con = crypto_lakehouse.duckdb_connect(tmp_path)
    assert con.sql("SELECT count(*) FROM stale_resampled_klines").fetchall() == [(12,)]
    assert con.sql("SELECT view, file FROM unowned_files").fetchall() == [
        ("klines", str(tmp_path.absolute() / LEGACY_1M))
    ]


def test_the_features_job_removes_resampled_feature_files_it_did_not_write(tmp_path):
    """Item of the same question: legacy BHDS has no features, but a data dir (or an
    earlier config) can hold feature files of resampled candles the pipeline did not write.
    The features job of a configured symbol does not keep them: it removes every feature file
    of the symbol it did not write in this run, in every resampled features folder (as
    docs/config.md says: resampled features follow the resampled files the pipeline writes),
    so load_features never reads one of a configured symbol."""
    reports = build_aaa(tmp_path)
    foreign = [
        layout.resampled_features_dir(tmp_path, T, "1h", "15m") / "AAAUSDT.pqt",
        layout.resampled_features_dir(tmp_path, T, "5m", "0m") / "SP0_AAAUSDT.pqt",
    ]
    legacy = pq.read_table(LEGACY_RESULTS / T / "resampled_klines/1h/15m/BTCUSDT.pqt")
    for path in foreign:
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(legacy, path)
    # The candle file changed (one more day): the symbol's features are built again.
    write_archive(tmp_path, T, "AAAUSDT", "20200915", kline_table(minutes(T0 + 2 * 86_400_000,
                                                                          1440)))  # fmt: skip
    gen(tmp_path, T, "AAAUSDT", with_funding_rates=False)
    run(tmp_path, T, "AAAUSDT", tmp_path / "lakehouse/reports/AAAUSDT.json", ONLY_1H_0M)
    features(tmp_path, ["AAAUSDT"], reports, trade_type=T, tag="y")
    assert [p for p in foreign if p.exists()] == []
    report = json.loads((tmp_path / "lakehouse/reports/features/y.json").read_text())
    rels = sorted(p.relative_to(tmp_path).as_posix() for p in foreign)
    assert report["symbols"]["AAAUSDT"]["removed"] == rels


def _put(path, table: pa.Table) -> None:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    storage.ensure_dir(storage.data_path(path).parent)
    storage.write_bytes(path, sink.getvalue().to_pybytes())


def test_on_s3_telling_a_file_no_run_wrote_asks_nothing_more(s3_root):
    """On an s3:// data dir the metadata comes with the footer the read takes anyway: a
    load of a file without the key asks exactly what a load of the pipeline's asks."""
    from tests.unit.test_loading_while_writing import candles as minute_candles

    root = storage.data_path(s3_root)
    table = minute_candles(1_704_067_200_000, 1440)
    _put(layout.results_klines_dir(root, "spot", "1m") / "OURSUSDT.pqt",
         table.replace_schema_metadata({"interval": "1m"}))  # fmt: skip
    _put(layout.results_klines_dir(root, "spot", "1m") / "LEGACYUSDT.pqt", table)

    def requests(symbol, **kwargs) -> dict[str, int]:
        storage.request_stats(reset=True)
        crypto_lakehouse.load_klines(s3_root, "spot", symbol, **kwargs)
        return {k: v["count"] for k, v in storage.request_stats(reset=True).items()}

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours = requests("OURSUSDT")
    with pytest.warns(LegacyUnownedWarning, match=str(root / "results_data/spot/klines/1m")):
        legacy = requests("LEGACYUSDT")
    assert legacy == ours == requests("LEGACYUSDT", stale="ignore")
    with pytest.warns(LegacyUnownedWarning):
        con = crypto_lakehouse.duckdb_connect(s3_root)
    assert con.sql("SELECT symbol, file FROM unowned_files").fetchall() == [
        ("LEGACYUSDT", str(root / "results_data/spot/klines/1m/LEGACYUSDT.pqt"))
    ]
