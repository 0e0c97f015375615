"""A data file lost or damaged outside a run (deleted by hand, a disk fault) is invisible to
Snakemake, whose outputs are the reports: a plain rerun has nothing to do. Forcing the
download jobs repairs it: each zip is checked against the listing, each parsed partition
against the size it was written with, and every later stage reruns and rebuilds the
outputs its symbols' last reports list but that are missing (README, "Lost or damaged
files")."""

from __future__ import annotations

import contextlib
import json

import pytest

from crypto_lakehouse import layout
from tests.chaos import chaos_helpers as h
from tests.e2e.e2e_helpers import snakemake

pytestmark = pytest.mark.e2e


def _truncate(path, keep: int = 300) -> None:
    path.write_bytes(path.read_bytes()[:keep])


@contextlib.contextmanager
def _built(tmp_path):
    """The chaos scenario built with `all`, its emulator serving meanwhile: (data dir,
    config, snapshot)."""
    emu = h.start_emulator(h.build_scenario(tmp_path))
    try:
        data = tmp_path / "data"
        config = h.config_for(emu.base_url, data)
        snakemake(tmp_path, config, "all")
        yield data, config, h.snapshot(data)
    finally:
        emu.stop()


def _failing_forced_download(tmp_path, config, target: str) -> str:
    """`target` with the download jobs forced (the documented repair), expected to fail;
    its console output."""
    forced = snakemake(tmp_path, config, target, "--forcerun", "aws_download_shard", check=False)
    assert forced.returncode != 0
    return forced.stdout + forced.stderr


def _after_a_retry(before: dict, data) -> dict:
    """The data dir's snapshot after a run that repaired a failure: the shards whose symbols
    failed count one more retry generation (the param that reran them), taken out here."""
    after = h.snapshot(data)
    for name in [n for n in h.differences(before, after) if "/shards/" in n]:
        assert after[name].pop("retry_generation") == before[name].pop("retry_generation") + 1
    return after


def test_forcing_the_download_repairs_lost_and_damaged_files(tmp_path):
    with _built(tmp_path) as (data, config, before):
        zip_path = layout.aws_path(data, layout.daily_kline_key("spot", "ETHUSDT", "1m", h.DAYS[2]))
        partition = layout.parsed_klines_dir(data, "spot", "BTCUSDT", "1m") / "202402.pqt"
        result = layout.results_klines_dir(data, "spot", "1m") / "SOLUSDT.pqt"
        resampled = next(data.glob("results_data/spot/resampled_klines/1h/*/ETHUSDT.pqt"))
        _truncate(zip_path)
        _truncate(partition)
        result.unlink()
        resampled.unlink()

        plain = snakemake(tmp_path, config, "all")
        assert "Nothing to be done" in plain.stdout + plain.stderr  # the limit, documented

        repair = snakemake(tmp_path, config, "all", "--forcerun", "aws_download_shard")
        assert partition.stat().st_size > 300, (repair.stdout + repair.stderr)[-3000:]
        assert h.differences(before, h.snapshot(data)) == []


