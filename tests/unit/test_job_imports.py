"""What the REST and gen_kline jobs import (issue 11): each job is a fresh process, so a
module it imports for nothing costs every job. Fresh interpreters, as pipeline jobs are."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

from crypto_lakehouse import intervals
from crypto_lakehouse.parse import validate

# The archive CSV reader and what only it needs (pyarrow.compute comes with pyarrow's casts).
PARSER_ONLY = ("crypto_lakehouse.parse.validate", "crypto_lakehouse.parse.csv_reader",
               "pyarrow.csv", "asyncio")  # fmt: skip


def imported_after(statement: str) -> list[str]:
    code = f"import sys\n{statement}\nprint(sorted(m for m in {PARSER_ONLY!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )  # fmt: skip
    return eval(out.stdout)


def test_the_rest_job_does_not_import_the_archive_parser():
    # ~0.06 s per REST job before: rest.klines took grid_offset from parse.validate.
    statement = (
        "from crypto_lakehouse.rest.host import run_host_shard\n"
        "import crypto_lakehouse.rest.klines, crypto_lakehouse.rest.funding"
    )
    assert imported_after(statement) == []


def test_the_gen_kline_job_does_not_import_the_archive_parser():
    statement = (
        "import numpy as np\n"
        "from crypto_lakehouse.jobs import run_gen_kline_rule\n"
        "from crypto_lakehouse.shards import for_each_symbol\n"
        "from crypto_lakehouse.generate import kline\n"
        "kline._refuse_rest_off_grid(np.arange(3) * 60_000, 0, [], {}, 60_000)"
    )
    assert imported_after(statement) == []


def test_grid_offset_is_the_same_function_in_both_places():
    assert validate.grid_offset is intervals.grid_offset
    assert validate.grid_origin is intervals.grid_origin
    week = 7 * intervals.DAY_MS
    ms = np.array([0, 4 * intervals.DAY_MS, 4 * intervals.DAY_MS + 5, 60_001])
    assert intervals.grid_offset(ms, week).tolist() == [
        3 * intervals.DAY_MS,
        0,
        5,
        60_001 + 3 * intervals.DAY_MS,
    ]
    assert intervals.grid_offset(ms, 60_000).tolist() == [0, 0, 5, 1]
