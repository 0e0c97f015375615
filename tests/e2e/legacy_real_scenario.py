"""The legacy-v1-real scenario served by the emulator: the real archive files the legacy
tool downloaded, and its REST answers (`tests/fixtures/legacy-v1-real/README.md`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from crypto_lakehouse_emulator.mirrors import real_mirror
from crypto_lakehouse_emulator.rest import RestEmulator

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
LEGACY = FIXTURES / "legacy-v1-real"
MANIFEST = json.loads((LEGACY / "truth" / "manifest.json").read_text())
SYMBOLS = {"spot": "BTCUSDT", "um_futures": "BTCUSDT", "cm_futures": "BTCUSD_PERP"}
MARKET_DIR = {"spot": "spot", "um_futures": "um", "cm_futures": "cm"}
PRICE_TOL = 1e-4  # the legacy author's own acceptance thresholds (fixture README §6)
FUNDING_TOL = 1e-6


def legacy_rest(window_s: float = 5.0) -> RestEmulator:
    """REST answers of the fixture; a 5 s weight window (announced in exchangeInfo) keeps
    the ~2,500 requests of the REST fill from waiting for whole minutes."""
    rest = RestEmulator(now_ms=MANIFEST["now_ms"], window_s=window_s)
    for trade_type, symbol in SYMBOLS.items():
        market = MARKET_DIR[trade_type]
        rest.add_klines(
            market, symbol, LEGACY / "truth" / "klines" / market / f"{symbol}-1m.csv.gz"
        )
        rest.set_exchange_info(market, LEGACY / "truth" / "exchange_info" / f"{market}.json")
        if trade_type != "spot":
            rest.add_funding(market, symbol, [])  # the fixture's REST has no funding events
    return rest


def legacy_mirror(dest: Path) -> None:
    real_mirror(dest, FIXTURES, funding=False)  # exactly the 14 objects legacy downloaded


def legacy_config(base_url: str, data_dir: Path) -> dict:
    return {
        "data_dir": str(data_dir),
        "endpoints": {k: base_url for k in ("archive", "listing", "spot_api", "um_api", "cm_api")},
        "symbols": {t: [s] for t, s in SYMBOLS.items()},
        "start_date": None,
        "end_date": MANIFEST["end"],
        "lookback_days": None,
    }


def result_files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*.pqt")}


def compare_frames(ours_path: Path, legacy_path: Path, skip_columns=()) -> None:
    """Schema (names, order, types) and values within the legacy tolerances."""
    ours, legacy = pq.read_table(ours_path), pq.read_table(legacy_path)
    assert ours.schema.names == legacy.schema.names, (ours_path, ours.schema.names)
    for name in legacy.schema.names:
        assert ours.schema.field(name).type == legacy.schema.field(name).type, (ours_path, name)
    assert ours.num_rows == legacy.num_rows, ours_path
    assert ours.column("candle_begin_time").equals(legacy.column("candle_begin_time"))
    for name in legacy.schema.names:
        if name == "candle_begin_time" or name in skip_columns:
            continue
        a = ours.column(name).to_numpy(zero_copy_only=False).astype(float)
        b = legacy.column(name).to_numpy(zero_copy_only=False).astype(float)
        tol = FUNDING_TOL if name.startswith("funding") else PRICE_TOL
        np.testing.assert_allclose(a, b, rtol=0, atol=tol, err_msg=f"{ours_path}:{name}")
