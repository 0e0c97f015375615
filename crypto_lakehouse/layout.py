"""The on-disk data layout: legacy BHDS paths plus the pipeline's own bookkeeping.

Everything that builds a path below ``data_dir`` lives here so that the rules, the scripts
and the tests agree on one layout. Legacy paths (``aws_data``, ``parsed_data``, ``api_data``,
``results_data``) are byte-for-byte the BHDS V1 layout; the pipeline's own records live under
``lakehouse/`` so that legacy readers globbing the legacy folders never see them.
"""

from __future__ import annotations

import contextlib
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from crypto_lakehouse import datasets, io, storage

TRADE_TYPES = datasets.ALL_MARKETS  # ("spot", "um_futures", "cm_futures")
FUTURES_TRADE_TYPES = datasets.FUTURES_MARKETS

# Archive key prefix of each trade type (binance-facts §1.1).
MARKET_PREFIX = {
    "spot": "data/spot",
    "um_futures": "data/futures/um",
    "cm_futures": "data/futures/cm",
}

# Symbol names become path components: anything else is refused (issue 2, §4).
SYMBOL_RE = re.compile(r"^[A-Z0-9_]+$")


def is_valid_symbol(name: str) -> bool:
    return bool(SYMBOL_RE.match(name))


# ---------------------------------------------------------------- archive keys
# Sidecars next to an archive zip: the published digest and our own "verified" marker.
CHECKSUM_SUFFIX = ".CHECKSUM"
VERIFIED_SUFFIX = ".verified"


def checksum_key(zip_key: str) -> str:
    return zip_key + CHECKSUM_SUFFIX


def verified_marker(zip_path: str | Path) -> Path:
    """The local marker saying ``zip_path`` matched its CHECKSUM."""
    zip_path = storage.data_path(zip_path)
    return zip_path.with_name(zip_path.name + VERIFIED_SUFFIX)


def archive_symbols_prefix(trade_type: str, dataset: str, period: str | None = None) -> str:
    """Bucket prefix whose sub-folders are the dataset's symbols (registry's listing period)."""
    entry = datasets.get(dataset)
    entry.check_market(trade_type)
    period = period or entry.listing_period
    return f"{MARKET_PREFIX[trade_type]}/{period}/{entry.archive_name}/"


def archive_dir_key(
    trade_type: str, dataset: str, symbol: str, interval: str | None = None, period: str = ""
) -> str:
    """Bucket prefix (with trailing slash) of one symbol's archives of one dataset/period."""
    entry = datasets.get(dataset)
    period = period or entry.listing_period
    base = f"{archive_symbols_prefix(trade_type, dataset, period)}{symbol}/"
    if entry.has_interval:
        if not interval:
            raise ValueError(f"dataset {entry.name!r} needs an interval")
        return f"{base}{interval}/"
    return base


def archive_dir_keys(
    trade_type: str, dataset: str, symbol: str, interval: str | None, use_monthly: bool
) -> list[str]:
    """Every folder one run reads for a symbol, finest period first."""
    entry = datasets.get(dataset)
    return [
        archive_dir_key(trade_type, dataset, symbol, interval, p)
        for p in entry.read_periods(use_monthly)
    ]


def archive_key(
    trade_type: str, dataset: str, symbol: str, interval: str | None, period: str, date: str
) -> str:
    """One zip's key; ``date`` is ``YYYY-MM-DD`` (daily) or ``YYYY-MM`` (monthly)."""
    dir_key = archive_dir_key(trade_type, dataset, symbol, interval, period)
    return f"{dir_key}{archive_stem_prefix(dataset, symbol, interval)}{date}.zip"


def archive_stem_prefix(dataset: str, symbol: str, interval: str | None = None) -> str:
    """What a zip's name starts with before its date: ``BTCUSDT-1m-``, ``BTCUSDT-fundingRate-``."""
    entry = datasets.get(dataset)
    return f"{symbol}-{interval if entry.has_interval else entry.archive_name}-"


def is_archive_key_of(
    key: str, trade_type: str, dataset: str, symbol: str, interval: str | None = None
) -> bool:
    """Whether ``key`` lies directly in one of the dataset's folders for this symbol."""
    folder = key.rpartition("/")[0] + "/"
    return folder in archive_dir_keys(trade_type, dataset, symbol, interval, True)


def kline_dir_key(trade_type: str, symbol: str, interval: str, period: str = "daily") -> str:
    """Bucket prefix (with trailing slash) of one symbol's kline archives."""
    return archive_dir_key(trade_type, datasets.KLINES.name, symbol, interval, period)


def kline_symbols_prefix(trade_type: str, period: str = "daily") -> str:
    return archive_symbols_prefix(trade_type, datasets.KLINES.name, period)


def funding_dir_key(trade_type: str, symbol: str) -> str:
    return archive_dir_key(trade_type, datasets.FUNDING.name, symbol)