def test_torn_state_records_make_their_stages_redo_the_work(tmp_path):
    # Every stage's state record torn in half (a crash with storage.fsync off): before,
    # aws_download, agg_klines, gen_kline, resample and features failed every symbol at
    # every run ("JSONDecodeError: Unterminated string ...", naming no file). Now each stage
    # warns naming the record, redoes the symbol and writes a good record.
    with _built(tmp_path) as (data, config, before):
        states = sorted((data / "lakehouse" / "state").rglob("*.json"))
        stages = {p.relative_to(data / "lakehouse" / "state").parts[0] for p in states}
        assert {"aws_download", "aws_parse", "gen_kline", "resample", "features"} <= stages
        for path in states:
            _truncate(path, keep=path.stat().st_size // 2)
        repair = snakemake(tmp_path, config, "all", "--forcerun", "aws_download_shard")
        assert h.differences(before, h.snapshot(data)) == [], (repair.stdout + repair.stderr)[
            -3000:
        ]
        logs = "".join(p.read_text() for p in (data / "lakehouse" / "logs").rglob("*.log"))
        warned = {p for p in states if f"{p}: unreadable (JSONDecodeError" in logs}
        assert {p.relative_to(data).parts[2] for p in warned} == stages
        for path in states:
            assert isinstance(json.loads(path.read_text()), dict), path
        again = snakemake(tmp_path, config, "all")
        assert "Nothing to be done" in again.stdout + again.stderr


def test_a_damaged_input_found_by_a_later_stage_is_rebuilt_by_a_plain_rerun(tmp_path, emulator):
    # The parse checks that its day files exist with the size it wrote, not that they can
    # be read: forcing the download left a parsed aggTrades day overwritten in place (same
    # size), and agg_klines failed on it at every run. Now agg_klines removes it and has the
    # parse shard rerun next time.
    import pyarrow.parquet as pq
    from crypto_lakehouse_emulator.ticks import write_daily_market

    from tests.e2e.e2e_helpers import emulator_config

    mirror = tmp_path / "mirror"
    days = ("2025-01-02", "2025-01-03")
    for day in days:
        for seed, symbol in enumerate(("BTCUSDT", "ETHUSDT")):
            write_daily_market(mirror, "spot", symbol, day, 500, seed=seed)
    emu = emulator(mirror_dir=mirror)
    data = tmp_path / "data"
    config = emulator_config(
        emu.base_url, data, interval="1m", start_date=days[0], end_date=days[1],
        trade_types=["spot"], symbols={"spot": ["BTCUSDT", "ETHUSDT"]},
        datasets={"spot": ["klines", "aggTrades"]}, agg_klines={"intervals": ["1m"]},
    )  # fmt: skip
    snakemake(tmp_path, config, "agg_klines")
    candles = {
        (s, d): layout.agg_klines_day_path(data, "spot", s, "1m", d.replace("-", ""))
        for s in ("BTCUSDT", "ETHUSDT")
        for d in days
    }
    before = {k: pq.read_table(p) for k, p in candles.items()}
    parsed = layout.parsed_day_path(data, "spot", "aggTrades", "BTCUSDT", "20250102")
    parsed_before = pq.read_table(parsed)
    parsed.write_bytes(bytes(parsed.stat().st_size))

    out = _failing_forced_download(tmp_path, config, "agg_klines")
    assert f"{parsed}, written by aws_parse, is unreadable" in out, out[-3000:]
    assert "removed; the next run rebuilds it (aws_parse/spot/aggTrades/shards/0)" in out
    assert not parsed.exists()

    plain = snakemake(tmp_path, config, "agg_klines")
    assert pq.read_table(parsed).equals(parsed_before), (plain.stdout + plain.stderr)[-3000:]
    assert {k: pq.read_table(p) for k, p in candles.items()} == before
    again = snakemake(tmp_path, config, "agg_klines")
    assert "Nothing to be done" in again.stdout + again.stderr


def test_verify_finds_damaged_files_no_stage_reads_and_the_forced_run_rebuilds_them(tmp_path):
    # A generated file and a feature file cut short: no later stage reads them again, so no
    # run noticed (README said: not detected). verify lists them; --remove, then the forced
    # run rebuilds them.
    from crypto_lakehouse.cli import main

    with _built(tmp_path) as (data, config, before):
        assert main(["verify", str(data)]) == 0
        resampled = next(data.glob("results_data/spot/resampled_klines/1h/*/BTCUSDT.pqt"))
        feature = next(data.glob("results_data/spot/features/1m/*.pqt"))
        # and two per-symbol records: the report left their symbols out, saying nothing more
        provenance = next(data.glob("lakehouse/provenance/spot/1m/*.pqt"))
        quality = next(data.glob("lakehouse/quality/spot/1m/*.pqt"))
        for path in (resampled, feature, provenance, quality):
            _truncate(path)
        assert main(["verify", str(data)]) == 1 and resampled.exists()
        assert main(["verify", str(data), "--remove"]) == 1
        assert not any(p.exists() for p in (resampled, feature, provenance, quality))
        repair = snakemake(tmp_path, config, "all", "--forcerun", "aws_download_shard")
        assert h.differences(before, h.snapshot(data)) == [], (repair.stdout + repair.stderr)[
            -3000:
        ]
        assert main(["verify", str(data)]) == 0


@pytest.mark.parametrize("first", ["all", "one resample shard alone"])
def test_torn_reports_read_by_a_later_job_are_rebuilt_by_the_next_run(tmp_path, first):
    # gen_kline's reports (shard and symbols') torn, then a run that reruns only resample
    # and features (as a changed resample target does): before, resample failed at every
    # run with a bare JSONDecodeError and nothing ever rewrote the reports.
    # "one resample shard alone": it removes the torn shard report ("the next run reruns
    # the job that writes it, then this one") and fails. Before, the next `all` had nothing
    # to do: the run summaries were up to date, and Snakemake does not rebuild a missing
    # input of an up-to-date output, so gen_kline's and resample's shard reports stayed
    # missing for good. (The same happened within one `all` when the resample job removed
    # the report before gen_kline's summary job read it: ~1 run in 6 under load.)
    with _built(tmp_path) as (data, config, before):
        reports = sorted((data / "lakehouse" / "reports" / "gen_kline").rglob("*.json"))
        assert any(p.parent.name == "shards" for p in reports) and len(reports) >= 4
        for path in reports:
            _truncate(path, keep=path.stat().st_size // 2)
        resample_report = data / "lakehouse/reports/resample/spot/klines-1m/shards/0.json"
        target = "all" if first == "all" else str(resample_report)
        failed = snakemake(tmp_path, config, target, "--forcerun", "resample_shard", check=False)
        out = failed.stdout + failed.stderr
        assert failed.returncode != 0
        assert "written by gen_kline, is unreadable (JSONDecodeError" in out, out[-3000:]
        repair = snakemake(tmp_path, config, "all")
        after = _after_a_retry(before, data)
        assert h.differences(before, after) == [], (repair.stdout + repair.stderr)[-3000:]
        for path in reports:
            assert isinstance(json.loads(path.read_text()), dict), path
        again = snakemake(tmp_path, config, "all")
        assert "Nothing to be done" in again.stdout + again.stderr


def test_a_torn_listing_index_is_listed_again_by_the_next_run(tmp_path):
    # A listing index is the checkpoint's output that planning reads: torn, every run (dry
    # runs too) failed while building the DAG with a bare JSONDecodeError, naming no file.
    with _built(tmp_path) as (data, config, before):
        indexes = sorted((data / "lakehouse" / "listing").glob("*/*.json"))
        assert indexes
        for path in indexes:
            _truncate(path, keep=path.stat().st_size // 2)
        dry = snakemake(tmp_path, config, "all", "-n", check=False)
        out = dry.stdout + dry.stderr
        assert dry.returncode != 0 and "is unreadable (JSONDecodeError" in out, out[-3000:]
        assert "a real run mends it" in out
        run = snakemake(tmp_path, config, "all")
        assert "was unreadable (JSONDecodeError" in run.stderr, run.stderr[-3000:]
        assert "written again from" in run.stderr
        for path in indexes:
            assert isinstance(json.loads(path.read_text())["symbols"], dict), path
        assert h.differences(before, h.snapshot(data)) == [], (run.stdout + run.stderr)[-3000:]
        again = snakemake(tmp_path, config, "all")
        assert "Nothing to be done" in again.stdout + again.stderr


def test_torn_listing_details_are_listed_again_by_the_next_run(tmp_path):
    # A symbol's listing details torn: the download failed at every run (the listing, whose
    # output they are, reruns only for a new end date) with a bare JSONDecodeError.
    with _built(tmp_path) as (data, config, before):
        details = data / "lakehouse" / "listing" / "spot" / "klines-1m" / "ETHUSDT.json"
        _truncate(details, keep=details.stat().st_size // 2)
        out = _failing_forced_download(tmp_path, config, "all")
        assert f"listing details {details} are unreadable (JSONDecodeError" in out, out[-3000:]
        assert "removed; the next run lists ETHUSDT again" in out
        repair = snakemake(tmp_path, config, "all")
        after = _after_a_retry(before, data)
        # The listing that followed names the failure it repaired (so the run after it does
        # not list again: see the next run); apart from that, as before.
        index = "lakehouse/listing/spot/klines-1m"
        for name in (f"{index}.json", f"{index}/_index.state"):
            assert after[name].pop("after_failure")["failed_at_unix"] > 0, name
        assert h.differences(before, after) == [], (repair.stdout + repair.stderr)[-3000:]
        again = snakemake(tmp_path, config, "all")
        assert "Nothing to be done" in again.stdout + again.stderr
