"""One symbol that fails does not hold back the others of its shard: they go through every
stage in the same run, the run fails naming the symbol, and the next run retries its shard
(crypto_lakehouse.shards, docs/shards.md)."""

from __future__ import annotations

import json

import pytest
from crypto_lakehouse_emulator.faults import Faults

from crypto_lakehouse import layout
from tests.chaos import chaos_helpers as h
from tests.e2e.e2e_helpers import read_json, snakemake

pytestmark = pytest.mark.e2e


def _fails_building_all_but_ethusdt(tmp_path, config, data) -> str:
    """A run of the spot scenario that fails, with BTCUSDT and SOLUSDT built to their
    resampled files and ETHUSDT not; its output."""
    results = layout.results_klines_dir(data, "spot", "1m")
    first = snakemake(tmp_path, config, "all", check=False)
    out = first.stdout + first.stderr
    assert first.returncode != 0, out[-3000:]
    for symbol in ("BTCUSDT", "SOLUSDT"):
        assert (results / f"{symbol}.pqt").exists(), out[-3000:]
        assert list(data.glob(f"results_data/spot/resampled_klines/1h/*/{symbol}.pqt"))
    assert not (results / "ETHUSDT.pqt").exists()
    return out


def test_a_failing_symbol_holds_back_nothing_and_is_retried_next_run(tmp_path):
    mirror = h.build_scenario(tmp_path)
    broken = layout.daily_kline_key("spot", "ETHUSDT", "1m", "2024-02-27")
    emu = h.start_emulator(mirror, faults=Faults(fail_always={broken}))
    data = tmp_path / "data"
    # One shard holds the three symbols; no retries, so the broken file fails at once.
    config = dict(h.config_for(emu.base_url, data), shards=1, download={"max_retries": 0})
    results = layout.results_klines_dir(data, "spot", "1m")
    try:
        # The shard's other symbols go through every stage in this run.
        out = _fails_building_all_but_ethusdt(tmp_path, config, data)
        download = json.loads(
            (data / "lakehouse/reports/aws_download/spot/klines-1m/shards/0.json").read_text()
        )
        assert download["failed"] == ["ETHUSDT"] and download["retry_generation"] == 1
        gen = json.loads(
            (data / "lakehouse/reports/gen_kline/spot/klines-1m/shards/0.json").read_text()
        )
        assert gen["upstream_failed"] == ["ETHUSDT"] and gen["failed"] == []
        # The run's failure list names the symbol and why (the summaries of the stages).
        failures = out[out.index("job(s) failed:") :]
        assert "summarize" in failures and "ETHUSDT" in failures and "HTTP 500" in failures
        # Each later stage's summary failed for the same symbol: one line names them all.
        held_back = "their symbols were held back by an earlier stage (above)"
        assert "  and the summaries of aws_parse, api_download, gen_kline, resample" in failures
        assert failures.count("HTTP 500") == 1 and held_back in failures, failures[:3000]
        assert not (data / "lakehouse/summaries/aws_download/spot.json").exists()
        # The report page is written anyway, the failed jobs at its top.
        page = (data / "lakehouse/report/index.html").read_text()
        alert = page[page.index('id="failed-run"') : page.index("</div>", page.index("failed-run"))]
        assert "The run that wrote this page failed" in alert and "6 job(s)" in alert, alert
        assert "ETHUSDT" in alert and "HTTP 500" in alert and "BTCUSDT" in page
        assert held_back in alert and alert.count("<li>") == 2
        # ETHUSDT failed before any of its data was written: no record names it, the
        # run's listing does (the freshness section once listed only BTCUSDT and SOLUSDT).
        freshness = page[page.index('<section id="freshness">') :]
        freshness = freshness[: freshness.index("</section>")]
        stale = freshness[freshness.index("Stale symbols") :]
        rows = stale[stale.index("<tbody>") :]
        first_row = rows[: rows.index("</tr>")]
        assert "<td>ETHUSDT</td>" in first_row and "no generated candles" in first_row, stale

        emu.faults.fail_always.clear()  # the archive serves the file again
        second = snakemake(tmp_path, config, "all")
        out = second.stdout + second.stderr
        # The retry generation reran the shard (its params, and its rerun stamp).
        assert "Params have changed" in out or "stamps/aws_download_shard" in out
        assert (results / "ETHUSDT.pqt").exists()
        assert (
            json.loads((data / "lakehouse/summaries/gen_kline/spot.json").read_text())["symbols"]
            == 3
        )
        assert 'id="failed-run"' not in (data / "lakehouse/report/index.html").read_text()
        third = snakemake(tmp_path, config, "all")
        assert "Nothing to be done" in third.stdout + third.stderr
    finally:
        emu.stop()


