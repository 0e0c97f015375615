"""`all` at a base interval other than 1m, spot and um_futures with funding, on the emulator:
every generated, resampled and feature value checked against candles computed here from the
emulator's own sources (the archive frames it wrote, its REST answers), not from our output.

Day 2 of the archive lacks three candles and REST (which wins over the archive for a day it
fetched, docs/provenance.md) lacks one of them: that one is filled. Day 5 is REST only and
lacks two candles: filled. Day 6 (end_date) has not closed at the REST clock: left out.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest
from crypto_lakehouse_emulator import Emulator
from crypto_lakehouse_emulator.generate import kline_frame, write_funding_month, write_kline_day
from crypto_lakehouse_emulator.rest import RestEmulator

from crypto_lakehouse.intervals import interval_ms
from tests.e2e.e2e_helpers import emulator_config, snakemake

pytestmark = pytest.mark.e2e

BASE = "1h"
STEP = interval_ms(BASE)
FIRST, LAST_ARCHIVED, END = date(2024, 1, 1), date(2024, 1, 4), date(2024, 1, 6)
MISSING = {date(2024, 1, 2): [1, 2, 12]}  # candle indices absent from the archive day
MARKET = {"spot": "spot", "um_futures": "um"}


def _ms(d: date, hour: int = 0) -> int:
    return int(datetime(d.year, d.month, d.day, hour, tzinfo=timezone.utc).timestamp() * 1000)


REST_GAPS = [(_ms(date(2024, 1, 2), 12), _ms(date(2024, 1, 2), 13)),
             (_ms(date(2024, 1, 5), 8), _ms(date(2024, 1, 5), 10))]  # fmt: skip


def _times(column: pd.Series) -> np.ndarray:
    """A UTC time column as epoch ms."""
    return column.dt.tz_convert(None).to_numpy().astype("datetime64[ms]").astype(np.int64)


def _days(lo: date, hi: date):
    d = lo
    while d <= hi:
        yield d
        d += timedelta(days=1)


def _frame(rows) -> pd.DataFrame:
    """open time (ms) -> OHLCV, trades of the REST arrays or an archive frame."""
    df = pd.DataFrame(rows).iloc[:, :9]
    df.columns = ["t", "open", "high", "low", "close", "volume", "ct", "quote_volume", "n"]
    return df.astype(float).astype({"t": np.int64, "n": np.int64}).set_index("t")


def _expected(trade_type: str, rest: RestEmulator) -> pd.DataFrame:
    """The base candles the pipeline must build: a day REST fetched (a short archive day,
    a day after the archive) from REST, the others from the archive; the holes of both
    filled with the previous close and zero volume, on the complete grid."""
    parts = []
    for d in _days(FIRST, END - timedelta(days=1)):
        if d <= LAST_ARCHIVED and d not in MISSING:
            f = kline_frame(trade_type, "BTCUSDT", BASE, d, seed=3)
            parts.append(_frame(f[["open_time", "open", "high", "low", "close", "volume",
                                   "close_time", "quote_volume", "count"]].to_numpy()))  # fmt: skip
        else:
            parts.append(
                _frame(
                    rest.klines_rows(
                        MARKET[trade_type], "BTCUSDT", BASE, _ms(d), _ms(d) + 86_400_000
                    )
                )
            )
    real = pd.concat(parts)
    grid = np.arange(_ms(FIRST), _ms(END), STEP, dtype=np.int64)
    out = real.reindex(grid)
    filled = out["open"].isna().to_numpy()
    close = out["close"].ffill()
    for col in ("open", "high", "low", "close"):
        out.loc[filled, col] = close.shift(1)[filled]
    out.loc[filled, ["volume", "quote_volume", "n"]] = 0
    out["filled"] = filled
    return out


def test_an_hourly_base_interval_end_to_end(tmp_path):
    import talib

    mirror = tmp_path / "mirror"
    for trade_type in MARKET:
        for d in _days(FIRST, LAST_ARCHIVED):
            write_kline_day(
                mirror, trade_type, "BTCUSDT", BASE, d, seed=3, missing=MISSING.get(d, [])
            )
    for month in ("2023-12", "2024-01"):
        write_funding_month(mirror, "um_futures", "BTCUSDT", month, seed=3)
    rest = RestEmulator(now_ms=_ms(END, 5))
    for i, market in enumerate(MARKET.values()):
        rest.add_synthetic_klines(
            market, "BTCUSDT", start_ms=_ms(FIRST), seed=i, base_price=40_000, gaps=REST_GAPS
        )
    rest.add_synthetic_funding(
        "um", "BTCUSDT", start_ms=_ms(FIRST), end_ms=_ms(END, 5), mirror_dir=mirror
    )
    targets = [
        {"trade_type": "spot", "interval": "4h", "offset_step": "1h"},
        {"trade_type": "um_futures", "interval": "1d", "offset_step": "0m"},
    ]
    emu = Emulator(mirror_dir=mirror, rest=rest).start()
    try:
        config = emulator_config(
            emu.base_url,
            tmp_path / "data",
            interval=BASE,
            trade_types=list(MARKET),
            symbols={t: ["BTCUSDT"] for t in MARKET},
            start_date=FIRST.isoformat(),
            end_date=END.isoformat(),
            resample={"targets": targets},
        )
        snakemake(tmp_path, config, "all")
    finally:
        emu.stop()

    data = tmp_path / "data"
    for trade_type in MARKET:
        want = _expected(trade_type, rest)
        got = pd.read_parquet(data / f"results_data/{trade_type}/klines/{BASE}/BTCUSDT.pqt")
        t = _times(got["candle_begin_time"])
        np.testing.assert_array_equal(t, want.index.to_numpy())  # the grid, day 6 left out
        assert int(want["filled"].sum()) == 3
        for ours, theirs in [("open", "open"), ("high", "high"), ("low", "low"),
                             ("close", "close"), ("volume", "volume"),
                             ("quote_volume", "quote_volume"), ("trade_num", "n")]:  # fmt: skip
            np.testing.assert_allclose(got[ours], want[theirs], rtol=1e-12, err_msg=ours)
        vwap = (want["quote_volume"] / want["volume"]).where(want["volume"] > 0)
        has = vwap.notna().to_numpy()
        np.testing.assert_allclose(got[f"avg_price_{BASE}"].to_numpy()[has], vwap[has], rtol=1e-12)
        if trade_type == "um_futures":
            f = pd.read_parquet(data / "parsed_data/um_futures/funding/BTCUSDT.pqt")
            hour = _times(f["funding_time"])
            hour = hour // STEP * STEP
            rates = pd.Series(f["funding_rate"].to_numpy(), index=hour).groupby(level=0).sum()
            np.testing.assert_allclose(got["funding_rate"], rates.reindex(t, fill_value=0.0))
            assert (got["funding_rate"] != 0).sum() == 15  # 5 days of 8-hourly events
        # resampled: complete windows of the base candles only
        for target in (x for x in targets if x["trade_type"] == trade_type):
            span = interval_ms(target["interval"])
            step = interval_ms(target["offset_step"]) if target["offset_step"] != "0m" else span
            for k in range(span // step):
                offset = k * step if step != span else 0
                key = (t - offset) // span * span + offset
                g = got.assign(key=key).groupby("key")
                agg = pd.DataFrame({
                    "open": g["open"].first(), "high": g["high"].max(), "low": g["low"].min(),
                    "close": g["close"].last(), "volume": g["volume"].sum(), "n": g.size(),
                })  # fmt: skip
                agg = agg[agg["n"] == span // STEP]
                unit = target["offset_step"][-1] if step != span else "m"
                name = f"{offset // interval_ms('1' + unit)}{unit}"
                path = data / f"results_data/{trade_type}/resampled_klines"
                r = pd.read_parquet(path / target["interval"] / name / "BTCUSDT.pqt")
                rt = _times(r["candle_begin_time"])
                np.testing.assert_array_equal(rt, agg.index.to_numpy(), err_msg=name)
                for col in ("open", "high", "low", "close", "volume"):
                    np.testing.assert_allclose(r[col], agg[col], rtol=1e-12, err_msg=col)
        # features: TA-Lib on the base close, microstructure on the base candles
        feat = pd.read_parquet(data / f"results_data/{trade_type}/features/{BASE}/BTCUSDT.pqt")
        close = want["close"].to_numpy()
        np.testing.assert_allclose(feat["rsi_14"], talib.RSI(close, 14), rtol=1e-9)
        np.testing.assert_allclose(feat["ema_20"], talib.EMA(close, 20), rtol=1e-9)
        np.testing.assert_allclose(feat["macd_12_26_9"], talib.MACD(close, 12, 26, 9)[0], rtol=1e-9)
        r = np.r_[np.nan, np.log(close[1:] / close[:-1])]
        realized = np.sqrt(pd.Series(r**2).rolling(60, min_periods=30).sum())
        np.testing.assert_allclose(feat["realized_vol_60"], realized, rtol=1e-9)
        # quality: candles per day of the archive days at this interval
        q = pd.read_parquet(data / f"lakehouse/quality/{trade_type}/{BASE}/BTCUSDT.pqt")
        assert q["expected_rows"].tolist() == [24] * 4
        assert q["rows"].tolist() == [24, 21, 24, 24]
