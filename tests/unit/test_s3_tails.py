"""Tail builds with the data dir on S3 (SeaweedFS): a daily update of gen_kline, resample and
the features keeps the untouched row groups of each object (read back with ranged GETs and
uploaded again with the new tail in one PUT) and writes the same bytes as a full build of
the same inputs on local disk. The scenario is test_generate_tail's, with its small row
groups, so that every file has several."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from crypto_lakehouse import layout, storage
from crypto_lakehouse.features import job as features_job
from crypto_lakehouse.features import run_features
from crypto_lakehouse.generate import parquet_append, run_gen_kline
from crypto_lakehouse.generate import tail as gen_tail
from crypto_lakehouse.resample import run_resample
from crypto_lakehouse.resample import tail as resample_tail
from tests.unit import test_generate_tail as gt
from tests.unit.test_features_job import DEFAULTS
from tests.unit.test_storage import count_asked


@pytest.fixture(autouse=True)
def small_row_groups(monkeypatch):
    monkeypatch.setattr(parquet_append, "ROW_GROUP_ROWS", 5000)
    monkeypatch.setattr(resample_tail, "ROW_GROUP_ROWS", 1000)
    monkeypatch.setattr(features_job, "BLOCK_ROWS", 2048)
    monkeypatch.setattr(features_job, "RESAMPLED_BLOCK_ROWS", 64)


def _upload(local: Path, root) -> None:
    """Every file below ``local`` to the same place below ``root`` (an unchanged file
    uploads the same bytes: its ETag, and so its identity, stays)."""
    for path in sorted(local.rglob("*")):
        if path.is_file():
            storage.write_bytes(
                storage.join(root, path.relative_to(local).as_posix()), path.read_bytes()
            )


def _build(data_dir, reports: Path, *, incremental: bool = True) -> dict:
    """gen_kline, resample and features of the scenario's symbol; their stats."""
    reports.mkdir(parents=True, exist_ok=True)
    common = dict(trade_type=gt.TT, symbol=gt.SYM, interval="1m", data_dir=data_dir)
    gen = run_gen_kline(
        **common, split_gaps=True, with_vwap=True, with_funding_rates=True, min_days=1,
        min_price_chg=0.1, report_path=reports / "gen.json", stats_path=reports / "gen-stats.json",
        incremental=incremental,
    )  # fmt: skip
    resample = run_resample(
        **common, gen_report=reports / "gen.json", targets=gt.TARGETS, aggregations=None,
        report_path=reports / "res.json", stats_path=reports / "res-stats.json",
        incremental=incremental,
    )  # fmt: skip
    features = run_features(
        trade_type=gt.TT, interval="1m", data_dir=data_dir, symbols=[gt.SYM],
        gen_reports=[str(reports / "gen.json")], resample_reports=[str(reports / "res.json")],
        indicators=DEFAULTS, windows=[60, 15], report_path=reports / "feat.json",
        stats_path=reports / "feat-stats.json",
    )  # fmt: skip
    return {"gen": gen, "resample": resample, "features": features}


def _results(root) -> dict[str, bytes]:
    base = storage.join(root, "results_data", gt.TT)
    return {
        storage.data_path(p).relative_to(base).as_posix(): storage.read_bytes(p)
        for p in storage.list_files(base, suffix=".pqt")
    }


class AtOnce:
    """Wraps ``func``: each call takes a round trip of a slow store (50 ms) first; ``most``
    is the largest number of calls that ran at the same time."""

    def __init__(self, func):
        self.func, self.lock = func, threading.Lock()
        self.running = self.most = 0

    def __call__(self, *args, **kwargs):
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            time.sleep(0.05)
            return self.func(*args, **kwargs)
        finally:
            with self.lock:
                self.running -= 1


