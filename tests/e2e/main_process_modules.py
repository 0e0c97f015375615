"""Run Snakemake's command line in this process, as ``python -m snakemake ARGS`` does, and
write the top-level modules it imported to OUT_JSON when the process exits (``modules``),
with the stack of the first import of pandas and of polars, if any (``imported_by``).

Usage: python tests/e2e/main_process_modules.py OUT_JSON ARGS...

The SLURM executor plugin is hidden from Snakemake's plugin search: installed (as on CI), it
is imported at every Snakemake start and imports pandas itself; a laptop install has no
plugin (README, "Running on SLURM"), and that is the main process measured here.
"""

from __future__ import annotations

import atexit
import importlib.abc
import json
import pkgutil
import sys
import traceback
from pathlib import Path

out = Path(sys.argv[1])
_iter_modules = pkgutil.iter_modules


def iter_modules_without_slurm(*args, **kwargs):
    for module in _iter_modules(*args, **kwargs):
        if not module.name.startswith("snakemake_executor_plugin_slurm"):
            yield module


class ImportWitness(importlib.abc.MetaPathFinder):
    """Keeps the stack of the first import of each watched module (a lookup that imports
    nothing, such as ``importlib.util.find_spec``, is not an import)."""

    def __init__(self, names):
        self.stacks = dict.fromkeys(names)

    def find_spec(self, name, path=None, target=None):
        if name in self.stacks and self.stacks[name] is None:
            frames = traceback.extract_stack()
            if any(f.name == "_find_and_load_unlocked" for f in frames[-4:]):
                self.stacks[name] = "".join(traceback.format_list(frames[-40:]))
        return None


def write_modules():
    modules = sorted(name for name in sys.modules if "." not in name)
    out.write_text(json.dumps({"modules": modules, "imported_by": witness.stacks}))


witness = ImportWitness(["pandas", "polars"])
sys.meta_path.insert(0, witness)
pkgutil.iter_modules = iter_modules_without_slurm
atexit.register(write_modules)
sys.argv = ["snakemake", *sys.argv[2:]]

from snakemake.cli import main  # noqa: E402  (after the plugin search is narrowed)

main()
