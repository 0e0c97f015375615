"""A daily cron job's runs leave Snakemake's per-run logs (``.snakemake/log/``): the
workflow keeps the newest ``snakemake_logs_kept`` (config key, default 30), so the folder
stops growing with the number of runs (Snakemake itself never removes one)."""

from __future__ import annotations

import pytest
from crypto_lakehouse_emulator.faults import Faults
from crypto_lakehouse_emulator.generate import write_kline_day

from tests.e2e.e2e_helpers import emulator_config, snakemake

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize(
    ("outcome", "kept_setting"), [("success", None), ("failure", None), ("success", 5)]
)
def test_a_run_keeps_the_newest_snakemake_logs_only(tmp_path, emulator, outcome, kept_setting):
    mirror = tmp_path / "mirror"
    for day in ("2025-01-19", "2025-01-20"):
        write_kline_day(mirror, "spot", "BTCUSDT", "1m", day, seed=3)
    # A failed run (every archive request answered 5xx) prunes too (the onerror hook).
    faults = Faults(fail_rate=1.0) if outcome == "failure" else None
    emu = emulator(mirror_dir=mirror, faults=faults)
    config = emulator_config(
        emu.base_url,
        tmp_path / "data",
        trade_types=["spot"],
        symbols={"spot": ["BTCUSDT"]},
        end_date="2025-01-20",
        lookback_days=2,
        download={"max_retries": 0},
        **({} if kept_setting is None else {"snakemake_logs_kept": kept_setting}),
    )
    keep = 30 if kept_setting is None else kept_setting  # the schema's default
    # The logs of earlier daily runs, as Snakemake names them (its start time, ISO).
    logs = tmp_path / ".snakemake" / "log"
    logs.mkdir(parents=True)
    earlier = [f"2025-{m:02d}-01T060000.000000.snakemake.log" for m in range(1, 13)]
    earlier += [f"2025-12-{d:02d}T060000.000000.snakemake.log" for d in range(1, 31)]
    for name in earlier:
        (logs / name).write_text("an earlier run\n")
    (logs / "operator-notes.txt").write_text("not Snakemake's\n")

    proc = snakemake(tmp_path, config, "aws_parse", timeout=300, check=False)
    assert (proc.returncode == 0) == (outcome == "success"), proc.stderr[-3000:]

    left = sorted(p.name for p in logs.iterdir())
    ours = [n for n in left if n not in earlier and n.endswith(".snakemake.log")]
    assert len(ours) == 1, left  # this run's log, kept
    kept = [n for n in left if n in earlier]
    # The newest earlier ones (with this run's: `keep`), the oldest gone.
    assert kept == earlier[len(earlier) - (keep - 1) :], left
    assert "operator-notes.txt" in left
