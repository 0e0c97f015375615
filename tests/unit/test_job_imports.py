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


def _fresh_python(code: str, env: dict | None = None) -> str:
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True,
        env={**(env if env is not None else os.environ), "PYTHONPATH": os.pathsep.join(sys.path)},
    )  # fmt: skip
    return out.stdout.strip()


def test_gen_kline_and_resample_do_not_import_pyarrow_compute(tmp_path):
    """pyarrow's casts import ``pyarrow.compute`` (~30 ms of CPU per job process: its
    kernels wrapped in Python functions), even to a column's own type: the gen_kline and
    resample jobs paid it for casts of the files the pipeline writes, whose types are the
    right ones already (``schema.conformed``, ``schema.epoch_ms``). A full build of one
    symbol with funding, then its resample, in a fresh interpreter that refuses pandas, as
    the jobs run (pandas' arrow accessors import pyarrow.compute too)."""
    from tests.unit import test_generate_tail as gt

    gt.write_state(tmp_path, gt.master(), 8, gt.T0 + 9 * gt.DAY + 12 * gt.HOUR, gt.RATES)
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from crypto_lakehouse.smk import refuse_pandas\n"
        "assert refuse_pandas()\n"
        "from tests.unit import test_generate_tail as gt\n"
        "before = 'pyarrow.compute' in sys.modules\n"
        f"data_dir = Path({str(tmp_path)!r})\n"
        "stats = gt.gen(data_dir, incremental=False)\n"
        "assert stats['files_written'] == 1 and stats['rows']['funding_events'] > 0, stats\n"
        "assert gt.resample(data_dir, incremental=False)['files_written'] > 3\n"
        "print(before, 'pyarrow.compute' in sys.modules)"
    )
    assert _fresh_python(code) == "False False"


def test_a_job_process_starts_no_openblas_thread_pool():
    """numpy's OpenBLAS started a thread per core at import, spinning for work no job gives
    it (~30-45 ms of CPU per job process, taken from the other job on two cores): the first
    import of every job (``crypto_lakehouse.job_start``) asks for one thread, unless the
    user set it."""
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    code = (
        "import os\n"
        "import crypto_lakehouse.job_start\n"
        "import numpy\n"
        "print(os.environ.get('OPENBLAS_NUM_THREADS'), len(os.listdir('/proc/self/task')))"
    )
    assert _fresh_python(code, env) == "1 1"  # no worker threads besides the main one
    assert _fresh_python(code, {**env, "OPENBLAS_NUM_THREADS": "2"}).split()[0] == "2"
