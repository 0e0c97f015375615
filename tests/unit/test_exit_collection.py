"""The end of a process skips the garbage collection of its imported modules (issue 11):
``smk.skip_exit_collection`` (``gc.freeze``), called by a job script's ``run_job`` after its
entry point and by the workflow's ``onsuccess``/``onerror`` hooks.

Each check runs in a fresh interpreter: freezing this test process's objects would keep its
later garbage from being collected."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_python(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


JOB = """
    import atexit, gc, json, sys
    from crypto_lakehouse.smk import run_job

    def entry(fail, **kwargs):
        print(json.dumps({"during": gc.get_freeze_count()}), flush=True)
        if fail:
            raise ValueError("boom")
        return 7

    # Runs at exit, after the job: what the interpreter's final collections then skip.
    atexit.register(lambda: print(json.dumps({"at_exit": gc.get_freeze_count()}), flush=True))
    ARGV
    result = run_job(entry, **KW)
    print(json.dumps({"result": result}), flush=True)
"""


def job(tmp_path, *, own_argv: bool, fail: bool = False) -> tuple[int, list[dict], str]:
    log = str(tmp_path / "job.log")
    job_json = json.dumps({"fail": fail})
    if own_argv:  # a script: run_job reads sys.argv
        code = JOB.replace("ARGV", f"sys.argv = ['s.py', {job_json!r}, {log!r}]")
        code = code.replace("**KW", "")
    else:  # a caller passing its arguments (tests, other tools): the process goes on
        code = JOB.replace("ARGV", "")
        code = code.replace("**KW", f"argv=['s.py', {job_json!r}, {log!r}]")
    proc = run_python(code)
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    return proc.returncode, lines, proc.stderr


def test_a_script_job_freezes_its_objects_after_the_entry_point(tmp_path):
    code, lines, err = job(tmp_path, own_argv=True)
    assert code == 0, err
    assert lines[0] == {"during": 0}  # the job's own work collects as before
    assert lines[1] == {"result": 7}
    assert lines[2]["at_exit"] > 1000  # the imported modules' objects


def test_a_failing_script_job_freezes_too_and_still_fails(tmp_path):
    code, lines, err = job(tmp_path, own_argv=True, fail=True)
    assert code == 1
    assert "ValueError: boom" in err
    assert lines[0] == {"during": 0}
    assert lines[1]["at_exit"] > 1000


def test_a_caller_passing_argv_keeps_collecting(tmp_path):
    code, lines, err = job(tmp_path, own_argv=False)
    assert code == 0, err
    assert lines == [{"during": 0}, {"result": 7}, {"at_exit": 0}]


def test_the_workflow_hooks_skip_the_exit_collection():
    """The Snakefile's onsuccess and onerror call it, after cancel_scheduler_timers."""
    text = (ROOT / "Snakefile").read_text()
    for hook in ("onsuccess:", "onerror:"):
        body = text.split(hook, 1)[1].split("\n\n", 1)[0]
        assert body.rstrip().endswith("cancel_scheduler_timers()\n    skip_exit_collection()")
