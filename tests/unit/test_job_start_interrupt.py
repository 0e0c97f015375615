"""Ctrl-C reaches every job of a run (the terminal signals the whole process group): a job
still importing its modules printed a KeyboardInterrupt traceback of wherever the import
was (seen on a complete-pipeline run on the emulator: charset_normalizer, pathlib, ...)."""

from __future__ import annotations

import ast
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from crypto_lakehouse.job_start import STARTING

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = sorted((REPO / "scripts").glob("*.py"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_job_script_imports_the_interrupt_hook_first(script):
    body = ast.parse(script.read_text()).body
    first = next(node for node in body if not isinstance(node, ast.Expr))  # after the docstring
    assert isinstance(first, ast.Import), ast.dump(first)
    assert [alias.name for alias in first.names] == ["crypto_lakehouse.job_start"]


def test_ctrl_c_while_a_job_imports_is_one_line_and_the_job_ends_by_sigint():
    # features_shard imports numpy, pyarrow and TA-Lib: SIGINT once numpy is imported lands
    # in the middle of the job's imports (-X importtime names each module as it is done).
    proc = subprocess.Popen(
        [sys.executable, "-X", "importtime", str(REPO / "scripts" / "features_shard.py")],
        stderr=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if line.split("|")[-1].strip() == "numpy":
            proc.send_signal(signal.SIGINT)
            break
    err = "".join(lines) + proc.stderr.read()
    assert proc.wait(timeout=60) == -signal.SIGINT, err[-2000:]
    messages = [line for line in err.splitlines() if not line.startswith("import time:")]
    assert messages == [STARTING], err[-2000:]