def funding_symbols_prefix(trade_type: str) -> str:
    return archive_symbols_prefix(trade_type, datasets.FUNDING.name)


def daily_kline_key(trade_type: str, symbol: str, interval: str, day: str) -> str:
    """``day`` is ``YYYY-MM-DD``."""
    return archive_key(trade_type, datasets.KLINES.name, symbol, interval, datasets.DAILY, day)


def monthly_kline_key(trade_type: str, symbol: str, interval: str, month: str) -> str:
    """``month`` is ``YYYY-MM``."""
    return archive_key(trade_type, datasets.KLINES.name, symbol, interval, datasets.MONTHLY, month)


def funding_key(trade_type: str, symbol: str, month: str) -> str:
    return archive_key(trade_type, datasets.FUNDING.name, symbol, None, datasets.MONTHLY, month)


_DAY_RE, _MONTH_RE = r"\d{4}-\d{2}-\d{2}", r"\d{4}-\d{2}"
_ARCHIVE_DIR_RE = re.compile(r"^data/(?:spot|futures/um|futures/cm)/(daily|monthly)/([^/]+)/(.+)$")


def archive_name_re(dir_key: str, symbol: str) -> re.Pattern[str] | None:
    """The exact names a symbol's archive folder may hold (the zip and its CHECKSUM), from
    the folder's dataset and period (registry): ``{SYM}-{I}-{YYYY-MM-DD}.zip`` in daily
    klines, ``{SYM}-{I}-{YYYY-MM}`` in monthly klines, ``{SYM}-fundingRate-{YYYY-MM}`` in
    funding. None for a folder of no known dataset.
    """
    m = _ARCHIVE_DIR_RE.match(dir_key.rstrip("/"))
    if m is None:
        return None
    period, archive_name, rest = m.groups()
    entry = next((d for d in datasets.REGISTRY.values() if d.archive_name == archive_name), None)
    if entry is None or period not in entry.periods:
        return None
    parts = rest.split("/")
    if entry.has_interval:
        if len(parts) != 2 or parts[0] != symbol:
            return None
        middle = parts[1]
    else:
        if parts != [symbol]:
            return None
        middle = entry.archive_name
    date = _DAY_RE if period == datasets.DAILY else _MONTH_RE
    stem = rf"{re.escape(symbol)}-{re.escape(middle)}-(?P<date>{date})"
    return re.compile(rf"^{stem}\.zip(?:{re.escape(CHECKSUM_SUFFIX)})?$")


# ---------------------------------------------------------------- legacy data paths
# The data dir's layers: the archive's files, and the Parquet layers the stages derive.
ARCHIVE_LAYER = "aws_data"
PARQUET_LAYERS = ("parsed_data", "api_data", "results_data")
PARQUET_SUFFIX = ".pqt"  # the legacy extension of every Parquet file of those layers


def layer_dir(data_dir: str | Path, layer: str) -> Path:
    """One of ``ARCHIVE_LAYER`` and ``PARQUET_LAYERS`` below ``data_dir``."""
    if layer != ARCHIVE_LAYER and layer not in PARQUET_LAYERS:
        raise ValueError(f"unknown layer {layer!r}")
    return storage.data_path(data_dir) / layer


def aws_path(data_dir: str | Path, key: str) -> Path:
    return layer_dir(data_dir, ARCHIVE_LAYER) / key


def parsed_klines_dir(data_dir, trade_type, symbol, interval, dataset: str = "klines") -> Path:
    """Monthly partitions of a kline-layout dataset (klines, markPriceKlines, ...)."""
    name = datasets.get(dataset).name
    return storage.data_path(data_dir) / "parsed_data" / trade_type / name / symbol / interval


def parsed_funding_path(data_dir, trade_type, symbol) -> Path:
    return storage.data_path(data_dir) / "parsed_data" / trade_type / "funding" / f"{symbol}.pqt"


def parsed_day_path(data_dir, trade_type, dataset, symbol, day: str) -> Path:
    """Per-day partition of a tick dataset; ``day`` is ``YYYYMMDD``."""
    return (
        storage.data_path(data_dir) / "parsed_data" / trade_type / dataset / symbol / f"{day}.pqt"
    )


def parsed_root(data_dir, trade_type) -> Path:
    """``parsed_data/{T}``: the parent of the trade type's parsed dataset folders."""
    return storage.data_path(data_dir) / "parsed_data" / trade_type


def parsed_dataset_root(data_dir, trade_type, dataset) -> Path:
    """``parsed_data/{T}/{dataset}``: the parent of a parsed dataset's symbol folders."""
    return parsed_root(data_dir, trade_type) / datasets.get(dataset).name


def parsed_day_dir(data_dir, trade_type, dataset, symbol) -> Path:
    """The folder of one symbol's ``parsed_day_path`` files."""
    return parsed_day_path(data_dir, trade_type, dataset, symbol, "0").parent


