"""Unchanged symbols are not rebuilt (crypto_lakehouse.incremental, crypto_lakehouse.jobs)."""

from __future__ import annotations

import json
import os
import shutil

from crypto_lakehouse import layout
from crypto_lakehouse.incremental import run_unless_unchanged
from crypto_lakehouse.jobs import run_gen_kline_rule, run_resample_rule
from tests.conftest import FIXTURES


def _job(tmp_path, calls, params=None, fail=False):
    data = tmp_path / "data"
    src = data / "in.pqt"
    out = data / "out.pqt"

    def build():
        calls.append(1)
        if fail:
            raise RuntimeError("quality gate")
        out.write_bytes(b"x")
        (tmp_path / "report.json").write_text(json.dumps({"files": ["out.pqt"]}))
        return {"files_written": 1}

    return run_unless_unchanged(
        stage="gen_kline",
        data_dir=data,
        trade_type="spot",
        dataset="klines-1m",
        symbol="BTCUSDT",
        inputs=[src],
        params=params or {"a": 1},
        output_files=lambda report: report["files"],
        report_path=tmp_path / "report.json",
        stats_path=tmp_path / "stats.json",
        build=build,
    )


def test_second_run_with_same_inputs_does_not_build(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data/in.pqt").write_bytes(b"1")
    calls = []
    _job(tmp_path, calls)
    (tmp_path / "report.json").unlink()  # Snakemake deletes outputs before a rerun
    stats = _job(tmp_path, calls)
    assert calls == [1] and stats["skipped_unchanged"] == 1
    assert json.loads((tmp_path / "report.json").read_text()) == {"files": ["out.pqt"]}


def test_changed_input_param_or_missing_output_rebuilds(tmp_path):
    (tmp_path / "data").mkdir()
    src = tmp_path / "data/in.pqt"
    src.write_bytes(b"1")
    calls = []
    _job(tmp_path, calls)
    src.write_bytes(b"2")
    _job(tmp_path, calls)
    assert len(calls) == 2
    _job(tmp_path, calls, params={"a": 2})
    assert len(calls) == 3
    (tmp_path / "data/out.pqt").unlink()
    _job(tmp_path, calls, params={"a": 2})
    assert len(calls) == 4


def test_a_failed_build_is_not_remembered_as_done(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data/in.pqt").write_bytes(b"1")
    calls = []
    _job(tmp_path, calls)
    try:
        _job(tmp_path, calls, params={"a": 3}, fail=True)
    except RuntimeError:
        pass
    _job(tmp_path, calls, params={"a": 3})
    assert len(calls) == 3


def test_gen_and_resample_rules_skip_an_unchanged_symbol(tmp_path):
    data = tmp_path / "data"
    src = FIXTURES / "legacy-v1-real/parsed_data/um_futures/klines/BTCUSDT/1m"
    shutil.copytree(src, layout.parsed_klines_dir(data, "um_futures", "BTCUSDT", "1m"))
    gen_report = tmp_path / "gen.json"
    gen_args = dict(
        trade_type="um_futures",
        symbol="BTCUSDT",
        interval="1m",
        data_dir=str(data),
        split_gaps=True,
        with_vwap=True,
        with_funding_rates=True,
        min_days=1,
        min_price_chg=0.1,
    )
    res_args = dict(
        trade_type="um_futures",
        symbol="BTCUSDT",
        interval="1m",
        data_dir=str(data),
        targets=[{"interval": "1h", "offset_step": "30m"}],
        aggregations={},
    )
    run_gen_kline_rule(report_path=gen_report, stats_path=tmp_path / "gs.json", **gen_args)
    run_resample_rule(
        gen_report=gen_report,
        report_path=tmp_path / "r.json",
        stats_path=tmp_path / "rs.json",
        **res_args,
    )
    out = layout.results_klines_dir(data, "um_futures", "1m") / "BTCUSDT.pqt"
    resampled = layout.resampled_dir(data, "um_futures", "1h", "30m") / "BTCUSDT.pqt"
    assert out.exists() and resampled.exists()
    os.utime(out, ns=(1, 1))
    os.utime(resampled, ns=(1, 1))
    mtimes = (1, 1)

    stats = run_gen_kline_rule(report_path=gen_report, stats_path=tmp_path / "gs.json", **gen_args)
    assert stats["skipped_unchanged"] == 1
    stats = run_resample_rule(
        gen_report=gen_report,
        report_path=tmp_path / "r.json",
        stats_path=tmp_path / "rs.json",
        **res_args,
    )
    assert stats["skipped_unchanged"] == 1
    assert (out.stat().st_mtime_ns, resampled.stat().st_mtime_ns) == mtimes

    # A REST day file arriving for the symbol is a change: both rebuild.
    api_dir = layout.api_klines_dir(data, "um_futures", "BTCUSDT", "1m")
    api_dir.mkdir(parents=True)
    shutil.copy(src / "202209.pqt", api_dir / "20220905.pqt")
    stats = run_gen_kline_rule(report_path=gen_report, stats_path=tmp_path / "gs.json", **gen_args)
    assert "skipped_unchanged" not in stats and out.stat().st_mtime_ns != 1


def test_stats_count_the_files_held_whether_built_or_kept(tmp_path):
    # The report page counts the validated files a stage holds: a symbol skipped as
    # unchanged still holds its files (its stats said files_written 0 and nothing else).
    (tmp_path / "data").mkdir()
    (tmp_path / "data/in.pqt").write_bytes(b"1")
    calls = []
    built = _job(tmp_path, calls)
    assert built["files_written"] == 1 and built["files_held"] == 1
    assert json.loads((tmp_path / "stats.json").read_text())["files_held"] == 1
    kept = _job(tmp_path, calls)
    assert kept["skipped_unchanged"] == 1 and kept["files_written"] == 0
    assert kept["files_held"] == 1 and calls == [1]


def test_fingerprint_on_s3_uses_size_and_etag_without_downloads(s3_root, tmp_path):
    """On S3 an input's version is its size and ETag (the store's digest of the bytes):
    the same bytes written again are no change, other bytes of the same size are; a
    folder counts its .pqt files from one listing; nothing is downloaded. A local input
    beside them keeps its content hash."""
    from crypto_lakehouse import storage
    from crypto_lakehouse.incremental import fingerprint

    folder = storage.join(s3_root, "parsed/BTCUSDT/1m")
    for name in ("202401.pqt", "202402.pqt"):
        storage.write_bytes(folder / name, b"a" * 100)
    storage.write_bytes(folder / "note.txt", b"ignored")
    single = storage.join(s3_root, "funding/BTCUSDT.pqt")
    storage.write_bytes(single, b"f" * 10)
    report = tmp_path / "report.json"
    report.write_text('{"segments": []}')
    inputs = [str(report), folder, single, storage.join(s3_root, "absent/folder")]

    storage.request_stats(reset=True)
    first = fingerprint(inputs, {"p": 1})
    asked = storage.request_stats(reset=True)
    # Three HEADs at once (two 404s: the folders), two folder listings, no GET.
    assert "get" not in asked and "parquet_read" not in asked, asked
    assert asked["head"]["count"] == 3 and asked["list"]["count"] == 2, asked

    storage.write_bytes(folder / "202401.pqt", b"a" * 100)  # the same bytes again
    assert fingerprint(inputs, {"p": 1}) == first
    assert fingerprint(inputs, {"p": 2}) != first
    storage.write_bytes(folder / "202401.pqt", b"b" * 100)  # same size, other bytes
    changed = fingerprint(inputs, {"p": 1})
    assert changed != first
    storage.write_bytes(single, b"g" * 10)
    assert fingerprint(inputs, {"p": 1}) not in (first, changed)
    storage.write_bytes(folder / "202403.pqt", b"c")  # a new partition
    grown = fingerprint(inputs, {"p": 1})
    report.write_text('{"segments": [1]}')  # the local report counts by content
    assert fingerprint(inputs, {"p": 1}) != grown


def test_fingerprint_of_local_inputs_is_unchanged_by_the_s3_one(tmp_path):
    """Local digests are what earlier versions recorded (no rebuild after an upgrade): a
    file up to 1 MB by its content, a larger one by size and mtime, paths in order."""
    import hashlib

    from crypto_lakehouse.incremental import fingerprint

    small, big = tmp_path / "a.pqt", tmp_path / "sub" / "b.pqt"
    big.parent.mkdir()
    small.write_bytes(b"x" * 10)
    big.write_bytes(b"y" * ((1 << 20) + 1))
    params = {"k": [1, 2]}
    h = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode())
    h.update(str(small).encode())
    h.update(hashlib.sha256(b"x" * 10).digest())
    st = big.stat()
    h.update(str(big).encode())
    h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    assert fingerprint([small, big.parent], params) == h.hexdigest()