@pytest.mark.parametrize("kept_bytes", ["uploaded", "copied in the store"])
def test_daily_update_on_s3_takes_the_tail_path_and_equals_a_full_build(
    tmp_path, s3_root, monkeypatch, kept_bytes
):
    days = 9
    if kept_bytes == "copied in the store":
        # 57 days: the kept row groups of the 1m file and of its features exceed S3's
        # smallest part (5 MiB), so they are copied inside the store (UploadPartCopy).
        days = 57
        monkeypatch.setattr(gt, "N_DAYS", 60)
    rates = np.random.default_rng(5).normal(1e-4, 5e-5, gt.N_DAYS * 3)
    cols = gt.master()
    inputs = tmp_path / "inputs"  # parsed and REST files, written locally, then uploaded
    gt.write_state(inputs, cols, days - 1, gt.T0 + days * gt.DAY + 12 * gt.HOUR, rates)
    _upload(inputs, s3_root)
    first = _build(s3_root, tmp_path / "rep-s3")
    assert "incremental" not in first["gen"]  # no record yet: full builds
    assert first["features"]["files_by_mode"]["tail"] == 0

    # The next day: one more archive day, REST half a day further.
    gt.write_state(inputs, cols, days, gt.T0 + (days + 1) * gt.DAY + 12 * gt.HOUR, rates)
    _upload(inputs, s3_root)
    storage.request_stats(reset=True)
    stats = _build(s3_root, tmp_path / "rep-s3")
    copies = storage.request_stats().get("copy", {}).get("count", 0)
    # The 1m file and its features file (the resampled files are smaller than a part).
    assert copies == (2 if kept_bytes == "copied in the store" else 0), copies
    assert stats["gen"]["incremental"]["mode"] == "tail", stats["gen"]
    assert stats["gen"]["incremental"]["row_groups_kept"] >= 2
    assert stats["resample"]["segments_by_mode"] == {"kept": 0, "tail": 1, "full": 0}
    assert stats["features"]["files_by_mode"]["tail"] >= 5, stats["features"]

    # The reference: a full build of the same inputs on local disk.
    local = tmp_path / "local"
    shutil.copytree(inputs, local)
    _build(local, tmp_path / "rep-local", incremental=False)
    got, want = _results(s3_root), _results(local)
    assert got.keys() == want.keys() and len(want) == 14  # 7 candle files, 7 feature files
    for name in want:
        assert got[name] == want[name], name
    for name in ("gen.json", "res.json", "feat.json"):
        assert storage.read_json(tmp_path / "rep-s3" / name) == storage.read_json(
            tmp_path / "rep-local" / name
        )


def test_identity_of_an_object_changes_with_its_content_not_with_a_rewrite(s3_root):
    path = storage.join(s3_root, "x/a.pqt")
    storage.write_bytes(path, b"one")
    first = storage.identity(path)
    assert first[0] == 3 and first == storage.identities([path])[path]
    storage.write_bytes(path, b"one")  # the same bytes again, within the same second
    assert storage.identity(path) == first
    storage.write_bytes(path, b"two")  # same size, same second: another ETag
    assert storage.identity(path) != first
    assert storage.identity(storage.join(s3_root, "x/missing.pqt")) is None
    # Many files of one folder: one listing (size and ETag of each), no HEAD per file.
    paths = [storage.join(s3_root, f"x/{n}.pqt") for n in ("b", "c", "d")]
    for n, p in enumerate(paths):
        storage.write_bytes(p, b"x" * n)
    storage.request_stats(reset=True)
    found = storage.identities([*paths, storage.join(s3_root, "x/missing.pqt")])
    ops = storage.request_stats()
    assert ops["list"]["count"] == 1 and "head" not in ops, ops
    assert [found[p] for p in paths] == [storage.identity(p) for p in paths]
    assert found[storage.join(s3_root, "x/missing.pqt")] is None


def test_a_tail_build_on_s3_without_its_record_is_a_full_build(tmp_path, s3_root):
    cols = gt.master()
    inputs = tmp_path / "inputs"
    gt.write_state(inputs, cols, 8, gt.T0 + 9 * gt.DAY + 12 * gt.HOUR, gt.RATES)
    _upload(inputs, s3_root)
    _build(s3_root, tmp_path / "rep")
    storage.delete(layout.state_path(s3_root, "gen_kline_resume", gt.TT, "klines-1m", gt.SYM))
    gt.write_state(inputs, cols, 9, gt.T0 + 10 * gt.DAY + 12 * gt.HOUR, gt.RATES)
    _upload(inputs, s3_root)
    stats = _build(s3_root, tmp_path / "rep")
    assert "incremental" not in stats["gen"]


