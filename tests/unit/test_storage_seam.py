"""The package's modules never touch data paths directly: no ``open``, ``os.replace``,
``Path.glob``, ``exists``/``unlink``/``stat``, direct Parquet reads or local-only writes
(docs/storage.md). Their data I/O goes through crypto_lakehouse.storage, which serves a
local data dir and an s3:// one alike; the few exempt modules say why."""

from __future__ import annotations

import ast

import pytest

from tests.conftest import REPO_ROOT

PKG = REPO_ROOT / "crypto_lakehouse"
# Every module of the package is checked except these, each with its reason. A new module
# that reads or writes files belongs on the seam, or here with a reason.
EXEMPT = {
    # The seam itself and the local writer underneath it.
    "storage.py": "the seam",
    "io.py": "local durable writes under the seam",
    # Rewrites a local Parquet file's end in place (copy_file_range on the kept row groups):
    # by design only for local data dirs; gen_kline and resample make full builds on S3.
    "generate/parquet_append.py": "a local file's kept bytes copied in the kernel (copy_file_range); S3 goes through the seam",
    # Snakemake's own files in the (local) run directory: locks, plans, the report's run
    # records; the workflow wiring owns them (docs/storage.md, "Local-only parts").
    "lock.py": "run and job locks (run directory)",
    "plan.py": "listing and plan records read by the workflow (run directory)",
    "preview.py": "plan preview from the config and the run directory",
    "report/records.py": "summaries, benchmark tables (run directory)",
    "shards.py": "shard reports (rule outputs, run directory)",
    # A job launched on a node (cluster.launcher srun): its run-directory files, sent to the
    # node's private temporary folder and back; the data dir is the job's own business.
    "remote.py": "a launched job's run-directory files (never the data dir)",
    # The job server's socket in the run directory, /proc, the job scripts it reads.
    "job_server.py": "the job server's socket (run directory), /proc, the job scripts",
    # No data: the command line, the config file, job logs.
    "cli.py": "command line (profiles, --output of compare)",
    "configuration.py": "the config file",
    "failures.py": "job logs",
    "logs.py": "job logs",
}
STAGE_MODULES = sorted(
    path for path in PKG.rglob("*.py") if path.relative_to(PKG).as_posix() not in EXEMPT
)

FILE_METHODS = {
    "glob", "rglob", "iterdir", "exists", "is_file", "is_dir", "stat", "unlink", "mkdir",
    "read_bytes", "write_bytes", "read_text", "write_text", "open",
}  # fmt: skip
OS_CALLS = {"replace", "rename", "remove", "listdir", "scandir", "makedirs", "stat"}
PARQUET_CALLS = {"read_table", "ParquetFile", "read_schema", "read_metadata", "write_table",
                 "ParquetWriter", "write_to_dataset"}  # fmt: skip
# Local-only helpers of crypto_lakehouse.io: data goes through storage (reports and stats,
# Snakemake's outputs in the run directory, may still use io.write_json / io.read_json).
IO_DATA_CALLS = {"write_parquet", "write_bytes", "write_text", "touch", "atomic_file",
                 "atomic_path", "new_temp_path", "commit_temp", "remove_stale_temps",
                 "remove_stale_temps_of"}  # fmt: skip
# Receivers that are not paths: the seam itself and zip members inside an opened archive.
ALLOWED_RECEIVERS = {"storage", "zf", "i"}
# A call on a line ending with this pragma and a reason is allowed: a local file the seam
# handed out (the staged path of storage.staged_path, which the seam then publishes).
PRAGMA = "# seam: "


def direct_calls(path, root=REPO_ROOT) -> list[str]:
    found = []
    lines = path.read_text().splitlines()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call):
            continue
        line = lines[node.lineno - 1]
        if PRAGMA in line and line.split(PRAGMA, 1)[1].strip():
            continue
        func = node.func
        where = f"{path.relative_to(root)}:{node.lineno}"
        if isinstance(func, ast.Name) and func.id == "open":
            found.append(f"{where}: open(...)")
        elif isinstance(func, ast.Attribute):
            receiver = ast.unparse(func.value)
            if receiver in ALLOWED_RECEIVERS:
                continue
            if receiver in ("os", "os.path", "shutil"):
                if receiver != "os" or func.attr in OS_CALLS:
                    found.append(f"{where}: {receiver}.{func.attr}(...)")
            elif receiver == "pq" and func.attr in PARQUET_CALLS:
                found.append(f"{where}: pq.{func.attr}(...)")
            elif receiver == "io" and func.attr in IO_DATA_CALLS:
                found.append(f"{where}: io.{func.attr}(...)")
            elif func.attr in FILE_METHODS and receiver not in {"io", "pq"}:
                found.append(f"{where}: {receiver}.{func.attr}(...)")
    return found


@pytest.mark.parametrize("module", STAGE_MODULES, ids=lambda p: str(p.relative_to(PKG)))
def test_stage_module_does_no_direct_file_io(module):
    assert direct_calls(module) == []


def test_the_check_catches_each_kind_of_direct_call(tmp_path):
    """The checker itself: each forbidden form is found, the seam's calls are not."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "open(p)\nos.replace(a, b)\npart_dir.glob('*.pqt')\npath.exists()\n"
        "pq.read_table(p)\nio.write_parquet(p, t)\nPath(x).unlink()\n"
        "storage.exists(p)\nstorage.read_parquet(p)\nio.write_json(report_path, r)\n"
        "zf.open(member)\ntext.replace('-', 'm')\n"
        "pq.ParquetWriter(tmp, schema)  # seam: a staged local file\n"
        "pq.ParquetWriter(target, schema)  # seam: \n"
    )
    found = [f.split(": ", 1)[1] for f in direct_calls(sample, tmp_path)]
    assert found == [
        "open(...)", "os.replace(...)", "part_dir.glob(...)", "path.exists(...)",
        "pq.read_table(...)", "io.write_parquet(...)", "Path(x).unlink(...)",
        "pq.ParquetWriter(...)",
    ]  # fmt: skip


def test_every_exemption_names_a_module_that_exists():
    assert sorted(p for p in EXEMPT if not (PKG / p).is_file()) == []
