"""Declared dependencies match the imports; the conda env and the lock file agree."""

from __future__ import annotations

import ast
import re
import runpy
import shutil
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


def test_the_readme_lock_command_resolves_the_development_install():
    """README's command to regenerate requirements.lock, as written there. In the development
    install, `pip freeze` lists crypto_lakehouse and the emulator as `-e git+…` lines, which
    uv refuses as constraints, and the dev extra's emulator (and the crypto_lakehouse it
    requires) are on no index: before 2026-12-06 the command failed on both (checked with uv
    0.13.9 in a fresh venv of `pip install -e ".[dev]"`)."""
    lines = (REPO_ROOT / "README.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("uv pip compile"))
    command = lines[start]
    for line in lines[start + 1 :]:
        if not command.rstrip().endswith("\\"):
            break
        command = command.rstrip()[:-1] + " " + line.strip()
    assert "pip freeze --all --exclude-editable" in command
    assert '"crypto-lakehouse @ file://$PWD"' in command
    assert '"crypto-lakehouse-emulator @ file://$PWD/emulator"' in command
    header = (REPO_ROOT / "requirements.lock").read_text().splitlines()[1]
    for name in re.findall(r"--no-emit-package (\S+)", header):
        assert f"--no-emit-package {name}" in command, name
    for option in ("--extra dev", "--extra slurm", "--extra analysis", "--generate-hashes"):
        assert option in command and option in header, option


def test_the_wheel_holds_the_package_and_the_workflow_and_no_tests(tmp_path):
    """`pip install .` as a user runs it, file list of the wheel: the package, the workflow
    files the command line runs (setup.py copies them in), the entry point; no tests, test
    fixtures, emulator or byte code, even with them in the source tree, and nothing an
    earlier build left in build/ (~5 s)."""
    import subprocess
    import zipfile

    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", ".snakemake")
    for name in ("crypto_lakehouse", "rules", "scripts", "config", "envs", "profiles", "tests",
                 "emulator"):  # fmt: skip
        shutil.copytree(REPO_ROOT / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "Snakefile"):
        shutil.copy2(REPO_ROOT / name, src / name)
    # What an earlier `pip install .` of an older checkout left in build/ (pip builds in the
    # tree): shipped again before 2026-12-06, since setuptools only adds to build/lib.
    stale = src / "build" / "lib" / "crypto_lakehouse"
    (stale / "workflow" / "rules").mkdir(parents=True)
    (stale / "removed_module.py").write_text("")
    (stale / "workflow" / "rules" / "removed.smk").write_text("")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "--no-index", "-w", str(tmp_path / "dist"), str(src)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("crypto_lakehouse-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())

    def tree(folder: str, pattern: str) -> set[str]:
        root = REPO_ROOT / folder
        return {f"{folder}/{p.relative_to(root)}" for p in root.rglob(pattern) if p.is_file()}

    package = {n for n in tree("crypto_lakehouse", "*.py") if "__pycache__" not in n}
    workflow = {"Snakefile"} | tree("rules", "*.smk") | tree("scripts", "*.py")
    workflow |= tree("config", "*") | tree("envs", "*") | tree("profiles", "*")
    workflow = {f"crypto_lakehouse/workflow/{n}" for n in workflow if "__pycache__" not in n}
    dist_info = {n for n in names if n.split("/")[0].endswith(".dist-info")}
    assert names - dist_info == package | workflow
    entry_points = (
        zipfile.ZipFile(wheel)
        .read(next(n for n in dist_info if n.endswith("entry_points.txt")))
        .decode()
    )
    assert "crypto-lakehouse = crypto_lakehouse.cli:main" in entry_points
