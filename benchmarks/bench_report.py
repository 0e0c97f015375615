"""Benchmark: the report for a synthetic full universe (issue 16: ≤ 60 s, ≤ 25 MB).

    PYTHONPATH=$PWD python benchmarks/bench_report.py [--symbols 2700] [--days 2000]

Builds in memory the provenance rows and generated segments of ``--symbols`` symbols over
``--days`` days (staggered listings, missing archive days filled by REST, short days,
downtime, delisting gaps, a REST tail, stale symbols), writes one quality record per symbol
and the provenance files and segment footers the coverage is read from, then times reading
those, the coverage table, its Parquet file and the page (``render_report``, which reads the
quality records). The baseline is the same run on a tenth of the symbols
(same days), measured first: the ratio shows how the time scales with the universe.
Figures are noisy on a shared machine.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from crypto_lakehouse import io, layout  # noqa: E402
from crypto_lakehouse.intervals import DAY_MS  # noqa: E402
from crypto_lakehouse.provenance import day_iso, day_number  # noqa: E402
from crypto_lakehouse.quality import QUALITY_SCHEMA  # noqa: E402
from crypto_lakehouse.report.coverage import (  # noqa: E402
    coverage_table,
    read_provenance,
    read_segments,
    to_arrow,
)
from crypto_lakehouse.report.job import render_report  # noqa: E402

END = "2025-06-30"
PER_DAY = 1440
LIMIT_S, LIMIT_MB = 60.0, 25.0


def synthetic_universe(n_symbols: int, n_days: int, seed: int = 16):
    """Provenance rows and segments of a universe, on whole arrays."""
    rng = np.random.default_rng(seed)
    end_day = day_number(END)
    day0 = end_day - n_days + 1
    symbols = np.array([f"S{i:04d}USDT" for i in range(n_symbols)])
    # Listings spread over the period; a quarter listed from the first day.
    first = np.where(rng.random(n_symbols) < 0.25, 0, rng.integers(0, n_days - 30, n_symbols))
    life = n_days - first
    code = np.repeat(np.arange(n_symbols), life)
    day = day0 + first[code] + (np.arange(len(code)) - np.repeat(np.cumsum(life) - life, life))
    archive = np.full(len(code), PER_DAY, dtype=np.int64)
    rest = np.zeros(len(code), dtype=np.int64)
    u = rng.random(len(code))
    archive[u < 0.01] = 0  # absent from the archive: REST has it
    rest[u < 0.01] = PER_DAY
    short = (u >= 0.01) & (u < 0.015)
    archive[short] = 1000  # short archive day completed by REST
    rest[short] = PER_DAY
    down = (u >= 0.015) & (u < 0.02)
    archive[down] = PER_DAY - 60  # downtime: filled
    tail = day > end_day - 3
    archive[tail], rest[tail] = 0, PER_DAY  # not yet archived
    # 5% of symbols delisted for 30 days in their life; 3% delisted for good 100 days ago.
    gap_at = first + life // 2
    has_gap = (rng.random(n_symbols) < 0.05) & (life > 200)
    rel = day - day0
    in_gap = has_gap[code] & (rel >= gap_at[code]) & (rel < gap_at[code] + 30)
    gone = (rng.random(n_symbols) < 0.03)[code] & (day > end_day - 100)
    absent = in_gap | gone
    archive[absent], rest[absent] = 0, 0
    union = np.maximum(archive, np.where(rest > 0, PER_DAY, 0))
    union[down & ~absent] = PER_DAY - 60
    prov = pd.DataFrame(
        {"symbol": symbols[code], "day": day, "archive_rows": archive, "rows": union}
    )
    # Segments: one per symbol, two around a gap; the last ends at its last day with rows.
    last_row_day = (
        pd.Series(day[union > 0]).groupby(code[union > 0]).max().reindex(range(n_symbols))
    )
    starts = (day0 + first) * DAY_MS
    ends = (last_row_day.to_numpy(np.int64) + 1) * DAY_MS
    segs = [pd.DataFrame({"symbol": symbols, "first_ms": starts, "end_ms": ends})]
    g = np.flatnonzero(has_gap)
    gap_start = (day0 + gap_at[g]) * DAY_MS
    segs = [
        pd.DataFrame(
            {
                "symbol": symbols,
                "first_ms": np.where(has_gap, -1, starts),
                "end_ms": np.where(has_gap, -1, ends),
            }
        ),
        pd.DataFrame({"symbol": symbols[g], "first_ms": starts[g], "end_ms": gap_start}),
        pd.DataFrame(
            {"symbol": symbols[g], "first_ms": gap_start + 30 * DAY_MS, "end_ms": ends[g]}
        ),
    ]
    segments = pd.concat(segs, ignore_index=True)
    segments = segments[segments["first_ms"] >= 0].reset_index(drop=True)
    segments["gates"] = '{"contiguous": "passed", "ohlc": "passed", "unique_minutes": "passed"}'
    return prov, segments, end_day


def write_quality(data_dir: Path, prov: pd.DataFrame) -> None:
    """One quality record per symbol, days as the provenance's archive days."""
    folder = layout.quality_dir(data_dir, "spot", "1m")
    for symbol, rows in prov.groupby("symbol", sort=False):
        n = len(rows)
        got = rows["archive_rows"].to_numpy(np.int64)
        table = pa.table(
            {
                "date": pa.array(rows["day"].to_numpy(np.int32), pa.int32()).cast(pa.date32()),
                "source": pa.array(["k"] * n, pa.string()),
                "rows": got,
                "expected_rows": np.full(n, PER_DAY, np.int64),
                "missing_rows": PER_DAY - got,
                "zero_volume_rows": np.zeros(n, np.int64),
                "longest_zero_volume_run": np.zeros(n, np.int64),
                "ohlc_violations": np.zeros(n, np.int64),
                "taker_violations": np.zeros(n, np.int64),
                "score": got / PER_DAY,
            },
            schema=QUALITY_SCHEMA,
        )
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, folder / f"{symbol}.pqt")


