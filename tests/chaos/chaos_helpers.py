"""A small complete scenario for the chaos suite, and ways to compare two runs' outputs.

Spot, three symbols, nine days of 1m archives from the emulator's generator, REST klines
from its synthetic source (the emulator's clock sits two hours into the day after the last
archive, so the REST fill has a little to do). Small on purpose: every test of the suite
runs the whole workflow several times.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from datetime import date, datetime, timezone
from pathlib import Path

import pyarrow.parquet as pq
from crypto_lakehouse_emulator import Emulator
from crypto_lakehouse_emulator.generate import build_mirror
from crypto_lakehouse_emulator.rest import RestEmulator

from crypto_lakehouse.plan import TODAY_VARIABLE
from tests.conftest import wait_for  # noqa: F401 (the chaos tests' import of it)
from tests.e2e.e2e_helpers import emulator_config
from tests.workflow.workflow_helpers import REPO

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
START, END = "2024-02-24", "2024-03-03"
DAYS = [f"2024-02-{d}" for d in range(24, 30)] + [f"2024-03-0{d}" for d in range(1, 4)]
DAY_MS = 86_400_000
NOW_MS = int(datetime(2024, 3, 4, 2, tzinfo=timezone.utc).timestamp() * 1000)
# The records of a run: everything but what legitimately differs between runs (logs and
# run figures: durations, request counts, Snakemake benchmark files, the report page and its
# figures, which show them; the lock file: its holder). The report's coverage.parquet is
# compared.
VOLATILE = (
    "lakehouse/logs/",
    "lakehouse/stats/",
    "lakehouse/summaries/",
    "lakehouse/benchmarks/",
    "lakehouse/report/index.html",
    "lakehouse/report/figures/",
    "lakehouse/run.lock",
    # Held while a job edits an upstream shard report (shards._editing); empty, and only
    # created by a run that found a damaged file.
    "lakehouse/reports.lock",
    # Tail-build records (generate/tail.py, resample/tail.py) hold the sizes and mtimes of
    # this run's own files: never equal across runs. A missing or stale one only costs a
    # full build (its file identities are checked before any reuse).
    "lakehouse/state/gen_kline_resume/",
    "lakehouse/state/resample_resume/",
    # The REST fill's cache of the archive's days (rest/archive_days.py): keyed by the same
    # file identities; a missing or stale entry only costs reading that partition again.
    "lakehouse/state/api_download_archive_days/",
    # The REST hosts' shared rate-limit windows (rest/limiter.py SharedWindowState): the
    # weight of the last window a run's requests were in.
    "lakehouse/rest_budget/",
    # Rerun stamps (rules/common.smk rerun_stamp) hold the jobs' argument digests, which
    # name this run's data dir and endpoints; only their modification times matter.
    "lakehouse/stamps/",
    # The leftovers scans' records (crypto_lakehouse/leftovers.py `checked`): a cache of
    # "nothing found" keyed by the listing index's size and mtime; a missing one costs a scan.
    "lakehouse/leftovers/",
    # The data dir's identity marker (crypto_lakehouse/data_identity.py): a random id per
    # data dir, recorded in a run dir kept elsewhere.
    "lakehouse/data_dir_id.json",
    # The stages' data folders that held files when the last run ended
    # (crypto_lakehouse/data_presence.py), with the data dir's path; what matters is the
    # folders themselves, which the snapshot holds.
    "lakehouse/data_folders.json",
)


def build_scenario(root: Path, symbols=SYMBOLS) -> Path:
    mirror = root / "mirror"
    build_mirror(mirror, {"spot": {"symbols": list(symbols), "start": START, "end": END}})
    return mirror


def rest_source(symbols=SYMBOLS) -> RestEmulator:
    rest = RestEmulator(now_ms=NOW_MS, window_s=5)
    start_ms = int(datetime.fromisoformat(START).replace(tzinfo=timezone.utc).timestamp() * 1000)
    for i, symbol in enumerate(symbols):
        rest.add_synthetic_klines("spot", symbol, start_ms=start_ms, seed=i)
    return rest


def start_emulator(mirror: Path, port: int = 0, faults=None, symbols=SYMBOLS) -> Emulator:
    emu = Emulator(mirror_dir=mirror, rest=rest_source(symbols), faults=faults)
    emu.start(port)
    return emu


def config_for(base_url: str, data_dir: Path, symbols=SYMBOLS) -> dict:
    return emulator_config(
        base_url,
        data_dir,
        trade_types=["spot"],
        symbols={"spot": list(symbols)},
        start_date=START,
        end_date=None,
    )


def snakemake_cmd(workdir: Path, config_path: Path, *args: str) -> list[str]:
    return [
        sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(workdir), "--cores", "2", "--configfile", str(config_path), *args,
    ]  # fmt: skip


# The planning's today for every run these helpers start, fixed when the test session
# starts: the scenario leaves ``end_date`` unset, so a run's plan and the report's coverage
# reach to today, and two runs of one test on either side of midnight UTC would otherwise
# differ by a day (a local run before midnight, its bucket twin after it: the coverage
# gained a day). A test that sets ``CRYPTO_LAKEHOUSE_TODAY`` itself keeps its own.
SESSION_TODAY = date.today().isoformat()


def env() -> dict:
    return {TODAY_VARIABLE: SESSION_TODAY, **os.environ, "PYTHONPATH": str(REPO)}


def run(workdir: Path, config_path: Path, *args: str, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run(
        snakemake_cmd(workdir, config_path, *args),
        capture_output=True, text=True, timeout=timeout, cwd=workdir, env=env(),
    )  # fmt: skip


def start(workdir: Path, config_path: Path, log_path: Path) -> subprocess.Popen:
    """A run in its own process group (so that kill -9 reaches every job it started)."""
    log = open(log_path, "wb")  # noqa: SIM115 - handed to the child, closed by the OS
    return subprocess.Popen(
        snakemake_cmd(workdir, config_path),
        stdout=log, stderr=subprocess.STDOUT, cwd=workdir, env=env(), start_new_session=True,
    )  # fmt: skip


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


# ---------------------------------------------------------------- comparing runs
def temp_files(data_dir: Path) -> list[str]:
    return sorted(str(p.relative_to(data_dir)) for p in data_dir.rglob("*.part"))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(data_dir: Path) -> dict[str, object]:
    """Every output of a run by what it holds: Parquet files by table content (rows and
    schema; not the bytes, which carry writer metadata), everything else by bytes."""
    out: dict[str, object] = {}
    for path in sorted(p for p in data_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(data_dir).as_posix()
        if rel.startswith(VOLATILE) or rel.endswith(".part"):
            continue
        if path.suffix == ".pqt":
            table = pq.read_table(path)
            out[rel] = (table.schema.remove_metadata(), _comparable(table.to_pydict()))
        elif rel.startswith("lakehouse/reports/") and "/shards/" in rel:
            # A shard report: each symbol's status, and its report path (absolute: under
            # this run's data dir) and run times, which are not compared.
            report = json.loads(path.read_text())
            report.pop("seconds", None)
            for entry in report.get("symbols", {}).values():
                entry.pop("seconds", None)
                entry.pop("report", None)
            out[rel] = report
        elif rel.startswith("lakehouse/listing/") and path.name.endswith((".json", ".state")):
            # The index (and its copy `_index.state`) records the request it answers,
            # the listing URL (the emulator's port: each run's own server) included.
            index = json.loads(path.read_text())
            if isinstance(index, dict):
                index.pop("request", None)
            out[rel] = index
        elif rel.startswith("lakehouse/state/") and path.suffix == ".json":
            # The skip-unchanged fingerprint digests the job's params, data_dir included;
            # the features' per-file records hold the sizes and mtimes of this run's files
            # (as the tail-build records above: checked before any reuse).
            state = json.loads(path.read_text())
            state.pop("fingerprint", None)
            if rel.startswith("lakehouse/state/features/"):
                state.pop("files", None)
            out[rel] = state
        else:
            out[rel] = _sha(path)
    return out


def _comparable(columns: dict) -> dict:
    """NaN (feature warm-up rows) as None: NaN never equals itself, None does."""
    return {
        name: [None if isinstance(v, float) and v != v else v for v in values]
        for name, values in columns.items()
    }


def differences(a: dict, b: dict) -> list[str]:
    names = sorted(set(a) | set(b))
    return [n for n in names if a.get(n) != b.get(n)]


def today_iso() -> str:
    return SESSION_TODAY
