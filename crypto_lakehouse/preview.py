"""``crypto_lakehouse plan``: what a run would fetch, before it runs (docs/plan.md).

The archive is listed as the ``list_archive`` checkpoint would list it, or a fresh index is
reused: the checkpoint's own (``lakehouse/listing/``) or one an earlier ``plan`` wrote
(``lakehouse/plan/listing/``, never read by the workflow). An index is fresh when it answers
the same request: trade type, dataset, interval, monthly klines, symbol selection, listing
URL and the run's resolved end date (the workflow lists again when the end date changes),
and not while a fixed end date is unsettled (the workflow lists again each morning then:
``plan.listing_recheck``).

From the listing and the files on disk it counts, per trade type and dataset, the symbols
kept and filtered, the zips (with their CHECKSUMs) to download and those already verified,
and the kline days the REST API would fill; then it estimates the time at measured rates.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from crypto_lakehouse import datasets, io, layout, storage
from crypto_lakehouse import plan as workflow_plan


def config_dir() -> Path:
    """The workflow's ``config/``: the checkout's, or, installed from a wheel, the copy inside
    the package (``cli.workflow_dir``; the folder above the package is site-packages then)."""
    from .cli import workflow_dir

    return workflow_dir() / "config"


# Conservative download rates used when no earlier run measured any (docs/plan.md): well
# below one job's 320 files/s at 32 requests in flight and a 100 ms round trip.
DEFAULT_DOWNLOAD_MB_S = 5.0
DEFAULT_DOWNLOAD_FILES_S = 50.0


@dataclass
class DatasetPlan:
    trade_type: str
    dataset: str  # "klines-1m" or "funding"
    listing: str  # where the index came from
    kept: int = 0
    filtered: list[dict] = field(default_factory=list)  # {"name", "reason"}
    refused: list[dict] = field(default_factory=list)
    not_listed: list[str] = field(default_factory=list)
    no_files: list[str] = field(default_factory=list)
    files_to_download: int = 0
    files_quarantined: int = 0  # missing, but quarantined and not re-uploaded: not fetched
    bytes_to_download: int = 0
    files_present: int = 0
    bytes_present: int = 0
    rest_days: int = 0
    rest_weight: int = 0  # klines and the server time (/time) their jobs ask first
    rest_jobs: int = 0  # klines: REST shard jobs with days to fetch (one /time request each)
    rest_symbols: int = 0  # funding: symbols whose history REST is asked for
    # klines: the exchangeInfo summary whose delisted symbols stop at their last archived
    # day (None: no run wrote one yet, every symbol counts to the end date)
    exchange_info: str | None = None
    download_seconds: float = 0.0
    rest_seconds: float = 0.0
    rates: dict = field(default_factory=dict)


# ---------------------------------------------------------------- configuration
def load_config(configfile=None, overrides=(), directory=None) -> dict:
    """The merged, validated config a run would see: ``config/config.yaml``, then
    ``--configfile``, then ``--config key=value`` (parsed like Snakemake's)."""
    import yaml
    from snakemake.cli import parse_config
    from snakemake.utils import update_config

    from .configuration import check_user_config, config_file_problem, fill_defaults, load_schema

    schema = config_dir() / "config.schema.yaml"
    config = yaml.safe_load((config_dir() / "config.yaml").read_text())
    if configfile:
        problem = config_file_problem(configfile)
        if problem:
            raise workflow_plan.config_error([problem])
        update_config(config, yaml.safe_load(Path(configfile).read_text()) or {})
    update_config(config, parse_config(list(overrides)))
    check_user_config(config, schema)  # the workflow's own checks: one line per problem
    fill_defaults(config, load_schema(schema))  # the defaults, as rules/common.smk fills them
    workflow_plan.check_config(config)
    # Relative paths are relative to the workflow's working directory (--directory), as in
    # a run; run_dir is resolved as the workflow resolves it (layout.run_dir).
    remote = storage.is_remote(config["data_dir"])
    data_dir = config["data_dir"] if remote else os.path.expanduser(config["data_dir"])
    configured = config.get("run_dir")
    run_dir = Path(layout.run_dir(data_dir, configured and os.path.expanduser(configured)))
    if directory and not run_dir.is_absolute():
        run_dir = Path(directory) / run_dir
    config["run_dir"] = str(run_dir)
    if not remote:
        data_dir = Path(data_dir)
        if directory and not data_dir.is_absolute():
            data_dir = Path(directory) / data_dir
        config["data_dir"] = str(data_dir)
    return config


CORE_DATASETS = (datasets.KLINES.name, datasets.FUNDING.name)


def _datasets(config, trade_type) -> list[str]:
    """The listings a run makes for the trade type: klines, funding (futures), then the
    datasets its config lists beyond them (``snakemake datasets``: aggTrades, ...), whose
    archives can dwarf the klines'."""
    klines = datasets.tag(datasets.KLINES.name, config["interval"])
    core = [klines] if trade_type == "spot" else [klines, datasets.FUNDING.name]
    selected = (config.get("datasets") or {}).get(trade_type) or []
    return core + datasets.extra_tags(selected, config["interval"], CORE_DATASETS)


def _request_args(config, trade_type, dataset, end_date) -> dict:
    """The list_archive job's arguments (rules/common.smk get_listing_args)."""
    return dict(
        trade_type=trade_type,
        dataset=datasets.get(dataset).name,
        interval=config["interval"],
        symbols=workflow_plan.symbol_selection(config, trade_type),
        listing_url=config["endpoints"]["listing"],
        include_monthly=config["download"]["use_monthly_klines"],
        end_date=end_date,
    )


# ---------------------------------------------------------------- listing
def fresh_index(path: Path, request: dict) -> dict | None:
    """The index at ``path`` if it answers ``request`` completely (no failed symbol), else
    None (also when it cannot be read: torn by a crash, zeroed by a disk fault)."""
    index = _record(path)
    if isinstance(index, dict) and index.get("request") == request:
        if not (index.get("failed") or index.get("error")):
            return index
    return None


def _record(path, default=None):
    """A JSON record of the run dir, or ``default`` when missing or unreadable (the plan
    only reads: a damaged record is the next run's to mend)."""
    try:
        return io.read_json(path, default=default)
    except ValueError:
        return default


class UnusableListing(ValueError):
    """A cached listing whose details cannot be read: the plan lists the dataset itself."""


def obtain_index(
    config, trade_type, dataset, end_date, reuse: bool = True
) -> tuple[dict, Path, str]:
    """(index, its path, how it was obtained): a fresh cached index (``reuse``), else a new
    listing."""
    from crypto_lakehouse.archive.listing import listing_request, run_listing

    run_dir = config["run_dir"]
    args = _request_args(config, trade_type, dataset, end_date)
    request = listing_request(**args)
    cached = (
        (layout.run_listing_index_path(run_dir, trade_type, dataset), "the last run's listing"),
        (layout.plan_listing_index_path(run_dir, trade_type, dataset), "an earlier plan's"),
    )
    for path, origin in cached if reuse else ():
        index = fresh_index(Path(path), request)
        if index is not None:
            return index, Path(path), f"reused {origin} ({path})"
    path = Path(layout.plan_listing_index_path(run_dir, trade_type, dataset))
    dl = config["download"]
    run_listing(
        **args,
        out_index=path,
        details_dir=layout.listing_details_dir(path),
        concurrency=dl["listing_concurrency"],
        timeout_s=dl["timeout_s"],
        max_retries=dl["max_retries"],
    )
    return io.read_json(path), path, f"listed now ({path})"


# ---------------------------------------------------------------- counting
def _rest_days(
    config, trade_type, symbol, files, end_date, today, exchange_info_path=None
) -> tuple[int, int]:
    """(days, weight) the REST fill would fetch for one symbol: days from its first archived
    day to the end date (closed days only) that no selected archive and no stored REST day
    file covers; for a symbol that ``exchange_info_path`` (the last run's exchangeInfo
    summary) says no longer trades, only up to its last archived day, as ``api_download``
    asks (``rest.klines.run_api_klines``). Archive days that turn out short are fetched too;
    a plan cannot see them."""
    from crypto_lakehouse.provenance import day_number
    from crypto_lakehouse.rest.exchange_info import not_trading
    from crypto_lakehouse.rest.klines import existing_day_files, plan_weight

    if not files:
        return 0, 0  # no archive day to anchor the range (report status "no_archive")
    interval = config["interval"]
    covered = set()
    for f in files:
        covered.update(range(day_number(f.first_day), day_number(f.last_day) + 1))
    api_dir = layout.api_klines_dir(config["data_dir"], trade_type, symbol, interval)
    covered.update(existing_day_files(api_dir))
    first = min(covered)
    last = min(day_number(end_date), day_number(today) - 1)
    if not_trading(exchange_info_path, symbol):  # delisted: no REST day after its archive
        last = min(last, max(day_number(f.last_day) for f in files))
    todo = [d for d in range(first, last + 1) if d not in covered]
    return len(todo), plan_weight(trade_type, interval, todo)[1]


def count_dataset(config, trade_type, dataset, index, index_path, end_date, today, out):
    from crypto_lakehouse.archive.selection import parse_day, select
    from crypto_lakehouse.archive.sync import (
        CHECKSUM_SUFFIX,
        VERIFIED_SUFFIX,
        LocalFiles,
        keys_not_fetched_again,
        symbol_dirs,
        zip_keys_in,
    )
    from crypto_lakehouse.rest.exchange_info import knows_symbols

    data_dir = config["data_dir"]
    entry = datasets.get(dataset)
    kind = entry.name
    use_monthly = bool(config["download"]["use_monthly_klines"]) and entry.monthly_optional
    start, _ = workflow_plan.resolve_dates(
        config["start_date"], config["end_date"], config["lookback_days"]
    )
    # As the download jobs: only an explicit end date limits the files (get_download_args).
    start_day, end_day = parse_day(start), parse_day(config["end_date"])
    details_dir = layout.listing_details_dir(index_path)
    out.kept = len(index["symbols"])
    out.filtered = list(index.get("filtered_out", []))
    out.refused = list(index.get("refused", []))
    out.not_listed = list(index.get("not_listed", []))
    out.no_files = list(index.get("no_files", []))
    # The last run's exchangeInfo summary: which symbols no longer trade (none: every symbol
    # counts to the end date). With `symbols: all` most of a universe's symbols are
    # delisted, each of them years of days that api_download never asks for.
    exchange_info = layout.exchange_info_path(config["run_dir"], trade_type)
    exchange_info = exchange_info if knows_symbols(exchange_info) else None
    out.exchange_info = exchange_info if entry is datasets.KLINES else None
    fetching: list[str] = []  # klines symbols with REST days to fetch
    for symbol in sorted(index["symbols"]):
        try:
            details = io.read_json(details_dir / f"{symbol}.json", default=[]) or []
        except ValueError as exc:
            raise UnusableListing(f"{details_dir / symbol}.json: {exc}") from exc
        listing = {e["key"]: e for e in details}
        dirs = symbol_dirs(trade_type, kind, symbol, config["interval"], use_monthly)
        selection = select(zip_keys_in(listing, dirs), start_day, end_day, use_monthly=use_monthly)
        # One listing per archive folder of the symbol, as the download job's own
        # (sync.LocalFiles): asking each zip's marker and size cost two stat calls per
        # archive file of the history, two S3 HEAD requests each on an s3:// data dir.
        local = LocalFiles(data_dir, dirs) if selection.files else None
        quarantined = None  # read for the first file not present only
        for f in selection.files:
            size = int(listing[f.key]["size"])
            both = size + int(listing.get(f.key + CHECKSUM_SUFFIX, {}).get("size", 0))
            if local.has(f.key + VERIFIED_SUFFIX) and local.size(f.key) == size:
                out.files_present += 1
                out.bytes_present += both
                continue
            if quarantined is None:
                every_period = symbol_dirs(trade_type, kind, symbol, config["interval"], True)
                quarantined = keys_not_fetched_again(
                    data_dir, trade_type, entry.tag(config["interval"]), symbol, listing,
                    every_period,
                )  # fmt: skip
            if f.key in quarantined:  # the download job does not fetch it again
                out.files_quarantined += 1
            else:
                out.files_to_download += 1
                out.bytes_to_download += both
        if entry is datasets.KLINES:
            days, weight = _rest_days(
                config, trade_type, symbol, selection.files, end_date, today, exchange_info
            )
            out.rest_days += days
            out.rest_weight += weight
            if days:
                fetching.append(symbol)
    if fetching:
        # Each REST shard job asks the server time once before its first day
        # (RestClient.start_time_ms): a weight the klines requests alone left out.
        from crypto_lakehouse.rest import SERVER_TIME_WEIGHT
        from crypto_lakehouse.shards import shard_of

        count = rest_shard_count(config, index_path)
        out.rest_jobs = len({shard_of(s, count) for s in fetching})
        out.rest_weight += out.rest_jobs * SERVER_TIME_WEIGHT


def rest_shard_count(config, index_path) -> int:
    """The shard count the run gives the trade type's REST jobs (``shards``): a number as
    configured; "auto" from the kline listing and the jobs at once the last run pinned
    (``{run_dir}/plan/auto_parallel.json``; none: 1), as rules/common.smk ``shard_count``. A run
    with other --cores than the last one may shard differently."""
    if config["shards"] != "auto":
        return int(config["shards"])
    parallel = workflow_plan.auto_parallel(
        layout.auto_parallel_path(config["run_dir"]),
        cores=None,
        trade_types=len(config["trade_types"]),
        main_process=False,
        write=False,
    )
    return workflow_plan.auto_shard_count(index_path, parallel=parallel)


def funding_rest_symbols(kline_index: dict, funding_index: dict | None) -> int:
    """Q5: funding is fetched for every futures symbol with klines or archived funding."""
    return len(set(kline_index["symbols"]) | set((funding_index or {}).get("symbols", {})))


# ---------------------------------------------------------------- rates
def measured_rates(config, trade_type) -> dict:
    """Rates to estimate with, and where each comes from."""
    from crypto_lakehouse.rest import DEFAULT_WEIGHT_LIMIT

    run_dir = config["run_dir"]
    rates = {
        "download_mb_s": DEFAULT_DOWNLOAD_MB_S,
        "download_files_s": DEFAULT_DOWNLOAD_FILES_S,
        "download_source": "conservative defaults",
    }
    summary = _record(layout.run_summary_path(run_dir, "aws_download", trade_type))
    if summary and summary.get("throughput_mb_s") and summary.get("throughput_files_s"):
        rates["download_mb_s"] = float(summary["throughput_mb_s"])
        rates["download_files_s"] = float(summary["throughput_files_s"])
        rates["download_source"] = "the last aws_download run summary"
    share = float(config["rest"]["weight_share"])
    ceiling = DEFAULT_WEIGHT_LIMIT[trade_type] * share / 60.0  # weight per second
    rates["rest_weight_s"] = ceiling
    rates["rest_source"] = f"the weight limit ({DEFAULT_WEIGHT_LIMIT[trade_type]}/min × {share})"
    summary = _record(layout.run_summary_path(run_dir, "api_download", trade_type))
    totals = (summary or {}).get("totals", {})
    if totals.get("weight") and totals.get("seconds"):
        measured = totals["weight"] / totals["seconds"]
        if measured < ceiling:
            rates["rest_weight_s"] = measured
            rates["rest_source"] = "the last api_download run summary"
    return rates


def estimate(out: DatasetPlan, rates: dict) -> None:
    out.rates = rates
    if out.files_to_download:
        # Each zip travels with its CHECKSUM: two files per archive.
        by_bytes = out.bytes_to_download / 1e6 / rates["download_mb_s"]
        by_files = 2 * out.files_to_download / rates["download_files_s"]
        out.download_seconds = round(max(by_bytes, by_files), 1)
    if out.rest_weight:
        out.rest_seconds = round(out.rest_weight / rates["rest_weight_s"], 1)


# ---------------------------------------------------------------- the plan
def make_plan(config: dict, today: dt.date | None = None) -> dict:
    today = today or workflow_plan.today_utc()
    start, end = workflow_plan.resolve_dates(
        config["start_date"], config["end_date"], config["lookback_days"], today=today
    )
    plans: list[DatasetPlan] = []
    listed = [(t, d) for t in config["trade_types"] for d in _datasets(config, t)]
    monthly_only = workflow_plan.monthly_files_only(d for _, d in listed)
    # A fixed end date the archive has not settled for is listed again by the run each
    # morning (plan.listing_recheck): a cached index may lack the days published since.
    unsettled = workflow_plan.listing_recheck(config["end_date"], end, monthly_only, today)
    for trade_type in config["trade_types"]:
        rates = measured_rates(config, trade_type)
        indexes = {}
        for dataset in _datasets(config, trade_type):
            index, path, origin = obtain_index(
                config, trade_type, dataset, end, reuse=unsettled is None
            )
            if unsettled is not None:
                origin += (
                    f"; not reused: the archive may still publish files up to end_date {end} "
                    "(a run lists it again each morning until then)"
                )
            out = DatasetPlan(trade_type, dataset, origin)
            try:
                count_dataset(config, trade_type, dataset, index, path, end, today, out)
            except UnusableListing as why:  # a cached one, with a damaged details file
                index, path, origin = obtain_index(config, trade_type, dataset, end, reuse=False)
                out = DatasetPlan(trade_type, dataset, f"{origin}; the cached one: {why}")
                count_dataset(config, trade_type, dataset, index, path, end, today, out)
            indexes[dataset] = index
            if dataset == datasets.FUNDING.name:
                kline_index = indexes[f"klines-{config['interval']}"]
                out.rest_symbols = funding_rest_symbols(kline_index, index)
            estimate(out, rates)
            plans.append(out)
    return {
        "data_dir": config["data_dir"],
        "interval": config["interval"],
        "start_date": start,
        "end_date": end,
        "lookback_days": config["lookback_days"] if config["start_date"] is None else None,
        "datasets": [asdict(p) for p in plans],
        "download_seconds": round(sum(p.download_seconds for p in plans), 1),
        "rest_seconds": round(sum(p.rest_seconds for p in plans), 1),
    }


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def _reasons(records: list[dict], limit: int = 8) -> str:
    shown = [f"{r['name']} ({r['reason']})" for r in records[:limit]]
    more = f", … {len(records) - limit} more" if len(records) > limit else ""
    return ", ".join(shown) + more


def format_plan(plan: dict) -> str:
    since = plan["start_date"] or "the first archived day"
    lines = [f"Plan for {plan['data_dir']}: klines {plan['interval']} from {since} to "
             f"{plan['end_date']}"]  # fmt: skip
    if plan["lookback_days"]:
        lines[0] += f" (lookback_days: {plan['lookback_days']})"
    for d in plan["datasets"]:
        lines.append(f"{d['trade_type']} {d['dataset']}: listing {d['listing']}")
        symbols = f"  symbols: {d['kept']} kept, {len(d['filtered'])} filtered"
        if d["filtered"]:
            symbols += f": {_reasons(d['filtered'])}"
        lines.append(symbols)
        if d["refused"]:
            lines.append(f"  refused names: {_reasons(d['refused'])}")
        if d["not_listed"]:
            lines.append(f"  configured but not in the archive: {', '.join(d['not_listed'])}")
        if d["no_files"]:
            lines.append(f"  listed without files: {', '.join(d['no_files'])}")
        archive = (
            f"  archive: {d['files_to_download']} files, {_mb(d['bytes_to_download'])} to "
            f"download; {d['files_present']} files, {_mb(d['bytes_present'])} present (verified)"
        )
        if d["files_quarantined"]:
            archive += (
                f"; {d['files_quarantined']} quarantined, not fetched again until the archive "
                "publishes them again"
            )
        lines.append(archive)
        if d["dataset"] == datasets.FUNDING.name:
            lines.append(
                f"  REST: funding history of {d['rest_symbols']} symbol(s), each from its last "
                "stored rate (a request or more per symbol, not in the estimate)"
            )
        elif datasets.get(d["dataset"]) is datasets.KLINES:
            days = f"{d['rest_days']} day{'' if d['rest_days'] == 1 else 's'}"
            rest = f"  REST: {days} to fetch (weight {d['rest_weight']}"
            if d.get("rest_jobs"):
                jobs = d["rest_jobs"]
                rest += f", with the server time of {jobs} job{'' if jobs == 1 else 's'}"
            rest += ")"
            if d["rest_days"] and not d.get("exchange_info"):
                rest += (
                    "; no exchangeInfo summary from a run yet: a symbol delisted after its last "
                    "archived day counts up to the end date, which api_download does not fetch"
                )
            lines.append(rest)
        r = d["rates"]
        parts = []
        if d["files_to_download"]:
            parts.append(
                f"download {_duration(d['download_seconds'])} at {r['download_mb_s']:.1f} MB/s, "
                f"{r['download_files_s']:.0f} files/s ({r['download_source']})"
            )
        if d["rest_weight"]:
            parts.append(
                f"REST {_duration(d['rest_seconds'])} at {r['rest_weight_s'] * 60:.0f} "
                f"weight/min ({r['rest_source']})"
            )
        funding_asked = d["dataset"] == datasets.FUNDING.name and d["rest_symbols"]
        idle = "nothing to download" if funding_asked else "nothing to fetch"
        lines.append("  estimate: " + ("; ".join(parts) if parts else idle))
    lines.append(
        f"Total estimate: download {_duration(plan['download_seconds'])}, REST "
        f"{_duration(plan['rest_seconds'])} (one job at a time; parallel jobs are faster)"
    )
    return "\n".join(lines)


def main(args) -> int:
    """``crypto_lakehouse plan`` (arguments parsed by ``crypto_lakehouse.cli``)."""
    import logging

    from snakemake.exceptions import WorkflowError

    from crypto_lakehouse.archive.listing import ListingError
    from crypto_lakehouse.cli import problem_line

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.configfile, args.config or (), args.directory)
    except (workflow_plan.ConfigError, WorkflowError, OSError, ValueError) as exc:
        # A schema error's text goes on with the whole schema: its first paragraph says it.
        print(problem_line("plan", str(exc).split(chr(10) * 2)[0]), file=sys.stderr)
        return 1
    storage.configure(config["storage"])  # an s3:// data dir's endpoint
    try:
        plan = make_plan(config)
    except ListingError as exc:
        url = config["endpoints"]["listing"]
        message = f"listing {url} (config key endpoints.listing) failed: {exc}"
        print(problem_line("plan", message), file=sys.stderr)
        return 1
    except OSError as exc:  # the data dir or run dir cannot be read or written (S3 included)
        problem = workflow_plan.unusable_folder(exc, config["data_dir"], config["run_dir"])
        print(problem_line("plan", problem), file=sys.stderr)
        return 1
    capped = workflow_plan.end_date_notice(config["end_date"], plan["end_date"])
    if capped:  # an end_date after today: the plan goes up to today (as a run does)
        print(capped, file=sys.stderr)
    print(json.dumps(plan, indent=1) if args.json else format_plan(plan))
    return 0
