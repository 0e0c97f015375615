"""Command line for legacy BHDS users.

``python -m crypto_lakehouse workflow aws-download 1m`` runs the Snakemake target that
replaces the legacy ``aws_download.sh 1m``, and likewise for the other scripts. Snakemake
runs in this process through its own command-line entry point, so workflow profiles
(``profiles/default``, ``--profile profiles/slurm``) apply exactly as with ``snakemake``.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import subprocess
import sys
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def workflow_dir() -> Path:
    """The folder holding the Snakefile: the checkout this package runs from (source tree,
    editable install), else the copy a wheel installs inside the package (setup.py)."""
    for candidate in (PACKAGE_DIR.parent, PACKAGE_DIR / "workflow"):
        if (candidate / "Snakefile").is_file() and (candidate / "rules").is_dir():
            return candidate
    raise SystemExit(
        f"{program_name()}: no Snakefile next to {PACKAGE_DIR} nor in {PACKAGE_DIR / 'workflow'};"
        " reinstall the package (pip install .) or run from a checkout"
    )


def profile_path(profile: str) -> str:
    """``--profile`` as given when it exists, else the workflow's own ``profiles/<name>``
    (so ``--profile slurm`` or ``profiles/slurm`` works from any directory)."""
    if Path(profile).exists():
        return profile
    shipped = workflow_dir() / "profiles" / Path(profile).name
    return str(shipped) if shipped.is_dir() else profile


def missing_profile(profile: str) -> str | None:
    """Why Snakemake would find no profile for ``--profile`` (after ``profile_path``), or
    None. Snakemake looks for a folder with a ``config.yaml`` (or ``profile.yaml``) at the
    path given, else by name in the current directory and its user and site profile folders
    (``snakemake.cli.get_profile_dir``, asked here). Before 2026-12-07 Snakemake said so in
    its own words ("Error: profile directory given (nope), but no profile.yaml ..."), exit 1."""
    from snakemake.cli import get_appdirs, get_profile_dir

    if not profile:
        return "an empty name is no profile"
    if get_profile_dir(profile) is not None:
        return None
    if Path(profile).is_dir():
        return f"{profile} holds no config.yaml (nor profile.yaml), so it is no Snakemake profile"
    dirs = get_appdirs()
    shipped = workflow_dir() / "profiles"
    names = sorted(p.name for p in shipped.iterdir() if p.is_dir() and p.name != "default")
    return (
        f"not found: no folder {profile} in {Path.cwd()}, nor in {dirs.user_config_dir} or "
        f"{dirs.site_config_dir} (Snakemake's profile folders); the shipped profiles are "
        f"{', '.join(names)} ({shipped})"
    )


def profile_settings(profile: str) -> dict:
    """The settings of a Snakemake profile folder ({} when it has none or they do not read)."""
    import yaml

    for name in ("config.v8+.yaml", "config.yaml"):
        path = Path(profile) / name
        if path.is_file():
            try:
                settings = yaml.safe_load(path.read_text()) or {}
            except (OSError, yaml.YAMLError):
                return {}
            return settings if isinstance(settings, dict) else {}
    return {}


def profile_sets_cores(profile: str) -> bool:
    """Whether a Snakemake profile folder says how many jobs run at once (``cores`` or
    ``jobs``): then the workflow command leaves ``--cores`` to it."""
    return bool({"cores", "jobs"} & set(profile_settings(profile)))


def missing_executor_plugin(profile: str) -> str | None:
    """What to install when the profile's ``executor`` is a plugin this environment lacks.
    Snakemake itself answered ``--profile slurm`` without the ``slurm`` extra with its whole
    usage and "argument --executor/-e: invalid choice: 'slurm'"."""
    import importlib.util

    executor = profile_settings(profile).get("executor")
    if not isinstance(executor, str) or executor in ("local", "dryrun", "touch"):
        return None
    module = "snakemake_executor_plugin_" + executor.replace("-", "_")
    if importlib.util.find_spec(module) is not None:
        return None
    extra = " (pip install 'crypto_lakehouse[slurm]')" if executor == "slurm" else ""
    return (
        f"profile {profile} runs jobs with Snakemake's {executor!r} executor, whose plugin is "
        f"not installed in this environment: pip install "
        f"snakemake-executor-plugin-{executor}{extra}"
    )


# command → (Snakemake target, legacy equivalent or None for a new step, what it does)
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
        None,
        "TA-Lib indicators and microstructure features of every generated and resampled file",
    ),
    "report": (
        "report",
        None,
        "write lakehouse/report/index.html: coverage, quality, freshness, run times, checks, "
        "datasets",
    ),
    "datasets": (
        "datasets",
        None,
        "list, download, verify and parse the archive datasets beyond klines and funding "
        "(config datasets: aggTrades, trades, metrics, mark/index/premium price klines) and "
        "build agg_klines",
    ),
    "complete-pipeline": (
        "all",
        "the five scripts in order",
        "run every step: aws-download, aws-parse, api-download, gen-kline, resample, features "
        "(while features.enabled), datasets (when the config's datasets list more than klines "
        "and funding), report",
    ),
}


class ExactOptionParser(argparse.ArgumentParser):
    """argparse without abbreviated options, for the parser and (``add_subparsers`` makes
    them of the parser's class) every subcommand's: by default argparse took ``--config``
    for ``--configfile``, so ``--config data_dir=y`` was read as a config file's name."""

    def __init__(self, *args, allow_abbrev: bool = False, **kwargs) -> None:
        super().__init__(*args, allow_abbrev=allow_abbrev, **kwargs)


def program_name(argv0: str | None = None) -> str:
    """The command as the user typed it, for usage lines: ``python -m crypto_lakehouse``
    (``sys.argv[0]`` is then the package's ``__main__.py``) or the installed command."""
    path = Path(sys.argv[0] if argv0 is None else argv0)
    if path.name == "__main__.py" and path.parent.name == "crypto_lakehouse":
        return "python -m crypto_lakehouse"
    return "crypto-lakehouse"


def config_entry(text: str) -> str:
    """A ``--config`` value: KEY=VALUE (Snakemake parses the value). Checked here so that a
    word swallowed by ``--config`` (it takes several values) is named, not sent on."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not KEY=VALUE (--config takes every word up to the next option: "
            "give the interval before it)"
        )
    if not SNAKEMAKE_CONFIG_KEY.match(key):
        # Snakemake refused it with a ValueError traceback ("Config entry must start with a
        # valid identifier"), naming neither the entry nor the way to give a nested key.
        top, dot, rest = key.partition(".")
        hint = (
            f"; a nested key goes in a map: --config {top}='{{{rest.replace('.', ': {')}: "
            f"{value}{'}' * (rest.count('.') + 1)}' (a map's numbers and booleans stay strings: "
            "put those in a --configfile)"
            if dot and SNAKEMAKE_CONFIG_KEY.match(top)
            else ""
        )
        raise argparse.ArgumentTypeError(
            f"{text!r}: {key!r} is not a config key (--config sets top-level keys){hint}"
        )
    return text


# The keys Snakemake's --config accepts (snakemake.cli.parse_config).
SNAKEMAKE_CONFIG_KEY = re.compile(r"[a-zA-Z_][\w-]*\w$")


def cores_value(text: str) -> str:
    """``--cores`` of a workflow command: ``all`` or a whole number >= 1 (argparse type).
    Snakemake took ``--cores 0`` and then waited for ever at "Select jobs to execute..."
    once a job needed a core (SIGTERM did not stop it either), and ``abc`` was its own
    "Error parsing number of cores" with exit status 1."""
    if text == "all":
        return text
    try:
        cores = int(text)
    except ValueError:
        cores = 0
    if cores < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of cores: N >= 1, or all")
    return str(cores)


def version_text() -> str:
    """What ``--version`` prints: the package version, then which code runs it. The version
    is the installed distribution's (importlib.metadata); a source checkout run without
    installing has none, and says ``crypto_lakehouse.__version__`` and "not installed". The
    git commit (a checkout only, ``-dirty`` with uncommitted changes) and the package's
    folder tell apart two trees of one version (an editable install of one checkout, run
    with PYTHONPATH on another, reports the installed version and the folder imported)."""
    import platform
    from importlib import metadata

    from crypto_lakehouse import __version__

    try:
        version = metadata.version("crypto_lakehouse")
    except metadata.PackageNotFoundError:
        version = f"{__version__} (not installed)"
    where = [f"package {PACKAGE_DIR}", f"Python {platform.python_version()}"]
    if (PACKAGE_DIR.parent / ".git").exists():
        try:
            commit = subprocess.run(
                ["git", "-C", str(PACKAGE_DIR.parent), "describe", "--always", "--dirty"],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            commit = ""
        if commit:
            where.insert(0, f"git {commit}")
    return f"crypto_lakehouse {version} ({', '.join(where)})"


class VersionAction(argparse.Action):
    """``--version``: print ``version_text()`` and exit 0, computed only when asked (it may
    run git)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(version_text())
        parser.exit()


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = ExactOptionParser(
        prog=program_name() if prog is None else prog,
        description="crypto_lakehouse: Binance historical data pipeline (Snakemake).",
    )
    parser.add_argument(
        "--version",
        action=VersionAction,
        help="print the version, git commit, package folder and Python, and exit",
    )
    groups = parser.add_subparsers(dest="group", required=True, metavar="COMMAND", title="commands")
    wf = groups.add_parser(
        "workflow",
        help="run a pipeline step (one per legacy BHDS script)",
        description="Run one pipeline step through Snakemake. Each command replaces a legacy "
        "BHDS shell script; as a Snakemake target, it first runs the earlier steps it needs "
        "that are not up to date (gen-kline on an empty data dir downloads and parses first). "
        "Exit 0 on success, 1 when a job failed or the config is refused, 2 for an invalid "
        "option, 130 for Ctrl-C (README).",
    )
    commands = wf.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (target, legacy, what) in COMMANDS.items():
        cmd = commands.add_parser(
            name,
            help=f"{what} (legacy: {legacy or 'none, a new step'})",
            description=f"{what[0].upper()}{what[1:]}. Snakemake target `{target}`; "
            + (
                f"legacy equivalent: `{legacy}`."
                if legacy
                else "no legacy equivalent (a new step)."
            ),
        )
        cmd.add_argument(
            "interval",
            nargs="?",
            default=None,
            help="kline interval, e.g. 1m (the legacy scripts' argument; default: config)",
        )
        cmd.add_argument(
            "--cores",
            "-c",
            type=cores_value,
            help="CPU cores to use, N >= 1 or all, or jobs in flight with a cluster profile "
            "(default: the profile's cores or jobs, else all)",
        )
        cmd.add_argument("--dry-run", "-n", action="store_true", help="only print the plan")
        cmd.add_argument(
            "--profile",
            help="Snakemake profile: a folder, or a shipped one by name (slurm, slurm-srun)",
        )
        cmd.add_argument("--configfile", help="YAML config merged over config/config.yaml")
        cmd.add_argument(
            "--config",
            nargs="+",
            type=config_entry,
            default=[],
            metavar="KEY=VALUE",
            help="config values over the config files, passed to Snakemake's --config "
            "(the interval argument is added to them; an interval= here that differs from "
            "it is refused)",
        )
        cmd.add_argument("--directory", "-d", help="working directory (default: current)")
        cmd.set_defaults(target=target, snakemake_args=[])
    plan = groups.add_parser(
        "plan",
        help="list the archive and show what a run would fetch, with a time estimate",
        description="List the archive (a fresh cached listing is reused) and print per trade "
        "type and dataset: symbols kept and filtered, files and bytes to download, files "
        "already present, days to fetch from REST, and an estimated time (docs/plan.md).",
    )
    plan.add_argument("--configfile", help="YAML config merged over config/config.yaml")
    plan.add_argument(
        "--config",
        nargs="+",
        type=config_entry,
        metavar="KEY=VALUE",
        help="config values, as for Snakemake",
    )
    plan.add_argument("--directory", "-d", help="directory a relative data_dir is relative to")
    plan.add_argument("--json", action="store_true", help="print the plan as JSON")
    add_compare_parser(groups)
    add_verify_parser(groups)
    parser.epilog = (
        "Further Snakemake options may follow `--` after a workflow command, e.g. "
        "`workflow gen-kline -- --keep-going`."
    )
    return parser


def add_compare_parser(groups) -> None:
    from crypto_lakehouse.layout import TRADE_TYPES

    cmp = groups.add_parser(
        "compare",
        help="compare a legacy BHDS data dir with ours, every difference explained",
        description="Compare the parsed and generated files of a legacy BHDS data dir with "
        "ours, file by file. Every difference is equal, within tolerance, explained by a "
        "documented fix (docs/differences-from-bhds.md) or unexplained. Exit 0 when nothing "
        "is unexplained, 1 otherwise (--strict: also on explained differences; a problem "
        "such as a symbol or interval no file matches, or nothing compared, counts as "
        "unexplained), 2 for an invalid option.",
    )
    cmp.add_argument("legacy_dir", metavar="LEGACY_DIR", help="data dir written by BHDS V1")
    cmp.add_argument("new_dir", metavar="NEW_DIR", help="data dir written by this pipeline")
    cmp.add_argument(
        "--interval",
        default="1m",
        type=compare_interval,
        help="kline interval, one of Binance's (default: 1m)",
    )
    cmp.add_argument(
        "--trade-types",
        nargs="+",
        choices=TRADE_TYPES,
        default=list(TRADE_TYPES),
        help="trade types to compare (default: all three)",
    )
    cmp.add_argument("--symbols", nargs="+", help="only these symbols (default: all)")
    cmp.add_argument(
        "--price-tolerance",
        type=compare_tolerance,
        default=1e-4,
        help="absolute tolerance on prices, volumes and counts (default: 1e-4)",
    )
    cmp.add_argument(
        "--funding-tolerance",
        type=compare_tolerance,
        default=1e-6,
        help="absolute tolerance on funding_rate (default: 1e-6)",
    )
    cmp.add_argument("--strict", action="store_true", help="exit 1 on explained differences too")
    cmp.add_argument("--format", choices=("text", "json", "markdown"), default="text")
    cmp.add_argument("--output", "-o", help="write the report to this file (default: stdout)")
    cmp.add_argument(
        "--jobs",
        "-j",
        type=compare_jobs,
        default=1,
        help="compare files in N processes, N >= 1 (default: 1)",
    )
    cmp.add_argument(
        "--run-dir",
        type=compare_run_dir,
        help="our run directory (config run_dir), whose listing indexes explain files only "
        "we have (Q15, Q17); default: NEW_DIR/lakehouse, or for an s3:// NEW_DIR "
        "lakehouse_runs/{bucket}/{prefix} below the current directory, as a run gives it",
    )
    cmp.add_argument(
        "--start",
        type=compare_date,
        metavar="YYYY-MM-DD",
        help="compare only rows from this UTC day on (default: from the first row)",
    )
    cmp.add_argument(
        "--end",
        type=compare_date,
        metavar="YYYY-MM-DD",
        help="compare only rows up to the end of this UTC day, e.g. the last day of a legacy "
        "dir that stopped earlier than ours (default: to the last row)",
    )
    _add_storage_arguments(cmp, "either dir that is s3://bucket/prefix")


def compare_date(text: str) -> str:
    """``--start`` / ``--end`` of compare: a day, YYYY-MM-DD (argparse type)."""
    import datetime as dt

    try:
        return dt.date.fromisoformat(text).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def _day_ms(day: str | None, days_after: int = 0) -> int | None:
    """Midnight UTC of ``day`` (+ ``days_after``), ms since the epoch; None for None, and
    for a day after 9999-12-31 (``--end 9999-12-31``: every row; a date past it, as the
    window's end, ended in an OverflowError traceback)."""
    import datetime as dt

    if day is None:
        return None
    ordinal = dt.date.fromisoformat(day).toordinal() + days_after
    if ordinal > dt.date.max.toordinal():
        return None
    return (ordinal - dt.date(1970, 1, 1).toordinal()) * 86_400_000


def compare_interval(text: str) -> str:
    """``--interval`` of compare: a Binance kline interval (argparse type)."""
    from crypto_lakehouse.compare.discovery import interval_problem

    problem = interval_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


def compare_jobs(text: str) -> int:
    """``--jobs`` of compare: a number of processes, at least 1 (argparse type)."""
    from crypto_lakehouse.compare import jobs_problem

    return _checked_number(text, int, "an integer", jobs_problem)


def compare_run_dir(text: str) -> str:
    """``--run-dir`` of compare: an existing local folder (argparse type)."""
    if text.startswith("s3:/"):
        raise argparse.ArgumentTypeError(f"{text}: a run directory is a local folder, never on S3")
    path = Path(text).expanduser()
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: not a directory")
    return str(path)


def compare_tolerance(text: str) -> float:
    """``--price-tolerance`` / ``--funding-tolerance`` of compare (argparse type)."""
    from crypto_lakehouse.compare.pairs import tolerance_problem

    return _checked_number(text, float, "a number", tolerance_problem)


def _checked_number(text: str, convert, kind: str, problem_of):
    """``convert(text)``, or an argparse error saying it is not ``kind`` or what
    ``problem_of`` finds wrong with the value."""
    try:
        value = convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {kind}") from None
    problem = problem_of(value)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return value


def add_verify_parser(groups) -> None:
    ver = groups.add_parser(
        "verify",
        help="find the Parquet files of a data dir that cannot be read (and remove them)",
        description="Read the footer of every Parquet file below parsed_data, api_data and "
        "results_data of a data dir; list those that cannot be read (cut short or "
        "overwritten outside a run); with --zips, also every verified zip of aws_data whose "
        "SHA-256 is not its CHECKSUM's. --remove deletes them (of a zip, its marker); a run with "
        "`--forcerun aws_download_shard` then rebuilds them. Exit 0 when every file reads, "
        "1 otherwise.",
    )
    ver.add_argument("data_dir", metavar="DATA_DIR", help="a data dir (or s3://bucket/prefix)")
    ver.add_argument(
        "--remove",
        action="store_true",
        help="delete the damaged files (of a damaged zip: its .verified marker)",
    )
    ver.add_argument(
        "--zips",
        action="store_true",
        help="also hash every verified zip of aws_data against its CHECKSUM (reads them all)",
    )
    ver.add_argument(
        "--pages",
        action="store_true",
        help="also decode every page of every Parquet file (reads them all; finds a page "
        "damaged inside a file, which the footer does not show)",
    )
    ver.add_argument(
        "--jobs",
        "-j",
        type=verify_jobs,
        default=8,
        help="files read at once, N >= 1 (default: 8)",
    )
    ver.add_argument("--json", action="store_true", help="print the result as JSON")
    _add_storage_arguments(ver, "a data dir on S3")


def verify_jobs(text: str) -> int:
    """``--jobs`` of verify: files read at once, at least 1 (argparse type). Before, 0 and
    negative numbers were taken for 1 without a word, unlike compare's ``--jobs``."""

    def problem(jobs: int) -> str | None:
        return None if jobs >= 1 else f"{jobs} is not a number of files read at once (N >= 1)"

    return _checked_number(text, int, "an integer", problem)


def _add_storage_arguments(parser, what: str) -> None:
    s3 = parser.add_argument_group(
        f"S3 ({what})",
        "The config's `storage:` settings (docs/storage.md). "
        "Credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or AWS_PROFILE.",
    )
    s3.add_argument(
        "--endpoint-url",
        help=(
            "S3 endpoint of a self-hosted store, e.g. http://127.0.0.1:8333 (default: "
            "AWS_ENDPOINT_URL_S3, else AWS_ENDPOINT_URL, else AWS)"
        ),
    )
    s3.add_argument(
        "--region",
        help=(
            "S3 region (default: with an endpoint, --endpoint-url or AWS_ENDPOINT_URL_S3 / "
            "AWS_ENDPOINT_URL, the region an AWS regional endpoint names, else AWS_REGION, "
            "else AWS_DEFAULT_REGION, else us-east-1; on AWS "
            "also the profile's)"
        ),
    )
    s3.add_argument(
        "--addressing-style",
        choices=("path", "virtual"),
        help=(
            "path or virtual (default: virtual for AWS, path for any other endpoint, as "
            "storage.addressing_style: null)"
        ),
    )


def run_verify(args: argparse.Namespace) -> int:
    import json

    from crypto_lakehouse import storage
    from crypto_lakehouse.verify import render, verify

    storage.configure(storage_settings_of(args))
    if not storage.is_remote(args.data_dir) and not Path(args.data_dir).is_dir():
        print(problem_line("verify", not_a_data_dir(args.data_dir)), file=sys.stderr)
        return 2
    from crypto_lakehouse.lock import DataDirBusy
    from crypto_lakehouse.verify import NotADataDir

    try:
        verdict = verify(
            args.data_dir,
            remove=args.remove,
            jobs=args.jobs,
            zips=args.zips,
            pages=args.pages,
        )
    except (DataDirBusy, NotADataDir) as exc:
        print(problem_line("verify", str(exc)), file=sys.stderr)
        return 2
    except storage.StorageError as exc:
        # The store cannot be reached or refuses (a wrong endpoint, credentials, a read-only
        # identity taking the lease of --remove): exit 2, not 1, which means damaged files.
        print(problem_line("verify", f"{args.data_dir}: nothing checked: {exc}"), file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(verdict.as_dict(), indent=1))
    else:
        sys.stdout.write(render(verdict))
    return verdict.exit_code


def not_a_data_dir(path: str) -> str:
    """Why ``verify`` refuses a local path that is not a directory (a config file given
    for the data dir was once told "no such directory")."""
    if Path(path).is_file():
        config_file = path.endswith((".yaml", ".yml"))
        what = (
            "the config's data_dir, not the config file" if config_file else "the config's data_dir"
        )
        return f"{path} is a file, not a data directory: verify takes a data dir ({what})"
    if Path(path).exists():
        return f"{path} is not a directory: verify takes a data dir (the config's data_dir)"
    return f"{path}: no such directory"


def storage_settings_of(args: argparse.Namespace) -> dict:
    """The ``storage`` settings (config block names) given on the command line."""
    given = {
        "endpoint_url": args.endpoint_url,
        "region": args.region,
        "addressing_style": args.addressing_style,
    }
    return {key: value for key, value in given.items() if value is not None}


def run_compare(args: argparse.Namespace) -> int:
    from crypto_lakehouse import io, storage
    from crypto_lakehouse.compare import Options, compare_dirs
    from crypto_lakehouse.compare.report import render

    if args.output:
        problem = report_output_problem(args.output)
        if problem:
            print(problem_line("compare", f"--output {args.output}: {problem}"), file=sys.stderr)
            return 2
    if args.start and args.end and args.start > args.end:
        message = f"--start {args.start} is after --end {args.end}"
        print(problem_line("compare", message), file=sys.stderr)
        return 2
    storage.configure(storage_settings_of(args))
    options = Options(
        args.price_tolerance,
        args.funding_tolerance,
        args.run_dir,
        start_ms=_day_ms(args.start),
        end_ms=_day_ms(args.end, days_after=1),  # the whole day
    )
    report = compare_dirs(
        args.legacy_dir,
        args.new_dir,
        interval=args.interval,
        trade_types=args.trade_types,
        symbols=args.symbols,
        options=options,
        jobs=args.jobs,
    )
    text = render(report, args.format, args.strict)
    if args.output:
        io.write_text(args.output, text)
    else:
        sys.stdout.write(text)
    for problem in report.problems:
        print(problem_line("compare", problem), file=sys.stderr)
    return report.exit_code(args.strict)


def report_output_problem(output: str) -> str | None:
    """Why compare's report cannot be written to ``output``, or None. Checked before
    comparing, which can take long, without leaving anything behind: the write creates
    the missing folders, so here a folder (or file) is only tried where the first one
    would be created, and removed."""
    import tempfile

    if output.startswith("s3:/"):
        return "an S3 path; the report is written to a local file"
    path = Path(output)
    if path.is_dir():
        return "is a directory"
    folder = path.parent
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        return f"{existing} is not a directory"
    try:
        # Access bits say nothing for root nor for a read-only mount: try it there.
        if existing == folder:
            with tempfile.TemporaryFile(dir=folder):
                pass
        else:
            with tempfile.TemporaryDirectory(dir=existing):
                pass
    except OSError as exc:
        if existing == folder:
            return f"cannot write in {folder}: {exc.strerror or exc}"
        first = existing / folder.relative_to(existing).parts[0]
        return f"cannot create {first}: {exc.strerror or exc}"
    return None


def directory_problem(directory: str) -> str | None:
    """Why the working directory of a workflow command cannot be used, or None. It is
    created here, as Snakemake creates it (dry runs too): one it could not create or that
    is a file ended in a Python traceback of Snakemake's (FileNotFoundError,
    FileExistsError)."""
    path = Path(directory)
    if path.exists() and not path.is_dir():
        return "not a directory"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"cannot be created: {exc.strerror or exc}"
    return None


def snakemake_argv(args: argparse.Namespace) -> list[str]:
    """The Snakemake command line for parsed CLI arguments."""
    # The target first: options taking several values (--config, --configfile) would
    # otherwise swallow it as one of their values.
    argv = ["--snakefile", str(workflow_dir() / "Snakefile"), args.target]
    profile = profile_path(args.profile) if args.profile else None
    # A --cores here wins over the profile's: `all` replaced profiles/slurm-srun's
    # `cores: 100` (the SLURM jobs in flight) by this host's CPUs.
    if args.cores is not None or profile is None or not profile_sets_cores(profile):
        argv += ["--cores", str(args.cores or "all")]
    if args.directory:
        argv += ["--directory", args.directory]
    if profile:
        argv += ["--profile", profile]
    if args.configfile:
        argv += ["--configfile", args.configfile]
    # One --config: Snakemake keeps only the last of several (later entries win in one).
    config = list(args.config)
    if args.interval:
        config.append(f"interval={args.interval}")
    if config:
        argv += ["--config", *config]
    if args.dry_run:
        argv.append("--dry-run")
    argv += list(args.snakemake_args)
    return argv


def snakemake_option_problem(smk_argv: list[str]) -> str | None:
    """What Snakemake's parser refuses in a command line, or None. Checked before Snakemake
    runs: a mistyped option after ``--`` printed Snakemake's whole usage (119 lines, as
    ``__main__.py``) above the one line that says what is wrong."""
    from snakemake.cli import get_argument_parser

    class Refused(Exception):
        pass

    def refuse(message: str):
        raise Refused(message)

    parser = get_argument_parser()
    parser.prog = "snakemake"  # `-- --help` prints Snakemake's help: its usage line says so
    parser.error = refuse  # argparse calls self.error for every usage error
    try:
        parser.parse_args(smk_argv)
    except Refused as exc:
        return str(exc)
    return None


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Parse our options; everything after a bare `--` goes to Snakemake unchanged."""
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    parser = build_parser()
    args = parser.parse_args(argv)
    if extra and args.group != "workflow":
        # They were dropped without a word: `verify DIR -- --remove` removed nothing.
        parser.error(
            f"{' '.join(extra)} after `--`: only the workflow commands pass options on (to "
            f"Snakemake); give {args.group}'s own options before it"
        )
    if args.group == "workflow" and (args.config or args.interval):
        passed = [a for a in extra if a in ("--config", "-C") or a.startswith("--config=")]
        if passed:
            # Snakemake would keep only the last --config: ours (the interval) would be lost.
            parser.error(
                f"{passed[0]} after `--` would replace the interval and --config given "
                "before it: give every config value as --config KEY=VALUE before `--`"
            )
        given = [c.partition("=")[2] for c in args.config if c.partition("=")[0] == "interval"]
        if args.interval and any(value != args.interval for value in given):
            # The argument was appended last and won: `aws-download 1m --config interval=5m`
            # ran at 1m without a word.
            parser.error(
                f"the interval is given twice: {args.interval} (argument) and "
                f"--config interval={given[-1]}: give it once"
            )
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
    if not counts:  # "Nothing to be done": not an empty table with a bare header
        return "Plan: no job to run"
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


# Exit status after Ctrl-C, as a shell gives a command SIGINT stopped (128 + 2).
INTERRUPTED = 130


def command_name(argv: list[str]) -> str:
    """The command a command line runs, as typed (``workflow gen-kline``, ``plan``), or ""
    when it names none (yet): the middle of ``{program} {command}: {message}``."""
    words = [w for w in argv if not w.startswith("-")][:2]
    if words[:1] in (["plan"], ["compare"], ["verify"]):
        return words[0]
    if words[:1] == ["workflow"]:
        return " ".join(words) if words[1:] and words[1] in COMMANDS else "workflow"
    return ""


def as_typed(command: str) -> str:
    """The program and the command, as the user typed them: ``crypto-lakehouse plan``."""
    return " ".join(filter(None, (program_name(), command)))


def problem_line(command: str, message: str) -> str:
    """A problem our command line reports (not argparse's), on stderr:
    ``crypto-lakehouse verify: …``, the command as typed first, as argparse's own usage
    errors begin; the workflow's refusals to start (``stop`` in rules/common.smk) read it
    from ``COMMAND_ENV``. Before 2026-12-07 each command had its own: ``verify: …``,
    ``compare: …``, ``crypto_lakehouse plan: …``, ``crypto-lakehouse: …``, and the
    workflow's ``invalid configuration:`` stood alone."""
    return f"{as_typed(command)}: {message}"


# Set for Snakemake (and its jobs) by a workflow command: the command as typed.
COMMAND_ENV = "CRYPTO_LAKEHOUSE_COMMAND"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        status = run(argv)
        sys.stdout.flush()  # here, where a reader gone is caught below, not at exit
        return status
    except KeyboardInterrupt:
        # Ctrl-C while loading, planning, comparing or verifying (or before Snakemake took
        # over) printed a Python traceback of wherever the process was.
        command = command_name(argv)
        message = INTERRUPTED_RUN if command.startswith("workflow") else "interrupted"
        print(problem_line(command, message), file=sys.stderr)
        return INTERRUPTED
    except BrokenPipeError:
        # stdout piped to a reader that stopped (`| head`): a BrokenPipeError traceback
        # before. Python's own advice: point stdout at /dev/null, so that the interpreter's
        # final flush does not fail again, and exit 1.
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


def run(argv: list[str] | None = None) -> int:
    """The command, exit status returned (``main`` adds the handling of Ctrl-C)."""
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.group == "plan":
        from crypto_lakehouse import preview

        return preview.main(args)
    if args.group == "compare":
        return run_compare(args)
    if args.group == "verify":
        return run_verify(args)
    command = f"workflow {args.command}"
    with environment(COMMAND_ENV, as_typed(command)):
        return run_workflow(args, command)


@contextlib.contextmanager
def environment(name: str, value: str):
    """``os.environ[name] = value`` within (for Snakemake run in this process and the
    processes it starts), the previous value back after."""
    import os

    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def run_workflow(args: argparse.Namespace, command: str) -> int:
    """A workflow command: checks, then Snakemake (a dry run in a child process)."""
    if args.configfile:
        # Snakemake reads it before the workflow's checks, and says neither file nor key.
        from crypto_lakehouse.configuration import config_file_problem

        problem = config_file_problem(args.configfile)
        if problem:
            print(problem_line(command, f"invalid configuration:\n  {problem}"), file=sys.stderr)
            return 1
    problem = directory_problem(args.directory) if args.directory else None
    if problem:
        print(problem_line(command, f"--directory {args.directory}: {problem}"), file=sys.stderr)
        return 2
    if args.profile is not None:
        # A profile Snakemake finds nowhere: its own "Error: profile directory given (nope),
        # but no profile.yaml (or config.yaml) found. ..." and exit status 1, where ours
        # are 2 for an option that cannot be used.
        profile = profile_path(args.profile)
        problem = missing_profile(profile) or missing_executor_plugin(profile)
        if problem:
            print(problem_line(command, f"--profile {args.profile}: {problem}"), file=sys.stderr)
            return 2
    smk_argv = snakemake_argv(args)
    problem = snakemake_option_problem(smk_argv) if args.snakemake_args else None
    if problem:
        print(
            problem_line(
                command,
                f"after `--`: {problem} (`snakemake --help` lists Snakemake's options)",
            ),
            file=sys.stderr,
        )
        return 2
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

    with sigint_noted() as noted:
        try:
            snakemake_main(smk_argv)
            status = 0
        except SystemExit as exc:  # snakemake's entry point always exits
            status = int(exc.code or 0) if not isinstance(exc.code, str) else 1
    if noted and status != 0:
        # Ctrl-C once the jobs ran: Snakemake stopped them (each listed as interrupted)
        # and exited 1, the status of a failed job; a second Ctrl-C ended in main's 130.
        print(problem_line(command, INTERRUPTED_RUN), file=sys.stderr)
        return INTERRUPTED
    return status


# What a workflow command says last after Ctrl-C (Snakemake's own lines come before it).
INTERRUPTED_RUN = "interrupted; the same command again completes the run"


@contextlib.contextmanager
def sigint_noted():
    """Within: a SIGINT is noted (the list yielded gets an entry) and raises
    KeyboardInterrupt as Python's own handler does, so Snakemake handles it as before.
    Only where Python's handler is the one in place (not where SIGINT is ignored, as in a
    background job, nor off the main thread, where no handler can be set); restored after."""
    import signal
    import threading

    noted: list[int] = []
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield noted
        return

    def note(signum, frame):
        noted.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, note)
    try:
        yield noted
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


if __name__ == "__main__":
    sys.exit(main())
