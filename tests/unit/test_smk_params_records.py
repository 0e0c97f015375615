"""smk.record_params_without_pandas: Snakemake's params records no longer import pandas
unless a value could be a pandas object, and record every value as before."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.workflow.workflow_helpers import REPO

# Run in a fresh interpreter: whether pandas gets imported is the point.
CHECK = textwrap.dedent(
    """
    import sys
    import snakemake.persistence as persistence
    from crypto_lakehouse.smk import record_params_without_pandas

    base = getattr(persistence, "PersistenceBase", None) or persistence.Persistence
    original = base.__dict__["_serialize_param"].fget

    class Records:  # the two serializers of Snakemake's persistence, without its state
        _serialize_param_pandas = base._serialize_param_pandas
        _serialize_param_builtin = base._serialize_param_builtin

    assert "pandas" not in sys.modules
    assert record_params_without_pandas() is True
    records = Records()
    plain = ["/usr/bin/python3", "scripts/x.py", '{"symbols": ["BTCUSDT"]}', 3, 2.5, None,
             ("a", 1), frozenset({1}), b"x", True, object()]
    patched_plain = [base._serialize_param.fget(records)(v) for v in plain]
    assert "pandas" not in sys.modules, "the patched records imported pandas"

    # Snakemake's own choice imports pandas for the same values (what the patch saves) ...
    unpatched_plain = [original(records)(v) for v in plain]
    assert "pandas" in sys.modules, "Snakemake no longer imports pandas here: drop the patch"
    assert patched_plain == unpatched_plain
    # ... and once pandas is imported, pandas values are recorded as Snakemake does.
    import pandas as pd
    frames = [pd.Series([1, 2, 3]), pd.DataFrame({"a": [1.5, 2.5]}), pd.Index(["x"])]
    patched = [base._serialize_param.fget(records)(v) for v in frames]
    assert patched == [original(records)(v) for v in frames]
    assert all(isinstance(p, str) and p.startswith("[") for p in patched)
    print("ok")
    """
)


def test_params_records_without_pandas_are_unchanged():
    proc = subprocess.run(
        [sys.executable, "-c", CHECK], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "ok"


def test_unknown_snakemake_internals_change_nothing(monkeypatch):
    import snakemake.persistence as persistence

    from crypto_lakehouse.smk import record_params_without_pandas

    for name in ("PersistenceBase", "Persistence"):
        monkeypatch.delattr(persistence, name, raising=False)
    assert record_params_without_pandas() is False