# Names of the parsed partitions: a tick day ``YYYYMMDD.pqt``, a kline month ``YYYYMM.pqt``.
_PARTITION_NAME_RE = {"day": re.compile(r"^(\d{8})\.pqt$"), "month": re.compile(r"^(\d{6})\.pqt$")}


def parse_partition_name(name: str, partition: str) -> str | None:
    """``20240301.pqt`` → ``"20240301"`` (``partition`` ``day``), ``202403.pqt`` →
    ``"202403"`` (``month``); None for anything else (temporary or foreign files)."""
    m = _PARTITION_NAME_RE[partition].match(name)
    return m.group(1) if m else None


def agg_klines_day_path(data_dir, trade_type, symbol, interval, day: str) -> Path:
    """Candles built from a day of aggTrades (target ``agg_klines``); ``day`` is ``YYYYMMDD``."""
    return agg_klines_root(data_dir, trade_type) / symbol / interval / f"{day}.pqt"


def agg_klines_root(data_dir, trade_type) -> Path:
    """``parsed_data/{T}/agg_klines``: the parent of the symbols' ``agg_klines_day_path``
    folders (every interval's)."""
    return parsed_root(data_dir, trade_type) / "agg_klines"


def api_klines_dir(data_dir, trade_type, symbol, interval) -> Path:
    return storage.data_path(data_dir) / "api_data" / trade_type / "klines" / symbol / interval


def api_klines_root(data_dir, trade_type) -> Path:
    """Parent of the per-symbol folders of ``api_klines_dir``."""
    return storage.data_path(data_dir) / "api_data" / trade_type / "klines"


def api_funding_path(data_dir, trade_type, symbol) -> Path:
    return storage.data_path(data_dir) / "api_data" / trade_type / "funding_rate" / f"{symbol}.pqt"


def results_klines_dir(data_dir, trade_type, interval) -> Path:
    return storage.data_path(data_dir) / "results_data" / trade_type / "klines" / interval


def resampled_dir(data_dir, trade_type, resample_interval, offset) -> Path:
    return resampled_root(data_dir, trade_type) / resample_interval / offset


def results_klines_root(data_dir, trade_type) -> Path:
    """Parent of the per-interval folders of generated klines."""
    return storage.data_path(data_dir) / "results_data" / trade_type / "klines"


def resampled_root(data_dir, trade_type) -> Path:
    """Parent of the ``{RI}/{OFFSET}`` folders of resampled klines."""
    return storage.data_path(data_dir) / "results_data" / trade_type / "resampled_klines"


def parsed_funding_dir(data_dir, trade_type) -> Path:
    return parsed_funding_path(data_dir, trade_type, "_").parent


def api_funding_dir(data_dir, trade_type) -> Path:
    return api_funding_path(data_dir, trade_type, "_").parent


# ---------------------------------------------------------------- segment files
# gen_kline splits a symbol at gaps (legacy §8.4): ``SP0_SYM.pqt``, ``SP1_SYM.pqt``, … are the
# older segments and plain ``SYM.pqt`` the latest. Resampled files keep the same names.
SEGMENT_SUFFIX = PARQUET_SUFFIX
_SEGMENT_NAME_RE = re.compile(r"^(?:SP(\d+)_)?([A-Z0-9_]+)\.pqt$")


def segment_file_re(symbol: str) -> re.Pattern[str]:
    """Exactly this symbol's segment names: ``SP0_BTCUSDT.pqt`` never matches ``XBTCUSDT``."""
    return re.compile(rf"^(?:SP\d+_)?{re.escape(symbol)}{re.escape(SEGMENT_SUFFIX)}$")


def parse_segment_name(name: str) -> tuple[str, int | None] | None:
    """``SP3_BTCUSDT.pqt`` → ``("BTCUSDT", 3)``, ``BTCUSDT.pqt`` → ``("BTCUSDT", None)`` (the
    latest segment), anything else → None (temporary files, foreign files)."""
    m = _SEGMENT_NAME_RE.match(name)
    if not m:
        return None
    return m.group(2), (int(m.group(1)) if m.group(1) is not None else None)


def _files_in(directory) -> list:
    """The files directly in ``directory`` (any store; none when it is absent)."""
    return storage.list_files(directory, recursive=False)


def segment_files(directory: str | Path, symbol: str) -> list[Path]:
    """One symbol's segment files in ``directory`` in time order: ``SP0_``, ``SP1_``, …
    (numerically: ``SP10_`` after ``SP9_``), then the latest segment ``SYM.pqt``. Only the
    names that start with the symbol or ``SP`` are listed (the folder holds every symbol's
    files: listing it whole grows with the universe)."""
    pattern = segment_file_re(symbol)
    found = [p for p in storage.files_named(directory, (symbol, "SP")) if pattern.match(p.name)]

    def order(path: Path) -> float:
        sp = parse_segment_name(path.name)[1]
        return float("inf") if sp is None else sp

    return sorted(found, key=order)


