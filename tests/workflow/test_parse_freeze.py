"""The Snakefile's end freezes what the parse created (``smk.skip_exit_collection``, issue 11):
the loaded modules and the rules live until the process exits, and the garbage collector's
full collections while planning (0.1-0.2 s of the full universe's plan) and at exit skip
them."""

from __future__ import annotations

import json
import sys

from tests.workflow.workflow_helpers import run_snakemake

LAUNCHER = """
import atexit, gc, json, runpy, sys

out = sys.argv.pop(1)
# Registered first, so it runs last at exit: what the final collections then skip.
atexit.register(lambda: open(out, "w").write(json.dumps(gc.get_freeze_count())))
sys.argv[0] = "snakemake"
runpy.run_module("snakemake", run_name="__main__", alter_sys=True)
"""


def test_the_parse_freezes_what_it_created(tmp_path):
    """A dry run (no hook runs) of the default job: the Snakefile's end freezes the loaded
    modules and rules, so planning's full collections and the exit skip them."""
    launcher = tmp_path / "launcher.py"
    launcher.write_text(LAUNCHER)
    out = tmp_path / "frozen.json"
    run_snakemake(tmp_path, "-n", launcher=[sys.executable, str(launcher), str(out)])
    assert json.loads(out.read_text()) > 10_000