def test_a_kept_prefix_is_copied_inside_the_store(s3_root):
    """The kept row groups of a large file are not downloaded and uploaded again: the new
    object is a multipart upload whose first part is an UploadPartCopy of their bytes."""
    old = bytes(range(256)) * (24 << 10)  # 6 MiB
    path = storage.join(s3_root, "y/old.pqt")
    storage.write_bytes(path, old)
    keep = storage.MIN_PART_BYTES + 12345
    storage.request_stats(reset=True)
    # Into another object, then over the source itself (a daily update's case).
    other = storage.join(s3_root, "y/new.pqt")
    assert storage.write_prefix_and_rest(other, path, keep, b"tail")
    assert storage.write_prefix_and_rest(path, path, keep, b"TAIL")
    ops = storage.request_stats()
    assert ops["copy"]["count"] == 2 and "get" not in ops, ops
    assert storage.read_bytes(other) == old[:keep] + b"tail"
    assert storage.read_bytes(path) == old[:keep] + b"TAIL"
    # A prefix shorter than a part, or local paths: the caller writes the file itself.
    assert not storage.write_prefix_and_rest(other, path, storage.MIN_PART_BYTES - 1, b"x")
    assert storage.read_bytes(other) == old[:keep] + b"tail"


def test_a_long_prefix_is_copied_in_several_parts(s3_root, monkeypatch):
    """A copied part is at most 5 GiB on S3: a longer prefix takes several part copies, a
    remainder shorter than a part joining the one before it."""
    monkeypatch.setattr(storage, "COPY_PART_BYTES", storage.MIN_PART_BYTES)
    old = bytes(range(256)) * (64 << 10)  # 16 MiB
    path = storage.join(s3_root, "z/old.pqt")
    storage.write_bytes(path, old)
    for keep, copies in ((3 * storage.MIN_PART_BYTES, 3), (2 * storage.MIN_PART_BYTES + 7, 2)):
        storage.request_stats(reset=True)
        assert storage.write_prefix_and_rest(path, path, keep, b"tail")
        assert storage.request_stats()["copy"]["count"] == copies
        assert storage.read_bytes(path) == old[:keep] + b"tail"


def test_the_features_ask_each_candle_files_identity_once_per_run(tmp_path, s3_root, monkeypatch):
    """The unchanged-inputs digest and the tail decision both need each candle file's
    identity: one HEAD per file and run serves both (a HEAD costs a round trip and ~1 ms of
    botocore CPU; the features of a symbol read ~28 candle files)."""
    rates = np.random.default_rng(5).normal(1e-4, 5e-5, gt.N_DAYS * 3)
    cols = gt.master()
    inputs = tmp_path / "inputs"
    reports = tmp_path / "rep"
    gt.write_state(inputs, cols, 8, gt.T0 + 9 * gt.DAY + 12 * gt.HOUR, rates)
    _upload(inputs, s3_root)
    _build(s3_root, reports)
    gt.write_state(inputs, cols, 9, gt.T0 + 10 * gt.DAY + 12 * gt.HOUR, rates)
    _upload(inputs, s3_root)
    asked: list = []  # the S3 requests of the features (boto3's HEADs and LISTs)
    read: dict[str, int] = {}
    real_client, real_signed, real_read_state, real_run_features = (
        storage._conditional_client, storage._whole_objects, storage.read_state,
        run_features)  # fmt: skip

    def read_state_counted(path):
        read[str(path)] = read.get(str(path), 0) + 1
        return real_read_state(path)

    def run_features_counted(*args, **kwargs):
        count_asked(monkeypatch, asked)
        monkeypatch.setattr(storage, "read_state", read_state_counted)
        try:
            return real_run_features(*args, **kwargs)
        finally:
            monkeypatch.setattr(storage, "_conditional_client", real_client)
            monkeypatch.setattr(storage, "_whole_objects", real_signed)
            monkeypatch.setattr(storage, "read_state", real_read_state)

    monkeypatch.setitem(globals(), "run_features", run_features_counted)
    stats = _build(s3_root, reports)  # gen_kline and resample as usual, then the features
    assert stats["features"]["files_by_mode"]["tail"] >= 5, stats["features"]
    outputs = storage.read_json(reports / "feat.json")["symbols"][gt.SYM]["outputs"]
    candles = [storage.join(s3_root, o["source"]) for o in outputs]
    assert len(candles) == 7
    heads = {c: asked.count(("head", storage.data_path(c).key)) for c in candles}
    assert heads == dict.fromkeys(candles, 1), asked
    # The writers' tail records (what each kept of a candle file): one read per symbol.
    records = [
        str(writer.record_path(s3_root, gt.TT, gt.SYM, "1m"))
        for writer in (gen_tail, resample_tail)
    ]
    assert {r: read.get(r, 0) for r in records} == dict.fromkeys(records, 1), read


