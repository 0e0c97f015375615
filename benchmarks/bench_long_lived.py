"""A lakehouse kept current by a daily cron job for weeks, on the emulator.

    PYTHONPATH=$PWD:$PWD/emulator python3 benchmarks/bench_long_lived.py [--runs 26]
        [--work DIR] [--timing-trials 3]

Spot and USDⓈ-M, BTCUSDT and ETHUSDT each, 1m klines plus funding (the shipped datasets),
daily archives from 2024-01-01. Run n takes place on the morning of 2024-02-n (the pinned
CRYPTO_LAKEHOUSE_TODAY, REST's clock at 01:00, the archive listing the days up to the day
before yesterday, last month's funding from the 2nd) with ``end_date`` that day: the first
run builds the whole history, the others use the shipped ``lookback_days: 30``. Run 8 sees
a re-published zip (new content) of five days back; run 12 has 30 % of REST requests
answered 5xx; run 17 is killed (SIGKILL of its process group) after 6 s and run again.

Printed per run: wall and CPU seconds (user + sys of the whole process tree), sizes and
file counts of ``.snakemake/``, ``{data_dir}/lakehouse/`` and the data dir. Then a fresh
full build to the last day, compared with the rolling data dir (Parquet by table content,
everything else by bytes, as the chaos suite compares; tests/chaos/chaos_helpers.py), and
byte for byte for the Parquet files. Then ``--timing-trials`` alternating runs of the next
day's update on a copy of each (26 past runs against one): does a daily run's cost grow
with the number of past runs? Figures: docs/benchmarks.md, "Daily runs for weeks".
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from statistics import median

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "emulator")]

from crypto_lakehouse_emulator import Emulator, Faults  # noqa: E402
from crypto_lakehouse_emulator.generate import write_funding_month, write_kline_day  # noqa: E402

from tests.chaos.chaos_helpers import differences, snapshot  # noqa: E402
from tests.e2e.e2e_helpers import emulator_config, morning_rest  # noqa: E402
from tests.workflow.workflow_helpers import OFFLINE_ENDPOINTS  # noqa: E402

SYMBOLS = {"spot": ["BTCUSDT", "ETHUSDT"], "um_futures": ["BTCUSDT", "ETHUSDT"]}
FIRST = date(2024, 1, 1)
LAG = 2  # a day's zip is listed from the morning of the day after next
REPUBLISH_RUN, FAULT_RUN, KILL_RUN = 8, 12, 17


class Scenario:
    def __init__(self, root: Path, last_day: date):
        self.root = root
        self.full = root / "full"
        self.listed: dict[str, date] = {}
        for trade_type, symbols in SYMBOLS.items():
            for symbol in symbols:
                day = FIRST
                while day < last_day:
                    key = write_kline_day(self.full, trade_type, symbol, "1m", day, seed=11)
                    self.listed[key] = day + timedelta(days=LAG)
                    day += timedelta(days=1)
                if trade_type != "spot":
                    for month in ("2024-01", "2024-02"):
                        key = write_funding_month(self.full, trade_type, symbol, month, seed=11)
                        y, m = map(int, month.split("-"))
                        self.listed[key] = date(y + m // 12, m % 12 + 1, 2)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]  # one port for every run: the endpoints stay

    def emulator(self, day: date, faults: Faults | None = None) -> Emulator:
        archive = self.root / "archive"
        shutil.rmtree(archive, ignore_errors=True)
        for key, first_listed in self.listed.items():
            if first_listed <= day:
                for name in (key, key + ".CHECKSUM"):
                    (archive / name).parent.mkdir(parents=True, exist_ok=True)
                    os.link(self.full / name, archive / name)
        rest = morning_rest(SYMBOLS, FIRST, day, self.full)
        emu = Emulator(mirror_dir=archive, rest=rest, faults=faults)
        emu.start(self.port)
        return emu

    def command(self, workdir: Path, day: date, lookback: int | None) -> list[str]:
        workdir.mkdir(exist_ok=True)
        config = emulator_config(
            f"http://127.0.0.1:{self.port}",
            workdir / "data",
            trade_types=list(SYMBOLS),
            symbols=SYMBOLS,
            end_date=day.isoformat(),
            lookback_days=lookback,
        )
        config["endpoints"] = {**OFFLINE_ENDPOINTS, **config["endpoints"]}
        (workdir / "config.json").write_text(json.dumps(config))
        return [
            sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
            "--directory", str(workdir), "--cores", "2", "all",
            "--configfile", str(workdir / "config.json"),
        ]  # fmt: skip


def measured(cmd: list[str], day: date, kill_after: float | None = None):
    """(returncode, wall s, CPU s of the process tree, output)."""
    env = {**os.environ, "CRYPTO_LAKEHOUSE_TODAY": day.isoformat(),
           "PYTHONPATH": f"{REPO}:{REPO / 'emulator'}"}  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    if kill_after is not None:
        try:
            proc.wait(kill_after)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    out = proc.communicate()[0].decode(errors="replace")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return proc.returncode, time.monotonic() - started, cpu, out


def _size(folder: Path) -> tuple[float, int]:
    files = [p for p in folder.rglob("*") if p.is_file()]
    return round(sum(p.stat().st_size for p in files) / 1e6, 2), len(files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=26)
    parser.add_argument("--work", type=Path, help="keep everything here (default: a temp dir)")
    parser.add_argument("--timing-trials", type=int, default=3)
    args = parser.parse_args()
    root = args.work or Path(tempfile.mkdtemp(prefix="bench_long_lived_"))
    root.mkdir(parents=True, exist_ok=True)
    days = [date(2024, 2, 1) + timedelta(days=i) for i in range(args.runs)]
    scenario = Scenario(root, days[-1] + timedelta(days=1))
    rolling = root / "rolling"
    print("run day wall_s cpu_s snakemake_MB/files lakehouse_MB/files data_MB/files note")
    for n, day in enumerate(days, 1):
        note = ""
        if n == REPUBLISH_RUN:
            write_kline_day(
                scenario.full, "um_futures", "ETHUSDT", "1m", day - timedelta(5), seed=99
            )
            note += "re-published zip; "
        faults = Faults(fail_rate=0.3, apply_to_rest=True, seed=3) if n == FAULT_RUN else None
        emu = scenario.emulator(day, faults)
        try:
            cmd = scenario.command(rolling, day, None if n == 1 else 30)
            if n == KILL_RUN:
                rc, _, _, _ = measured(cmd, day, kill_after=6)
                note += f"killed at 6 s (rc {rc}), then: "
            rc, wall, cpu, out = measured(cmd, day)
        finally:
            emu.stop()
        if faults:
            note += "30 % REST 5xx"
        if rc != 0:
            sys.exit(f"run {n} failed ({rc}):\n{out[-4000:]}")
        sizes = [_size(rolling / ".snakemake"), _size(rolling / "data/lakehouse")]
        sizes.append(_size(rolling / "data"))
        cells = " ".join(f"{mb}/{files}" for mb, files in sizes)
        print(f"{n} {day} {wall:.1f} {cpu:.1f} {cells} {note}", flush=True)

    fresh = root / "fresh"
    emu = scenario.emulator(days[-1])
    try:
        rc, wall, cpu, out = measured(scenario.command(fresh, days[-1], None), days[-1])
    finally:
        emu.stop()
    if rc != 0:
        sys.exit(f"fresh build failed ({rc}):\n{out[-4000:]}")
    print(f"fresh full build to {days[-1]}: {wall:.1f} s wall, {cpu:.1f} s CPU")
    print("differences (table content / bytes):",
          differences(snapshot(rolling / "data"), snapshot(fresh / "data")))  # fmt: skip
    parquet = sorted(p.relative_to(fresh / "data") for p in (fresh / "data").rglob("*.pqt"))
    print("Parquet files not byte-equal:", [
        str(p) for p in parquet
        if not (rolling / "data" / p).exists()
        or (rolling / "data" / p).read_bytes() != (fresh / "data" / p).read_bytes()
    ])  # fmt: skip

    # The next day's update on both: 26 past runs against one.
    day = days[-1] + timedelta(days=1)
    for name in ("rolling", "fresh"):
        shutil.copytree(root / name, root / f"{name}.saved", symlinks=True)
    timings: dict[str, list[tuple[float, float]]] = {"rolling": [], "fresh": []}
    emu = scenario.emulator(day)
    try:
        for _ in range(args.timing_trials):
            for name in timings:
                shutil.rmtree(root / name)
                # Same path (Snakemake's records name it), file times kept.
                subprocess.run(["cp", "-a", str(root / f"{name}.saved"), str(root / name)],
                               check=True)  # fmt: skip
                rc, wall, cpu, out = measured(scenario.command(root / name, day, 30), day)
                if rc != 0:
                    sys.exit(f"{name} update failed ({rc}):\n{out[-4000:]}")
                timings[name].append((wall, cpu))
    finally:
        emu.stop()
    for name, runs in timings.items():
        walls, cpus = [w for w, _ in runs], [c for _, c in runs]
        print(f"update of {day} after {'%d runs' % args.runs if name == 'rolling' else 'one build'}:"
              f" median {median(walls):.1f} s wall, {median(cpus):.1f} s CPU "
              f"(runs: {', '.join(f'{w:.1f}/{c:.1f}' for w, c in runs)})")  # fmt: skip
    print(f"work dir: {root}")


if __name__ == "__main__":
    main()
