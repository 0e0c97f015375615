"""Side by side: the legacy BHDS V1 scripts and our pipeline on the same emulated archive.

Run by hand (not in CI); the legacy source is a checkout you provide (lostleaf/binance_datatool
at commit 0dedbb3; nothing of it is kept in this repository) and a Python >= 3.12 with its
dependencies (aiohttp, polars 1.31, typer 0.16, xmltodict, tqdm, colorama, python-dateutil);
``aria2c`` must be on PATH::

    python benchmarks/bench_vs_legacy.py --legacy-src DIR --legacy-python VENV/bin/python \\
        [--symbols 13 --days 45] [--runs 2] [--aria2-latency 0.02] [--work DIR]

What it does, in one run:

1. Builds (and caches in ``--work``) a mirror of ``--symbols`` symbols (spread over spot, um
   and cm, at least two per market: the legacy listing code fails on a single entry) with
   ``--days`` daily 1m kline archives each, monthly funding archives of the complete months
   for futures, and the same mirror grown by one day (the daily update).
2. Serves a mirror with the emulator in a separate process (archive, listing and REST:
   synthetic klines, funding and exchangeInfo for the same symbols; the REST clock is one
   hour into the second day after the archive's last day, so both tools fill one complete
   day from REST).
3. Legacy: copies ``--legacy-src`` to a temp dir, points its four URL prefixes (``PREFIX`` in
   ``aws/client_async.py`` and the three in ``api/binance_market_async.py``) at the emulator,
   runs its five scripts in order with ``CRYPTO_NJOBS`` = cores on a fresh
   ``CRYPTO_BASE_DIR``, timing each (whole = their sum); then grows the mirror by a day and
   runs the five scripts again on the same directory (legacy's daily update).
4. Ours: the five targets one after another on a fresh data dir (each timed; a target's
   upstream is already done), then ``snakemake all`` on another fresh dir (whole), ``all``
   again (nothing to do), then the grown mirror with the next ``end_date`` (daily update).
   ``--cores`` = the machine's cores, the default profile and config (``shards`` included).
5. With ``--aria2-latency S``: the emulator adds S seconds per archive request; times our
   ``aws_download`` target (listing included) on a fresh dir and ``aria2c -j32 -x4`` given the
   same zip and CHECKSUM URLs.

Prints every figure and the legacy/ours ratios. The machine may be shared: say so with the
figures (CPU load is printed at the start and the end).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "emulator"))  # the emulator distribution, not installed

STAGES = ("aws_download", "aws_parse", "api_download", "gen_kline", "resample")
LEGACY_SCRIPTS = {s: f"{s}.sh" for s in STAGES}
MARKET = {"spot": "spot", "um_futures": "um", "cm_futures": "cm"}
BASES = (
    "BTC ETH BNB SOL XRP ADA DOGE LTC LINK DOT AVAX TRX ATOM ETC FIL NEAR UNI AAVE XLM ALGO "
    "SAND MANA AXS EOS XTZ THETA ICP APT ARB OP INJ SUI SEI TIA RUNE KAVA ZEC DASH NEO QTUM"
).split()
DAY_MS = 86_400_000


# ------------------------------------------------------------------ mirror
def universe(n: int) -> dict[str, list[str]]:
    """``n`` symbols over the three markets, at least two per market (legacy listing bug)."""
    n_spot = max(2, round(n * 0.4))
    n_um = max(2, round(n * 0.4))
    n_cm = max(2, n - n_spot - n_um)
    if n_spot > len(BASES) or n_um > len(BASES) or n_cm > len(BASES):
        raise SystemExit(f"at most {len(BASES)} symbols per market")
    return {
        "spot": [f"{b}USDT" for b in BASES[:n_spot]],
        "um_futures": [f"{b}USDT" for b in BASES[:n_um]],
        "cm_futures": [f"{b}USD_PERP" for b in BASES[:n_cm]],
    }


def complete_months(first: date, last: date) -> list[str]:
    months, d = [], first.replace(day=1)
    while d <= last:
        nxt = (d + timedelta(days=32)).replace(day=1)
        if d >= first and nxt - timedelta(days=1) <= last:
            months.append(d.strftime("%Y-%m"))
        d = nxt
    return months


def build_mirrors(work: Path, symbols: dict, first: date, days: int) -> tuple[Path, Path]:
    """(base mirror, base grown by one day); cached in ``work``."""
    from crypto_lakehouse_emulator.generate import build_mirror

    last = first + timedelta(days=days - 1)
    tag = f"{sum(map(len, symbols.values()))}x{days}-{first}"
    base, grown = work / f"mirror-{tag}", work / f"mirror-{tag}-grown"
    if not (base / ".complete").exists():
        shutil.rmtree(base, ignore_errors=True)
        spec = {
            tt: {
                "symbols": syms,
                "interval": "1m",
                "start": first.isoformat(),
                "end": last.isoformat(),
                "funding_months": complete_months(first, last) if tt != "spot" else [],
            }
            for tt, syms in symbols.items()
        }
        build_mirror(base, spec, seed=11)
        (base / ".complete").write_text("")
    if not (grown / ".complete").exists():
        shutil.rmtree(grown, ignore_errors=True)
        shutil.copytree(base, grown)
        extra = (last + timedelta(days=1)).isoformat()
        spec = {
            tt: {"symbols": syms, "interval": "1m", "start": extra, "end": extra}
            for tt, syms in symbols.items()
        }
        build_mirror(grown, spec, seed=11)
        (grown / ".complete").write_text("")
    return base, grown


def mirror_keys(mirror: Path) -> list[str]:
    return sorted(
        p.relative_to(mirror).as_posix()
        for p in mirror.rglob("*")
        if p.is_file() and not p.name.startswith(".")
    )


# ------------------------------------------------------------------ emulator process
def _serve(mirror, symbols, first_ms, now_ms, latency, port, conn) -> None:
    from crypto_lakehouse_emulator import Emulator
    from crypto_lakehouse_emulator.faults import Faults
    from crypto_lakehouse_emulator.rest import RestEmulator

    rest = RestEmulator(now_ms=now_ms)
    for tt, syms in symbols.items():
        for i, s in enumerate(syms):
            rest.add_synthetic_klines(MARKET[tt], s, start_ms=first_ms, seed=i, base_price=50.0 + i)
            if tt != "spot":
                rest.add_synthetic_funding(
                    MARKET[tt], s, start_ms=first_ms, end_ms=now_ms, seed=i, mirror_dir=mirror
                )
    emu = Emulator(mirror_dir=mirror, rest=rest, faults=Faults(latency=latency))
    emu.start(port)
    conn.send(emu.base_url)
    conn.recv()
    emu.stop()


class EmulatorProcess:
    """The emulator in its own process, so that it does not share a GIL with the clients."""

    def __init__(self, mirror: Path, symbols: dict, first: date, now_ms: int, latency=0.0, port=0):
        first_ms = int(
            datetime(first.year, first.month, first.day, tzinfo=timezone.utc).timestamp() * 1000
        )
        self.conn, child = mp.Pipe()
        self.proc = mp.Process(
            target=_serve,
            args=(str(mirror), symbols, first_ms, now_ms, latency, port, child),
            daemon=True,
        )

    def __enter__(self) -> str:
        self.proc.start()
        return self.conn.recv()

    def __exit__(self, *exc) -> None:
        self.conn.send("stop")
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.terminate()


# ------------------------------------------------------------------ legacy
def legacy_copy(src: Path, dest: Path, base_url: str) -> Path:
    """A copy of the legacy source with its four URL prefixes pointed at ``base_url``."""
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns(".git", "__pycache__", "notebook"))
    patches = {
        dest / "aws/client_async.py": [
            (
                "PREFIX = 'https://s3-ap-northeast-1.amazonaws.com/data.binance.vision'",
                f"PREFIX = '{base_url}'",
            )
        ],
        dest / "api/binance_market_async.py": [
            ("PREFIX = 'https://fapi.binance.com/fapi'", f"PREFIX = '{base_url}/fapi'"),
            ("PREFIX = 'https://dapi.binance.com/dapi'", f"PREFIX = '{base_url}/dapi'"),
            ("PREFIX = 'https://api.binance.com/api'", f"PREFIX = '{base_url}/api'"),
        ],
    }
    for path, subs in patches.items():
        text = path.read_text()
        for old, new in subs:
            if old not in text:
                raise SystemExit(f"{path}: {old!r} not found (not legacy commit 0dedbb3?)")
            text = text.replace(old, new)
        path.write_text(text)
    return dest


def child_cpu() -> float:
    """User + system CPU seconds of every reaped child process so far (the tools' own CPU
    use, the steadier figure on a shared machine; the emulator process is not reaped
    until the end of its block)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


