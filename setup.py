"""Build hook only (metadata lives in pyproject.toml): the wheel carries the workflow.

``pip install .`` (not editable) and ``pipx install`` must give a ``crypto-lakehouse`` that
finds its Snakefile, so the workflow files at the top of the repository (Snakefile, rules/,
scripts/, config/, envs/, profiles/) are copied into the package as
``crypto_lakehouse/workflow/`` (see ``crypto_lakehouse.cli.workflow_dir``). Editable
installs and checkouts use the files in place.
"""

import shutil
import sys
from pathlib import Path

# pyproject's requires-python. pip checks it only after resolving the dependencies: on an
# older Python, `pip install .` ended in a page of "Ignored the following versions that
# require a different python version" and "No matching distribution found for
# snakemake<10,>=9", never naming the Python. Built here first, it stops with this line.
MIN_PYTHON = (3, 11)
if sys.version_info < MIN_PYTHON:
    raise SystemExit(
        f"crypto_lakehouse needs Python >= {'.'.join(map(str, MIN_PYTHON))}; this is Python "
        f"{'.'.join(map(str, sys.version_info[:3]))} ({sys.executable}): make the venv with a "
        "newer one (python3.11 -m venv .venv)"
    )

from setuptools import setup  # noqa: E402
from setuptools.command.build_py import build_py  # noqa: E402

HERE = Path(__file__).resolve().parent
WORKFLOW_FILES = ["Snakefile"]
WORKFLOW_DIRS = ["rules", "scripts", "config", "envs", "profiles"]


class BuildPyWithWorkflow(build_py):
    def run(self):
        editable = getattr(self, "editable_mode", False)
        package = Path(self.build_lib) / "crypto_lakehouse"
        if not editable and package.exists():
            # pip builds in the checkout's build/: setuptools only adds to build/lib, so a
            # module removed or renamed since an earlier `pip install .` still shipped.
            shutil.rmtree(package)
        super().run()
        if editable:
            return  # an editable install runs the checkout's own files
        target = package / "workflow"
        target.mkdir(parents=True)
        for name in WORKFLOW_FILES:
            shutil.copy2(HERE / name, target / name)
        for name in WORKFLOW_DIRS:
            shutil.copytree(
                HERE / name, target / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
            )


setup(cmdclass={"build_py": BuildPyWithWorkflow})
