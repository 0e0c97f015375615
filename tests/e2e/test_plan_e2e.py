"""`crypto_lakehouse plan` against the emulator: counts from the listing and the disk,
listing reuse when fresh (docs/plan.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import pytest
from crypto_lakehouse_emulator import Emulator
from crypto_lakehouse_emulator.generate import build_mirror

from crypto_lakehouse import layout
from crypto_lakehouse import plan as plan_module
from tests.e2e.e2e_helpers import REPO, emulator_config, snakemake

START, END = "2024-05-29", "2024-06-05"  # the archive has 2024-05-28 … 2024-06-03
DROPPED = layout.daily_kline_key("spot", "BTCUSDT", "1h", "2024-05-31")


def days(first: str, last: str) -> list[str]:
    d, out = date.fromisoformat(first), []
    while d <= date.fromisoformat(last):
        out.append(d.isoformat())
        d += timedelta(days=1)
    return out


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("plan")
    mirror = tmp / "mirror"
    build_mirror(
        mirror,
        {
            "spot": {"symbols": ["BTCUSDT", "USDCUSDT", "ETHBTC"], "start": "2024-05-28",
                     "end": "2024-06-03", "interval": "1h"},
            "um_futures": {"symbols": ["BTCUSDT", "BTCUSDT_260925"], "start": "2024-05-30",
                           "end": "2024-06-03", "interval": "1h",
                           "funding_months": ["2024-04", "2024-05"]},
        },
    )  # fmt: skip
    for key in (DROPPED, DROPPED + ".CHECKSUM"):  # a day the archive never published
        (mirror / key).unlink()
    with Emulator(mirror_dir=mirror) as emu:
        yield tmp, mirror, emu


def config_for(emu, data: Path, **overrides) -> dict:
    settings = dict(
        interval="1h",
        trade_types=["spot", "um_futures"],
        symbols={"spot": "all", "um_futures": "all"},
        start_date=START,
        end_date=END,
        resample={"targets": []},
    )
    return emulator_config(emu.base_url, data, **(settings | overrides))


def run_plan(tmp: Path, config: dict) -> dict:
    cfg = tmp / "plan-config.yaml"
    cfg.write_text(json.dumps(config))
    proc = subprocess.run(
        [sys.executable, "-m", "crypto_lakehouse", "plan", "--configfile", str(cfg), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    plan = json.loads(proc.stdout)
    return {(d["trade_type"], d["dataset"]): d for d in plan["datasets"]} | {"_plan": plan}


def mirror_bytes(mirror: Path, keys: list[str]) -> int:
    return sum(
        (mirror / k).stat().st_size + (mirror / f"{k}.CHECKSUM").stat().st_size for k in keys
    )


def test_plan_counts_symbols_files_bytes_and_rest_days(archive):
    tmp, mirror, emu = archive
    data = tmp / "data-fresh"
    emu.reset_counts()
    plan = run_plan(tmp, config_for(emu, data))
    assert emu.counts["list"] > 0 and emu.counts.get("get", 0) == 0  # listed, nothing fetched

    spot = plan[("spot", "klines-1h")]
    assert spot["kept"] == 1
    assert {r["name"] for r in spot["filtered"]} == {"USDCUSDT", "ETHBTC"}
    assert all(r["reason"] for r in spot["filtered"])
    spot_keys = [
        layout.daily_kline_key("spot", "BTCUSDT", "1h", d) for d in days(START, "2024-06-03")
    ]
    spot_keys.remove(DROPPED)
    assert spot["files_to_download"] == len(spot_keys) == 5
    assert spot["bytes_to_download"] == mirror_bytes(mirror, spot_keys)
    assert spot["files_present"] == 0
    # From the first archived day in range to the end date: 05-31 (never published),
    # 06-04 and 06-05 (after the archive's last day).
    assert spot["rest_days"] == 3 and spot["rest_weight"] > 0

    um = plan[("um_futures", "klines-1h")]
    assert [r["name"] for r in um["filtered"]] == ["BTCUSDT_260925"]
    um_keys = [layout.daily_kline_key("um_futures", "BTCUSDT", "1h", d) for d in days("2024-05-30", "2024-06-03")]  # fmt: skip
    assert um["files_to_download"] == 5
    assert um["bytes_to_download"] == mirror_bytes(mirror, um_keys)
    assert um["rest_days"] == 2

    funding = plan[("um_futures", "funding")]
    # Only the month overlapping the date range; April ends before it.
    assert funding["files_to_download"] == 1
    key = layout.funding_key("um_futures", "BTCUSDT", "2024-05")
    assert funding["bytes_to_download"] == mirror_bytes(mirror, [key])
    assert funding["rest_symbols"] == 1

    # No run summary yet: the conservative defaults, and an estimate from them.
    assert spot["rates"]["download_source"] == "conservative defaults"
    expected = max(spot["bytes_to_download"] / 1e6 / 5.0, 2 * 5 / 50.0)
    assert spot["download_seconds"] == pytest.approx(expected, abs=0.05)


def test_plan_after_a_run_reuses_its_listing_and_sees_the_files(archive, monkeypatch):
    tmp, mirror, emu = archive
    data = tmp / "data-run"
    config = config_for(emu, data)
    proc = snakemake(tmp, config, "aws_download")
    # Each download job closes with a progress line, in its log and on the console.
    log_dir = data / "lakehouse" / "logs" / "aws_download"
    # One log per shard job (its symbols one after another).
    spot_log = "".join(
        f.read_text() for f in sorted((log_dir / "spot" / "klines-1h" / "shards").glob("*.log"))
    )
    size = mirror_bytes(mirror, []) + sum(
        (mirror / layout.daily_kline_key("spot", "BTCUSDT", "1h", d)).stat().st_size
        for d in days(START, "2024-06-03")
        if layout.daily_kline_key("spot", "BTCUSDT", "1h", d) != DROPPED
    )
    line = f"aws_download spot klines-1h BTCUSDT: 5/5 files, {size / 1e6:.1f}/{size / 1e6:.1f} MB"
    assert line in spot_log and line in proc.stderr
    assert "ETA 0 s" in spot_log
    for log_file in log_dir.rglob("*.log"):
        text = log_file.read_text()
        assert all(c.isprintable() or c == "\n" for c in text), log_file
    emu.reset_counts()
    plan = run_plan(tmp, config)
    assert emu.counts.get("list", 0) == 0  # the run's own listing answers the same request
    for d in plan["_plan"]["datasets"]:
        assert d["listing"].startswith("reused the last run's listing"), d["listing"]
        assert d["files_to_download"] == 0 and d["files_present"] > 0
    assert plan[("spot", "klines-1h")]["files_present"] == 5
    rates = plan[("spot", "klines-1h")]["rates"]
    assert rates["download_source"] == "the last aws_download run summary"

    # A zip the parse quarantined (moved out of aws_data, as quarantine_archive does) is
    # missing, but the download job does not fetch it again while the archive still lists
    # the same file: plan counts it as quarantined, not to download (it said "1 to download").
    from crypto_lakehouse.quarantine import quarantine_archive

    key = layout.daily_kline_key("spot", "BTCUSDT", "1h", "2024-06-01")
    quarantine_archive(data, key, f"{key}: line 3: a bad row")
    again = run_plan(tmp, config)
    spot = again[("spot", "klines-1h")]
    assert (spot["files_to_download"], spot["files_quarantined"], spot["files_present"]) == (
        0,
        1,
        4,
    )
    snakemake(tmp, config, "aws_download")  # what the plan predicted: not fetched
    assert not layout.aws_path(data, key).exists()
    assert layout.quarantine_path(data, key).exists()

    # Another end date is another request: the archive is listed again.
    emu.reset_counts()
    later = run_plan(tmp, config_for(emu, data, end_date="2024-06-06"))
    assert emu.counts["list"] > 0
    assert later[("spot", "klines-1h")]["listing"].startswith("listed now")
    assert later[("spot", "klines-1h")]["rest_days"] == 4

    # The morning after the fixed end date the archive may still publish its last days: the
    # run lists again each morning until it has (plan.listing_recheck), so plan does not
    # reuse the listing either; it did, and counted nothing of a day published since.
    monkeypatch.setenv(plan_module.TODAY_VARIABLE, "2024-06-06")
    emu.reset_counts()
    morning = run_plan(tmp, config)
    assert emu.counts["list"] > 0
    listing = morning[("spot", "klines-1h")]["listing"]
    assert listing.startswith("listed now") and "not reused" in listing, listing
    # Settled (funding's monthly archive of June: by mid July): reused again.
    monkeypatch.setenv(plan_module.TODAY_VARIABLE, "2024-07-16")
    emu.reset_counts()
    settled = run_plan(tmp, config)
    assert emu.counts.get("list", 0) == 0
    assert settled[("spot", "klines-1h")]["listing"].startswith("reused")


def test_plan_lists_again_what_a_torn_cached_record_cannot_tell(archive):
    # A torn listing index, listing details file or run summary (a crash with storage.fsync
    # off) made `plan` end in a JSONDecodeError traceback. It only reads: it lists again
    # (into its own folder) and leaves the mending to the next run.
    tmp, _, emu = archive
    data = tmp / "data-torn"
    config = config_for(emu, data)
    snakemake(tmp, config, "aws_download")
    whole = run_plan(tmp, config)
    run_dir = str(data / "lakehouse")
    index = Path(layout.run_listing_index_path(run_dir, "spot", "klines-1h"))
    details = (
        layout.listing_details_dir(
            layout.run_listing_index_path(run_dir, "um_futures", "klines-1h")
        )
        / "BTCUSDT.json"
    )
    summary = Path(layout.run_summary_path(run_dir, "aws_download", "spot"))
    for path in (index, details, summary):
        path.write_bytes(path.read_bytes()[:40])
    torn = run_plan(tmp, config)
    spot, um = torn[("spot", "klines-1h")], torn[("um_futures", "klines-1h")]
    assert spot["listing"].startswith("listed now"), spot["listing"]
    assert (
        um["listing"].startswith("listed now") and f"the cached one: {details}" in (um["listing"])
    )
    for key in (("spot", "klines-1h"), ("um_futures", "klines-1h")):
        for figure in ("files_present", "files_to_download", "rest_days"):
            assert torn[key][figure] == whole[key][figure], (key, figure)
    assert spot["rates"]["download_source"] == "conservative defaults"
    assert index.read_bytes() and len(index.read_bytes()) == 40  # left for the run to mend


def test_plan_text_names_reasons_and_estimate(archive, capsys):
    from crypto_lakehouse.cli import main

    tmp, _, emu = archive
    cfg = tmp / "text-config.yaml"
    cfg.write_text(json.dumps(config_for(emu, tmp / "data-text")))
    assert main(["plan", "--configfile", str(cfg), "--config", "interval=1h"]) == 0
    out = capsys.readouterr().out
    assert "USDCUSDT (stablecoin" in out and "BTCUSDT_260925 (delivery" in out
    assert "spot klines-1h: listing listed now" in out
    assert "REST: 3 days to fetch" in out
    # funding: asked from each symbol's last stored rate, which the estimate does not time
    assert "REST: funding history of 1 symbol(s), each from its last stored rate" in out
    assert "Total estimate: download" in out
    assert "\x1b" not in out


def test_plan_with_an_end_date_after_today_goes_up_to_today_and_says_so(archive, capsys):
    from datetime import datetime, timezone

    from crypto_lakehouse.cli import main

    tmp, _, emu = archive
    today = datetime.now(timezone.utc).date()
    later = today + timedelta(days=30)
    cfg = tmp / "later-config.yaml"
    cfg.write_text(json.dumps(config_for(emu, tmp / "data-later", end_date=later.isoformat())))
    assert main(["plan", "--configfile", str(cfg), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["end_date"] == today.isoformat()
    assert f"end_date {later} is after today ({today}, UTC)" in captured.err


def test_plan_names_the_endpoint_it_cannot_list(tmp_path, capsys):
    import socket

    from crypto_lakehouse.cli import main

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = emulator_config(f"http://127.0.0.1:{port}", tmp_path / "data")
    config["download"] = {"max_retries": 0}
    cfg = tmp_path / "closed.yaml"
    cfg.write_text(json.dumps(config))
    assert main(["plan", "--configfile", str(cfg)]) == 1
    captured = capsys.readouterr()
    err = captured.err
    assert f"listing http://127.0.0.1:{port} (config key endpoints.listing) failed" in err
    assert "Traceback" not in err and len(err.splitlines()) == 1 and captured.out == ""


def test_plan_counts_the_extra_datasets_of_the_config(tmp_path):
    # aggTrades and trades archives are far larger than the klines': a plan that left the
    # `datasets` the config lists out said nothing of most of the download.
    from crypto_lakehouse_emulator.ticks import write_daily_agg_trades, write_daily_metrics

    mirror = tmp_path / "mirror"
    build_mirror(
        mirror,
        {"spot": {"symbols": ["BTCUSDT"], "start": "2024-06-01", "end": "2024-06-02",
                  "interval": "1h"},
         "um_futures": {"symbols": ["BTCUSDT"], "start": "2024-06-01", "end": "2024-06-02",
                        "interval": "1h"}},
    )  # fmt: skip
    agg = [write_daily_agg_trades(mirror, "spot", "BTCUSDT", d, 500) for d in ("2024-06-01", "2024-06-02")]  # fmt: skip
    metrics = [write_daily_metrics(mirror, "um_futures", "BTCUSDT", "2024-06-02")]
    with Emulator(mirror_dir=mirror) as emu:
        config = config_for(
            emu, tmp_path / "data", start_date="2024-06-01", end_date="2024-06-02",
            symbols={"spot": ["BTCUSDT"], "um_futures": ["BTCUSDT"]},
            datasets={"spot": ["klines", "aggTrades"], "um_futures": ["klines", "funding", "metrics"]},
        )  # fmt: skip
        plan = run_plan(tmp_path, config)
        cfg = tmp_path / "text-config.yaml"
        cfg.write_text(json.dumps(config))
        text = subprocess.run(
            [sys.executable, "-m", "crypto_lakehouse", "plan", "--configfile", str(cfg)],
            capture_output=True, text=True, timeout=120, cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        ).stdout  # fmt: skip
    spot_agg = plan[("spot", "aggTrades")]
    assert spot_agg["files_to_download"] == 2 and spot_agg["kept"] == 1
    assert spot_agg["bytes_to_download"] == mirror_bytes(mirror, agg)
    assert spot_agg["rest_days"] == 0
    um_metrics = plan[("um_futures", "metrics")]
    assert um_metrics["files_to_download"] == 1
    assert um_metrics["bytes_to_download"] == mirror_bytes(mirror, metrics)
    assert plan["_plan"]["download_seconds"] >= spot_agg["download_seconds"] > 0
    block = text[text.index("spot aggTrades:") :].split("\n")[:4]
    assert block[2].startswith("  archive: 2 files") and not any("REST" in b for b in block)


def test_plan_rest_weight_is_what_the_rest_jobs_send(tmp_path):
    """The plan's REST weight against the weight the emulator counted for the run's
    api_download jobs: the klines requests and the server time (/time, weight 1) each REST
    shard job asks first; the plan left /time out. exchangeInfo (asked once per run and end
    date, weight 20 for spot) is taken apart: it is not in the plan's figure."""
    from datetime import datetime, timezone

    from crypto_lakehouse_emulator.rest import RestEmulator

    symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT"]
    mirror = tmp_path / "mirror"
    build_mirror(
        mirror,
        {"spot": {"symbols": symbols, "start": "2024-05-30", "end": "2024-06-03",
                  "interval": "1h"}},
    )  # fmt: skip
    now_ms = int(datetime(2024, 6, 10, tzinfo=timezone.utc).timestamp() * 1000)
    rest = RestEmulator(now_ms=now_ms)
    first_ms = int(datetime(2024, 5, 30, tzinfo=timezone.utc).timestamp() * 1000)
    for i, symbol in enumerate(symbols):
        rest.add_synthetic_klines("spot", symbol, start_ms=first_ms, seed=i)
    with Emulator(mirror_dir=mirror, rest=rest) as emu:
        config = config_for(
            emu, tmp_path / "data", trade_types=["spot"], symbols={"spot": symbols},
            start_date="2024-05-30", end_date="2024-06-08", shards=4,
        )  # fmt: skip
        snakemake(tmp_path, config, "aws_download")  # the archive part, before the plan
        planned = run_plan(tmp_path, config)[("spot", "klines-1h")]
        before = rest.counters("spot")
        snakemake(tmp_path, config, "api_download")
        after = rest.counters("spot")
    sent = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    assert sent.get("429", 0) == 0
    # 06-04 … 06-08 of each symbol; the jobs of 4 shards that hold them ask the time once each.
    assert planned["rest_days"] == 5 * len(symbols)
    exchange_info = 20 * sent.get("requests/exchangeInfo", 0)
    assert planned["rest_weight"] == sent["weight"] - exchange_info
    assert planned["rest_jobs"] == sent["requests/time"] > 1
