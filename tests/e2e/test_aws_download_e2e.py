"""`snakemake aws_download` end to end against the emulator (issue: aws_download target)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from crypto_lakehouse_emulator.faults import Faults
from crypto_lakehouse_emulator.generate import build_mirror

from crypto_lakehouse import layout, plan
from tests.e2e.e2e_helpers import emulator_config, read_json, snakemake

START, END = "2023-01-01", "2024-06-03"  # 520 days: 1040 keys under one spot prefix
SHORT = ("2024-05-30", "2024-06-03")


def make_mirror(root: Path) -> list[str]:
    spec_short = {"start": SHORT[0], "end": SHORT[1], "interval": "1h"}
    keys = build_mirror(
        root, {"spot": {"symbols": ["BTCUSDT"], "start": START, "end": END, "interval": "1h"}}
    )
    keys += build_mirror(
        root,
        {
            # kept: SYRUPUSDT (Q15 fixed); filtered: stablecoin, leveraged, non-USDT quote
            "spot": {"symbols": ["SYRUPUSDT", "USDCUSDT", "BTCUPUSDT", "ETHBTC"], **spec_short},
            # filtered: delivery contract
            "um_futures": {
                "symbols": ["BTCUSDT", "BTCUSDT_260925"],
                "funding_months": ["2024-03", "2024-04"],
                **spec_short,
            },
            "cm_futures": {
                "symbols": ["BTCUSD_PERP", "BTCUSD_250627"],
                "funding_months": ["2024-04"],
                **spec_short,
            },
        },
    )
    return keys


def test_aws_download_end_to_end(tmp_path, emulator):
    mirror = tmp_path / "mirror"
    keys = make_mirror(mirror)
    corrupted_once = layout.daily_kline_key("spot", "BTCUSDT", "1h", "2023-06-15")
    no_checksum = layout.daily_kline_key("um_futures", "BTCUSDT", "1h", "2024-06-01")
    faults = Faults(
        fail_rate=0.05, corrupt_first={corrupted_once}, missing_checksum={no_checksum}, seed=7
    )
    emu = emulator(mirror_dir=mirror, faults=faults)
    data = tmp_path / "data"
    config = emulator_config(
        emu.base_url,
        data,
        interval="1h",
        symbols={"spot": "all", "um_futures": "all", "cm_futures": "all"},
        start_date=START,
        end_date=END,
        # 1h archives keep this test small; the default resample targets (1h at 5m steps)
        # need a 1m base, and config validation rejects them by name (resample.targets).
        resample={"targets": []},
    )

    snakemake(tmp_path, config, "aws_download")

    filtered = {"USDCUSDT", "BTCUPUSDT", "ETHBTC", "BTCUSDT_260925", "BTCUSD_250627"}
    expected = [k for k in keys if k != no_checksum and not any(f"/{s}/" in k for s in filtered)]
    assert len([k for k in expected if k.startswith("data/spot/daily/klines/BTCUSDT/")]) == 520
    for key in expected:
        local = layout.aws_path(data, key)
        assert local.exists(), key
        assert Path(f"{local}.CHECKSUM").exists(), key
        assert Path(f"{local}.verified").exists(), key
        assert local.read_bytes() == (mirror / key).read_bytes(), key
    for key in keys:
        if any(f"/{s}/" in key for s in filtered):
            assert not layout.aws_path(data, key).exists(), key
    # The corrupted-once archive was fetched again in the same run and verified.
    assert emu.get_counts[corrupted_once] >= 2

    # The zip without CHECKSUM is quarantined, never left looking valid, and reported.
    assert not Path(f"{layout.aws_path(data, no_checksum)}.verified").exists()
    report = read_json(data / "lakehouse/reports/aws_download/um_futures/klines-1h/BTCUSDT.json")
    assert no_checksum in report["quarantined"]
    summary = read_json(data / "lakehouse/summaries/aws_download/um_futures.json")
    assert "klines-1h/BTCUSDT" in summary["problems"] or "klines-1h/BTCUSDT" in summary["figures"]

    index = read_json(data / "lakehouse/listing/spot/klines-1h.json")
    assert sorted(index["symbols"]) == ["BTCUSDT", "SYRUPUSDT"]
    assert {"USDCUSDT", "BTCUPUSDT", "ETHBTC"} <= {
        (x["name"] if isinstance(x, dict) else x) for x in index["filtered_out"]
    }

    # A second run with nothing new fetches nothing at all.
    emu.reset_counts()
    proc = snakemake(tmp_path, config, "aws_download")
    assert emu.counts["get"] == 0, proc.stdout[-2000:]

    # A re-upload (new LastModified) found by a re-listing re-fetches exactly that archive.
    reuploaded = layout.daily_kline_key("cm_futures", "BTCUSD_PERP", "1h", "2024-06-02")
    later = time.time() + 3600
    os.utime(mirror / reuploaded, (later, later))
    emu.reset_counts()
    snakemake(tmp_path, config, "aws_download", "--forcerun", "list_archive")
    fetched = {k for k, n in emu.get_counts.items() if n and k.endswith(".zip")}
    assert fetched == {reuploaded}

    # The archive grows by a day and the end date moves: the listing resumes every symbol
    # after its folders' last known keys (Snakemake removed the previous index; the copy
    # beside the details is what it resumes from), and exactly the new archive is fetched.
    new_day = "2024-06-04"
    added = build_mirror(
        mirror,
        {"spot": {"symbols": ["BTCUSDT"], "start": new_day, "end": new_day, "interval": "1h"}},
    )
    emu.reset_counts()
    snakemake(tmp_path, {**config, "end_date": new_day}, "aws_download")
    listing_log = (data / "lakehouse/logs/list_archive/run.log").read_text()
    assert "spot klines 1h: 5 listed, 2 kept (2 after their last known key)" in listing_log
    fetched = {k for k, n in emu.get_counts.items() if n and k.endswith(".zip")}
    assert fetched == {k for k in added if k.endswith(".zip")}
    index = read_json(data / "lakehouse/listing/spot/klines-1h.json")
    assert index["symbols"]["BTCUSDT"]["n_files"] == 2 * 521


def test_a_later_end_date_fetches_files_listed_before(tmp_path, emulator):
    # The archive already holds the days past the first run's end date: they are listed
    # then (the listing is not cut by dates) but not fetched. Moving the end date forward
    # lists nothing new (the listing resumes after the last known key), yet the shard must
    # fetch those days.
    days = ["2024-06-01", "2024-06-02", "2024-06-03", "2024-06-04", "2024-06-05"]
    zips, emu, data, config = _two_spot_symbols(tmp_path, emulator, days, days[2])

    def held() -> set[str]:
        return {k for k in zips if layout.aws_path(data, k).exists()}

    snakemake(tmp_path, config, "aws_download")
    assert held() == {k for k in zips if k[-14:-4] <= days[2]}
    snakemake(tmp_path, {**config, "end_date": days[4]}, "aws_download")
    assert held() == set(zips)
    # Past the newest listed day a later end date reruns no download shard.
    emu.reset_counts()
    proc = snakemake(tmp_path, {**config, "end_date": "2024-06-09"}, "aws_download")
    out = proc.stdout + proc.stderr
    assert "list_archive:" in out and "aws_download_shard:" not in out, out[-3000:]
    assert not any(k.endswith(".zip") for k, n in emu.get_counts.items() if n)


def test_a_run_from_another_directory_sees_the_new_end_date(tmp_path, emulator):
    # Snakemake keeps its records (params) in .snakemake/ of the directory it runs from. A
    # second clone, or a moved checkout, has none: it took the existing listing and shard
    # reports as up to date and a later end date listed and fetched nothing ("Nothing to be
    # done"). The rerun stamps in the run directory carry the trigger instead.
    days = ["2024-06-01", "2024-06-02", "2024-06-03", "2024-06-04"]
    zips, _, data, config = _two_spot_symbols(tmp_path, emulator, days, days[1])
    first, other = tmp_path / "clone-a", tmp_path / "clone-b"
    first.mkdir()
    other.mkdir()
    snakemake(first, config, "aws_download")
    assert {k for k in zips if layout.aws_path(data, k).exists()} == {
        k for k in zips if k[-14:-4] <= days[1]
    }
    snakemake(other, {**config, "end_date": days[3]}, "aws_download")
    assert all(layout.aws_path(data, k).exists() for k in zips)
    again = snakemake(other, {**config, "end_date": days[3]}, "aws_download")
    assert "Nothing to be done" in again.stdout + again.stderr


def test_a_fixed_end_date_lists_again_each_morning_until_the_archive_has_its_days(
    tmp_path, emulator, monkeypatch
):
    # end_date 2024-06-02, first run on the 3rd before the archive published the 2nd (daily
    # files appear the next day). A fixed end date listed once: the 2nd's files were never
    # fetched. Now the listing runs again once a day until the day the archive settles.
    zips, emu, data, config = _two_spot_symbols(tmp_path, emulator, ["2024-06-01"], "2024-06-02")
    monkeypatch.setenv(plan.TODAY_VARIABLE, "2024-06-03")
    snakemake(tmp_path, config, "aws_download")
    assert all(layout.aws_path(data, k).exists() for k in zips)
    published = build_mirror(
        tmp_path / "mirror",
        {"spot": {"symbols": ["BTCUSDT", "ETHUSDT"], "start": "2024-06-02", "end": "2024-06-02",
                  "interval": "1h"}},
    )  # fmt: skip
    late = [k for k in published if k.endswith(".zip")]
    same_day = snakemake(tmp_path, config, "aws_download")
    assert "list_archive:" not in same_day.stdout + same_day.stderr  # once a day
    assert not any(layout.aws_path(data, k).exists() for k in late)
    monkeypatch.setenv(plan.TODAY_VARIABLE, "2024-06-04")
    next_day = snakemake(tmp_path, config, "aws_download")
    assert "list_archive:" in next_day.stdout + next_day.stderr
    assert all(layout.aws_path(data, k).exists() for k in late)
    # Settled (the 2nd's daily files are out since the 3rd): no more listing.
    monkeypatch.setenv(plan.TODAY_VARIABLE, "2024-06-05")
    settled = snakemake(tmp_path, config, "aws_download")
    assert "Nothing to be done" in settled.stdout + settled.stderr


def _two_spot_symbols(tmp_path, emulator, days: list[str], end_date: str):
    """A 1h mirror of BTCUSDT and ETHUSDT over ``days``, its emulator, the data dir and a
    config listing both up to ``end_date``: (zip keys, emulator, data dir, config)."""
    keys = build_mirror(
        tmp_path / "mirror",
        {"spot": {"symbols": ["BTCUSDT", "ETHUSDT"], "start": days[0], "end": days[-1],
                  "interval": "1h"}},
    )  # fmt: skip
    emu = emulator(mirror_dir=tmp_path / "mirror")
    data = tmp_path / "data"
    config = emulator_config(
        emu.base_url, data, interval="1h", trade_types=["spot"],
        symbols={"spot": ["BTCUSDT", "ETHUSDT"]}, start_date=days[0], end_date=end_date,
        resample={"targets": []},
    )  # fmt: skip
    return [k for k in keys if k.endswith(".zip")], emu, data, config


def _started_shards(output: str) -> list[tuple[str, str]]:
    """(trade type, dataset) of each download shard job, in the order Snakemake started
    them (its job lines, stdout and stderr)."""
    started, rule = [], None
    for line in output.splitlines():
        line = line.strip()
        if line.endswith(":") and line.split()[0] in {"rule", "localrule", "checkpoint"}:
            rule = line.split()[1].rstrip(":")
        elif rule == "aws_download_shard" and line.startswith("wildcards:"):
            fields = dict(
                part.split("=", 1) for part in line[len("wildcards:") :].strip().split(", ")
            )
            started.append((fields["trade_type"], fields["dataset"]))
    return started


def test_download_jobs_waiting_for_a_slot_start_the_largest_first(tmp_path, emulator):
    # With more download jobs than archive_http slots, a large job left waiting ends the
    # stage late on its own: the jobs start in the order of their listed files.
    mirror = tmp_path / "mirror"
    hourly = {"interval": "1h"}
    keys = build_mirror(
        mirror,
        {
            "spot": {"symbols": ["BTCUSDT"], "start": "2024-06-01", "end": "2024-06-03", **hourly},
            "um_futures": {
                "symbols": ["BTCUSDT", "ETHUSDT"],
                "funding_months": ["2024-03", "2024-04"],
                "start": "2024-05-25",
                "end": "2024-06-03",
                **hourly,
            },
            "cm_futures": {
                "symbols": ["BTCUSD_PERP"],
                "funding_months": ["2024-04"],
                "start": "2024-05-29",
                "end": "2024-06-03",
                **hourly,
            },
        },
    )
    emu = emulator(mirror_dir=mirror)
    config = emulator_config(
        emu.base_url,
        tmp_path / "data",
        interval="1h",
        trade_types=["spot", "um_futures", "cm_futures"],
        symbols={"spot": "all", "um_futures": "all", "cm_futures": "all"},
        start_date="2024-03-01",
        end_date="2024-06-03",
        resample={"targets": []},
    )
    proc = snakemake(tmp_path, config, "aws_download", "--resources", "archive_http=1")

    def folder(key: str) -> tuple[str, str]:  # data/<spot|futures/um>/<period>/<dataset>/...
        parts = key.split("/")
        trade_type = "spot" if parts[1] == "spot" else f"{parts[2]}_futures"
        name = parts[3] if parts[1] == "spot" else parts[4]
        return trade_type, ("klines-1h" if name == "klines" else "fundingRate")

    sizes: dict[tuple[str, str], int] = {}
    for key in keys:
        sizes[folder(key)] = sizes.get(folder(key), 0) + 1
    expected = sorted(sizes, key=lambda k: -sizes[k])
    assert len(set(sizes.values())) == len(sizes)  # no ties: one right order
    started = _started_shards(proc.stdout + proc.stderr)
    assert [(t, "fundingRate" if d == "funding" else d) for t, d in started] == expected