CPU: dict[str, float] = {}  # label -> CPU seconds of that step


def run_legacy_stages(
    src: Path, python: str, base_dir: Path, log_dir: Path, tag: str = "legacy"
) -> dict[str, float]:
    env = dict(
        os.environ,
        CRYPTO_BASE_DIR=str(base_dir),
        CRYPTO_NJOBS=str(os.cpu_count()),
        PATH=f"{Path(python).parent}{os.pathsep}{os.environ['PATH']}",
        PYTHONPATH="",
    )
    env.pop("VIRTUAL_ENV", None)
    times = {}
    for stage in STAGES:
        log = log_dir / f"{tag}-{stage}.log"
        t0, c0 = time.perf_counter(), child_cpu()
        with open(log, "w") as fh:
            proc = subprocess.run(
                ["bash", LEGACY_SCRIPTS[stage], "1m"],
                cwd=src,
                env=env,
                stdout=fh,
                stderr=subprocess.STDOUT,
            )
        times[stage] = time.perf_counter() - t0
        CPU[f"{tag} {stage}"] = child_cpu() - c0
        if proc.returncode != 0:
            print(f"  warning: legacy {stage} exited {proc.returncode} (log {log})")
    return times


# ------------------------------------------------------------------ ours
SHARDS: list[int] = []  # --shards, when given
FEATURES: list[bool] = []  # --features: features on, as in the default config
# The whole pipeline as legacy has it: its five scripts are our five targets. `all` also
# builds the features and the report page, which legacy has no counterpart for.
WHOLE = "aws_download aws_parse api_download gen_kline resample"


