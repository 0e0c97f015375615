"""Binance's data quirks, end to end: one archive that holds them all (docs/spec/binance-facts.md
§1, §3, §4, §8; binance-public-data issues cited per symbol), REST answering what the exchange
traded, one run of ``all``; every generated file is checked against candles and funding
computed here from what the emulator was given, not from the pipeline's output.

- spot ``QAUSDT``: the ms → µs switch of 2025-01-01 (§4.1), a day with missing minutes and
  zero-volume minutes, a whole day absent from the archive, a day with rows out of order, a
  day with a row repeated identically (dropped and counted: the day comes from the archive), a
  day with a minute repeated with another volume (quarantined: REST gives the day, #191);
- spot ``QBUSDT``: listed mid-day (first candle 10:00), delisted, relisted two days later at
  another price (split into ``SP0_QBUSDT`` and ``QBUSDT``);
- spot ``QCUSDT``: an outage followed by hours of candles opening at ``…:14.789`` until the
  grid is restored, as Binance's spot data of 2018-02-08 … 02-10 (#14, #77), in the archive
  and in REST (both floored onto the grid);
- um ``QAUSDT``: header line in the newer files only (#246); CHECKSUMs with CRLF, with
  uppercase hex, missing (quarantined: REST gives the day; the CHECKSUM published later
  makes the archive day replace it), a member named otherwise, a zip with two members
  (quarantined); funding every 8 h then every 4 h in one month (§4.3), REST funding after
  the archive a few hundred ms after the hour;
- um ``QDUSDT`` configured for cm too (``QDUSD_PERP``: not in the archive), and the um
  quarterly ``QDUSDT_250328`` whose name starts with it (listing folders, parsed and REST
  folders, segment files and the loader must keep them apart);
- cm ``QAUSD_PERP`` (header line in the newer files only, #267) and the quarterly
  ``QAUSD_250103`` delivered at 08:00 on its last day (no funding).
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from crypto_lakehouse_emulator import Emulator
from crypto_lakehouse_emulator.generate import (
    format_funding_csv,
    format_kline_csv,
    funding_frame,
    kline_frame,
    spot_time_unit,
    zip_bytes,
)
from crypto_lakehouse_emulator.rest import RestEmulator

from crypto_lakehouse import layout
from crypto_lakehouse.loading import load_klines
from tests.e2e.e2e_helpers import emulator_config, snakemake

pytestmark = pytest.mark.e2e

DAYS = [date(2024, 12, 28) + timedelta(days=k) for k in range(7)]  # 12-28 … 2025-01-03
MARKET = {"spot": "spot", "um_futures": "um", "cm_futures": "cm"}
CONTRACT_SIZE = 10
MIN = 60_000
SHIFT_MS = 14_789


def _ms(d: date, hour: int = 0, minute: int = 0) -> int:
    return (
        int(datetime(d.year, d.month, d.day, hour, minute, tzinfo=timezone.utc).timestamp()) * 1000
    )


class Scenario:
    def __init__(self, root: Path):
        self.mirror = root / "mirror"
        self.truth: dict[tuple[str, str], list[pd.DataFrame]] = {}  # what REST answers
        self.funding: dict[tuple[str, str], list[dict]] = {}  # REST funding
        self.archive_funding: dict[tuple[str, str], pd.DataFrame] = {}
        self.withheld: dict[Path, bytes] = {}  # CHECKSUMs published after the first run

    def put(self, key, csv, *, checksum="plain", member=None, second_member=None):
        path = self.mirror / key
        path.parent.mkdir(parents=True, exist_ok=True)
        member = member or path.name[: -len(".zip")] + ".csv"
        if second_member:
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
                zf.writestr(member, csv)
                zf.writestr(*second_member)
            data = buf.getvalue()
        else:
            data = zip_bytes(member, csv, datetime(2025, 1, 5))
        path.write_bytes(data)
        digest = hashlib.sha256(data).hexdigest()
        text = {
            "plain": f"{digest}  {path.name}",
            "crlf": f"{digest}  {path.name}\r\n",
            "upper": f"{digest.upper()}  {path.name}\n",
            "late": f"{digest}  {path.name}\n",
        }[checksum]
        sidecar = path.with_name(path.name + ".CHECKSUM")
        if checksum == "late":
            self.withheld[sidecar] = text.encode()
        else:
            sidecar.write_bytes(text.encode())

    def day(self, trade_type, symbol, d, frame, header=None, **put_opts):
        unit = spot_time_unit(d) if trade_type == "spot" else "ms"
        csv = format_kline_csv(frame, trade_type, unit, header)
        self.put(layout.daily_kline_key(trade_type, symbol, "1m", d.isoformat()), csv, **put_opts)

    def rest(self, trade_type, symbol, frame):
        self.truth.setdefault((trade_type, symbol), []).append(frame)


def build(root: Path) -> Scenario:
    s = Scenario(root)
    # spot QAUSDT
    for d in DAYS:
        full = kline_frame("spot", "QAUSDT", "1m", d, seed=3, zero_volume=range(200, 206))
        s.rest("spot", "QAUSDT", full)
        if d == date(2024, 12, 31):
            continue  # the whole day is absent from the archive
        frame = full
        if d == date(2024, 12, 30):
            frame = full.drop(index=range(100, 110)).reset_index(drop=True)
        if d == date(2025, 1, 2):
            frame = full.iloc[list(range(49, -1, -1)) + list(range(50, len(full)))]
        if d == date(2024, 12, 29):  # a row twice, identical: dropped and counted
            frame = pd.concat([full.iloc[:300], full.iloc[299:300], full.iloc[300:]])
        if d == date(2025, 1, 3):  # a minute twice with another volume: which is right?
            other = full.iloc[299:300].copy()
            other["volume"] = other["volume"] * 2
            frame = pd.concat([full.iloc[:300], other, full.iloc[300:]])
        s.day("spot", "QAUSDT", d, frame.reset_index(drop=True))
    # spot QBUSDT
    for d in (date(2024, 12, 29), date(2024, 12, 30), date(2025, 1, 2), date(2025, 1, 3)):
        price = 50.0 if d.year == 2024 else 80.0
        frame = kline_frame("spot", "QBUSDT", "1m", d, seed=4, start_price=price)
        if d == date(2024, 12, 29):
            frame = frame.iloc[600:].reset_index(drop=True)
        s.rest("spot", "QBUSDT", frame)
        s.day("spot", "QBUSDT", d, frame)
    # spot QCUSDT: no trading from 12-29 20:00 to 12-30 09:28, then the candles open 14.789 s
    # after the minute until 12-31 04:00
    frame = pd.concat([kline_frame("spot", "QCUSDT", "1m", d, seed=5) for d in DAYS])
    t = frame["open_time"]
    frame = frame[(t < _ms(DAYS[1], 20)) | (t >= _ms(DAYS[2], 9, 28))].copy()
    shifted = (frame["open_time"] >= _ms(DAYS[2], 9, 28)) & (frame["open_time"] < _ms(DAYS[3], 4))
    frame.loc[shifted, ["open_time", "close_time"]] += SHIFT_MS
    s.rest("spot", "QCUSDT", frame)
    for d in DAYS:
        part = frame[(frame["open_time"] >= _ms(d)) & (frame["open_time"] < _ms(d) + 1440 * MIN)]
        s.day("spot", "QCUSDT", d, part.reset_index(drop=True))
    # um QAUSDT
    variants = {
        DAYS[0]: {"checksum": "crlf"},
        DAYS[1]: {"checksum": "upper"},
        DAYS[2]: {"checksum": "late"},
        DAYS[5]: {"member": "data.csv"},
        DAYS[6]: {"second_member": ("readme.txt", b"hello\n")},
    }
    for d in DAYS:
        full = kline_frame("um_futures", "QAUSDT", "1m", d, seed=6)
        s.rest("um_futures", "QAUSDT", full)
        s.day(
            "um_futures", "QAUSDT", d, full, header=d >= date(2024, 12, 31), **variants.get(d, {})
        )
    every8 = funding_frame("um_futures", "QAUSDT", "2024-12", interval_hours=8, seed=6)
    every4 = funding_frame("um_futures", "QAUSDT", "2024-12", interval_hours=4, seed=7)
    switch = _ms(date(2024, 12, 16), 16)
    dec = pd.concat([every8[every8.calc_time < switch], every4[every4.calc_time >= switch]])
    dec = dec.reset_index(drop=True)
    s.put(layout.funding_key("um_futures", "QAUSDT", "2024-12"), format_funding_csv(dec))
    s.archive_funding[("um_futures", "QAUSDT")] = dec
    jan = [
        {"symbol": "QAUSDT", "fundingTime": _ms(DAYS[4]) + k * 4 * 3_600_000 + (k * 397) % 2000,
         "fundingRate": f"{0.0001 * (k + 1):.8f}"}
        for k in range(18)
    ]  # fmt: skip
    s.funding[("um_futures", "QAUSDT")] = [
        {"symbol": "QAUSDT", "fundingTime": int(t), "fundingRate": f"{r:.8f}"}
        for t, r in zip(dec.calc_time, dec.last_funding_rate, strict=True)
    ] + jan
    # um QDUSDT (no funding archive, none from REST either)
    for d in DAYS:
        full = kline_frame("um_futures", "QDUSDT", "1m", d, seed=8)
        s.rest("um_futures", "QDUSDT", full)
        s.day("um_futures", "QDUSDT", d, full)
    s.funding[("um_futures", "QDUSDT")] = []
    for d in DAYS:
        full = kline_frame("um_futures", "QDUSDT_250328", "1m", d, seed=10, start_price=70.0)
        if d == DAYS[3]:
            full = full.iloc[:700].reset_index(drop=True)  # a short day: REST asked
        s.rest("um_futures", "QDUSDT_250328", full)
        s.day("um_futures", "QDUSDT_250328", d, full)
    s.funding[("um_futures", "QDUSDT_250328")] = []
    # cm QAUSD_PERP and the quarterly QAUSD_250103
    for symbol in ("QAUSD_PERP", "QAUSD_250103"):
        for d in DAYS:
            full = kline_frame("cm_futures", symbol, "1m", d, seed=9)
            if symbol == "QAUSD_250103" and d == DAYS[-1]:
                full = full.iloc[:480].reset_index(drop=True)  # delivered at 08:00
            s.rest("cm_futures", symbol, full)
            s.day("cm_futures", symbol, d, full, header=d >= date(2024, 12, 31))
    cm_dec = funding_frame("cm_futures", "QAUSD_PERP", "2024-12", interval_hours=8, seed=9)
    s.put(
        layout.funding_key("cm_futures", "QAUSD_PERP", "2024-12"),
        format_funding_csv(cm_dec),
        checksum="crlf",
    )
    s.archive_funding[("cm_futures", "QAUSD_PERP")] = cm_dec
    s.funding[("cm_futures", "QAUSD_PERP")] = [
        {"symbol": "QAUSD_PERP", "fundingTime": _ms(DAYS[4]) + k * 8 * 3_600_000 + 3,
         "fundingRate": "0.00010000"}
        for k in range(9)
    ]  # fmt: skip
    s.funding[("cm_futures", "QAUSD_250103")] = []
    return s


def emulator(s: Scenario) -> Emulator:
    rest = RestEmulator(now_ms=_ms(DAYS[-1] + timedelta(days=1), 1))
    for (trade_type, symbol), frames in s.truth.items():
        rest.add_klines(MARKET[trade_type], symbol, pd.concat(frames, ignore_index=True))
    for (trade_type, symbol), records in s.funding.items():
        rest.add_funding(MARKET[trade_type], symbol, records)
    for symbol in ("QAUSD_PERP", "QAUSD_250103"):
        rest.set_contract_size("cm", symbol, CONTRACT_SIZE)
    return Emulator(mirror_dir=s.mirror, rest=rest).start()


# ---------------------------------------------------------------- expected, computed here
def expected_segment(trade_type: str, frame: pd.DataFrame, funding=None) -> pd.DataFrame:
    """The legacy generated klines of one segment from the exchange's candles: times floored
    to the minute, volume > 0 candles, the grid from the first to the last one filled (close
    carried, volumes 0), VWAP clipped to [low, high], funding on the hour-floored minute."""
    f = frame.assign(open_time=frame["open_time"] // MIN * MIN).sort_values("open_time")
    f = f[f["volume"] > 0]
    grid = pd.DataFrame({"t": np.arange(f["open_time"].iloc[0], f["open_time"].iloc[-1] + 1, MIN)})
    g = grid.merge(f, left_on="t", right_on="open_time", how="left")
    g["close"] = g["close"].ffill()
    for c in ("open", "high", "low"):
        g[c] = g[c].fillna(g["close"])
    for c in ("volume", "quote_volume", "count", "taker_buy_volume", "taker_buy_quote_volume"):
        g[c] = g[c].fillna(0.0)
    if trade_type == "cm_futures":
        vwap = g["volume"] * CONTRACT_SIZE / g["quote_volume"]
    else:
        vwap = g["quote_volume"] / g["volume"]
    g["avg_price_1m"] = np.clip(vwap.where(g["volume"] > 0, g["open"]), g["low"], g["high"])
    if funding is not None:
        hours = pd.Series(
            funding["rate"].to_numpy(), index=funding["time"] // 3_600_000 * 3_600_000
        )
        g["funding_rate"] = g["t"].map(hours.groupby(level=0).last()).fillna(0.0)
    return g


def funding_events(s: Scenario, trade_type: str, symbol: str) -> pd.DataFrame:
    archive = s.archive_funding[(trade_type, symbol)]
    rest = pd.DataFrame(s.funding[(trade_type, symbol)])
    return pd.concat(
        [
            pd.DataFrame({"time": archive["calc_time"], "rate": archive["last_funding_rate"]}),
            pd.DataFrame({"time": rest["fundingTime"], "rate": rest["fundingRate"].astype(float)}),
        ]
    )


COLUMNS = {
    "open": "open", "high": "high", "low": "low", "close": "close", "volume": "volume",
    "quote_volume": "quote_volume", "trade_num": "count",
    "taker_buy_base_asset_volume": "taker_buy_volume",
    "taker_buy_quote_asset_volume": "taker_buy_quote_volume", "avg_price_1m": "avg_price_1m",
}  # fmt: skip


def assert_generated(data: Path, trade_type: str, name: str, want: pd.DataFrame) -> None:
    table = pq.read_table(data / "results_data" / trade_type / "klines" / "1m" / f"{name}.pqt")
    times = table.column("candle_begin_time").cast(pa.int64()).to_numpy()
    got = table.to_pandas()
    assert times.tolist() == want["t"].tolist(), f"{trade_type} {name}: candle times"
    columns = dict(COLUMNS, **({"funding_rate": "funding_rate"} if "funding_rate" in want else {}))
    assert ("funding_rate" in got) == ("funding_rate" in want), f"{trade_type} {name}"
    for ours, theirs in columns.items():
        np.testing.assert_allclose(
            got[ours].to_numpy(float), want[theirs].to_numpy(float), rtol=1e-9, atol=1e-12,
            err_msg=f"{trade_type} {name} {ours}",
        )  # fmt: skip


def quarantine_reasons(data: Path) -> dict[str, str]:
    root = data / "lakehouse" / "quarantine"
    return {
        p.relative_to(root).as_posix().removesuffix(".reason"): p.read_text()
        for p in root.rglob("*.reason")
    }


def test_binance_quirks_end_to_end(tmp_path):
    s = build(tmp_path)
    workdir, data = tmp_path / "run", tmp_path / "run" / "data"
    workdir.mkdir()
    config = emulator_config(
        "http://unused",
        data,
        trade_types=["spot", "um_futures", "cm_futures"],
        symbols={
            "spot": ["QAUSDT", "QBUSDT", "QCUSDT"],
            "um_futures": ["QAUSDT", "QDUSDT", "QDUSDT_250328"],
            "cm_futures": ["QAUSD_PERP", "QAUSD_250103", "QDUSD_PERP"],
        },
        start_date=DAYS[0].isoformat(),
        end_date=DAYS[-1].isoformat(),
        features={"enabled": False},
        resample={"targets": []},
    )
    emu = emulator(s)
    try:
        config["endpoints"] = {k: emu.base_url for k in config["endpoints"]}
        snakemake(workdir, config, "all")
    finally:
        emu.stop()

    um_key = layout.daily_kline_key("um_futures", "QAUSDT", "1m", DAYS[6].isoformat())
    reasons = quarantine_reasons(data)
    expected_reasons = {
        layout.daily_kline_key("spot", "QAUSDT", "1m", "2025-01-03"): "repeats",
        layout.daily_kline_key("um_futures", "QAUSDT", "1m", "2024-12-30"): "no CHECKSUM",
        um_key: "2 members",
    }
    assert sorted(reasons) == sorted(expected_reasons)
    for key, words in expected_reasons.items():
        assert words in reasons[key], (key, reasons[key])

    def check_all():
        for trade_type, symbol in [
            ("spot", "QAUSDT"), ("spot", "QCUSDT"), ("um_futures", "QDUSDT"),
            ("um_futures", "QDUSDT_250328"), ("cm_futures", "QAUSD_250103"),
        ]:  # fmt: skip
            frame = pd.concat(s.truth[(trade_type, symbol)])
            assert_generated(data, trade_type, symbol, expected_segment(trade_type, frame))
        for trade_type, symbol in [("um_futures", "QAUSDT"), ("cm_futures", "QAUSD_PERP")]:
            frame = pd.concat(s.truth[(trade_type, symbol)])
            events = funding_events(s, trade_type, symbol)
            assert_generated(data, trade_type, symbol, expected_segment(trade_type, frame, events))
        # delisted, relisted two days later at another price: two segments
        old, new = s.truth[("spot", "QBUSDT")][:2], s.truth[("spot", "QBUSDT")][2:]
        assert_generated(data, "spot", "SP0_QBUSDT", expected_segment("spot", pd.concat(old)))
        assert_generated(data, "spot", "QBUSDT", expected_segment("spot", pd.concat(new)))
        names = {p.name for p in (data / "results_data").rglob("*.pqt")}
        assert not any("QDUSD_PERP" in n for n in names)
        for symbol in ("QDUSDT", "QDUSDT_250328"):
            want = expected_segment("um_futures", pd.concat(s.truth[("um_futures", symbol)]))
            got = load_klines(data, "um_futures", symbol)
            assert got["close"].tolist() == want["close"].tolist(), symbol

    check_all()
    funding_report = json.loads(
        next((data / "lakehouse" / "reports" / "aws_parse" / "um_futures" / "funding").rglob(
            "QAUSDT.json"
        )).read_text()
    )  # fmt: skip
    dec = s.archive_funding[("um_futures", "QAUSDT")]
    hours = dec["funding_interval_hours"].value_counts()
    assert funding_report["quality"]["funding_interval_hours"] == {
        str(h): int(n) for h, n in hours.items()
    }
    spot_report = json.loads(
        next(
            (data / "lakehouse" / "reports" / "aws_parse" / "spot").rglob("QAUSDT.json")
        ).read_text()
    )
    assert spot_report["quality"]["duplicates_dropped"] == 1
    assert list(spot_report["quarantined"]) == [
        layout.daily_kline_key("spot", "QAUSDT", "1m", "2025-01-03")
    ]
    api_qa = data / "api_data" / "spot" / "klines" / "QAUSDT" / "1m"
    assert "20241229.pqt" not in {p.name for p in api_qa.glob("*.pqt")}  # from the archive
    # the outage's short days were asked of REST, not the day floored whole from the archive
    api_qc = data / "api_data" / "spot" / "klines" / "QCUSDT" / "1m"
    assert sorted(p.name for p in api_qc.glob("*.pqt")) == ["20241229.pqt", "20241230.pqt"]
    # REST filled the days the archive lacks: the absent day, the short one, the quarantined
    api = data / "api_data" / "um_futures" / "klines" / "QAUSDT" / "1m"
    assert sorted(p.name for p in api.glob("*.pqt")) == ["20241230.pqt", "20250103.pqt"]

    # Binance publishes the missing CHECKSUM later: the archive day replaces the REST day.
    for path, text in s.withheld.items():
        path.write_bytes(text)
    emu = emulator(s)
    try:
        config["endpoints"] = {k: emu.base_url for k in config["endpoints"]}
        snakemake(workdir, config, "all", "--forcerun", "list_archive")
    finally:
        emu.stop()
    assert sorted(p.name for p in api.glob("*.pqt")) == ["20250103.pqt"]
    prov = pq.read_table(layout.provenance_path(data, "um_futures", "1m", "QAUSDT")).to_pandas()
    assert prov.set_index(prov["day"].astype(str))["source"]["2024-12-30"] == "archive"
    check_all()