def test_a_resample_tail_on_s3_writes_the_outputs_of_a_segment_at_the_same_time(
    tmp_path, s3_root, monkeypatch
):
    """Each output of a tail build is several round trips (its previous footer, its kept
    rows, its upload): on S3 the outputs of a segment go at the same time, and the result
    is still the same bytes as a full build (the first test)."""
    from crypto_lakehouse.resample import job as resample_job

    rates = np.random.default_rng(5).normal(1e-4, 5e-5, gt.N_DAYS * 3)
    cols = gt.master()
    inputs = tmp_path / "inputs"
    gt.write_state(inputs, cols, 8, gt.T0 + 9 * gt.DAY + 12 * gt.HOUR, rates)
    _upload(inputs, s3_root)
    _build(s3_root, tmp_path / "rep")
    gt.write_state(inputs, cols, 9, gt.T0 + 10 * gt.DAY + 12 * gt.HOUR, rates)
    _upload(inputs, s3_root)
    write_joined = AtOnce(resample_tail.write_joined)
    monkeypatch.setattr(resample_tail, "write_joined", write_joined)
    stats = _build(s3_root, tmp_path / "rep")
    assert stats["resample"]["segments_by_mode"]["tail"] == 1, stats["resample"]
    outputs = sum(len(t["offsets"]) for t in storage.read_json(tmp_path / "rep" / "res.json")[
        "targets"])  # fmt: skip
    assert outputs >= 3
    assert write_joined.most == min(outputs, resample_job.OUTPUTS_AT_ONCE)


def test_features_on_s3_build_light_files_at_the_same_time_and_a_heavy_one_alone(
    tmp_path, s3_root, monkeypatch
):
    """A symbol's feature files are round trips each on S3: tail builds (and full builds of
    small candle files) go FILES_AT_ONCE at a time; a full build of a candle file of
    LIGHT_BYTES or more runs alone (one big table in memory per symbol)."""
    rates = np.random.default_rng(5).normal(1e-4, 5e-5, gt.N_DAYS * 3)
    cols = gt.master()
    inputs = tmp_path / "inputs"
    gt.write_state(inputs, cols, 8, gt.T0 + 9 * gt.DAY + 12 * gt.HOUR, rates)
    _upload(inputs, s3_root)
    write_features = AtOnce(features_job._write_features)
    monkeypatch.setattr(features_job, "_write_features", write_features)
    monkeypatch.setattr(features_job, "LIGHT_BYTES", 0)  # every candle file is heavy
    first = _build(s3_root, tmp_path / "rep")
    assert first["features"]["files_by_mode"]["full"] == 7
    assert write_features.most == 1  # full builds of heavy files: one at a time

    gt.write_state(inputs, cols, 9, gt.T0 + 10 * gt.DAY + 12 * gt.HOUR, rates)
    _upload(inputs, s3_root)
    write_features.most = 0
    stats = _build(s3_root, tmp_path / "rep")
    tails = stats["features"]["files_by_mode"]["tail"]
    assert tails >= 2, stats["features"]
    assert write_features.most == min(tails, features_job.FILES_AT_ONCE)


