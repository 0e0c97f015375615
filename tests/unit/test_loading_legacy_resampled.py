"""Resampled files of a legacy data dir used in place that the resample job keeps (a target
or offset the config does not list; ``kept`` in its report) are not served silently:
load_klines with ``resample`` warns (or raises, or says nothing, as asked) naming them, and
duckdb_connect warns and lists them in its table ``stale_resampled_klines``. The kept files
are legacy BHDS V1's real ones, kept by the real resample job (as tests/unit/test_resample.py
does)."""

from __future__ import annotations

import json
import shutil
import warnings

import pytest

import crypto_lakehouse
from crypto_lakehouse import layout, storage
from crypto_lakehouse.loading import (
    LegacyResampledError,
    LegacyResampledWarning,
    StaleDataError,
    StaleDataWarning,
)
from crypto_lakehouse.resample import job
from tests.unit.test_resample import _legacy_dir, run, write_gen_report

LEGACY_1H_5M = "results_data/um_futures/resampled_klines/1h/5m/BTCUSDT.pqt"
ONLY_1H_0M = [{"interval": "1h", "offset_step": "0m"}]


@pytest.fixture
def legacy_data(tmp_path):
    """Legacy V1's um_futures results_data used in place; the resample job run with only
    1h/0m configured keeps legacy's 1h files at the other 11 offsets and its 5m/0m file."""
    _legacy_dir(tmp_path, "um_futures")
    seg = "results_data/um_futures/klines/1m/BTCUSDT.pqt"  # legacy's generated file
    report = write_gen_report(tmp_path, "um_futures", "BTCUSDT", [("BTCUSDT", seg)])
    run(tmp_path, "um_futures", "BTCUSDT", report, ONLY_1H_0M)
    rep = json.loads((tmp_path / "lakehouse/reports/resample/BTCUSDT.json").read_text())
    assert LEGACY_1H_5M in rep["kept"] and len(rep["kept"]) == 12
    return tmp_path, report


def test_load_klines_of_a_kept_legacy_file_warns_naming_it(legacy_data):
    data, _ = legacy_data
    with pytest.warns(LegacyResampledWarning) as caught:
        frame = crypto_lakehouse.load_klines(data, "um_futures", "BTCUSDT", resample="1h",
                                             offset="5m")  # fmt: skip
    assert len(caught) == 1 and isinstance(caught[0].message, StaleDataWarning)
    message = str(caught[0].message)
    assert str(data / LEGACY_1H_5M) in message and "did not write" in message
    assert len(frame) > 0  # the data still comes back
    # The configured target the pipeline wrote: nothing said.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        crypto_lakehouse.load_klines(data, "um_futures", "BTCUSDT", resample="1h")
    # The base klines here are legacy's own file (no gen_kline ran in this fixture): told
    # by its metadata as a file no run wrote, not as a kept resampled file.
    with pytest.warns(crypto_lakehouse.LegacyUnownedWarning, match="klines/1m/BTCUSDT.pqt"):
        crypto_lakehouse.load_klines(data, "um_futures", "BTCUSDT")


def test_stale_raise_refuses_and_ignore_is_silent(legacy_data):
    data, _ = legacy_data
    with pytest.raises(LegacyResampledError, match="5m/0m/BTCUSDT.pqt") as raised:
        crypto_lakehouse.load_klines(data, "um_futures", "BTCUSDT", resample="5m",
                                     stale="raise")  # fmt: skip
    assert isinstance(raised.value, StaleDataError)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        crypto_lakehouse.load_klines(data, "um_futures", "BTCUSDT", resample="5m",
                                     stale="ignore")  # fmt: skip
    with pytest.raises(ValueError, match="stale='loud'"):
        crypto_lakehouse.load_klines(data, "um_futures", "BTCUSDT", stale="loud")


