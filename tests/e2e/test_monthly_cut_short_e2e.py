"""``download.use_monthly_klines`` with a monthly kline file cut short (binance-public-data
#403: ALICEUSDT's 2024-07 monthly 1m file holds 7 days while the daily files are complete),
through Snakemake on the emulator: the first run takes the monthly file and REST fills the
days it lacks; the next run takes those days' daily zips, the REST day files of those days
go, and the generated file is the exchange's candles either way."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from crypto_lakehouse_emulator import Emulator
from crypto_lakehouse_emulator.generate import format_kline_csv, kline_frame, zip_bytes
from crypto_lakehouse_emulator.rest import RestEmulator

from crypto_lakehouse import layout
from crypto_lakehouse.loading import load_klines
from tests.e2e.e2e_helpers import emulator_config, snakemake

pytestmark = pytest.mark.e2e

NOV = [date(2024, 11, 1) + timedelta(days=k) for k in range(30)]
DEC = [date(2024, 12, 1) + timedelta(days=k) for k in range(3)]
SYMBOL = "QMUSDT"


def _put(mirror: Path, key: str, frame: pd.DataFrame) -> None:
    import hashlib

    path = mirror / key
    path.parent.mkdir(parents=True, exist_ok=True)
    data = zip_bytes(
        path.name[:-4] + ".csv", format_kline_csv(frame, "spot", "ms"), datetime(2024, 12, 5)
    )
    path.write_bytes(data)
    path.with_name(path.name + ".CHECKSUM").write_text(
        f"{hashlib.sha256(data).hexdigest()}  {path.name}"
    )


def test_a_monthly_file_cut_short_is_completed_from_the_daily_zips(tmp_path):
    mirror = tmp_path / "mirror"
    frames = {d: kline_frame("spot", SYMBOL, "1m", d, seed=9) for d in NOV + DEC}
    for d in NOV + DEC:
        _put(mirror, layout.daily_kline_key("spot", SYMBOL, "1m", d.isoformat()), frames[d])
    month = layout.monthly_kline_key("spot", SYMBOL, "1m", "2024-11")
    _put(mirror, month, pd.concat([frames[d] for d in NOV[:7]], ignore_index=True))
    truth = pd.concat([frames[d] for d in NOV + DEC], ignore_index=True)

    workdir, data = tmp_path / "run", tmp_path / "run" / "data"
    workdir.mkdir()
    config = emulator_config(
        "http://unused", data, trade_types=["spot"], symbols={"spot": [SYMBOL]},
        start_date=NOV[0].isoformat(), end_date=DEC[-1].isoformat(),
        download={"use_monthly_klines": True},
        features={"enabled": False}, resample={"targets": []},
    )  # fmt: skip
    now = int(datetime(2024, 12, 4, 0, 1, tzinfo=timezone.utc).timestamp() * 1000)

    def run():
        rest = RestEmulator(now_ms=now)
        rest.add_klines("spot", SYMBOL, truth)
        emu = Emulator(mirror_dir=mirror, rest=rest).start()
        try:
            config["endpoints"] = {k: emu.base_url for k in config["endpoints"]}
            snakemake(workdir, config, "all")
        finally:
            emu.stop()

    api = layout.api_klines_dir(data, "spot", SYMBOL, "1m")

    run()
    rest_days = sorted(p.name for p in api.glob("*.pqt"))
    assert rest_days == [f"202411{d.day:02d}.pqt" for d in NOV[7:]]  # REST filled the cut
    got = load_klines(data, "spot", SYMBOL)
    assert got["close"].tolist() == truth["close"].tolist()

    run()
    assert sorted(p.name for p in api.glob("*.pqt")) == []  # the archive owns every day now
    prov = pq.read_table(layout.provenance_path(data, "spot", "1m", SYMBOL)).to_pandas()
    assert set(prov["source"]) == {"archive"}
    got = load_klines(data, "spot", SYMBOL)
    assert got["close"].tolist() == truth["close"].tolist()

    # Settled: the parse asks for no other download run, so the next run downloads nothing.
    stats = next((data / "lakehouse" / "stats" / "aws_download").rglob(f"{SYMBOL}.json"))
    before = stats.stat().st_mtime_ns
    run()
    assert stats.stat().st_mtime_ns == before