def test_a_daily_update_on_s3_asks_about_each_input_once(tmp_path, s3_root, monkeypatch):
    """Through the rules' entry points (the unchanged-inputs digest, then the build): the
    gen_kline tail lists each input folder once and reads the funding files without asking
    first whether they exist; resample asks each segment file's identity once. Before,
    the digest, the build's file list and the tail's checks each listed the same folders,
    and the funding files and segment files were HEADed again: a round trip each."""
    from crypto_lakehouse import jobs

    rates = np.random.default_rng(5).normal(1e-4, 5e-5, gt.N_DAYS * 3)
    cols = gt.master()
    inputs, reports = tmp_path / "inputs", tmp_path / "rep"
    reports.mkdir()
    common = dict(trade_type=gt.TT, symbol=gt.SYM, interval="1m", data_dir=s3_root)

    def update() -> tuple[dict, dict]:
        gen = jobs.run_gen_kline_rule(
            **common, split_gaps=True, with_vwap=True, with_funding_rates=True, min_days=1,
            min_price_chg=0.1, report_path=reports / "gen.json",
            stats_path=reports / "gen-stats.json",
        )  # fmt: skip
        resample = jobs.run_resample_rule(
            **common, gen_report=reports / "gen.json", targets=gt.TARGETS, aggregations=None,
            report_path=reports / "res.json", stats_path=reports / "res-stats.json",
        )  # fmt: skip
        return gen, resample

    gt.write_state(inputs, cols, 8, gt.T0 + 9 * gt.DAY + 12 * gt.HOUR, rates)
    _upload(inputs, s3_root)
    update()
    gt.write_state(inputs, cols, 9, gt.T0 + 10 * gt.DAY + 12 * gt.HOUR, rates)
    _upload(inputs, s3_root)
    asked: list = []
    count_asked(monkeypatch, asked)
    real_exists = storage.exists
    monkeypatch.setattr(
        storage, "exists", lambda p: asked.append(("exists", str(p))) or real_exists(p)
    )
    gen, resample = update()
    assert gen["incremental"]["mode"] == "tail", gen
    assert resample["segments_by_mode"]["tail"] == 1, resample

    def key(path) -> str:
        return storage.data_path(path).key

    for folder in (layout.parsed_klines_dir, layout.api_klines_dir):
        listed = asked.count(("list", key(folder(s3_root, gt.TT, gt.SYM, "1m"))))
        assert listed == 1, (folder.__name__, asked)
    for funding in (layout.parsed_funding_path, layout.api_funding_path):
        path = funding(s3_root, gt.TT, gt.SYM)
        assert asked.count(("head", key(path))) == 1, asked  # the digest's
        assert ("exists", str(path)) not in asked, asked
    # The segment file: gen_kline's check of its previous output, then resample's digest
    # (whose answer resample's tail decision reuses). gen_kline's record of the new one
    # comes from its PUT's answer (it was a third HEAD).
    segments = storage.read_json(reports / "gen.json")["segments"]
    assert len(segments) == 1
    assert asked.count(("head", key(storage.join(s3_root, segments[0]["file"])))) == 2, asked


def test_a_gen_kline_tail_on_s3_reads_each_changed_input_once(tmp_path, s3_root, monkeypatch):
    """The tail reads a changed input file for its day digests, then reads the rows from
    its checkpoint on: the files of the first read are reused, not fetched again (before,
    each changed file was a second GET)."""
    import contextlib

    rates = np.random.default_rng(5).normal(1e-4, 5e-5, gt.N_DAYS * 3)
    cols = gt.master()
    inputs, reports = tmp_path / "inputs", tmp_path / "rep"
    gt.write_state(inputs, cols, 8, gt.T0 + 9 * gt.DAY + 12 * gt.HOUR, rates)
    _upload(inputs, s3_root)
    _build(s3_root, reports)
    gt.write_state(inputs, cols, 9, gt.T0 + 10 * gt.DAY + 12 * gt.HOUR, rates)
    _upload(inputs, s3_root)

    read: list[str] = []
    real_reading = storage._reading

    @contextlib.contextmanager
    def reading_counted(p):
        read.append(p.key)
        with real_reading(p):
            yield

    monkeypatch.setattr(storage, "_reading", reading_counted)
    gen = run_gen_kline(
        trade_type=gt.TT, symbol=gt.SYM, interval="1m", data_dir=s3_root, split_gaps=True,
        with_vwap=True, with_funding_rates=True, min_days=1, min_price_chg=0.1,
        report_path=reports / "gen.json", stats_path=reports / "gen-stats.json",
        incremental=True,
    )  # fmt: skip
    assert gen["incremental"]["mode"] == "tail", gen
    # The changed inputs: the new archive day, the REST day it completes, the new REST day.
    a_dir = layout.parsed_klines_dir(s3_root, gt.TT, gt.SYM, "1m")
    r_dir = layout.api_klines_dir(s3_root, gt.TT, gt.SYM, "1m")
    changed = [a_dir / f"{gt.day_name(8)}.pqt", r_dir / f"{gt.day_name(8)}.pqt"]
    changed.append(r_dir / f"{gt.day_name(9)}.pqt")
    for path in changed:
        assert read.count(storage.data_path(path).key) == 1, (path, read)