def segment_files_by_symbol(directory: str | Path) -> dict[str, list[Path]]:
    """Every symbol's segment files in ``directory``, in time order (one directory scan)."""
    found: dict[str, list[tuple[float, Path]]] = {}
    for path in _files_in(directory):
        parsed = parse_segment_name(path.name)
        if parsed is not None:
            symbol, sp = parsed
            found.setdefault(symbol, []).append((float("inf") if sp is None else sp, path))
    return {s: [p for _, p in sorted(found[s])] for s in sorted(found)}


def segment_symbols(directory: str | Path) -> list[str]:
    """The symbols that have segment files in ``directory`` (sorted)."""
    names = (parse_segment_name(p.name) for p in _files_in(directory))
    return sorted({n[0] for n in names if n is not None})


def subdir_names(directory: str | Path) -> list[str]:
    """Sorted names of the sub-folders (intervals, offsets, ...) of ``directory`` (on S3:
    the prefixes that hold objects)."""
    return sorted(d.name for d in storage.subdirs(directory) if not d.name.startswith("."))


def derived_roots(data_dir) -> list[Path]:
    """The folders every run writes Parquet/JSON into (all but ``aws_data``, which holds the
    archives: millions of files, swept per symbol by its download job)."""
    return [layer_dir(data_dir, layer) for layer in PARQUET_LAYERS] + [lakehouse_dir(data_dir)]


def features_dir(data_dir, trade_type, interval) -> Path:
    """Features of the generated klines: one file per ``results_klines_dir`` file, same name."""
    return features_root(data_dir, trade_type) / interval


def resampled_features_dir(data_dir, trade_type, resample_interval, offset) -> Path:
    """Features of the resampled klines: one file per ``resampled_dir`` file, same name."""
    return resampled_features_root(data_dir, trade_type) / resample_interval / offset


def features_root(data_dir, trade_type) -> Path:
    """Parent of the per-interval folders of ``features_dir``."""
    return storage.data_path(data_dir) / "results_data" / trade_type / "features"


def resampled_features_root(data_dir, trade_type) -> Path:
    """Parent of the ``{RI}/{OFFSET}`` folders of ``resampled_features_dir``."""
    return storage.data_path(data_dir) / "results_data" / trade_type / "resampled_features"


# ---------------------------------------------------------------- pipeline records
def relative_path(data_dir, path) -> str:
    """``path`` (below ``data_dir``, local or S3) as the data dir's records and messages name
    it: relative, ``/``-separated."""
    root = str(storage.data_path(data_dir)).rstrip("/")
    return str(path)[len(root) :].lstrip("/")


def lakehouse_dir(data_dir) -> Path:
    return storage.data_path(data_dir) / "lakehouse"


def listing_details_dir(index_path: str | Path) -> Path:
    index_path = storage.data_path(index_path)
    return index_path.with_name(index_path.stem)


def listing_index_of_details(details_path: str | Path) -> Path:
    """The listing index beside the folder holding a symbol's details file."""
    folder = storage.data_path(details_path).parent
    return folder.with_name(f"{folder.name}.json")


def quarantine_path(data_dir, key: str) -> Path:
    """Where a permanently defective archive file (and its CHECKSUM) is moved."""
    return quarantine_dir(data_dir) / key


def state_path(data_dir, stage: str, trade_type: str, dataset: str, symbol: str) -> Path:
    """Private per-symbol state a stage keeps between runs (never a Snakemake output,
    because Snakemake deletes outputs before it reruns a job)."""
    return lakehouse_dir(data_dir) / "state" / stage / trade_type / dataset / f"{symbol}.json"


def stale_features_root(data_dir, trade_type: str | None = None) -> Path:
    """The folder of the records of stale files the loaders warn about:
    ``{T}/{SYM}/klines-{I}.json`` below it (``stale_features_path``) and
    ``{T}/{SYM}/resampled_klines.json`` (``stale_resampled_path``); with ``trade_type``:
    ``{SYM}/…``. One folder per symbol for both kinds, so that a load or a DuckDB connection
    lists it once (the folder kept its first name, ``stale_features``: records of data dirs
    written before the resampled kind stay where the loaders look)."""
    root = lakehouse_dir(data_dir) / "stale_features"
    return root if trade_type is None else root / trade_type


def stale_features_dir(data_dir, trade_type: str, symbol: str) -> Path:
    """A symbol's ``stale_features_path`` records (one per base interval; usually none)."""
    return stale_features_root(data_dir, trade_type) / symbol


