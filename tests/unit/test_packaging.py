"""Declared dependencies match the imports; the conda env and the lock file agree."""

from __future__ import annotations

import ast
import re
import runpy
import sys
import tomllib

import pytest

from tests.conftest import REPO_ROOT

# Import name -> distribution name, where they differ.
DISTRIBUTION = {"yaml": "pyyaml", "talib": "ta-lib"}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower()


def _imported_top_level() -> set[str]:
    names: set[str] = set()
    for path in [*REPO_ROOT.joinpath("crypto_lakehouse").rglob("*.py"),
                 *REPO_ROOT.joinpath("scripts").glob("*.py")]:  # fmt: skip
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    # Snakefile and rules are not Python files: their import lines.
    for path in [REPO_ROOT / "Snakefile", *REPO_ROOT.joinpath("rules").glob("*.smk")]:
        names |= set(re.findall(r"^(?:import|from) (\w+)", path.read_text(), re.M))
    return {n for n in names if n not in sys.stdlib_module_names and n != "crypto_lakehouse"}


def test_dependencies_are_declared_exactly_as_imported():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    core = {_name(r) for r in project["dependencies"]}
    extras = {_name(r) for reqs in project["optional-dependencies"].values() for r in reqs}
    imported = {DISTRIBUTION.get(n, n) for n in _imported_top_level()}
    assert imported - core - extras == set(), "imported but not declared"
    assert core - imported == set(), "declared but never imported"


def _pins(lines, pattern) -> dict[str, str]:
    return {m.group(1).lower(): m.group(2) for m in map(re.compile(pattern).match, lines) if m}


def test_conda_env_pins_the_locked_versions():
    env = _pins(
        (REPO_ROOT / "envs" / "pipeline.yaml").read_text().splitlines(),
        r"^\s+- ([A-Za-z0-9_.-]+)=([0-9][^\s=]*)$",
    )
    lock = _pins((REPO_ROOT / "requirements.lock").read_text().splitlines(), r"^([\w.-]+)==(\S+)")
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    for dep in map(_name, project["dependencies"]):
        assert dep in env, f"{dep} not pinned in envs/pipeline.yaml"
        assert env[dep] == lock[dep], dep


def test_the_package_never_imports_the_emulator():
    # `pip install crypto_lakehouse` installs no HTTP server: the emulator is its own
    # distribution (emulator/), which may import crypto_lakehouse, never the reverse.
    assert "crypto_lakehouse_emulator" not in _imported_top_level()
    assert not REPO_ROOT.joinpath("crypto_lakehouse", "emulator").exists()


def test_the_emulator_distribution_declares_what_it_imports():
    project = tomllib.loads((REPO_ROOT / "emulator" / "pyproject.toml").read_text())["project"]
    declared = {_name(r) for r in project["dependencies"]}
    names: set[str] = set()
    for path in REPO_ROOT.joinpath("emulator", "crypto_lakehouse_emulator").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    imported = {n for n in names if n not in sys.stdlib_module_names}
    assert imported - {"crypto_lakehouse_emulator"} == declared


def test_setup_py_stops_on_an_older_python_naming_it(monkeypatch):
    """pip checks requires-python only after resolving the dependencies: on Python 3.10
    `pip install .` printed a page of versions and "No matching distribution found for
    snakemake<10,>=9", never naming the Python (before 2026-12-06). The build hook stops
    first, with the version pyproject requires."""
    required = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    minimum = required["requires-python"].removeprefix(">=")
    monkeypatch.setattr(sys, "version_info", (3, 10, 13, "final", 0))
    with pytest.raises(SystemExit) as stop:
        runpy.run_path(str(REPO_ROOT / "setup.py"), run_name="__main__")
    assert str(stop.value).startswith(
        f"crypto_lakehouse needs Python >= {minimum}; this is Python 3.10.13 ("
    ), stop.value