def environment_line() -> str:
    """What else shapes our figures on this machine: each Snakemake start imports every
    installed executor plugin (the SLURM one imports pandas, ~0.4 s; README), and without
    cached bytecode every job compiles our modules again."""
    import importlib.util

    slurm = importlib.util.find_spec("snakemake_executor_plugin_slurm") is not None
    bytecode = "not cached" if os.environ.get("PYTHONDONTWRITEBYTECODE") else "cached"
    return (
        f"ours run with {sys.executable}: SLURM executor plugin "
        f"{'installed' if slurm else 'not installed'}, bytecode {bytecode}"
    )


def our_config(base_url: str, data_dir: Path, end_date: date) -> dict:
    extra = {"shards": SHARDS[0]} if SHARDS else {}
    return {
        **extra,
        "data_dir": str(data_dir),
        "endpoints": {k: base_url for k in ("archive", "listing", "spot_api", "um_api", "cm_api")},
        "symbols": {t: "all" for t in MARKET},
        "start_date": None,
        "end_date": end_date.isoformat(),
        "lookback_days": None,
        "features": {"enabled": bool(FEATURES)},
    }


def ours_command(workdir: Path, cfg: Path, target: str) -> tuple[list[str], dict]:
    """``(command, environment)`` of ``snakemake TARGET`` on ``workdir`` with config ``cfg``,
    the default profile, all cores, this checkout's code."""
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        *target.split(),  # before --configfile, which takes several values
        "--cores",
        str(os.cpu_count()),
        "--configfile",
        str(cfg),
    ]
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    return cmd, env


def run_ours(workdir: Path, config: dict, target: str, log_dir: Path, label: str) -> float:
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = workdir / f"config-{label}.json"
    cfg.write_text(json.dumps(config))
    cmd, env = ours_command(workdir, cfg, target)
    log = log_dir / f"ours-{label}.log"
    t0, c0 = time.perf_counter(), child_cpu()
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, cwd=workdir, env=env, stdout=fh, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - t0
    CPU[f"ours {label}"] = child_cpu() - c0
    if proc.returncode != 0:
        raise SystemExit(f"ours {label} failed ({proc.returncode}); log: {log}")
    return seconds


