"""A stage's data folder deleted by hand under intact reports (crypto_lakehouse/data_presence.py):
the start removes the reports of the jobs that write it (and their stage's summary of the
trade type), says so in one line, and touches nothing else; a first run adopts; a dry run
changes nothing; a folder the last run left empty is not taken for a deletion."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from crypto_lakehouse import data_identity, data_presence, layout, storage
from tests.s3_helpers import weed_binary

GEN = "reports/gen_kline/spot/klines-1m/shards/0.json"
GEN_SYMBOL = "reports/gen_kline/spot/klines-1m/BTCUSDT.json"
GEN_SUMMARY = "summaries/gen_kline/spot.json"
PARSE = "reports/aws_parse/spot/klines-1m/shards/0.json"
PARSE_SUMMARY = "summaries/aws_parse/spot.json"
UM_GEN = "reports/gen_kline/um_futures/klines-1m/shards/0.json"
UM_GEN_SUMMARY = "summaries/gen_kline/um_futures.json"
API = "reports/api_download/um_futures/shards/0.json"
API_SUMMARY = "summaries/api_download/um_futures.json"
RECORDS = (GEN, GEN_SYMBOL, GEN_SUMMARY, PARSE, PARSE_SUMMARY, UM_GEN, UM_GEN_SUMMARY, API,
           API_SUMMARY)  # fmt: skip
DATA_FILES = (
    "parsed_data/spot/klines/BTCUSDT/1m/202402.pqt",
    "results_data/spot/klines/1m/BTCUSDT.pqt",
    "results_data/um_futures/klines/1m/BTCUSDT.pqt",
    "api_data/um_futures/funding_rate/BTCUSDT.pqt",
)


def _folders(data):
    return data_presence.stage_folders(
        str(data),
        ["spot", "um_futures"],
        "1m",
        resample_intervals={"spot": ["1h"]},
        features=True,
    )


def _built(tmp_path):
    """(data dir, run dir elsewhere) after a run: data files, reports, the record."""
    data, run_dir = tmp_path / "data", tmp_path / "run"
    for name in DATA_FILES:
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        (data / name).write_bytes(b"x")
    for name in RECORDS:
        (run_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / name).write_text("{}")
    data_presence.record(str(data), str(run_dir), _folders(data))
    return data, run_dir


def _present(run_dir: Path) -> set[str]:
    return {n for n in RECORDS if (run_dir / n).exists()}


def test_the_record_names_the_folders_that_hold_files(tmp_path):
    data, run_dir = _built(tmp_path)
    record = json.loads(Path(layout.data_folders_record_path(str(run_dir))).read_text())
    assert record["folders"] == [
        "api_data/um_futures/funding_rate",
        "parsed_data/spot/klines",
        "results_data/spot/klines/1m",
        "results_data/um_futures/klines/1m",
    ]


def test_nothing_deleted_removes_nothing(tmp_path):
    data, run_dir = _built(tmp_path)
    assert data_presence.check(str(data), str(run_dir), _folders(data), dry_run=False) is None
    assert _present(run_dir) == set(RECORDS)


def test_a_deleted_folder_reruns_its_jobs_only(tmp_path):
    data, run_dir = _built(tmp_path)
    for folder in ("results_data/spot/klines", "api_data"):
        for path in sorted((data / folder).rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        (data / folder).rmdir()
    line = data_presence.check(str(data), str(run_dir), _folders(data), dry_run=False)
    assert line is not None and "\n" not in line
    assert "results_data/spot/klines/1m" in line and "api_data/um_futures/funding_rate" in line
    assert "gen_kline spot/klines-1m" in line and "api_download um_futures" in line
    # Their shard reports and their stages' summaries of the trade type are gone; the
    # symbols' reports (what the jobs rebuild from) and everything else stay.
    assert _present(run_dir) == set(RECORDS) - {GEN, GEN_SUMMARY, API, API_SUMMARY}


def test_a_dry_run_says_so_and_changes_nothing(tmp_path):
    data, run_dir = _built(tmp_path)
    (data / "results_data/spot/klines/1m/BTCUSDT.pqt").unlink()
    (data / "results_data/spot/klines/1m").rmdir()
    line = data_presence.check(str(data), str(run_dir), _folders(data), dry_run=True)
    assert "a real run reruns gen_kline spot/klines-1m" in line
    assert _present(run_dir) == set(RECORDS)


def test_a_first_run_adopts_what_is_there(tmp_path):
    data, run_dir = _built(tmp_path)
    record = Path(layout.data_folders_record_path(str(run_dir)))
    record.unlink()
    (data / "results_data/spot/klines/1m/BTCUSDT.pqt").unlink()
    (data / "results_data/spot/klines/1m").rmdir()
    assert data_presence.check(str(data), str(run_dir), _folders(data), dry_run=False) is None
    assert _present(run_dir) == set(RECORDS)
    assert "results_data/spot/klines/1m" not in json.loads(record.read_text())["folders"]


def test_a_folder_the_last_run_left_empty_is_no_deletion(tmp_path):
    """The record is what the folders held when the run ended: a folder a job emptied
    itself (its symbols' files removed; on S3 the prefix is then gone) is not expected at
    the next start."""
    data, run_dir = _built(tmp_path)
    (data / "parsed_data/spot/klines/BTCUSDT/1m/202402.pqt").unlink()
    for empty in ("BTCUSDT/1m", "BTCUSDT", ""):
        (data / "parsed_data/spot/klines" / empty).rmdir()
    data_presence.record(str(data), str(run_dir), _folders(data))
    assert data_presence.check(str(data), str(run_dir), _folders(data), dry_run=False) is None
    assert _present(run_dir) == set(RECORDS)


def test_a_folder_no_longer_in_the_config_is_not_checked(tmp_path):
    data, run_dir = _built(tmp_path)
    (data / "results_data/um_futures/klines/1m/BTCUSDT.pqt").unlink()
    spot_only = [f for f in _folders(data) if f.trade_type == "spot"]
    assert data_presence.check(str(data), str(run_dir), spot_only, dry_run=False) is None
    assert _present(run_dir) == set(RECORDS)


def test_a_wiped_data_dir_drops_the_record(tmp_path):
    """data_identity removes the run dir's records of another data dir: this one too, so
    that the start does not name every folder a second time."""
    data, run_dir = _built(tmp_path)
    assert data_identity.check(str(data), str(run_dir), dry_run=False) is None
    marker = layout.data_identity_path(str(data))
    marker.unlink()
    assert "no marker" in data_identity.check(str(data), str(run_dir), dry_run=False)
    assert not Path(layout.data_folders_record_path(str(run_dir))).exists()


@pytest.mark.skipif(weed_binary() is None, reason="needs the weed binary")
def test_an_s3_folder_deleted_by_hand_costs_a_list_per_recorded_folder(tmp_path, s3_root):
    run_dir = tmp_path / "run"
    for name in RECORDS:
        (run_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / name).write_text("{}")
    for name in DATA_FILES:
        storage.write_bytes(storage.data_path(s3_root) / name, b"x")
    folders = _folders(s3_root)
    data_presence.record(s3_root, str(run_dir), folders)
    storage.request_stats(reset=True)
    assert data_presence.check(s3_root, str(run_dir), folders, dry_run=False) is None
    asked = storage.request_stats(reset=True)
    assert asked == {"list": asked["list"]} and asked["list"]["count"] == len(DATA_FILES)

    storage.delete(storage.data_path(s3_root) / "results_data/spot/klines/1m/BTCUSDT.pqt")
    storage.request_stats(reset=True)
    assert data_presence.check(s3_root, str(run_dir), folders, dry_run=True) is None  # no request
    assert storage.request_stats(reset=True) == {}
    line = data_presence.check(s3_root, str(run_dir), folders, dry_run=False)
    assert "(results_data/spot/klines/1m)" in line and s3_root in line
    assert _present(run_dir) == set(RECORDS) - {GEN, GEN_SUMMARY}


def _summary(run_dir: Path, name: str, totals: dict) -> None:
    (run_dir / name).write_text(json.dumps({"totals": totals}))


def test_a_start_without_a_record_finds_a_stage_whose_summary_counts_files(tmp_path):
    """The first start with this version: what was deleted before it is found where a
    stage's summary counts the files its symbols hold and none of its folders is there
    (the whole data dir wiped before that start included); a stage whose summary counts
    none (nothing to write) is left alone."""
    data, run_dir = _built(tmp_path)
    Path(layout.data_folders_record_path(str(run_dir))).unlink()
    _summary(run_dir, GEN_SUMMARY, {"files_held": 1, "files_written": 0})
    _summary(run_dir, UM_GEN_SUMMARY, {"files_held": 0, "files_written": 0})
    for name in ("results_data/spot/klines/1m/BTCUSDT.pqt",
                 "results_data/um_futures/klines/1m/BTCUSDT.pqt"):  # fmt: skip
        (data / name).unlink()
        (data / name).parent.rmdir()
    line = data_presence.check(str(data), str(run_dir), _folders(data), dry_run=False)
    assert "run dir's summaries say hold files" in line
    assert "(results_data/spot/klines/1m)" in line and "gen_kline spot/klines-1m" in line
    assert _present(run_dir) == set(RECORDS) - {GEN, GEN_SUMMARY}
    # Adopted: the next start compares with the record.
    assert data_presence.check(str(data), str(run_dir), _folders(data), dry_run=False) is None


def test_a_first_start_that_changes_the_interval_names_no_deletion(tmp_path):
    """The first start after the upgrade (no record) that also changes the base interval:
    the summaries count the 1m files, the 1h folders are not there yet, and their jobs have
    never run (no klines-1h reports). It said "deleted by hand?" and removed the summaries,
    though nothing was deleted; the 1h jobs run for the config change anyway."""
    data, run_dir = _built(tmp_path)
    Path(layout.data_folders_record_path(str(run_dir))).unlink()
    _summary(run_dir, GEN_SUMMARY, {"files_held": 1, "files_written": 0})
    _summary(run_dir, UM_GEN_SUMMARY, {"files_held": 1, "files_written": 0})
    hourly = data_presence.stage_folders(
        str(data), ["spot", "um_futures"], "1h", resample_intervals={"spot": ["4h"]},
        features=True,
    )  # fmt: skip
    assert not (data / "results_data/spot/klines/1h").exists()
    line = data_presence.check(str(data), str(run_dir), hourly, dry_run=False)
    assert line is None
    assert _present(run_dir) == set(RECORDS)
    # A folder of the interval the jobs did write, gone before that start, is still found.
    Path(layout.data_folders_record_path(str(run_dir))).unlink()
    shutil.rmtree(data / "results_data/spot/klines/1m")
    line = data_presence.check(str(data), str(run_dir), _folders(data), dry_run=False)
    assert "(results_data/spot/klines/1m)" in line and "deleted by hand?" in line


# The `datasets` target's folders and the Parquet records below lakehouse/ (2026-12-07).
DS_FILES = (
    "aws_data/data/futures/um/daily/aggTrades/BTCUSDT/BTCUSDT-aggTrades-2024-02-01.zip",
    "aws_data/data/futures/um/daily/markPriceKlines/BTCUSDT/1m/x.zip",
    "parsed_data/um_futures/aggTrades/BTCUSDT/20240201.pqt",
    "parsed_data/um_futures/markPriceKlines/BTCUSDT/1m/202402.pqt",
    "parsed_data/um_futures/agg_klines/BTCUSDT/5m/20240201.pqt",
    "lakehouse/quality/um_futures/1m/BTCUSDT.pqt",
    "lakehouse/quality/um_futures/1m/markPriceKlines/BTCUSDT.pqt",
    "lakehouse/provenance/um_futures/1m/BTCUSDT.pqt",
)
DS_REPORTS = {
    name: f"reports/{name}/shards/0.json"
    for name in ("aws_download/um_futures/aggTrades", "aws_parse/um_futures/aggTrades",
                 "aws_download/um_futures/markPriceKlines-1m",
                 "aws_parse/um_futures/markPriceKlines-1m", "agg_klines/um_futures/aggTrades-5m",
                 "aws_parse/um_futures/klines-1m", "aws_download/um_futures/klines-1m")
}  # fmt: skip
DS_REPORTS["api_download/um_futures"] = API
DS_SUMMARIES = {
    "datasets": "summaries/datasets/um_futures.json",
    "aws_parse": "summaries/aws_parse/um_futures.json",
    "api_download": API_SUMMARY,
}


def _ds_folders(data):
    return data_presence.stage_folders(
        str(data), ["um_futures"], "1m", resample_intervals={}, features=False,
        use_monthly_klines=False,
        extra_datasets={"um_futures": ["aggTrades", "markPriceKlines-1m"]},
        agg_klines_intervals={"um_futures": ["5m"]},
    )  # fmt: skip


def _ds_built(tmp_path, data):
    run_dir = tmp_path / "run"
    for name in (*DS_REPORTS.values(), *DS_SUMMARIES.values()):
        (run_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / name).write_text("{}")
    for name in DS_FILES:
        storage.write_bytes(storage.data_path(data) / name, b"x")
    data_presence.record(str(data), str(run_dir), _ds_folders(data))
    return run_dir


def _ds_present(run_dir: Path) -> set[str]:
    return {k for k, n in {**DS_REPORTS, **DS_SUMMARIES}.items() if (run_dir / n).exists()}


def _remove(data, *folders) -> None:
    """``rm -rf`` of each folder below the data dir (on S3 every object below it)."""
    for folder in folders:
        for path in list(storage.walk_files(storage.data_path(data) / folder)):
            storage.delete(path)
        if not storage.is_remote(data):
            shutil.rmtree(storage.data_path(data) / folder)


def test_the_datasets_folders_and_the_records_are_recorded(tmp_path):
    data = tmp_path / "data"
    run_dir = _ds_built(tmp_path, data)
    record = json.loads(Path(layout.data_folders_record_path(str(run_dir))).read_text())
    assert record["folders"] == [
        "aws_data/data/futures/um/daily/aggTrades",
        "aws_data/data/futures/um/daily/markPriceKlines",
        "lakehouse/provenance/um_futures/1m",
        "lakehouse/quality/um_futures/1m",
        "lakehouse/quality/um_futures/1m/markPriceKlines",
        "parsed_data/um_futures/aggTrades",
        "parsed_data/um_futures/agg_klines",
        "parsed_data/um_futures/markPriceKlines",
    ]


def test_a_deleted_datasets_folder_reruns_its_jobs_and_the_datasets_summary(tmp_path):
    """A parsed dataset: its parse reports and the datasets summary of the trade type go
    (the summary that asks for them), not the klines' aws_parse summary; an archive
    folder: its download reports and its parse reports (nothing asks for the download
    reports of the datasets target); the candles from aggTrades: their reports only."""
    data = tmp_path / "data"
    run_dir = _ds_built(tmp_path, data)
    _remove(data, "parsed_data/um_futures/aggTrades",
            "aws_data/data/futures/um/daily/markPriceKlines", "parsed_data/um_futures/agg_klines")  # fmt: skip
    line = data_presence.check(str(data), str(run_dir), _ds_folders(data), dry_run=False)
    assert "aws_parse um_futures/aggTrades" in line
    assert "aws_download um_futures/markPriceKlines-1m" in line
    assert "agg_klines um_futures/aggTrades-5m" in line
    assert _ds_present(run_dir) == {
        "aws_download/um_futures/aggTrades", "aws_parse/um_futures/klines-1m",
        "aws_download/um_futures/klines-1m", "api_download/um_futures", "aws_parse",
        "api_download",
    }  # fmt: skip


def test_deleted_record_folders_rerun_the_stages_that_write_them(tmp_path):
    """The klines' quality folder reruns aws_parse (klines) and, with it, the quality
    folders of kline-layout datasets below it their parse; the provenance folder
    api_download; a kline-layout dataset's quality folder alone its own parse."""
    data = tmp_path / "data"
    run_dir = _ds_built(tmp_path, data)
    _remove(data, "lakehouse/quality/um_futures/1m", "lakehouse/provenance/um_futures/1m")
    line = data_presence.check(str(data), str(run_dir), _ds_folders(data), dry_run=False)
    for folder in ("lakehouse/quality/um_futures/1m", "lakehouse/provenance/um_futures/1m",
                   "lakehouse/quality/um_futures/1m/markPriceKlines"):  # fmt: skip
        assert folder in line
    assert ("reruns aws_parse um_futures/klines-1m, api_download um_futures, "
            "aws_parse um_futures/markPriceKlines-1m to rebuild them") in line  # fmt: skip
    gone = {"aws_parse/um_futures/klines-1m", "aws_parse", "api_download/um_futures",
            "api_download", "aws_parse/um_futures/markPriceKlines-1m", "datasets"}  # fmt: skip
    assert _ds_present(run_dir) == (set(DS_REPORTS) | set(DS_SUMMARIES)) - gone

    run_dir = _ds_built(tmp_path, data)
    _remove(data, "lakehouse/quality/um_futures/1m/markPriceKlines")
    line = data_presence.check(str(data), str(run_dir), _ds_folders(data), dry_run=False)
    assert "(lakehouse/quality/um_futures/1m/markPriceKlines)" in line
    gone = {"aws_parse/um_futures/markPriceKlines-1m", "datasets"}
    assert _ds_present(run_dir) == (set(DS_REPORTS) | set(DS_SUMMARIES)) - gone


def test_a_start_without_a_record_leaves_the_datasets_folders_out(tmp_path):
    """The download summary counts the klines' and funding's archives only: a datasets
    archive folder that is there does not hide the klines' archive folders gone."""
    data = tmp_path / "data"
    run_dir = _ds_built(tmp_path, data)
    Path(layout.data_folders_record_path(str(run_dir))).unlink()
    (run_dir / "summaries/aws_download").mkdir(parents=True)
    _summary(run_dir, "summaries/aws_download/um_futures.json", {"files_held": 3})
    # The funding archive's download jobs ran too (their summary counts its files).
    funding_reports = run_dir / "reports/aws_download/um_futures/funding/shards"
    funding_reports.mkdir(parents=True)
    (funding_reports / "0.json").write_text("{}")
    line = data_presence.check(str(data), str(run_dir), _ds_folders(data), dry_run=False)
    assert (
        "(aws_data/data/futures/um/daily/klines, aws_data/data/futures/um/monthly/fundingRate)"
        in line
    )
    assert "aws_download um_futures/klines-1m, aws_download um_futures/funding to" in line
    assert "aggTrades" not in line and "markPriceKlines" not in line


@pytest.mark.skipif(weed_binary() is None, reason="needs the weed binary")
def test_s3_datasets_and_record_folders_cost_a_list_each(tmp_path, s3_root):
    run_dir = _ds_built(tmp_path, s3_root)
    folders = _ds_folders(s3_root)
    storage.request_stats(reset=True)
    assert data_presence.check(s3_root, str(run_dir), folders, dry_run=False) is None
    asked = storage.request_stats(reset=True)
    assert asked == {"list": asked["list"]} and asked["list"]["count"] == len(DS_FILES)
    _remove(s3_root, "parsed_data/um_futures/agg_klines", "lakehouse/provenance/um_futures/1m")
    line = data_presence.check(s3_root, str(run_dir), folders, dry_run=False)
    assert "(lakehouse/provenance/um_futures/1m, parsed_data/um_futures/agg_klines)" in line
    gone = {"agg_klines/um_futures/aggTrades-5m", "api_download/um_futures", "api_download"}
    assert _ds_present(run_dir) == (set(DS_REPORTS) | set(DS_SUMMARIES)) - gone


def test_a_record_of_the_last_version_is_adopted_again(tmp_path):
    """A record written before the record and `datasets` folders were in it (no version):
    checked as it is, then written again with every folder that holds files, so that a
    run dir whose runs have nothing to do notices one of those deleted from then on."""
    data = tmp_path / "data"
    run_dir = _ds_built(tmp_path, data)
    path = Path(layout.data_folders_record_path(str(run_dir)))
    path.write_text(
        json.dumps({"data_dir": str(data), "folders": ["parsed_data/um_futures/aggTrades"]})
    )
    assert data_presence.check(str(data), str(run_dir), _ds_folders(data), dry_run=True) is None
    assert "version" not in json.loads(path.read_text())  # a dry run writes nothing
    assert data_presence.check(str(data), str(run_dir), _ds_folders(data), dry_run=False) is None
    assert "lakehouse/provenance/um_futures/1m" in json.loads(path.read_text())["folders"]
    _remove(data, "lakehouse/provenance/um_futures/1m")
    line = data_presence.check(str(data), str(run_dir), _ds_folders(data), dry_run=False)
    assert "(lakehouse/provenance/um_futures/1m)" in line and "api_download um_futures" in line


def test_the_loaders_records_folder_deleted_reruns_resample_and_features(tmp_path):
    """``lakehouse/stale_features/{T}`` (the records of stale feature files and of kept
    legacy resampled files, which the loaders warn by) is recorded like the data folders:
    deleted by hand, both stages that write it run again (before 2026-12-07 the loaders just
    stopped warning, the stale and kept files still there)."""
    data, run_dir = _built(tmp_path)
    stages = ("resample", "features")
    reports = [f"reports/{s}/spot/klines-1m/shards/0.json" for s in stages]
    summaries = [f"summaries/{s}/spot.json" for s in stages]
    for name in (*reports, *summaries):
        (run_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / name).write_text("{}")
    kept = data / "lakehouse/stale_features/spot/BTCUSDT/resampled_klines.json"
    kept.parent.mkdir(parents=True)
    kept.write_text("{}")
    data_presence.record(str(data), str(run_dir), _folders(data))
    path = Path(layout.data_folders_record_path(str(run_dir)))
    record = json.loads(path.read_text())
    assert "lakehouse/stale_features/spot" in record["folders"]
    # A record of the last version (without the folder) is adopted again at a start with
    # nothing to do: the folder is checked from then on.
    record["folders"].remove("lakehouse/stale_features/spot")
    path.write_text(json.dumps({**record, "version": 2}))
    assert data_presence.check(str(data), str(run_dir), _folders(data), dry_run=False) is None
    assert "lakehouse/stale_features/spot" in json.loads(path.read_text())["folders"]
    shutil.rmtree(data / "lakehouse/stale_features")
    line = data_presence.check(str(data), str(run_dir), _folders(data), dry_run=False)
    assert "(lakehouse/stale_features/spot)" in line
    assert "reruns resample spot/klines-1m, features spot/klines-1m to rebuild them" in line
    assert [n for n in (*reports, *summaries) if (run_dir / n).exists()] == []
    assert _present(run_dir) == set(RECORDS)  # nothing else reruns