def stale_features_path(data_dir, trade_type: str, interval: str, symbol: str) -> Path:
    """The record of a symbol's feature files kept stale by its last features build at base
    ``interval`` (their rebuild failed; docs/features.md): present only while there are
    some. Public, unlike ``state_path``: the loaders read it (``loading``), one listing of
    ``stale_features_dir`` per load, whatever the base interval of a resampled file."""
    return stale_features_dir(data_dir, trade_type, symbol) / f"klines-{interval}.json"


# The name of a symbol's ``stale_resampled_path`` record in its ``stale_features_dir``.
STALE_RESAMPLED_NAME = "resampled_klines.json"


def stale_resampled_path(data_dir, trade_type: str, symbol: str) -> Path:
    """The record of a symbol's resampled files that its last resample run kept but the
    pipeline did not write (a legacy data dir's, at a target or offset the config does not
    list; ``resample.owned``): present only while there are some. The loaders read it
    (``load_klines`` with ``resample``, the DuckDB view ``resampled_klines``)."""
    return stale_features_dir(data_dir, trade_type, symbol) / STALE_RESAMPLED_NAME


def state_root(data_dir, stage: str) -> Path:
    """The folder of a stage's ``state_path`` files: ``{T}/{dataset}/{SYM}.json`` below it."""
    return lakehouse_dir(data_dir) / "state" / stage


def quality_path(data_dir, trade_type, interval, symbol, dataset: str = "klines") -> Path:
    """The day quality record of a symbol's klines (docs/quality.md), or of another
    kline-layout dataset (``markPriceKlines``, ...: one folder per dataset below the
    interval's, so that the klines' record, the report and the ``quality`` view, which read
    the interval's folder, never see it)."""
    folder = quality_dir(data_dir, trade_type, interval)
    if dataset != "klines":
        folder = folder / dataset
    return folder / f"{symbol}.pqt"


def provenance_path(data_dir, trade_type, interval, symbol) -> Path:
    return provenance_dir(data_dir, trade_type, interval) / f"{symbol}.pqt"


def quarantine_dir(data_dir) -> Path:
    return lakehouse_dir(data_dir) / "quarantine"


# The Parquet records kept per symbol below ``lakehouse/`` of the data dir (beside the data,
# on S3 too): written by aws_parse (quality) and api_download (the klines' day provenance),
# each rebuilt by its stage when missing, without rewriting the data files: the parse
# measures its partitions again, the REST fill writes the provenance at every run. A record
# folder deleted reruns its stage at the next start (data_presence); one symbol's record
# deleted is named by ``verify``, whose repair command reruns both stages.
PARQUET_RECORDS = ("provenance", "quality")


def parquet_record_dirs(data_dir) -> dict[str, Path]:
    """``{"lakehouse/provenance": folder, ...}``: ``PARQUET_RECORDS`` below ``data_dir``."""
    return {f"lakehouse/{name}": lakehouse_dir(data_dir) / name for name in PARQUET_RECORDS}


def provenance_dir(data_dir, trade_type, interval) -> Path:
    return lakehouse_dir(data_dir) / "provenance" / trade_type / interval


def quality_dir(data_dir, trade_type, interval) -> Path:
    return lakehouse_dir(data_dir) / "quality" / trade_type / interval


# ---------------------------------------------------------------- the run directory
# Snakemake's own files (per-symbol and shard reports, logs, benchmark tables, the listing,
# exchange_info, run summaries, the report target, the run lock) live in the run directory:
# always a local folder, because Snakemake stats, locks and deletes its outputs there. By
# default ``{data_dir}/lakehouse`` for a local data dir (the data records beside them), and
# ``lakehouse_runs/{bucket}/{prefix}`` below the working directory for an ``s3://`` one
# (config key ``run_dir``; docs/storage.md). These functions build them as plain strings so
# that the rules can pass wildcard placeholders (``"{trade_type}"``) straight through:
# Snakemake patterns must keep their braces.
S3_RUN_DIRS = "lakehouse_runs"


def default_run_dir(data_dir: str) -> str:
    """The run directory when the config leaves ``run_dir`` unset."""
    if storage.is_remote(data_dir):
        obj = storage.data_path(data_dir)
        return "/".join(p for p in (S3_RUN_DIRS, obj.bucket, obj.key.strip("/")) if p)
    return f"{data_dir}/lakehouse"


def run_dir(data_dir: str, configured: str | None = None) -> str:
    """The run directory of a config: ``run_dir`` (the caller expands ``~``, as for
    ``data_dir``) or the default. An ``s3://`` run directory is refused: Snakemake needs
    its own files on a local disk."""
    if configured is None:
        return default_run_dir(data_dir)
    if storage.is_remote(configured):
        raise ValueError(f"run_dir: {configured} is on S3; it must be a local folder")
    return configured.rstrip("/") or "/"