def stage_seconds(data_dir: Path, since: float) -> dict[str, tuple[int, float, float]]:
    """``stage -> (jobs, wall s, CPU s)`` summed over the Snakemake benchmark files
    (``{data_dir}/lakehouse/benchmarks/{stage}/...tsv``) written since ``since`` (epoch s):
    what one run's time consists of (jobs overlap: the sum of walls exceeds the run's). A
    job the run's job server forked: its CPU from the figures beside the table (the table
    measured the job process, which only waited; crypto_lakehouse.job_server)."""
    root = data_dir / "lakehouse" / "benchmarks"
    out: dict[str, list] = {}
    for tsv in sorted(root.rglob("*.tsv")):
        if tsv.stat().st_mtime < since:
            continue
        rel = tsv.relative_to(root).parts
        stage = "/".join(rel[:2]) if rel[0] == "summaries" else rel[0]
        head, *rows = tsv.read_text().splitlines()
        cols = head.split("\t")
        acc = out.setdefault(stage, [0, 0.0, 0.0])
        figures = tsv.with_name(tsv.name.removesuffix(".tsv") + ".node.json")
        forked = figures.exists() and figures.stat().st_mtime >= since
        for row in rows:
            cells = dict(zip(cols, row.split("\t"), strict=False))
            acc[0] += 1
            acc[1] += float(cells.get("s") or 0)
            if forked:
                acc[2] += float(json.loads(figures.read_text()).get("cpu_time") or 0)
            else:
                acc[2] += float(cells.get("cpu_time") or 0)
    return {k: (v[0], v[1], v[2]) for k, v in out.items()}


def count_results(data_dir: Path) -> int:
    return sum(1 for _ in (data_dir / "results_data").rglob("*.pqt"))


