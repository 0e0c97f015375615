"""Benchmark of the parsed datasets' loaders and views (docs/loading.md, "The parsed
datasets"): file pruning by name, with one file per symbol and day.

Run by hand (not in CI)::

    python benchmarks/bench_loading_datasets.py [--symbols 30] [--days 1000] [--repeat 3]

What it does, in a temporary folder:

1. Writes ``--symbols`` × ``--days`` um aggTrades day files of 24 rows each
   (``parsed_data/um_futures/aggTrades/{SYM}/{YYYYMMDD}.pqt``, the parser's schema).
2. ``duckdb_connect`` over them (``connect_s``), then a count of one symbol's one day through
   the ``agg_trades`` view (``view_symbol_day_s``), of one day of every symbol
   (``view_day_s``), and the same one-symbol one-day count over one ``read_parquet`` of
   every file, the view's first layout (``one_list_symbol_day_s``).
3. ``load_dataset`` of one symbol's day (``load_day_s``).

Prints the figures as JSON (best of ``--repeat``). Noisy on a shared machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from crypto_lakehouse import datasets, layout, loading  # noqa: E402
from crypto_lakehouse.parse.ticks import arrow_schema  # noqa: E402

D0 = dt.date(2022, 1, 1)


def day_table(day: dt.date) -> pa.Table:
    schema = arrow_schema(datasets.AGG_TRADES, "um_futures")
    first = int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp() * 1000)
    n = 24
    return pa.table(
        {
            "agg_trade_id": pa.array(range(n), pa.int64()),
            "price": pa.array([100.0 + i for i in range(n)]),
            "quantity": pa.array([1.5] * n),
            "first_trade_id": pa.array(range(n), pa.int64()),
            "last_trade_id": pa.array(range(n), pa.int64()),
            "transact_time": pa.array([first + i * 3_600_000 for i in range(n)]).cast(
                schema.field("transact_time").type
            ),
            "is_buyer_maker": pa.array([i % 2 == 0 for i in range(n)]),
        },
        schema=schema,
    )


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=30)
    parser.add_argument("--days", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        for d in range(args.days):
            day = D0 + dt.timedelta(days=d)
            body = day_table(day)
            for s in range(args.symbols):
                path = layout.parsed_day_path(
                    data, "um_futures", "aggTrades", f"S{s}USDT", day.strftime("%Y%m%d")
                )
                path.parent.mkdir(parents=True, exist_ok=True)
                pq.write_table(body, path)
        day = (D0 + dt.timedelta(days=args.days // 2)).isoformat()
        symbol = f"S{args.symbols // 2}USDT"
        start = time.perf_counter()
        con = loading.duckdb_connect(data)
        connect_s = time.perf_counter() - start
        one = f"SELECT count(*) FROM agg_trades WHERE symbol = '{symbol}' AND day = '{day}'"
        every = f"SELECT count(*) FROM agg_trades WHERE day = '{day}'"
        files = loading.view_files(data)["agg_trades"]
        pattern = loading.VIEW_PATTERNS["agg_trades"][0]
        one_list = (
            f"SELECT count(*) FROM read_parquet({loading._sql_list(files)}, filename = true) "
            f"WHERE regexp_extract(filename, '{pattern}', 2) = '{symbol}' "
            f"AND regexp_extract(filename, '{pattern}', 3) = '{day.replace('-', '')}'"
        )
        assert con.execute(one).fetchone() == con.execute(one_list).fetchone() == (24,)
        end = (dt.date.fromisoformat(day) + dt.timedelta(days=1)).isoformat()
        figures = {
            "files": len(files),
            "symbols": args.symbols,
            "days": args.days,
            "connect_s": connect_s,
            "view_symbol_day_s": best(lambda: con.execute(one).fetchall(), args.repeat),
            "view_day_s": best(lambda: con.execute(every).fetchall(), args.repeat),
            "one_list_symbol_day_s": best(lambda: con.execute(one_list).fetchall(), args.repeat),
            "load_day_s": best(
                lambda: loading.load_dataset(data, "um_futures", "aggTrades", symbol, day, end),
                args.repeat,
            ),
        }
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
