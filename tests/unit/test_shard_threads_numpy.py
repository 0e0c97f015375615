"""A shard job whose symbols run on threads imports numpy's lazily loaded ``numpy.ma``
before the threads start: NumPy 2 loads it on first access, which is not thread-safe (a
REST job's symbol failed with RecursionError in ``import numpy.ma`` when 8 threads called
``np.unique`` at once)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.conftest import REPO_ROOT


def test_numpy_ma_is_loaded_before_the_symbols_threads_start(tmp_path):
    # A fresh interpreter: this test process has long imported numpy.ma (pandas does).
    code = textwrap.dedent(
        f"""
        import sys
        from crypto_lakehouse.shards import ShardPart, run_shard_parts

        assert "numpy.ma" not in sys.modules  # what a REST job (no pandas) starts with
        seen = []

        def func(*, symbol, report_path):
            seen.append("numpy.ma" in sys.modules)

        part = ShardPart(func, ["AAAUSDT", "BBBUSDT", "CCCUSDT"], {{"report_path": {str(tmp_path / "reports")!r}}})
        run_shard_parts([part], shard_report={str(tmp_path / "reports" / "shard.json")!r}, at_once=3)
        print(seen)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=60
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "[True, True, True]"