# ------------------------------------------------------------------ aria2
def compare_results(legacy_dir: Path, our_dir: Path, tmp: Path) -> dict:
    """``crypto-lakehouse compare`` of both tools' data dirs after their daily updates (not
    timed): the migration proof on every benchmark run. Its JSON report, as written."""
    out = tmp / "compare.json"
    cmd = [sys.executable, "-m", "crypto_lakehouse", "compare", str(legacy_dir), str(our_dir)]
    cmd += ["--format", "json", "-o", str(out), "--jobs", str(os.cpu_count() or 1)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if not out.exists():
        raise SystemExit(f"compare failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(out.read_text())


def report_compare(c: dict) -> None:
    files: dict[str, int] = {}
    for row in c["summary"]:
        for cls, n in row["files"].items():
            files[cls] = files.get(cls, 0) + n
    fixes = ", ".join(f"{k} {v['differences']}" for k, v in c["explained_by_fix"].items())
    print(
        f"  compare legacy vs ours (after both daily updates), {sum(files.values())} files: "
        + ", ".join(f"{cls} {n}" for cls, n in files.items())
        + f"; differences explained by fix: {fixes or 'none'}; unexplained "
        f"{len(c['unexplained'])}, problems {len(c['problems'])} (exit {c['exit_code']})"
    )
    for d in (c["problems"] + c["unexplained"])[:5]:
        print(f"    {d if isinstance(d, str) else json.dumps(d)[:300]}")


def aria2_vs_ours(
    base: Path, symbols, first, now_ms, end_date, latency, tmp: Path, log_dir: Path
) -> tuple[float, float, int]:
    keys = [k for k in mirror_keys(base) if k.endswith((".zip", ".CHECKSUM"))]
    with EmulatorProcess(base, symbols, first, now_ms, latency) as url:
        ours = run_ours(
            tmp / "ours-aws",
            our_config(url, tmp / "ours-aws/data", end_date),
            "aws_download",
            log_dir,
            "aws_download-latency",
        )
        listing = tmp / "aria2.txt"
        out = tmp / "aria2-out"
        listing.write_text("".join(f"{url}/{k}\n  dir={out / Path(k).parent}\n" for k in keys))
        t0, c0 = time.perf_counter(), child_cpu()
        subprocess.run(["aria2c", "-i", str(listing), "-j32", "-x4", "-q"], check=True)
        aria = time.perf_counter() - t0
        CPU["aria2"] = child_cpu() - c0
    return ours, aria, len(keys)


# ------------------------------------------------------------------ main
def fmt_ratio(legacy: float, ours: float) -> str:
    return f"{legacy / ours:.2f}x" if ours > 0 else "-"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--legacy-src", type=Path, required=True, help="legacy BHDS V1 checkout (0dedbb3)"
    )
    ap.add_argument(
        "--legacy-python",
        default=shutil.which("python3.12") or "python3",
        help="Python >= 3.12 with the legacy dependencies",
    )
    ap.add_argument("--symbols", type=int, default=13)
    # Legacy's api_download takes its funding symbols from the monthly funding archives: the
    # range must hold one complete month (>= 31 days from the 1st) or legacy fails.
    ap.add_argument("--days", type=int, default=45)
    ap.add_argument("--first-day", default="2024-01-01")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument(
        "--aria2-latency",
        type=float,
        default=0.0,
        help="also compare aws_download with aria2c at this latency (s)",
    )
    ap.add_argument("--shards", type=int, help="our config's shards (default: the config's)")
    ap.add_argument(
        "--features",
        action="store_true",
        help="ours with the features on and the features target in the whole build and the "
        "daily update, as the default config builds them (with --skip-legacy)",
    )
    ap.add_argument("--keep", action="store_true", help="keep each run's folders and logs")
    ap.add_argument("--skip-legacy", action="store_true", help="ours only (no ratios)")
    ap.add_argument(
        "--only-aria2",
        action="store_true",
        help="only the aws_download vs aria2c comparison (needs --aria2-latency; no legacy, "
        "none of our other targets)",
    )
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "bench_vs_legacy")
    args = ap.parse_args()
    if args.only_aria2 and not args.aria2_latency:
        ap.error("--only-aria2 needs --aria2-latency")

    symbols = universe(args.symbols)
    if args.shards:
        SHARDS.append(args.shards)
    if args.features:
        if not args.skip_legacy:
            ap.error("--features needs --skip-legacy (legacy has no features)")
        FEATURES.append(True)
    whole = WHOLE + (" features" if args.features else "")
    first = date.fromisoformat(args.first_day)
    last = first + timedelta(days=args.days - 1)
    args.work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    base, grown = build_mirrors(args.work, symbols, first, args.days)
    csv_mb = sum(p.stat().st_size for p in base.rglob("*.zip")) / 1e6
    print(
        f"mirror {base.name}: {sum(map(len, symbols.values()))} symbols "
        f"({', '.join(f'{t}: {len(s)}' for t, s in symbols.items())}), {args.days} days "
        f"{first}..{last}, {csv_mb:.1f} MB of zips (built/cached in {time.perf_counter() - t0:.1f} s)"
    )
    print(f"load average at start: {os.getloadavg()}; cores: {os.cpu_count()}")
    print(environment_line())

    # REST clock: 01:00 of the second day after the archive's last day.
    def now_for(last_archive_day: date) -> int:
        d = last_archive_day + timedelta(days=2)
        return int(datetime(d.year, d.month, d.day, 1, tzinfo=timezone.utc).timestamp() * 1000)

    results = []
    for run in range(1, args.runs + 1):
        tmp = Path(tempfile.mkdtemp(prefix=f"run{run}-", dir=args.work))
        logs = tmp / "logs"
        logs.mkdir()
        r: dict = {"legacy": {}, "ours": {}}
        CPU.clear()
        end = last + timedelta(days=1)  # the day REST completes
        if args.only_aria2:
            r["aria2"] = aria2_vs_ours(
                base, symbols, first, now_for(last), end, args.aria2_latency, tmp, logs
            )
            report_aria2(r, args)
            if not args.keep:
                shutil.rmtree(tmp, ignore_errors=True)
            continue
        if not args.skip_legacy:
            with EmulatorProcess(base, symbols, first, now_for(last)) as url:
                src = legacy_copy(args.legacy_src, tmp / "legacy_src", url)
                r["legacy"] = run_legacy_stages(src, args.legacy_python, tmp / "legacy", logs)
            with EmulatorProcess(grown, symbols, first, now_for(last + timedelta(days=1))) as url:
                src = legacy_copy(args.legacy_src, tmp / "legacy_src", url)
                daily = run_legacy_stages(
                    src, args.legacy_python, tmp / "legacy", logs, tag="legacy-daily"
                )
                r["legacy_daily"] = sum(daily.values())
            r["legacy_results"] = count_results(tmp / "legacy/binance_data")
        with EmulatorProcess(base, symbols, first, now_for(last)) as url:
            for stage in STAGES:
                cfg = our_config(url, tmp / "ours-stages/data", end)
                r["ours"][stage] = run_ours(tmp / "ours-stages", cfg, stage, logs, stage)
            cfg = our_config(url, tmp / "ours-all/data", end)
            r["ours_whole"] = run_ours(tmp / "ours-all", cfg, whole, logs, "all")
            r["ours_noop"] = run_ours(tmp / "ours-all", cfg, whole, logs, "all-noop")
        # The same endpoint as the full build's (a user's endpoints do not change daily).
        port = urlsplit(url).port
        with EmulatorProcess(
            grown, symbols, first, now_for(last + timedelta(days=1)), port=port
        ) as url:
            cfg = our_config(url, tmp / "ours-all/data", end + timedelta(days=1))
            since = time.time()
            r["ours_daily"] = run_ours(tmp / "ours-all", cfg, whole, logs, "all-daily")
            r["ours_daily_stages"] = stage_seconds(tmp / "ours-all/data", since)
        r["ours_results"] = count_results(tmp / "ours-all/data")
        if not args.skip_legacy:
            r["compare"] = compare_results(tmp / "legacy/binance_data", tmp / "ours-all/data", tmp)
        if args.aria2_latency:
            r["aria2"] = aria2_vs_ours(
                base, symbols, first, now_for(last), end, args.aria2_latency, tmp, logs
            )
        results.append(r)
        report(run, r, args)
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"load average at end: {os.getloadavg()}")


