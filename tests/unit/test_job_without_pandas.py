"""Jobs that refuse pandas (``smk.run_job(..., uses_pandas=False)``, issue 11): pyarrow then
runs as if pandas were not installed, which saves its ~0.2 s import per job process. The
outputs must be the same bytes as with pandas loaded (pyarrow takes other code paths).

Each check runs the stage in a fresh interpreter that refuses pandas and compares with the
same work done here, in the test process, with pandas imported."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from crypto_lakehouse import smk
from crypto_lakehouse.schema import numpy_dtype
from tests.unit import test_generate_tail as gt

ROOT = Path(__file__).resolve().parents[2]


def run_python(code: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_run_job_refuses_pandas_only_when_asked(tmp_path):
    code = """
        import json, sys
        import numpy as np, pyarrow as pa
        from crypto_lakehouse.smk import run_job

        def entry(**kwargs):
            pa.array(np.arange(3))  # pyarrow asks its pandas shim here
            pa.chunked_array([np.arange(2), np.arange(2)]).to_numpy()
            try:
                import pandas  # noqa: F401
                refused = None
            except ModuleNotFoundError as exc:
                refused = str(exc)
            return {"loaded": "pandas" in sys.modules, "refused": refused}

        print(json.dumps(run_job(entry, ["s.py", "{}", LOG], uses_pandas=USES)))
    """

    def run(uses: bool) -> dict:
        log = repr(str(tmp_path / f"{uses}.log"))
        return json.loads(run_python(code.replace("LOG", log).replace("USES", str(uses))))

    out = run(False)
    assert out["loaded"] is False
    assert "refuse_pandas" in out["refused"]
    assert run(True) == {"loaded": True, "refused": None}  # pyarrow's own behaviour


@pytest.fixture
def with_pandas():
    """The reference side runs here with pandas loaded (this module is also imported by the
    interpreters that refuse it: no import at module level)."""
    import pandas  # noqa: F401


def test_refuse_pandas_does_nothing_once_pandas_is_loaded(with_pandas):
    assert "pandas" in sys.modules
    assert smk.refuse_pandas() is False
    assert not any(isinstance(f, smk._PandasRefused) for f in sys.meta_path)


def _gen_and_resample(data_dir: Path) -> None:
    """Full build of 9.5 days, then one more day by the tail paths (gen_kline, resample)."""
    cols = gt.master()
    gt.write_state(data_dir, cols, 8, gt.T0 + 9 * gt.DAY + 12 * gt.HOUR, gt.RATES)
    gt.gen(data_dir, incremental=True)
    gt.resample(data_dir, incremental=True)
    gt.write_state(data_dir, cols, 9, gt.T0 + 10 * gt.DAY + 12 * gt.HOUR, gt.RATES)
    stats = gt.gen(data_dir, incremental=True)
    assert "incremental" in stats, stats
    modes = gt.resample(data_dir, incremental=True)["segments_by_mode"]
    assert modes["tail"] == 1, modes


def test_gen_kline_and_resample_same_bytes_without_pandas(tmp_path, monkeypatch, with_pandas):
    monkeypatch.setattr(gt.parquet_append, "ROW_GROUP_ROWS", 5000)
    _gen_and_resample(tmp_path / "with")
    out = run_python(
        f"""
        import sys
        from pathlib import Path
        from crypto_lakehouse.smk import refuse_pandas
        assert refuse_pandas()
        from tests.unit import test_generate_tail as gt
        from tests.unit.test_job_without_pandas import _gen_and_resample
        gt.parquet_append.ROW_GROUP_ROWS = 5000
        _gen_and_resample(Path({str(tmp_path / "without")!r}))
        print("pandas" in sys.modules)
        """
    )
    assert out.strip() == "False"
    with_pd, without = gt.outputs(tmp_path / "with"), gt.outputs(tmp_path / "without")
    assert with_pd.keys() == without.keys() and len(with_pd) > 3
    for name in with_pd:
        assert with_pd[name] == without[name], name
    for report in ("report.json", "resample.json"):
        a = json.loads((tmp_path / "with/rep" / report).read_text())
        b = json.loads((tmp_path / "without/rep" / report).read_text())
        assert a == b


@pytest.mark.parametrize("trade_type", ["spot", "cm_futures"])
def test_rest_klines_table_same_without_pandas(tmp_path, trade_type, with_pandas):
    """The REST answer (lists of ints and decimal strings) to the kline table."""
    rows = [
        [60_000 * i, "1.5", "2.25", "0.75", f"1.{i}", "10.000001", 60_000 * i + 59_999,
         "15.5", 7 + i, "5.0", "7.25", "0"]
        for i in (3, 1, 2, 2, 0)
    ]  # fmt: skip
    want = _kline_table_bytes(rows, tmp_path / "with.pqt")
    out = run_python(
        f"""
        import sys
        from crypto_lakehouse.smk import refuse_pandas
        assert refuse_pandas()
        from tests.unit.test_job_without_pandas import _kline_table_bytes
        _kline_table_bytes({rows!r}, {str(tmp_path / "without.pqt")!r})
        print("pandas" in sys.modules)
        """
    )
    assert out.strip() == "False"
    assert (tmp_path / "without.pqt").read_bytes() == want


def _kline_table_bytes(rows, path) -> bytes:
    from crypto_lakehouse import io
    from crypto_lakehouse.rest.klines import klines_to_table

    table = klines_to_table(rows, lo_ms=60_000, hi_ms=240_000, now_ms=10**9)
    io.write_parquet(path, table)
    return Path(path).read_bytes()


def _parse_real_klines(data_dir: Path) -> dict[str, bytes]:
    """aws_parse_klines of three real spot days and one um day (tests/fixtures/real)."""
    from tests.unit import test_parse_klines as tp

    keys = tp.real_spot_2020(data_dir)
    tp.parse(data_dir, tp.download_report(data_dir, keys))
    src = tp.REAL / "futures_um" / "BTCUSDT-1m-2022-09-05.zip"
    key = tp.layout.daily_kline_key("um_futures", "BTCUSDT", "1m", "2022-09-05")
    tp.put_archive(data_dir, key, src.read_bytes())
    tp.parse(data_dir, tp.download_report(data_dir, [key]), "um_futures", "BTCUSDT")
    root = data_dir / "parsed_data"
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.pqt"))}


def test_aws_parse_klines_same_bytes_without_pandas(tmp_path, with_pandas):
    want = _parse_real_klines(tmp_path / "with")
    out = run_python(
        f"""
        import sys
        from pathlib import Path
        from crypto_lakehouse.smk import refuse_pandas
        assert refuse_pandas()
        from tests.unit.test_job_without_pandas import _parse_real_klines
        _parse_real_klines(Path({str(tmp_path / "without")!r}))
        print("pandas" in sys.modules)
        """
    )
    assert out.strip() == "False"
    root = tmp_path / "without" / "parsed_data"
    got = {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.pqt"))}
    assert got.keys() == want.keys() and len(want) == 2
    assert got == want


def test_no_module_asks_pyarrow_for_a_pandas_dtype():
    """``DataType.to_pandas_dtype`` imports pandas in pyarrow 15 (pyproject: pyarrow>=15; 26
    does not): the gen_kline and resample jobs, which refuse pandas, failed every symbol with
    "No module named 'pandas': this job refuses pandas" there. ``schema.numpy_dtype`` instead."""
    callers = [
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / "crypto_lakehouse").rglob("*.py"))
        if ".to_pandas_dtype(" in path.read_text()
    ]
    assert callers == []


@pytest.mark.parametrize(
    "arrow_type",
    [
        pa.float64(),
        pa.float32(),
        pa.int64(),
        pa.int32(),
        pa.int8(),
        pa.uint8(),
        pa.bool_(),
        pa.string(),
    ],  # fmt: skip
    ids=str,
)
def test_numpy_dtype_is_the_dtype_of_the_values_to_numpy_gives(arrow_type):
    values = pa.array([None], arrow_type).fill_null(pa.scalar(0, pa.int8()).cast(arrow_type))
    assert numpy_dtype(arrow_type) == values.to_numpy(zero_copy_only=False).dtype
    assert numpy_dtype(arrow_type) == np.dtype(arrow_type.to_pandas_dtype())


def test_numpy_dtype_of_a_timestamp_is_its_int64_count():
    assert numpy_dtype(pa.timestamp("ms", tz="UTC")) == np.dtype("int64")