def config_checks_dir(run_dir: str) -> str:
    """Verdicts of config checks too costly to repeat at every Snakemake start (the
    ``features`` block: TA-Lib); one empty file per checked content."""
    return f"{run_dir}/config_checks"


def leftovers_record_path(run_dir: str, kind: str, trade_type: str) -> str:
    """The record that the last scan for leftovers of ``kind`` (``resample``, ``features``,
    ``interval``) of a trade type found none (crypto_lakehouse.leftovers.checked)."""
    return f"{run_dir}/leftovers/{kind}/{trade_type}.json"


def leftovers_report_path(run_dir: str, kind: str, trade_type: str) -> str:
    """Output of a ``remove_leftovers`` job: what it removed (each file also in its log);
    removed at planning when leftovers are found again, so that the job runs again."""
    return f"{run_dir}/leftovers/{kind}/{trade_type}.removed.json"


def auto_parallel_path(run_dir: str) -> str:
    """The jobs per trade type the main process planned ``shards: auto`` for
    (``plan.auto_parallel``), read by SLURM jobs re-planning on their nodes."""
    return f"{run_dir}/plan/auto_parallel.json"


def run_lock_path(run_dir: str) -> str:
    """The run lock (``crypto_lakehouse.lock``) of a run directory."""
    return f"{run_dir}/run.lock"


def jobs_lock_path(run_dir: str) -> str:
    """Held shared by every job process for its lifetime (``crypto_lakehouse.lock``): a job
    that outlives its run's main process keeps the next run out."""
    return f"{run_dir}/jobs.lock"


def data_identity_path(data_dir) -> Path:
    """The data dir's identity marker (``crypto_lakehouse.data_identity``): a random id
    written on the first run, which the run dir records."""
    return lakehouse_dir(data_dir) / "data_dir_id.json"


def run_identity_path(run_dir: str) -> str:
    """The run dir's copy of the identity of the data dir its records describe."""
    return f"{run_dir}/data_dir_id.json"


def rest_budget_dir(run_dir: str) -> str:
    """The folder of the REST hosts' shared rate-limit windows (``rest.limiter``)."""
    return f"{run_dir}/rest_budget"


def rest_budget_path(budget_dir: str, trade_type: str, pool: str) -> str:
    """The window of one rate-limit ``pool`` (``weight``; um: ``fundingRate``) of the trade
    type's API host, shared by the run's REST jobs on that host (``SharedWindowState``)."""
    return f"{budget_dir}/{trade_type}.{pool}.json"


def data_folders_record_path(run_dir: str) -> str:
    """The stages' data folders that held files when the last run that ran jobs ended
    (``crypto_lakehouse.data_presence``): one deleted by hand since is rebuilt."""
    return f"{run_dir}/data_folders.json"


def data_lease_path(data_dir) -> Path:
    """The lease object an S3 data dir's current run holds (``crypto_lakehouse.lock``)."""
    return lakehouse_dir(data_dir) / "run.lease.json"


def stage_report_dir(run_dir: str, stage: str, trade_type: str, dataset: str) -> str:
    """Directory of a stage's per-symbol reports (``{dir}/{symbol}.json``)."""
    return f"{run_dir}/reports/{stage}/{trade_type}/{dataset}"


def stage_report_path(run_dir: str, stage: str, trade_type: str, dataset: str, symbol: str) -> str:
    return f"{stage_report_dir(run_dir, stage, trade_type, dataset)}/{symbol}.json"


def shard_report_path(run_dir: str, stage: str, trade_type: str, dataset: str, shard: str) -> str:
    """Output of a shard job: each symbol's status and report path (docs/summaries.md)."""
    return f"{stage_report_dir(run_dir, stage, trade_type, dataset)}/shards/{shard}.json"


def is_shard_report(path: str | Path) -> bool:
    """Whether ``path`` is a shard job's report (``.../shards/N.json``), not a symbol's."""
    return Path(path).parent.name == "shards"


def api_shard_report_path(run_dir: str, trade_type: str, shard: str) -> str:
    """Output of a REST shard job (klines and funding of the shard's symbols)."""
    return f"{run_dir}/reports/api_download/{trade_type}/shards/{shard}.json"


def _reports_part(parts: list[str]) -> int:
    """Index of the last ``reports`` folder among a report path's parts (ValueError: none)."""
    return len(parts) - 1 - parts[::-1].index("reports")


def stats_path_for(report_path: str | Path) -> str:
    """A per-symbol report's run figures: ``…/reports/<stage>/…`` → ``…/stats/<stage>/…``."""
    parts = list(Path(report_path).parts)
    parts[_reports_part(parts)] = "stats"
    return str(Path(*parts))


def report_name(report_path: str | Path) -> str:
    """A report's path below its ``reports/`` folder, without ``.json``
    (``aws_download/spot/klines-1m/shards/0``); the path itself when it has no such folder."""
    parts = list(Path(report_path).with_suffix("").parts)
    if "reports" not in parts:
        return str(report_path)
    return "/".join(parts[_reports_part(parts) + 1 :])


