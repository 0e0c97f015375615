"""Command line for legacy BHDS users.

``python -m crypto_lakehouse workflow aws-download 1m`` runs the Snakemake target that
replaces the legacy ``aws_download.sh 1m``, and likewise for the other scripts. Snakemake
runs in this process through its own command-line entry point, so workflow profiles
(``profiles/default``, ``--profile profiles/slurm``) apply exactly as with ``snakemake``.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

# command → (Snakemake target, legacy equivalent, what it does)
COMMANDS = {
    "aws-download": (
        "aws_download",
        "aws_download.sh [interval]",
        "list the archive, download kline and funding zips with their CHECKSUMs, verify SHA-256",
    ),
    "aws-parse": (
        "aws_parse",
        "aws_parse.sh [interval]",
        "parse verified archives into Parquet (monthly kline partitions, funding per symbol)",
    ),
    "api-download": (
        "api_download",
        "api_download.sh [interval]",
        "fill missing and recent days from the REST API and fetch the funding history",
    ),
    "gen-kline": (
        "gen_kline",
        "gen_kline.sh [interval]",
        "merge archive and REST candles, split at gaps, add VWAP and funding, fill the grid",
    ),
    "resample": (
        "resample",
        "resample.sh",
        "resample the generated candles to coarser intervals at every offset",
    ),
    "features": (
        "features",
        "none (new step)",
        "TA-Lib indicators and microstructure features of every generated and resampled file",
    ),
    "complete-pipeline": (
        "all",
        "the five scripts in order",
        "run every step: aws-download, aws-parse, api-download, gen-kline, resample, features",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m crypto_lakehouse",
        description="crypto_lakehouse: Binance historical data pipeline (Snakemake).",
    )
    groups = parser.add_subparsers(dest="group", required=True)
    wf = groups.add_parser(
        "workflow",
        help="run a pipeline step (one per legacy BHDS script)",
        description="Run one pipeline step through Snakemake. Each command replaces a legacy "
        "BHDS shell script.",
    )
    commands = wf.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (target, legacy, what) in COMMANDS.items():
        cmd = commands.add_parser(
            name,
            help=f"{what} (legacy: {legacy})",
            description=f"{what[0].upper()}{what[1:]}. Snakemake target `{target}`; "
            f"legacy equivalent: `{legacy}`.",
        )
        cmd.add_argument(
            "interval",
            nargs="?",
            default=None,
            help="kline interval, e.g. 1m (the legacy scripts' argument; default: config)",
        )
        cmd.add_argument("--cores", "-c", default="all", help="CPU cores to use (default: all)")
        cmd.add_argument("--dry-run", "-n", action="store_true", help="only print the plan")
        cmd.add_argument("--profile", help="Snakemake profile, e.g. profiles/slurm")
        cmd.add_argument("--configfile", help="YAML config merged over config/config.yaml")
        cmd.add_argument("--directory", "-d", help="working directory (default: current)")
        cmd.set_defaults(target=target, snakemake_args=[])
    parser.epilog = "Further Snakemake options may follow `--`, e.g. `-- --keep-going`."
    return parser


def snakemake_argv(args: argparse.Namespace) -> list[str]:
    """The Snakemake command line for parsed CLI arguments."""
    argv = ["--snakefile", str(REPO_ROOT / "Snakefile"), "--cores", str(args.cores)]
    if args.directory:
        argv += ["--directory", args.directory]
    if args.profile:
        argv += ["--profile", args.profile]
    if args.configfile:
        argv += ["--configfile", args.configfile]
    if args.interval:
        argv += ["--config", f"interval={args.interval}"]
    if args.dry_run:
        argv.append("--dry-run")
    # The target before the pass-through options: an option taking several values (such as
    # --config) would otherwise swallow it.
    argv.append(args.target)
    argv += list(args.snakemake_args)
    return argv


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Parse our options; everything after a bare `--` goes to Snakemake unchanged."""
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    args = build_parser().parse_args(argv)
    args.snakemake_args = extra
    return args


_JOB_RE = re.compile(r"^(?:local)?(?:rule|checkpoint) (\w+):$")
_TRADE_TYPE_RE = re.compile(r"^\s+wildcards:.*\btrade_type=(\w+)")


def plan_table(dry_run_output: str) -> str:
    """Job counts per rule and trade type, from the job blocks of a dry run's output."""
    counts: dict[tuple[str, str], int] = {}
    rule = None
    for line in dry_run_output.splitlines():
        m = _JOB_RE.match(line.strip()) if not line.startswith(" ") else None
        if m:
            if rule is not None:
                counts[rule] = counts.get(rule, 0) + 1
            rule = (m.group(1), "(none)")
            continue
        t = _TRADE_TYPE_RE.match(line)
        if t and rule is not None:
            rule = (rule[0], t.group(1))
    if rule is not None:
        counts[rule] = counts.get(rule, 0) + 1
    trade_types = sorted({t for _, t in counts})
    rules = list(dict.fromkeys(r for r, _ in counts))  # in the order the dry run printed
    width = max([len(r) for r in rules] + [4])
    lines = [
        "Plan: jobs per rule and trade type",
        f"{'rule':<{width}}  " + "  ".join(f"{t:>10}" for t in trade_types),
    ]
    for r in rules:
        lines.append(
            f"{r:<{width}}  " + "  ".join(f"{counts.get((r, t), 0):>10}" for t in trade_types)
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    smk_argv = snakemake_argv(args)
    if args.dry_run:
        # A dry run is read back to add the per-trade-type plan to Snakemake's per-rule table.
        proc = subprocess.run(
            [sys.executable, "-m", "snakemake", *smk_argv], capture_output=True, text=True
        )
        sys.stdout.write(proc.stdout)
        sys.stderr.write(proc.stderr)
        if proc.returncode == 0:
            print(plan_table(proc.stdout + proc.stderr))
        return proc.returncode
    from snakemake.cli import main as snakemake_main

    try:
        snakemake_main(smk_argv)
    except SystemExit as exc:  # snakemake's entry point always exits
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
