"""Benchmark of the loading API (docs/loading.md): predicate pushdown and DuckDB file pruning.

Run by hand (not in CI)::

    python benchmarks/bench_loading.py [--symbols 1000] [--days 365] [--repeat 3] [--legacy]

What it does, in a temporary folder:

1. Writes one year of 1m candles (``--days``) for one symbol, row groups of one day (as
   gen_kline's files: statistics on ``candle_begin_time``), and ``--symbols`` small one-day
   files beside it.
2. ``load_klines`` of one day of the big file, against the baseline of reading the whole
   file with ``pyarrow.parquet.read_table`` and filtering in pandas: ``ratio_one_day`` =
   baseline / ours (> 1: pushdown pays).
3. ``duckdb_connect`` over all files, then a count of one symbol through the ``klines`` view,
   against the baseline of ``read_parquet`` on that symbol's file alone: ``ratio_view`` =
   baseline / view (1.0 would mean the view costs nothing over knowing the path).

The files carry the key-value metadata gen_kline writes (``interval``); with ``--legacy``
they do not, as a legacy data dir's (the loaders then warn: docs/loading.md, "Files this
pipeline did not write").

Prints the figures as JSON (best of ``--repeat``). Noisy on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from crypto_lakehouse import layout, loading  # noqa: E402
from crypto_lakehouse.schema import TIME_TYPE  # noqa: E402

T0 = 1_704_067_200_000  # 2024-01-01
DAY = 86_400_000


def candles(first_ms: int, n: int) -> pa.Table:
    t = first_ms + np.arange(n, dtype=np.int64) * 60_000
    price = 100 + np.sin(np.arange(n) / 500.0)
    return pa.table(
        {
            "candle_begin_time": pa.array(t).cast(TIME_TYPE),
            "open": price,
            "high": price + 0.1,
            "low": price - 0.1,
            "close": price,
            "volume": np.ones(n),
            "funding_rate": np.where(t % (8 * 3_600_000) == 0, 1e-4, 0.0),
        }
    )


def written(table: pa.Table, legacy: bool) -> pa.Table:
    """As gen_kline writes it (its ``interval`` metadata key), or as legacy's file."""
    return table if legacy else table.replace_schema_metadata({"interval": "1m"})


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--symbols", type=int, default=1000)
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--legacy", action="store_true", help="files without gen_kline's metadata")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        kdir = layout.results_klines_dir(data, "um_futures", "1m")
        kdir.mkdir(parents=True)
        big = kdir / "BTCUSDT.pqt"
        pq.write_table(written(candles(T0, args.days * 1440), args.legacy), big,
                       row_group_size=1440)  # fmt: skip
        small = written(candles(T0, 1440), args.legacy)
        for i in range(args.symbols):
            pq.write_table(small, kdir / f"S{i:05d}USDT.pqt")

        day_start = np.datetime64(T0 + 100 * DAY, "ms")
        day_end = day_start + np.timedelta64(1, "D")

        def ours():
            return loading.load_klines(data, "um_futures", "BTCUSDT", start=day_start, end=day_end)

        def baseline():
            df = pq.read_table(big).to_pandas()
            lo = np.datetime64(day_start, "ms")
            times = df["candle_begin_time"].dt.tz_localize(None).to_numpy()
            return df[(times >= lo) & (times < np.datetime64(day_end, "ms"))]

        assert len(ours()) == len(baseline()) == 1440
        ours_s, base_s = best(ours, args.repeat), best(baseline, args.repeat)

        t = time.perf_counter()
        con = loading.duckdb_connect(data)
        connect_s = time.perf_counter() - t
        sql = "SELECT count(*) FROM klines WHERE symbol = 'S00007USDT'"
        direct = f"SELECT count(*) FROM read_parquet('{kdir / 'S00007USDT.pqt'}')"
        assert con.execute(sql).fetchall() == con.execute(direct).fetchall() == [(1440,)]
        view_s = best(lambda: con.execute(sql).fetchall(), args.repeat)
        direct_s = best(lambda: con.execute(direct).fetchall(), args.repeat)
    print(
        json.dumps(
            {
                "files": args.symbols + 1,
                "days_in_big_file": args.days,
                "load_one_day_s": round(ours_s, 4),
                "read_all_then_filter_s": round(base_s, 4),
                "ratio_one_day": round(base_s / ours_s, 2),
                "duckdb_connect_s": round(connect_s, 3),
                "view_query_s": round(view_s, 4),
                "direct_read_parquet_s": round(direct_s, 4),
                "ratio_view": round(direct_s / view_s, 3),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
