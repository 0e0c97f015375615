"""Build hook only (metadata lives in pyproject.toml): the wheel carries the workflow.

``pip install .`` (not editable) and ``pipx install`` must give a ``crypto-lakehouse`` that
finds its Snakefile, so the workflow files at the top of the repository (Snakefile, rules/,
scripts/, config/, envs/, profiles/) are copied into the package as
``crypto_lakehouse/workflow/`` (see ``crypto_lakehouse.cli.workflow_dir``). Editable
installs and checkouts use the files in place.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
WORKFLOW_FILES = ["Snakefile"]
WORKFLOW_DIRS = ["rules", "scripts", "config", "envs", "profiles"]


class BuildPyWithWorkflow(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install runs the checkout's own files
        target = Path(self.build_lib) / "crypto_lakehouse" / "workflow"
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        for name in WORKFLOW_FILES:
            shutil.copy2(HERE / name, target / name)
        for name in WORKFLOW_DIRS:
            shutil.copytree(
                HERE / name, target / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
            )


setup(cmdclass={"build_py": BuildPyWithWorkflow})
