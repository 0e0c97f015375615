"""A user's install: a `git archive` of HEAD installed (not editable) into a fresh venv, run
through the venv's own entry points by full path, without activation, from another folder.

No network: the venv sees the system site-packages for the dependencies, the project itself
is built from the archive with `--no-deps --no-build-isolation --no-index`.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from crypto_lakehouse_emulator.generate import build_mirror

from crypto_lakehouse import layout
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.e2e

DAYS = ("2024-03-01", "2024-03-02")


def _run(cmd, cwd, timeout=300, check=True):
    # No PYTHONPATH: the venv must find its own installed copy, not a checkout.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    if (
        shutil.which("git") is None
        or _run(["git", "rev-parse", "HEAD"], REPO_ROOT, check=False).returncode
    ):
        pytest.skip("needs a git checkout (git archive of HEAD)")
    root = tmp_path_factory.mktemp("fresh")
    archive = subprocess.run(
        ["git", "archive", "--format=tar", "HEAD"], cwd=REPO_ROOT, capture_output=True, check=True
    ).stdout
    src = root / "src"
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(src, filter="data")
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", venv], root)
    pip = [venv / "bin" / "python", "-m", "pip", "install", "-q", "--no-deps"]
    _run([*pip, "--no-build-isolation", "--no-index", src], root)
    return venv


def test_the_installed_package_is_the_venv_copy(venv, tmp_path):
    proc = _run(
        [venv / "bin" / "python", "-c", "import crypto_lakehouse as c; print(c.__file__)"],
        tmp_path,
    )
    installed = Path(proc.stdout.strip())
    assert installed.is_relative_to(venv), installed
    workflow = installed.parent / "workflow"
    for name in ("Snakefile", "rules/common.smk", "scripts/list_archive.py",
                 "config/config.schema.yaml", "envs/pipeline.yaml", "profiles/slurm/config.yaml"):  # fmt: skip
        assert (workflow / name).is_file(), name


def test_cli_help_and_dry_run_from_another_folder(venv, tmp_path):
    cli = venv / "bin" / "crypto-lakehouse"
    assert "aws-download" in _run([cli, "workflow", "--help"], tmp_path).stdout
    cfg = tmp_path / "my.yaml"
    cfg.write_text("trade_types: [spot]\nresample: {targets: []}\nend_date: 2024-03-02\n")
    proc = _run([cli, "workflow", "aws-download", "1h", "--dry-run", "--configfile", cfg], tmp_path)
    assert "list_archive" in proc.stdout
    assert f"{venv}/lib" in proc.stderr  # the shipped workflow profile was found
    # Snakemake itself, through the venv's interpreter, with the shipped Snakefile.
    snakefile = next(venv.glob("lib/python*/site-packages/crypto_lakehouse/workflow/Snakefile"))
    proc = _run(
        [venv / "bin" / "python", "-m", "snakemake", "--snakefile", snakefile, "-n", "--cores",
         "1", "aws_download", "--configfile", cfg],
        tmp_path,
    )  # fmt: skip
    assert "list_archive" in proc.stdout


def test_download_and_parse_on_the_emulator(venv, tmp_path, emulator):
    mirror = tmp_path / "mirror"
    keys = build_mirror(
        mirror,
        {"spot": {"symbols": ["BTCUSDT"], "start": DAYS[0], "end": DAYS[1], "interval": "1h"}},
    )
    emu = emulator(mirror_dir=mirror)
    data = tmp_path / "data"
    config = {
        "data_dir": str(data),
        "trade_types": ["spot"],
        "symbols": {"spot": ["BTCUSDT"]},
        "start_date": DAYS[0],
        "end_date": DAYS[1],
        "endpoints": {
            k: emu.base_url for k in ("archive", "listing", "spot_api", "um_api", "cm_api")
        },  # fmt: skip
        "resample": {"targets": []},
    }
    cfg = tmp_path / "emulator.yaml"
    cfg.write_text(json.dumps(config))
    proc = _run(
        [venv / "bin" / "crypto-lakehouse", "workflow", "aws-parse", "1h", "--cores", "2",
         "--configfile", cfg, "--", "--printshellcmds"],
        tmp_path,
    )  # fmt: skip
    # Jobs ran with the venv's interpreter (the venv was never activated).
    assert f"{venv}/bin/python3 " in proc.stdout + proc.stderr

    # Expected candles: the open times in the mirror's CSVs (Binance's first column, ms).
    expected = []
    for key in sorted(keys):
        with zipfile.ZipFile(mirror / key) as zf:
            text = zf.read(zf.namelist()[0]).decode()
        expected += [int(row[0]) for row in csv.reader(text.splitlines()) if row[0].isdigit()]
    assert len(expected) == 48
    files = sorted(layout.parsed_klines_dir(data, "spot", "BTCUSDT", "1h").rglob("*.pqt"))
    assert files
    times = pa.chunked_array([pq.read_table(f).column("candle_begin_time") for f in files])
    got = sorted(times.cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64()).to_pylist())
    assert got == sorted(expected)

    # `crypto-lakehouse plan` finds the default config inside the installed package (it
    # looked for site-packages/config/config.yaml before 2026-12-06).
    proc = _run(
        [venv / "bin" / "crypto-lakehouse", "plan", "--configfile", cfg, "--config",
         "interval=1h"],
        tmp_path,
    )  # fmt: skip
    assert "2 files, " in proc.stdout and "present (verified)" in proc.stdout, proc.stdout