def rerun_stamp_path(run_dir: str, rule: str, key: str) -> str:
    """A job's rerun stamp (rules/common.smk ``rerun_stamp``):
    ``{run_dir}/stamps/{rule}/{key}.json``."""
    return f"{run_dir}/stamps/{rule}/{key}.json"


def job_log_path(run_dir: str, *parts: str) -> str:
    """A rule's ``log:`` file: ``{run_dir}/logs/<parts…>.log``."""
    return f"{run_dir}/logs/{'/'.join(parts)}.log"


def run_dir_of_log(log_path: str) -> str:
    """The run directory of a ``job_log_path``: everything before its last ``/logs/``."""
    head, sep, _ = str(log_path).rpartition("/logs/")
    if not sep:
        raise ValueError(f"{log_path}: not a job log path ({{run_dir}}/logs/…)")
    return head


def job_benchmark_path(run_dir: str, *parts: str) -> str:
    """A rule's ``benchmark:`` table: its log path with ``logs`` → ``benchmarks``, ``.tsv``."""
    return f"{run_dir}/benchmarks/{'/'.join(parts)}.tsv"


def node_figures_path(log_path: str) -> str:
    """A job run on a node by ``crypto_lakehouse.remote`` (config ``cluster.launcher: srun``):
    the node's wall time, CPU time and peak memory, beside the job's Snakemake benchmark
    table (which measures only the launcher on the submit host): ``….node.json``."""
    head = run_dir_of_log(log_path)
    tail = str(log_path)[len(head) + len("/logs/") :]
    return f"{head}/benchmarks/{tail.removesuffix('.log')}.node.json"


def shard_log_path(run_dir: str, stage: str, trade_type: str, dataset: str, shard: str) -> str:
    return job_log_path(run_dir, stage, trade_type, dataset, "shards", shard)


def shard_benchmark_path(
    run_dir: str, stage: str, trade_type: str, dataset: str, shard: str
) -> str:
    return job_benchmark_path(run_dir, stage, trade_type, dataset, "shards", shard)


def run_listing_dir(run_dir: str, trade_type: str) -> str:
    """The ``list_archive`` checkpoint's indexes (and their details) of a trade type."""
    return f"{run_dir}/listing/{trade_type}"


def run_listing_details_dir(run_dir: str, trade_type: str, dataset: str) -> str:
    """Per-symbol file lists of the ``list_archive`` checkpoint (beside its index)."""
    return f"{run_listing_dir(run_dir, trade_type)}/{dataset}"


def run_listing_index_path(run_dir: str, trade_type: str, dataset: str) -> str:
    return f"{run_listing_details_dir(run_dir, trade_type, dataset)}.json"


def exchange_info_path(run_dir: str, trade_type: str) -> str:
    return f"{run_dir}/exchange_info/{trade_type}.json"


def run_summary_path(run_dir: str, stage: str, trade_type: str) -> str:
    return f"{run_summaries_dir(run_dir)}/{stage}/{trade_type}.json"


def shard_report_edits_lock_path(shard_report: str | Path) -> str | None:
    """The lock a job holds while it edits an upstream shard report
    (``shards._ask_rerun``): ``{run_dir}/reports.lock`` of the run directory the report is
    under; None for a path below no ``reports/`` folder."""
    parts = list(Path(shard_report).parts)
    if "reports" not in parts[:-1]:
        return None
    return str(Path(*parts[: _reports_part(parts)], "reports.lock"))


def summaries_reading(shard_report: str | Path) -> list[str]:
    """The run summaries that may read ``shard_report`` (``{run_dir}/reports/{stage}/{T}/…``):
    its stage's of its trade type, and the datasets' of its trade type."""
    parts = list(Path(shard_report).parts)
    if "reports" not in parts[:-3]:
        return []  # not below a run directory's reports
    at = _reports_part(parts)
    run_dir, (stage, trade_type) = str(Path(*parts[:at])), parts[at + 1 : at + 3]
    return list(
        dict.fromkeys(run_summary_path(run_dir, s, trade_type) for s in (stage, "datasets"))
    )


def run_summaries_dir(run_dir: str) -> str:
    return f"{run_dir}/summaries"


def run_benchmarks_dir(run_dir: str) -> str:
    """Snakemake ``benchmark:`` files: a rule's ``log:`` path with ``logs`` → ``benchmarks``
    and ``.log`` → ``.tsv``."""
    return f"{run_dir}/benchmarks"


def plan_listing_index_path(run_dir: str, trade_type: str, dataset: str) -> str:
    """A listing index written by ``crypto_lakehouse plan`` (never read by the workflow)."""
    return f"{run_dir}/plan/listing/{trade_type}/{dataset}.json"