def _recovers_then_rests(tmp_path, config, stamped_rule: str, built) -> None:
    """With the fault gone, a plain rerun reruns ``stamped_rule`` (its rerun stamp or params
    changed) and builds ``built``; the run after it has nothing to do."""
    second = snakemake(tmp_path, config, "all")
    out = second.stdout + second.stderr
    assert f"stamps/{stamped_rule}/run.json" in out or "Params have changed" in out
    assert built.exists(), out[-3000:]
    third = snakemake(tmp_path, config, "all")
    assert "Nothing to be done" in third.stdout + third.stderr


def test_a_failing_listing_holds_back_only_its_symbol_and_dataset(tmp_path):
    """A symbol folder the listing cannot read (ETHUSDT's klines) and a dataset whose
    symbol folders it cannot read (aggTrades): the other symbols and datasets are built in
    the same run, the run fails naming both, the next run lists again and completes, and
    the run after it has nothing to do."""
    mirror = h.build_scenario(tmp_path)
    listings = {"?data/spot/daily/klines/ETHUSDT/1m/", "?data/spot/daily/aggTrades/"}
    emu = h.start_emulator(mirror, faults=Faults(fail_always=set(listings)))
    data = tmp_path / "data"
    config = dict(
        h.config_for(emu.base_url, data),
        shards=1,
        download={"max_retries": 0},
        datasets={"spot": ["klines", "aggTrades"]},
    )
    results = layout.results_klines_dir(data, "spot", "1m")
    try:
        out = _fails_building_all_but_ethusdt(tmp_path, config, data)
        failures = out[out.index("job(s) failed:") :]
        assert "ETHUSDT: SyncError: spot klines-1m ETHUSDT: not downloaded, its listing failed: " \
            "listing failed after 0 retries: " in failures, failures[:3000]  # fmt: skip
        assert "spot aggTrades BTCUSDT: not downloaded, its listing failed: cannot list " \
            "symbols below data/spot/daily/aggTrades/" in failures, failures[:3000]  # fmt: skip

        emu.faults.fail_always.clear()  # the listing answers again
        _recovers_then_rests(tmp_path, config, "list_archive", results / "ETHUSDT.pqt")
    finally:
        emu.stop()


def _futures_run(tmp_path, faults=None):
    """An emulator serving two um and two cm symbols (archive and REST) and the config of a
    run on them: (emulator, its REST part, config, data dir)."""
    from datetime import datetime, timezone

    from crypto_lakehouse_emulator import Emulator
    from crypto_lakehouse_emulator.generate import build_mirror
    from crypto_lakehouse_emulator.rest import RestEmulator

    from tests.e2e.e2e_helpers import emulator_config

    symbols = {"um_futures": ["BTCUSDT", "ETHUSDT"], "cm_futures": ["BTCUSD_PERP", "ETHUSD_PERP"]}
    mirror = tmp_path / "mirror"
    build_mirror(
        mirror,
        {t: {"symbols": s, "start": h.START, "end": h.END, "funding_months": ["2024-02"]}
         for t, s in symbols.items()},
    )  # fmt: skip
    rest = RestEmulator(now_ms=h.NOW_MS, window_s=5)
    start_ms = int(datetime.fromisoformat(h.START).replace(tzinfo=timezone.utc).timestamp() * 1000)
    for trade_type, names in symbols.items():
        for i, symbol in enumerate(names):
            rest.add_synthetic_klines(trade_type, symbol, start_ms=start_ms, seed=i)
            rest.add_synthetic_funding(trade_type, symbol, start_ms=start_ms, end_ms=h.NOW_MS)
    emu = Emulator(mirror_dir=mirror, rest=rest, faults=faults)
    emu.start()
    data = tmp_path / "data"
    config = emulator_config(
        emu.base_url, data, trade_types=list(symbols), symbols=symbols, start_date=h.START,
        end_date=None, shards=1, rest={"max_retries": 0},
    )  # fmt: skip
    return emu, rest, config, data