def write_provenance_and_footers(data_dir: Path, prov: pd.DataFrame, segments) -> None:
    """The provenance files as api_download writes them (the columns the report reads), and
    one small generated file per segment: reading a footer costs the same whatever the
    file's length (the benchmark uses the in-memory segments for the page)."""
    folder = layout.provenance_dir(data_dir, "spot", "1m")
    folder.mkdir(parents=True, exist_ok=True)
    for symbol, rows in prov.groupby("symbol", sort=False):
        table = pa.table(
            {
                "day": pa.array(rows["day"].to_numpy(np.int32), pa.int32()).cast(pa.date32()),
                "archive_rows": rows["archive_rows"].to_numpy(np.int64),
                "rows": rows["rows"].to_numpy(np.int64),
            }
        )
        pq.write_table(table, folder / f"{symbol}.pqt")
    results = layout.results_klines_dir(data_dir, "spot", "1m")
    results.mkdir(parents=True, exist_ok=True)
    for k, (symbol, first) in enumerate(zip(segments["symbol"], segments["first_ms"], strict=True)):
        t = pa.table({"candle_begin_time": pa.array([first], pa.timestamp("ms", tz="UTC"))})
        pq.write_table(t, results / f"SP{k}_{symbol}.pqt")


def run_once(n_symbols: int, n_days: int, workdir: Path) -> dict:
    prov, segments, end_day = synthetic_universe(n_symbols, n_days)
    data_dir = workdir / f"data-{n_symbols}"
    write_quality(data_dir, prov)
    write_provenance_and_footers(data_dir, prov, segments)
    t_read, cpu0 = time.perf_counter(), time.process_time()
    from_disk = read_provenance(data_dir, "spot", "1m")
    footers = read_segments(data_dir, "spot", "1m")
    assert len(from_disk) == len(prov) and len(footers) == len(segments)
    t0 = time.perf_counter()
    table = coverage_table(
        prov,
        segments[["symbol", "first_ms", "end_ms"]],
        trade_type="spot",
        interval="1m",
        end_day=end_day,
    )
    t1 = time.perf_counter()
    io.write_parquet(
        Path(layout.run_report_path(layout.default_run_dir(str(data_dir)), "coverage.parquet")),
        to_arrow(table),
    )
    t2 = time.perf_counter()
    seconds: dict[str, float] = {}
    html_text, pngs = render_report(
        data_dir=data_dir,
        coverage=table,
        segments={"spot": segments},
        interval="1m",
        trade_types=["spot"],
        end_date=day_iso(end_day),
        stale_after_hours=48,
        seconds=seconds,
    )
    io.write_text(
        Path(layout.run_report_path(layout.default_run_dir(str(data_dir)), "index.html")), html_text
    )
    t3 = time.perf_counter()
    return {
        "symbols": n_symbols,
        "rows": len(table),
        "coverage_s": t1 - t0,
        "parquet_s": t2 - t1,
        "page_s": t3 - t2,
        "read_s": t0 - t_read,
        "total_s": t3 - t_read,
        "cpu_s": time.process_time() - cpu0,
        "steps": seconds,
        "page_mb": len(html_text.encode()) / 1e6,
        "heatmap_mb": len(pngs.get("coverage_spot", b"")) / 1e6,
        "parquet_mb": Path(
            layout.run_report_path(layout.default_run_dir(str(data_dir)), "coverage.parquet")
        )
        .stat()
        .st_size
        / 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=2700)
    parser.add_argument("--days", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        base = run_once(max(args.symbols // 10, 1), args.days, Path(tmp))
        full = run_once(args.symbols, args.days, Path(tmp))
    for r in (base, full):
        print(
            f"{r['symbols']:>5} symbols × {args.days} days ({r['rows']:,} rows): "
            f"read provenance and footers {r['read_s']:.2f} s, coverage {r['coverage_s']:.2f} s, parquet {r['parquet_s']:.2f} s, "
            f"page {r['page_s']:.2f} s {r['steps']}, total {r['total_s']:.2f} s "
            f"(CPU {r['cpu_s']:.2f} s); "
            f"page {r['page_mb']:.2f} MB (heatmap {r['heatmap_mb']:.2f} MB), "
            f"coverage.parquet {r['parquet_mb']:.2f} MB"
        )
    print(
        f"full / tenth: time ×{full['total_s'] / base['total_s']:.1f}, "
        f"page size ×{full['page_mb'] / base['page_mb']:.1f}"
    )
    print(
        f"against the issue's limits: time {full['total_s']:.1f} / {LIMIT_S:.0f} s "
        f"= {full['total_s'] / LIMIT_S:.2f}, size {full['page_mb']:.1f} / {LIMIT_MB:.0f} MB "
        f"= {full['page_mb'] / LIMIT_MB:.2f}"
    )


if __name__ == "__main__":
    main()
