"""End-to-end helpers: run the real workflow (subprocess) against the local emulator."""

from __future__ import annotations

import json
from datetime import date, datetime, timezone
from pathlib import Path

from tests.workflow.workflow_helpers import REPO, run_snakemake

__all__ = ["REPO", "day_ms", "emulator_config", "morning_rest", "read_json", "snakemake"]


def emulator_config(base_url: str, data_dir: Path, **overrides) -> dict:
    """A workflow config with every endpoint pointing at the emulator."""
    config = {
        "data_dir": str(data_dir),
        "endpoints": {
            "archive": base_url,
            "listing": base_url,
            "spot_api": base_url,
            "um_api": base_url,
            "cm_api": base_url,
        },
        "lookback_days": None,
    }
    config.update(overrides)
    return config


def snakemake(
    workdir: Path,
    config: dict,
    *args: str,
    timeout: int = 900,
    check: bool = True,
    launcher: list[str] | None = None,
):
    """``snakemake --cores 2 ARGS`` with ``config`` in ``workdir`` (see run_snakemake)."""
    return run_snakemake(
        workdir,
        "--cores",
        "2",
        *args,
        config=config,
        timeout=timeout,
        check=check,
        launcher=launcher,
    )


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def day_ms(d: date, hour: int = 0) -> int:
    """Epoch milliseconds of ``hour``:00 UTC on ``d``."""
    return int(datetime(d.year, d.month, d.day, hour, tzinfo=timezone.utc).timestamp() * 1000)


def morning_rest(symbols: dict, first: date, day: date, full: Path):
    """REST as it answers at 01:00 UTC on ``day`` for ``symbols`` (``{trade_type: [symbol]}``):
    klines from the emulator's synthetic source from ``first`` (seed: the trade type's
    position), so a REST day differs from the zip published later and a REST day left in
    place would show; for futures, funding up to then, its archived months answered with the
    events of the archive mirror ``full``, as Binance does."""
    from crypto_lakehouse_emulator.rest import RestEmulator

    market = {"spot": "spot", "um_futures": "um", "cm_futures": "cm"}
    rest = RestEmulator(now_ms=day_ms(day, 1))
    for i, (trade_type, names) in enumerate(symbols.items()):
        for symbol in names:
            rest.add_synthetic_klines(market[trade_type], symbol, start_ms=day_ms(first), seed=i)
            if trade_type != "spot":
                rest.add_synthetic_funding(
                    market[trade_type], symbol, start_ms=day_ms(first),
                    end_ms=day_ms(day, 1), mirror_dir=full,
                )  # fmt: skip
    return rest