def report(run: int, r: dict, args) -> None:
    legacy, ours = r["legacy"], r["ours"]

    def cpu(label):
        return CPU.get(label, 0.0)

    print(f"\nrun {run}: {args.symbols} symbols x {args.days} days (wall s; CPU s of the tool)")
    head = f"  {'stage':<14}{'legacy':>9}{'ours':>9}{'ratio':>8}{'legacy CPU':>12}{'ours CPU':>10}{'ratio':>8}"
    print(head)

    def row(name, lg, og, lc, oc):
        cells = [f"  {name:<14}"]
        cells.append(f"{lg:>9.1f}" if lg else f"{'-':>9}")
        cells.append(f"{og:>9.1f}")
        cells.append(f"{lg / og:>7.2f}x" if lg else f"{'-':>8}")
        cells.append(f"{lc:>12.1f}" if lg else f"{'-':>12}")
        cells.append(f"{oc:>10.1f}")
        cells.append(f"{lc / oc:>7.2f}x" if lg and oc else f"{'-':>8}")
        print("".join(cells))

    for stage in STAGES:
        row(stage, legacy.get(stage), ours[stage], cpu(f"legacy {stage}"), cpu(f"ours {stage}"))
    lsum = sum(legacy.values())
    lcpu = sum(cpu(f"legacy {s}") for s in STAGES)
    row("sum of stages", lsum, sum(ours.values()), lcpu, sum(cpu(f"ours {s}") for s in STAGES))
    row("whole (all)", lsum, r["ours_whole"], lcpu, cpu("ours all"))
    ldaily = r.get("legacy_daily", 0)
    row(
        "daily update",
        ldaily,
        r["ours_daily"],
        sum(cpu(f"legacy-daily {s}") for s in STAGES),
        cpu("ours all-daily"),
    )
    if legacy:
        print("  (legacy whole = the sum of its five scripts)")
        print(f"  result files: legacy {r['legacy_results']}, ours {r['ours_results']}")
        report_compare(r["compare"])
    print(
        f"  ours: daily update = {100 * r['ours_daily'] / r['ours_whole']:.1f} % of the full build "
        f"(goal < 5 %); all with nothing to do {r['ours_noop']:.2f} s (goal < 2 s)"
    )
    print("  ours: the daily update's jobs by stage (Snakemake benchmark files; jobs overlap)")
    for stage, (n, wall, cpu_s) in sorted(r["ours_daily_stages"].items(), key=lambda kv: -kv[1][1]):
        print(f"    {stage:<26}{n:>4} jobs {wall:>7.2f} s wall {cpu_s:>7.2f} s CPU")
    if "aria2" in r:
        report_aria2(r, args)


def report_aria2(r: dict, args) -> None:
    o, a, n = r["aria2"]
    print(
        f"  aws_download at {args.aria2_latency * 1000:.0f} ms latency, {n} files: ours (listing "
        f"included) {o:.2f} s ({CPU.get('ours aws_download-latency', 0.0):.2f} CPU s), "
        f"aria2c -j32 -x4 {a:.2f} s ({CPU.get('aria2', 0.0):.2f} CPU s): ours/aria2 = "
        f"{o / a:.2f} (goal <= 1.5); load average {os.getloadavg()[0]:.2f}, {disk_pressure()}"
    )


def disk_pressure() -> str:
    """The kernel's I/O pressure (share of the last 10 s some task waited on I/O): aria2c
    fsyncs its control file three times per file, so a disk other processes keep busy slows
    it several-fold (3.3-26 s against ~1 s on tmpfs, docs/benchmarks.md, session 30) and
    the ratio then measures the disk. Also see --work on a tmpfs."""
    try:
        with open("/proc/pressure/io") as fh:
            some = fh.readline().split()
        return f"disk pressure {some[1].split('=')[1]} % (some, avg10)"
    except (OSError, IndexError):
        return "disk pressure unknown"


if __name__ == "__main__":
    main()
