"""The SLURM runtime the rules give a tick parse job (`runtime` of `resources:`, what the
executor plugin passes to sbatch and the srun launcher to srun), through Snakemake on the
emulator: it grows with the archive bytes the job has still to parse, read from the
download's shard report, and doubles when the job's previous attempt did not finish (SLURM
ended it past its time limit). Dry runs print each job's resources; the expected values
come from the formula of docs/cluster.md, not from a run."""

from __future__ import annotations

import json
import math
import re

from crypto_lakehouse_emulator.ticks import write_daily_market

from crypto_lakehouse import sizing
from tests.e2e.e2e_helpers import emulator_config, snakemake

DAYS = ("2025-01-02", "2025-01-03")


def _asked_runtime(out: str, log_name: str) -> int:
    """The runtime of the job whose log is ``log_name`` in a dry run's job list."""
    for block in out.split("\n\n"):
        if log_name in block and "resources:" in block:
            return int(re.search(r"runtime=(\d+)", block).group(1))
    raise AssertionError(f"no job with log {log_name} in:\n{out[-3000:]}")


def test_a_tick_parse_asks_for_its_archive_bytes_and_more_after_an_unfinished_attempt(
    tmp_path, emulator
):
    mirror = tmp_path / "mirror"
    for day in DAYS:
        write_daily_market(mirror, "spot", "BTCUSDT", day, 2000, seed=3)
    emu = emulator(mirror_dir=mirror)
    config = emulator_config(
        emu.base_url, tmp_path / "data", interval="1m", start_date=DAYS[0], end_date=DAYS[-1],
        trade_types=["spot"], symbols={"spot": ["BTCUSDT"]},
        datasets={"spot": ["klines", "trades"]},
    )  # fmt: skip
    snakemake(tmp_path, config, "datasets")
    lh = tmp_path / "data/lakehouse"
    report = lh / "reports/aws_parse/spot/trades/shards/0.json"
    log = lh / "logs/aws_parse/spot/trades/shards/0.log"
    download = lh / "reports/aws_download/spot/trades/shards/0.json"
    held = sum(p.stat().st_size for p in (mirror / "data/spot/daily/trades").rglob("*.zip"))
    assert json.loads(download.read_text())["symbols"]["BTCUSDT"]["archive_bytes"] == held
    one_symbol = sizing.BASE_MINUTES + 2  # 10 min + 2 per symbol

    def dry_run() -> int:
        out = snakemake(tmp_path, config, "-n", "--forcerun=aws_parse_ticks", str(report))
        return _asked_runtime(out.stdout, "aws_parse/spot/trades/shards/0.log")

    # Everything parsed: the fixed part only.
    assert dry_run() == one_symbol
    # 3 GB more in the download's record (as after a download of new archives): one minute
    # per ARCHIVE_MB_PER_MINUTE MB of them.
    record = json.loads(download.read_text())
    record["symbols"]["BTCUSDT"]["archive_bytes"] = held + 3_000_000_000
    download.write_text(json.dumps(record))
    assert dry_run() == one_symbol + math.ceil(3000 / sizing.ARCHIVE_MB_PER_MINUTE)
    # The job started (Snakemake removed its report, it wrote its log) and SLURM ended it:
    # everything is to parse again, and it asks twice that.
    assert log.exists()
    report.unlink()
    want = one_symbol + math.ceil((held + 3_000_000_000) / 1e6 / sizing.ARCHIVE_MB_PER_MINUTE)
    assert dry_run() == sizing.UNFINISHED_FACTOR * want
    # A partition whose MaxTime is below that (config cluster.max_runtime_minutes): the job
    # asks the maximum instead of a request sbatch would refuse, and is still planned.
    config["cluster"] = {"max_runtime_minutes": want + 1}
    assert dry_run() == want + 1


def _asked(out: str, log_name: str) -> tuple[int, int]:
    """(runtime, mem_mb) of the job whose log is ``log_name`` in a dry run's job list."""
    for block in out.split("\n\n"):
        if log_name in block and "resources:" in block:
            runtime = int(re.search(r"runtime=(\d+)", block).group(1))
            return runtime, int(re.search(r"mem_mb=(\d+)", block).group(1))
    raise AssertionError(f"no job with log {log_name} in:\n{out[-3000:]}")


def _one_symbol_of_klines(tmp_path, emulator):
    """An emulator serving spot BTCUSDT's 1m klines of DAYS and its REST klines after them;
    returns (emulator, its mirror folder)."""
    from crypto_lakehouse_emulator.generate import write_kline_day
    from crypto_lakehouse_emulator.rest import RestEmulator

    mirror = tmp_path / "mirror"
    for day in DAYS:
        write_kline_day(mirror, "spot", "BTCUSDT", "1m", day)
    first_ms = 1_735_776_000_000  # 2025-01-02 00:00 UTC
    rest = RestEmulator(now_ms=first_ms + 3 * 86_400_000)
    rest.add_synthetic_klines("spot", "BTCUSDT", start_ms=first_ms)
    return emulator(mirror_dir=mirror, rest=rest), mirror


