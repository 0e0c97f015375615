"""The legacy-v1-real scenario: spot BTCUSDT with a 1823-day hole between real archive days.

Legacy (README of the fixture, step 3) requested the 1823 days 2020-01-04 … 2024-12-30, got
``[]`` for each, and wrote 1783 empty day files: the 40 days 2023-11-04 … 2023-12-13 were
dropped by the weight back-off (quirk Q1). Here every day gets its file.
"""

from __future__ import annotations

import json
import shutil

import pyarrow.parquet as pq
from crypto_lakehouse_emulator.rest import RestEmulator

from crypto_lakehouse import layout
from crypto_lakehouse.io import write_json
from crypto_lakehouse.provenance import day_number
from crypto_lakehouse.rest.klines import run_api_klines
from tests.conftest import FIXTURES

LEGACY = FIXTURES / "legacy-v1-real"


def test_legacy_real_spot_hole_is_filled_completely(emulator, tmp_path):
    manifest = json.loads((LEGACY / "truth" / "manifest.json").read_text())
    rest = RestEmulator(now_ms=manifest["now_ms"])
    rest.add_klines("spot", "BTCUSDT", LEGACY / "truth" / "klines" / "spot" / "BTCUSDT-1m.csv.gz")
    emu = emulator(rest=rest)
    src = LEGACY / "parsed_data" / "spot" / "klines" / "BTCUSDT" / "1m"
    dst = layout.parsed_klines_dir(tmp_path, "spot", "BTCUSDT", "1m")
    shutil.copytree(src, dst)
    ei = tmp_path / "ei.json"  # a generous limit: this test is about days, not waiting
    write_json(ei, {"request_weight": {"limit": 1_000_000, "window_s": 60.0}})

    def run():
        return run_api_klines(
            trade_type="spot",
            symbol="BTCUSDT",
            interval="1m",
            data_dir=tmp_path,
            api_url=emu.base_url,
            parse_report=str(tmp_path / "none.json"),
            exchange_info_path=ei,
            end_date=manifest["end"],
            report_path=tmp_path / "report.json",
            stats_path=tmp_path / "stats.json",
            concurrency=8,
        )

    (tmp_path / "none.json").write_text("{}")
    stats = run()
    files = sorted(layout.api_klines_dir(tmp_path, "spot", "BTCUSDT", "1m").glob("*.pqt"))
    assert len(files) == 1823
    assert files[0].name == "20200104.pqt" and files[-1].name == "20241230.pqt"
    assert {f.name for f in files} >= {"20231104.pqt", "20231213.pqt"}  # legacy lost these
    assert all(pq.read_metadata(f).num_rows == 0 for f in files)
    assert stats["days_empty"] == 1823
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["missing_days"] == [["2020-01-04", "2024-12-30"]]
    assert report["days_by_source"]["archive"] == 5
    assert report["last_candle"] == "2025-01-01T23:59:00Z"
    assert report["freshness_lag_minutes"] == 0
    assert report["pending_days"] == []
    # the whole hole cost fewer requests than legacy's 2 per day (3566 for 1783 days)
    klines_requests = rest.counters("spot")["requests/klines"]
    assert klines_requests < 2 * 1823
    run()
    assert rest.counters("spot")["requests/klines"] == klines_requests  # nothing asked again
    assert day_number(manifest["end"]) - day_number("2020-01-01") + 1 == 1823 + 5
