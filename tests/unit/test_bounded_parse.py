"""Bounded archive reading: a member's inflated size is capped (config ``parse.*``).

The bomb case runs the real parse job in a subprocess under an address-space limit
(as SLURM's mem_mb would impose): without the cap it dies of MemoryError.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import zipfile

import pytest

from crypto_lakehouse.parse.csv_reader import (
    INFLATE_FLOOR_BYTES,
    ArchiveDefect,
    InflateLimit,
    read_zip_member,
)
from tests.conftest import FIXTURES
from tests.hostile import BOMB_LINE, write_zip_bomb
from tests.unit.test_parse_klines import (
    assert_quarantined,
    defect_case,
    download_report,
    put_archive,
    real_spot_2020,
    spot_key,
)

REAL_1M = sorted((FIXTURES / "real").rglob("*-1m-*.zip"))
MiB = 1 << 20


def test_cap_is_ratio_times_zip_size_between_floor_and_ceiling():
    limit = InflateLimit(ratio=20, ceiling=1 << 30)
    assert limit.cap(1000) == INFLATE_FLOOR_BYTES  # 20 kB is below the floor
    assert limit.cap(10 * MiB) == 200 * MiB
    assert limit.cap(100 * MiB) == 1 << 30  # 2000 MiB is above the ceiling
    assert InflateLimit(ratio=20, ceiling=MiB).cap(1000) == MiB  # the ceiling wins


@pytest.mark.parametrize("path", REAL_1M, ids=lambda p: p.name)
def test_real_archives_read_whole_under_the_default_cap(path):
    with zipfile.ZipFile(path) as zf:
        expected = zf.read(zf.namelist()[0])
    assert read_zip_member(path, "k") == expected


def test_member_over_the_ceiling_is_a_defect_naming_key_sizes_and_cap(tmp_path):
    bomb = tmp_path / "b.zip"
    zip_size = write_zip_bomb(bomb, 4 * MiB)
    with zipfile.ZipFile(bomb) as zf:
        inflated = zf.infolist()[0].file_size
    with pytest.raises(ArchiveDefect) as err:
        read_zip_member(bomb, "data/spot/x.zip", InflateLimit(ratio=20, ceiling=MiB))
    msg = str(err.value)
    assert msg.startswith("data/spot/x.zip: zip member 'bomb.csv'")
    for part in (f"declares {inflated} inflated bytes", f"zip of {zip_size} bytes",
                 f"cap of {MiB} bytes", "parse.max_inflate_ratio=20",
                 f"parse.max_inflated_bytes={MiB}"):  # fmt: skip
        assert part in msg


def test_bomb_day_is_quarantined_and_the_other_days_parsed(tmp_path):
    bomb = tmp_path / "src" / "bomb.zip"
    write_zip_bomb(bomb, INFLATE_FLOOR_BYTES + 4 * MiB)  # ratio ~300: over the floor cap
    key, stats, report, reason = defect_case(tmp_path, bomb.read_bytes())
    assert key in reason and "over the inflated-size cap of" in reason
    assert_quarantined(tmp_path, key, stats, report)


BOMB_JOB = textwrap.dedent(
    """
    import json, resource, sys
    limit = int(sys.argv[2])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    from crypto_lakehouse.parse.klines import run_parse_klines
    args = json.loads(sys.argv[1])
    try:
        stats = run_parse_klines(**args)
    except MemoryError:
        stats = {"error": "MemoryError"}
    # VmHWM: this process's own peak (ru_maxrss would carry the parent's RSS at fork over
    # the exec, so a test run late in a large pytest session would read the session's size).
    with open("/proc/self/status") as fh:
        stats["peak_rss_kb"] = next(
            int(line.split()[1]) for line in fh if line.startswith("VmHWM:")
        )
    print(json.dumps(stats))
    """
)


def test_gigabyte_bomb_under_an_address_space_limit_is_quarantined(tmp_path):
    """1 GiB of CSV lines in a ~3.5 MB zip, parsed with 1.5 GB of address space."""
    inflated = 1 << 30
    bomb = tmp_path / "src" / "bomb.zip"
    zip_size = write_zip_bomb(bomb, inflated)
    keys = real_spot_2020(tmp_path)
    bomb_key = put_archive(tmp_path, spot_key("2020-01-04"), bomb.read_bytes())
    args = dict(
        trade_type="spot", symbol="BTCUSDT", interval="1m", data_dir=str(tmp_path),
        download_report=download_report(tmp_path, [*keys, bomb_key]),
        report_path=str(tmp_path / "out" / "report.json"),
        stats_path=str(tmp_path / "out" / "stats.json"),
    )  # fmt: skip
    run = subprocess.run(
        [sys.executable, "-c", BOMB_JOB, json.dumps(args), str(1500 * MiB)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    stats = json.loads(run.stdout.strip().splitlines()[-1])
    print(
        f"bomb: {zip_size} B zip -> {inflated} B member ({inflated // len(BOMB_LINE)} lines); "
        f"parse job peak RSS {stats['peak_rss_kb'] / 1024:.0f} MiB under RLIMIT_AS 1500 MiB"
    )
    assert "error" not in stats
    assert list(stats["quarantined"]) == [bomb_key]
    reason = stats["quarantined"][bomb_key]
    assert f"zip of {zip_size} bytes" in reason and f"cap of {20 * zip_size} bytes" in reason
    assert stats["files_parsed"] == 3
    # Bounded: the cap (20 x the zip) plus the interpreter and three days of rows.
    assert stats["peak_rss_kb"] * 1024 < 20 * zip_size + 400 * MiB


def test_member_is_held_once_while_inflated(tmp_path):
    """A large member is inflated into one buffer: Python's peak is about the member, not
    twice it (chunks joined at the end: 800 MB for a monthly 1s kline zip of 400 MB)."""
    import tracemalloc

    line = b"1735689600000,93576.00,93610.93,93537.50,93610.93,8.21827,1735689659999,769,1\n"
    member = line * (16 * MiB // len(line))
    path = tmp_path / "m.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("m.csv", member)
    tracemalloc.start()
    try:
        data = read_zip_member(path, "k", InflateLimit(ratio=1000, ceiling=1 << 30))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert data == member
    assert peak < 1.4 * len(member), (peak, len(member))