def test_candle_jobs_ask_for_their_new_days_and_memory_for_a_whole_history(tmp_path, emulator):
    emu, mirror = _one_symbol_of_klines(tmp_path, emulator)
    config = emulator_config(
        emu.base_url, tmp_path / "data", interval="1m", start_date=DAYS[0], end_date=DAYS[-1],
        trade_types=["spot"], symbols={"spot": ["BTCUSDT"]},
        resample={"targets": [{"trade_type": "spot", "interval": "1h", "offset_step": "30m"}]},
    )  # fmt: skip
    snakemake(tmp_path, config, "features")
    lh = tmp_path / "data/lakehouse"
    parse = lh / "reports/aws_parse/spot/klines-1m/shards/0.json"
    gen = lh / "reports/gen_kline/spot/klines-1m/shards/0.json"
    held = sum(p.stat().st_size for p in (mirror / "data/spot/daily/klines").rglob("*.zip"))
    assert json.loads(gen.read_text())["symbols"]["BTCUSDT"]["archive_bytes"] == held
    one_symbol = sizing.BASE_MINUTES + 1  # 10 min + a quarter of a minute, rounded up

    def dry_run(stage: str, rule: str) -> tuple[int, int]:
        report = lh / f"reports/{stage}/spot/klines-1m/shards/0.json"
        out = snakemake(tmp_path, config, "-n", f"--forcerun={rule}", str(report))
        return _asked(out.stdout, f"{stage}/spot/klines-1m/shards/0.log")

    # Everything built, a tail build: 10 + 2 per symbol and 2000 MB asked before.
    for stage in ("gen_kline", "resample", "features"):
        assert dry_run(stage, f"{stage}_shard") == (one_symbol, 2000)
    # 3 GB more of kline zips parsed since (a 1s history appearing): one minute per
    # CANDLE_MB_PER_MINUTE MB of them; still a tail build.
    record = json.loads(parse.read_text())
    record["symbols"]["BTCUSDT"]["archive_bytes"] = held + 3_000_000_000
    parse.write_text(json.dumps(record))
    work = math.ceil(3000 / sizing.CANDLE_MB_PER_MINUTE)
    assert dry_run("gen_kline", "gen_kline_shard") == (one_symbol + work, 2000)
    # gen_kline did not complete the symbol last time: it builds its whole history, held in
    # memory (500 MB + 6 MB per MB of zips, docs/cluster.md).
    record = json.loads(gen.read_text())
    record["symbols"]["BTCUSDT"] = {"status": "failed", "error": "x"}
    gen.write_text(json.dumps(record))
    whole_mb = (held + 3_000_000_000) / 1e6
    runtime = one_symbol + math.ceil(whole_mb / sizing.CANDLE_MB_PER_MINUTE)
    assert dry_run("gen_kline", "gen_kline_shard") == (runtime, math.ceil(500 + 6 * whole_mb))


def test_a_run_names_its_clamped_jobs_in_one_warning_line(tmp_path, emulator):
    """Before, cluster.max_runtime_minutes clamped a request without a word: a job SLURM then
    ended at the cap did not say it had asked for more. A run whose shard jobs ask more than
    the cap (here 1 minute, below any job's fixed part) ends with one line naming them."""
    emu, _ = _one_symbol_of_klines(tmp_path, emulator)
    config = emulator_config(
        emu.base_url, tmp_path / "data", interval="1m", start_date=DAYS[0], end_date=DAYS[-1],
        trade_types=["spot"], symbols={"spot": ["BTCUSDT"]}, cluster={"max_runtime_minutes": 1},
    )  # fmt: skip
    out = snakemake(tmp_path, config, "gen_kline")
    warnings = [line for line in out.stderr.splitlines() if "max_runtime_minutes" in line]
    assert len(warnings) == 1, out.stderr[-4000:]
    line = warnings[0]
    assert line.startswith("warning: 2 jobs asked for more runtime than config "
                           "cluster.max_runtime_minutes (1 min) and got 1: "), line  # fmt: skip
    for stage in ("aws_parse", "gen_kline"):  # the download jobs have a fixed runtime
        asked = re.search(rf"{stage} spot/klines-1m shard 0 \(asked (\d+) min\)", line)
        assert asked and int(asked.group(1)) > sizing.BASE_MINUTES, line
    # The default cap (1440) clamps nothing here: no line.
    config["cluster"] = {}
    out = snakemake(tmp_path, config, "gen_kline", "--forcerun", "aws_parse_klines")
    assert "max_runtime_minutes" not in out.stderr, out.stderr[-4000:]