def test_duckdb_connect_warns_and_lists_the_kept_files_with_the_views_columns(legacy_data):
    data, _ = legacy_data
    # The fixture's 1m file is legacy's own, so the connection also tells it apart.
    with (
        pytest.warns(crypto_lakehouse.LegacyUnownedWarning, match="klines/1m/BTCUSDT.pqt"),
        pytest.warns(LegacyResampledWarning, match="table stale_resampled_klines lists"),
    ):
        con = crypto_lakehouse.duckdb_connect(data)
    rows = con.sql(
        'SELECT view, trade_type, interval, "offset", symbol, segment, file '
        "FROM stale_resampled_klines ORDER BY file"
    ).fetchall()
    assert len(rows) == 12
    assert ("resampled_klines", "um_futures", "1h", "5m", "BTCUSDT", 0,
            str(data.absolute() / LEGACY_1H_5M)) in rows  # fmt: skip
    assert not any(r[2] == "1h" and r[3] == "0m" for r in rows)  # the pipeline's
    # The table leaves them out of a query on the view.
    current = con.sql(
        'SELECT DISTINCT interval, "offset" FROM resampled_klines v WHERE NOT EXISTS '
        "(SELECT 1 FROM stale_resampled_klines s WHERE s.interval = v.interval "
        'AND s."offset" = v."offset" AND s.symbol = v.symbol AND s.segment = v.segment)'
    ).fetchall()
    assert current == [("1h", "0m")]
    assert con.sql("SELECT count(*) FROM stale_features").fetchall() == [(0,)]
    with pytest.raises(LegacyResampledError):
        crypto_lakehouse.duckdb_connect(data, stale="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        con = crypto_lakehouse.duckdb_connect(data, stale="ignore")
    assert con.sql("SELECT count(*) FROM stale_resampled_klines").fetchall() == [(12,)]


def test_once_the_kept_files_are_gone_the_record_goes_with_the_next_run(legacy_data):
    data, report = legacy_data
    record = layout.stale_resampled_path(data, "um_futures", "BTCUSDT")
    assert record.exists()
    base = data / "results_data/um_futures/resampled_klines"
    for path in base.rglob("*.pqt"):
        if path.parent != base / "1h" / "0m":  # the user removes legacy's files
            path.unlink()
    run(data, "um_futures", "BTCUSDT", report, ONLY_1H_0M)
    assert not record.exists()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        con = crypto_lakehouse.duckdb_connect(data)
        crypto_lakehouse.load_klines(data, "um_futures", "BTCUSDT", resample="1h")
    # Only the base file, legacy's own in this fixture (no gen_kline ran), is still told.
    assert [type(w.message) for w in caught] == [crypto_lakehouse.LegacyUnownedWarning]
    assert con.sql("SELECT count(*) FROM stale_resampled_klines").fetchall() == [(0,)]
    assert con.sql("SELECT view FROM unowned_files").fetchall() == [("klines",)]


def test_a_configured_target_makes_the_legacy_files_the_pipelines(legacy_data):
    # 5m/0m added to the config: the pipeline rewrites it, it is no longer kept.
    data, report = legacy_data
    run(data, "um_futures", "BTCUSDT", report,
        [*ONLY_1H_0M, {"interval": "5m", "offset_step": "0m"}])  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        crypto_lakehouse.load_klines(data, "um_futures", "BTCUSDT", resample="5m")
    with pytest.warns(LegacyResampledWarning):  # 1h/5m still legacy's
        crypto_lakehouse.load_klines(data, "um_futures", "BTCUSDT", resample="1h", offset="5m")


def test_on_s3_a_resampled_load_asks_one_listing_more_and_warns_as_locally(s3_root):
    """On an s3:// data dir: the record is found, and looking for it costs a resampled
    load one listing of the symbol's record folder (no record: nothing else); a load
    without ``resample`` asks nothing more."""
    from tests.unit.test_loading_while_writing import candles as minute_candles
    from tests.unit.test_loading_while_writing import put

    root = storage.data_path(s3_root)
    table = minute_candles(1_704_067_200_000, 1440)
    for symbol in ("AAAUSDT", "BBBUSDT"):
        put(layout.resampled_dir(root, "spot", "1h", "0m") / f"{symbol}.pqt", table)
        put(layout.results_klines_dir(root, "spot", "1m") / f"{symbol}.pqt", table)
    kept = "results_data/spot/resampled_klines/1h/0m/AAAUSDT.pqt"
    storage.write_json(layout.stale_resampled_path(root, "spot", "AAAUSDT"),
                       job.kept_record("spot", "AAAUSDT", [kept]))  # fmt: skip

    def requests(**kwargs) -> dict[str, int]:
        storage.request_stats(reset=True)
        crypto_lakehouse.load_klines(s3_root, "spot", "BBBUSDT", **kwargs)
        return {k: v["count"] for k, v in storage.request_stats(reset=True).items()}

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ignored, told = requests(resample="1h", stale="ignore"), requests(resample="1h")
        assert requests(stale="ignore") == requests()
    assert told == {**ignored, "list": ignored["list"] + 1}
    with pytest.warns(LegacyResampledWarning, match=str(root / kept)):
        crypto_lakehouse.load_klines(s3_root, "spot", "AAAUSDT", resample="1h")
    with pytest.warns(LegacyResampledWarning, match="table stale_resampled_klines lists"):
        con = crypto_lakehouse.duckdb_connect(s3_root)
    assert con.sql("SELECT view, symbol, file FROM stale_resampled_klines").fetchall() == [
        ("resampled_klines", "AAAUSDT", str(root / kept))
    ]


def test_the_record_is_written_and_removed_only_when_the_kept_files_change(tmp_path, monkeypatch):
    # The ownership record notes which kept files are recorded for the loaders: a symbol
    # without legacy files (every symbol of a data dir the pipeline made) never asks to
    # delete a record, and one whose kept files stay the same does not write it again (on
    # S3 each a request per symbol per run); a change writes or removes it once.
    from tests.unit.test_resample import T0, series, write_segment

    asked = []
    delete, write_json = storage.delete, storage.write_json

    def recording_delete(path, *args, **kwargs):
        asked.append(("delete", path))
        return delete(path, *args, **kwargs)

    def recording_write_json(path, *args, **kwargs):
        asked.append(("write", path))
        return write_json(path, *args, **kwargs)

    monkeypatch.setattr(storage, "delete", recording_delete)
    monkeypatch.setattr(storage, "write_json", recording_write_json)
    seg = write_segment(tmp_path, "spot", "BTCUSDT", series(T0, 120))
    report = write_gen_report(tmp_path, "spot", "BTCUSDT", [("BTCUSDT", seg)])
    record = layout.stale_resampled_path(tmp_path, "spot", "BTCUSDT")

    def runs(n: int) -> list[str]:
        asked.clear()
        for _ in range(n):
            run(tmp_path, "spot", "BTCUSDT", report, ONLY_1H_0M)
        return [what for what, path in asked if path == record]

    assert runs(2) == [] and not record.exists()
    legacy = layout.resampled_dir(tmp_path, "spot", "4h", "0m") / "BTCUSDT.pqt"
    pipelines = layout.resampled_dir(tmp_path, "spot", "1h", "0m") / "BTCUSDT.pqt"
    storage.write_bytes(legacy, pipelines.read_bytes())  # a legacy file at another target
    assert runs(2) == ["write"] and record.exists()
    second = layout.resampled_dir(tmp_path, "spot", "4h", "1h") / "BTCUSDT.pqt"
    storage.write_bytes(second, pipelines.read_bytes())
    assert runs(2) == ["write"]
    assert sorted(json.loads(record.read_text())["files"]) == [
        "results_data/spot/resampled_klines/4h/0m/BTCUSDT.pqt",
        "results_data/spot/resampled_klines/4h/1h/BTCUSDT.pqt",
    ]
    legacy.unlink()
    second.unlink()
    assert runs(2) == ["delete"] and not record.exists()


def test_a_job_killed_while_writing_the_record_leaves_it_to_a_later_run(tmp_path, monkeypatch):
    # The ownership record says a record may exist before it is written: a job killed
    # then, whose legacy file goes before the next run, still has the record removed.
    from tests.unit.test_resample import T0, series, write_segment

    seg = write_segment(tmp_path, "spot", "BTCUSDT", series(T0, 120))
    report = write_gen_report(tmp_path, "spot", "BTCUSDT", [("BTCUSDT", seg)])
    run(tmp_path, "spot", "BTCUSDT", report, ONLY_1H_0M)
    record = layout.stale_resampled_path(tmp_path, "spot", "BTCUSDT")
    legacy = layout.resampled_dir(tmp_path, "spot", "4h", "0m") / "BTCUSDT.pqt"
    storage.write_bytes(legacy, b"legacy's")
    write_json = storage.write_json

    def killed_after_the_record(path, *args, **kwargs):
        write_json(path, *args, **kwargs)
        if path == record:
            raise KeyboardInterrupt  # the job is killed

    with monkeypatch.context() as patch:
        patch.setattr(storage, "write_json", killed_after_the_record)
        with pytest.raises(KeyboardInterrupt):
            run(tmp_path, "spot", "BTCUSDT", report, ONLY_1H_0M)
    assert record.exists()
    legacy.unlink()
    run(tmp_path, "spot", "BTCUSDT", report, ONLY_1H_0M)
    assert not record.exists()


def test_a_record_deleted_by_hand_is_written_again_by_the_next_run(tmp_path):
    # The kept files stay the same, so the ownership record's digest says "recorded":
    # before 2026-12-07 the next runs did not write it again (the loaders stayed silent
    # until the kept files changed). Inside a shard job the records are listed once for
    # all of its symbols, not asked per symbol.
    from crypto_lakehouse.resample import owned
    from tests.unit.test_resample import T0, series, write_segment

    reports = {}
    for symbol in ("AAAUSDT", "BBBUSDT"):
        seg = write_segment(tmp_path, "spot", symbol, series(T0, 120))
        reports[symbol] = write_gen_report(tmp_path, "spot", symbol, [(symbol, seg)])
        run(tmp_path, "spot", symbol, reports[symbol], ONLY_1H_0M)
        pipelines = layout.resampled_dir(tmp_path, "spot", "1h", "0m") / f"{symbol}.pqt"
        legacy = layout.resampled_dir(tmp_path, "spot", "4h", "0m") / f"{symbol}.pqt"
        storage.write_bytes(legacy, pipelines.read_bytes())  # a legacy file at another target
        run(tmp_path, "spot", symbol, reports[symbol], ONLY_1H_0M)
    records = {s: layout.stale_resampled_path(tmp_path, "spot", s) for s in reports}
    assert all(r.exists() for r in records.values())
    first = records["AAAUSDT"].read_bytes()
    records["AAAUSDT"].unlink()  # one symbol's record
    run(tmp_path, "spot", "AAAUSDT", reports["AAAUSDT"], ONLY_1H_0M)
    assert json.loads(records["AAAUSDT"].read_bytes())["files"] == json.loads(first)["files"]
    assert owned.read_record_and_mark(tmp_path, "spot", "AAAUSDT")[1] is not None

    shutil.rmtree(layout.stale_features_root(tmp_path))  # the whole folder
    listed = []
    list_files = storage.list_files

    def recording_list_files(path, *args, **kwargs):
        listed.append(path)
        return list_files(path, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(storage, "list_files", recording_list_files)
        with layout.folders_scanned_once():  # one shard job's symbols
            for symbol, report in reports.items():
                run(tmp_path, "spot", symbol, report, ONLY_1H_0M)
    assert all(r.exists() for r in records.values())
    assert listed.count(layout.stale_features_root(tmp_path, "spot")) == 1


def test_a_symbol_whose_record_is_gone_is_not_skipped_as_unchanged(tmp_path):
    # The rule's skip of unchanged inputs checked the outputs only: with the record deleted
    # by hand and the inputs as they were, the rerun the start's check asks for
    # (data_presence) skipped the symbol, and the record stayed gone.
    from crypto_lakehouse.jobs import run_resample_rule
    from tests.unit.test_resample import T0, series, write_segment

    seg = write_segment(tmp_path, "spot", "BTCUSDT", series(T0, 120))
    report = write_gen_report(tmp_path, "spot", "BTCUSDT", [("BTCUSDT", seg)])
    legacy = layout.resampled_dir(tmp_path, "spot", "4h", "0m") / "BTCUSDT.pqt"

    def rule() -> dict:
        return run_resample_rule(
            gen_report=report,
            report_path=tmp_path / "run/resample/BTCUSDT.json",
            stats_path=tmp_path / "run/resample/BTCUSDT.stats.json",
            trade_type="spot",
            symbol="BTCUSDT",
            interval="1m",
            data_dir=str(tmp_path),
            targets=ONLY_1H_0M,
            aggregations={},
        )

    storage.write_bytes(legacy, b"legacy's")  # there before the first run; kept as it is
    rule()
    record = layout.stale_resampled_path(tmp_path, "spot", "BTCUSDT")
    assert record.exists()
    assert rule().get("skipped_unchanged") == 1  # nothing changed: skipped
    record.unlink()
    assert not rule().get("skipped_unchanged")
    assert record.exists()
    assert rule().get("skipped_unchanged") == 1
