"""The README's offline demo, whole: the emulator's command line serving the test fixtures'
archive mirror and (``--rest``) a synthetic REST API, and the command line's
`complete-pipeline` against it, from listing to the report page, with no other network."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
import requests

from tests.e2e.e2e_helpers import REPO

pytestmark = [pytest.mark.e2e]

MIRROR = REPO / "tests/fixtures/legacy-v1-real/mirror"


def test_complete_pipeline_against_the_emulator_command_line(tmp_path):
    emulator = subprocess.Popen(
        [sys.executable, "-m", "crypto_lakehouse_emulator", "--mirror", str(MIRROR), "--rest"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        url = emulator.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), emulator.stderr.read()
        # Every kline symbol of the mirror has a REST side: spot, um (with funding) and cm.
        info = requests.get(f"{url}/api/v3/exchangeInfo", timeout=10).json()
        assert "BTCUSDT" in {s["symbol"] for s in info["symbols"]}
        funding = requests.get(
            f"{url}/fapi/v1/fundingRate", params={"symbol": "BTCUSDT", "limit": 3}, timeout=10
        ).json()
        assert len(funding) == 3 and all("fundingRate" in r for r in funding)
        cm = requests.get(f"{url}/dapi/v1/exchangeInfo", timeout=10).json()
        assert "BTCUSD_PERP" in {s["symbol"] for s in cm["symbols"]}

        data = tmp_path / "data"
        config = {
            "data_dir": str(data),
            "trade_types": ["spot"],
            "symbols": {"spot": ["BTCUSDT"]},
            "start_date": "2020-01-01",
            "end_date": "2020-01-03",
            "resample": {"targets": []},
            "endpoints": {k: url for k in ("archive", "listing", "spot_api", "um_api", "cm_api")},
        }
        (tmp_path / "demo.yaml").write_text(json.dumps(config))
        run = subprocess.run(
            [sys.executable, "-m", "crypto_lakehouse", "workflow", "complete-pipeline", "1m",
             "--cores", "2", "--configfile", str(tmp_path / "demo.yaml")],
            cwd=tmp_path, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
    finally:
        emulator.terminate()
        emulator.wait(timeout=10)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    klines = pq.read_table(data / "results_data/spot/klines/1m/BTCUSDT.pqt")
    assert klines.num_rows == 3 * 1440  # the three archived days, whole
    assert (data / "results_data/spot/features/1m/BTCUSDT.pqt").is_file()
    assert "BTCUSDT" in (data / "lakehouse/report/index.html").read_text()
