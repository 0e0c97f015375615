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