def test_a_failing_exchange_info_holds_back_only_its_trade_type(tmp_path):
    """COIN-M's exchangeInfo answers 500 (its host in maintenance, say): USDⓈ-M is built to
    the end in the same run; COIN-M's REST runs on the default weight limits and its
    gen_kline, which needs the contract sizes, fails naming the request. The next run asks
    again and completes; the one after has nothing to do."""
    faults = Faults(fail_always={"/dapi/v1/exchangeInfo"}, apply_to_rest=True)
    emu, rest_emulator, config, data = _futures_run(tmp_path, faults)
    um_results = layout.results_klines_dir(data, "um_futures", "1m")
    cm_results = layout.results_klines_dir(data, "cm_futures", "1m")
    try:
        first = snakemake(tmp_path, config, "all", check=False)
        out = first.stdout + first.stderr
        assert first.returncode != 0, out[-3000:]
        assert (um_results / "BTCUSDT.pqt").exists(), out[-3000:]
        assert (um_results / "ETHUSDT.pqt").exists()
        assert list(data.glob("results_data/um_futures/resampled_klines/1h/*/BTCUSDT.pqt"))
        assert not list(cm_results.glob("*.pqt"))
        failures = out[out.index("job(s) failed:") :]
        assert "BTCUSD_PERP: MissingContractSize: BTCUSD_PERP: no contract size: this run's " \
            "exchangeInfo request failed (" in failures, failures[:3000]  # fmt: skip
        assert "500" in read_json(data / "lakehouse/exchange_info/cm_futures.json")["error"]
        # COIN-M's REST ran on the default limits; its summary names the failed request.
        rest = read_json(data / "lakehouse/summaries/api_download/cm_futures.json")
        assert "500" in rest["exchange_info_error"]
        um_rest = read_json(data / "lakehouse/summaries/api_download/um_futures.json")
        assert "exchange_info_error" not in um_rest
        # The stages whose summary job failed for COIN-M keep USDⓈ-M's summaries (one job
        # writes a stage's summaries of every trade type, and its failure removed them all,
        # also USDⓈ-M's: the report showed `none` for gen_kline and every stage after it).
        summaries = data / "lakehouse/summaries"
        for stage in ("gen_kline", "resample", "features"):
            um = read_json(summaries / f"{stage}/um_futures.json")
            assert um["stage"] == stage and um["symbols"] == 2, (stage, um)
            assert not (summaries / f"{stage}/cm_futures.json").exists(), stage
        assert "summaries of the trade types that finished, written after the failure: " \
            "gen_kline/um_futures, resample/um_futures, features/um_futures (none for " \
            "gen_kline/cm_futures, resample/cm_futures, features/cm_futures" in out, out[-3000:]  # fmt: skip
        # The report page shows them, and which trade type has none.
        page = (data / "lakehouse/report/index.html").read_text()
        run = page[page.index('<section id="the-run">') :]
        run = run[: run.index("</section>")]
        assert "<td>um_futures; none: cm_futures</td>" in run, run[:4000]

        emu.faults.fail_always.clear()  # the host answers again
        um_asked = rest_emulator.counters("um_futures").get("requests/exchangeInfo", 0)
        assert um_asked == 1
        _recovers_then_rests(tmp_path, config, "exchange_info", cm_results / "BTCUSD_PERP.pqt")
        # The rerun asked COIN-M only: USDⓈ-M's answer of the failed run was kept (before
        # 2026-12-07 every trade type was asked again, one request each).
        assert rest_emulator.counters("um_futures").get("requests/exchangeInfo", 0) == um_asked
        assert rest_emulator.counters("cm_futures").get("requests/exchangeInfo", 0) == 1
    finally:
        emu.stop()


def test_a_rest_job_failing_as_a_whole_keeps_the_other_trade_types_summaries(tmp_path):
    """COIN-M's REST host bans the run (418): its REST job fails as a whole, so the summary
    jobs of api_download and every later stage, which need its shard report, never run.
    USDⓈ-M finished every stage: its summaries are written after the failure (before, it
    had none of them, and the report showed `none` for those stages). The next run, the
    ban lifted, completes COIN-M."""
    emu, rest, config, data = _futures_run(tmp_path)
    rest.ban("cm", 3600)
    summaries = data / "lakehouse/summaries"
    try:
        first = snakemake(tmp_path, config, "all", check=False)
        out = first.stdout + first.stderr
        assert first.returncode != 0, out[-3000:]
        assert "418" in out[out.index("job(s) failed:") :], out[-3000:]
        for stage in ("api_download", "gen_kline", "resample", "features"):
            um = read_json(summaries / f"{stage}/um_futures.json")
            assert um["stage"] == stage and um["symbols"] == 2, (stage, um)
            assert not (summaries / f"{stage}/cm_futures.json").exists(), stage
        assert "written after the failure: api_download/um_futures, gen_kline/um_futures, " \
            "resample/um_futures, features/um_futures (none for api_download/cm_futures, " in out  # fmt: skip
        page = (data / "lakehouse/report/index.html").read_text()
        run = page[page.index('<section id="the-run">') :]
        run = run[: run.index("</section>")]
        assert run.count("<td>um_futures; none: cm_futures</td>") == 4, run[:4000]

        rest.unban("cm")
        snakemake(tmp_path, config, "all")
        assert (layout.results_klines_dir(data, "cm_futures", "1m") / "BTCUSD_PERP.pqt").exists()
        assert read_json(summaries / "features/cm_futures.json")["symbols"] == 2
    finally:
        emu.stop()