def run_report_path(run_dir: str, name: str) -> str:
    """A file or folder of the ``report`` target (``index.html``, ``coverage.parquet``,
    ``figures``)."""
    return f"{run_dir}/report/{name}"


# ------------------------------------------------------------------ one scan per job
@dataclass
class _Scan:
    """Names in one output folder when a shard job first cleaned up in it, by symbol: its
    segment files and the temporary files of its names."""

    files: dict[str, list[str]]
    temps: dict[str, list[str]]


# The symbol a segment name is of (any characters: ``parse_segment_name`` knows the archive's
# usual ones only).
_NAMED_SYMBOL = re.compile(rf"^(?:SP\d+_)?(.+){re.escape(SEGMENT_SUFFIX)}$")
_SCANS: dict[str, _Scan | list] | None = None  # inside folders_scanned_once
_SCANS_LOCK = threading.Lock()
_SCANNING: dict[str, threading.Lock] = {}  # one scan of a key at a time (symbols at once)


@contextlib.contextmanager
def folders_scanned_once() -> Iterator[None]:
    """Within the block (one shard job's symbols), the stale-file clean-up scans each
    output folder once, not once per symbol: the folders hold every symbol's files, so a
    scan per symbol made a daily update of N symbols cost N² (locally 0.7 ms per folder
    of 2,000 symbols' files, ~28 folders per symbol). On S3, where a listing of the whole
    folder pages through every symbol's files (1.5 s for 2,000 on the SeaweedFS of the
    benchmarks), the ``SP`` files of every symbol are listed once per job and each
    symbol's own names by their prefix, as outside a job (``symbol_names``).

    A scan taken once holds what a later symbol of the job must look at: only this job
    writes its symbols' names (one shard per symbol and stage; the data-dir lock keeps
    other runs out), and what a symbol writes itself it keeps. The files other jobs write
    meanwhile are other symbols'."""
    global _SCANS
    outer = _SCANS
    if outer is None:
        _SCANS = {}
    try:
        yield
    finally:
        if outer is None:
            _SCANS = None
            _SCANNING.clear()


def _once(key: str, make):
    """``make()`` once per job and key (None outside ``folders_scanned_once``); threads
    asking for the same key meanwhile wait for the first one's answer."""
    scans = _SCANS
    if scans is None:
        return None
    with _SCANS_LOCK:
        lock = _SCANNING.setdefault(key, threading.Lock())
    with lock:
        if key not in scans:
            scans[key] = make()
        return scans[key]


def output_folders(root, depth: int) -> list:
    """``storage.subdirs(root, depth)``: the output folders a symbol's clean-up looks in,
    found once per job inside ``folders_scanned_once`` (a folder made later in the job holds
    only files written in the job, none of them stale)."""
    found = _once(f"folders\0{root}\0{depth}", lambda: storage.subdirs(root, depth=depth))
    return storage.subdirs(root, depth=depth) if found is None else list(found)


def symbols_with_record(data_dir, trade_type: str, name: str) -> set[str] | None:
    """The symbols whose ``stale_features_dir`` holds the record ``name`` (as
    ``STALE_RESAMPLED_NAME``), from one listing of the trade type's records per job
    (``folders_scanned_once``; None outside one: the caller asks about its symbol's file).
    Only a symbol's own job writes its record of a name, and each symbol asks once."""
    root = stale_features_root(data_dir, trade_type)
    return _once(
        f"records\0{root}\0{name}",
        lambda: {p.parent.name for p in storage.list_files(root) if p.name == name},
    )


def _by_symbol(names) -> _Scan:
    files: dict[str, list[str]] = {}
    temps: dict[str, list[str]] = {}
    for name in sorted(names):
        target = io.temp_target(name)
        named = _NAMED_SYMBOL.match(target if target is not None else name)
        if named is not None:  # the clean-up matches the symbol's pattern exactly
            (temps if target is not None else files).setdefault(named[1], []).append(name)
    return _Scan(files, temps)


def symbol_names(directory, symbol: str) -> tuple[list[str], list[str]] | None:
    """``(segment file names, temporary file names)`` that may be ``symbol``'s in
    ``directory`` from the job's scans (``folders_scanned_once``; None outside one). The
    caller matches each name with ``segment_file_re``."""
    if _SCANS is None:
        return None
    if storage.is_remote(directory):  # S3 holds no temporary files
        sp = _once(f"sp\0{directory}", lambda: _by_symbol(
            p.name for p in storage.files_named(directory, ("SP",))))  # fmt: skip
        own = [p.name for p in storage.files_named(directory, (symbol,))]
        return sorted({*sp.files.get(symbol, ()), *own}), []
    scan = _once(f"all\0{directory}", lambda: _by_symbol(storage.file_names(directory)))
    return list(scan.files.get(symbol, ())), list(scan.temps.get(symbol, ()))
