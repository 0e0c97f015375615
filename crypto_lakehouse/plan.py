"""Workflow-time helpers used by ``rules/common.smk``: dates, listing indexes, config checks.

They run while Snakemake builds the DAG, so they must be cheap: listing indexes are read
once per file and cached.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import os
import re
from pathlib import Path

from crypto_lakehouse import datasets

STAGES = ("aws_download", "aws_parse", "api_download", "gen_kline", "resample", "features")


class ConfigError(ValueError):
    """A configuration value that the schema cannot express; the message names the key."""


# "Today" of the workflow's planning, when set (YYYY-MM-DD): to replay a later or earlier
# morning (the tests' days after a first run; docs/config.md), never the jobs' clocks.
TODAY_VARIABLE = "CRYPTO_LAKEHOUSE_TODAY"


def today_utc() -> dt.date:
    """Today (UTC), or the day ``CRYPTO_LAKEHOUSE_TODAY`` names."""
    forced = os.environ.get(TODAY_VARIABLE)
    if forced:
        try:
            return dt.date.fromisoformat(forced)
        except ValueError:
            raise ConfigError(
                f"environment variable {TODAY_VARIABLE}: {forced!r} is not an ISO date (YYYY-MM-DD)"
            ) from None
    return dt.datetime.now(dt.timezone.utc).date()


# When a listing of the archive up to a fixed end date is final (binance-facts §6): daily
# files appear the next day; monthly ones (funding has no other) "before mid of the new
# month". Until then a run lists again once a day (``listing_recheck``).
DAILY_FILES_SETTLE_DAYS = 2
MONTHLY_FILES_SETTLE_DAY = 16


def listing_settles_on(end: str, monthly_only: bool) -> dt.date:
    """The first day on which a listing up to ``end`` (ISO) holds every file the archive
    will publish for it; ``monthly_only``: a listed dataset has monthly files only."""
    last = dt.date.fromisoformat(end)
    settled = last + dt.timedelta(days=DAILY_FILES_SETTLE_DAYS)
    if monthly_only:
        next_month = (last.replace(day=1) + dt.timedelta(days=32)).replace(day=1)
        settled = max(settled, next_month.replace(day=MONTHLY_FILES_SETTLE_DAY))
    return settled


def monthly_files_only(dataset_tags) -> bool:
    """Whether one of the listed datasets (names or tags: ``funding``, ``klines-1m``) has
    monthly archive files only (funding): its listing settles later (``listing_settles_on``)."""
    return any(datasets.get(t).periods == (datasets.MONTHLY,) for t in dataset_tags)


def listing_recheck(
    end_date: str | dt.date | None, end: str, monthly_only: bool, today: dt.date | None = None
) -> str | None:
    """Today's date (ISO) while a fixed ``end_date`` has not settled (``listing_settles_on``),
    else None. Part of the listing's rerun trigger: an unset end date, or one after today,
    moves with the days and relists daily anyway; a fixed one would list once, and a day
    the archive published after that listing was never fetched."""
    if parse_config_date("end_date", end_date) is None:
        return None
    today = today or today_utc()
    if end >= today.isoformat() or today >= listing_settles_on(end, monthly_only):
        return None
    return today.isoformat()


def parse_config_date(key: str, value: str | dt.date | None) -> dt.date | None:
    """A config date (ISO string, or the date YAML makes of an unquoted one) as a date."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):  # YAML `2025-01-20 00:00:00`
        if value.time() != dt.time(0):
            raise ConfigError(f"config key {key!r}: {value} has a time of day; give a UTC day")
        return value.date()
    if isinstance(value, dt.date):  # YAML reads an unquoted 2025-01-20 as a date
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError as exc:
        raise ConfigError(f"config key {key!r}: {value!r} is not an ISO date (YYYY-MM-DD)") from exc


def resolve_dates(
    start_date: str | dt.date | None,
    end_date: str | dt.date | None,
    lookback_days: int | None,
    today: dt.date | None = None,
) -> tuple[str | None, str]:
    """Return (start, end) as ISO strings; end is end_date capped at today (UTC; today
    when unset), start start_date, else the lookback window ending on end, else None (all
    history). Dates may be ISO strings or dates.

    A start_date after today is an error (no archive or candle exists for it yet); an
    end_date after today counts as today until that day comes (``end_date_notice``)."""
    today = today or today_utc()
    start = parse_config_date("start_date", start_date)
    end = parse_config_date("end_date", end_date)
    if start is not None and end is not None and start > end:
        raise ConfigError(f"config key 'start_date': {start} is after end_date {end}")
    if start is not None and start > today:
        raise ConfigError(
            f"config key 'start_date': {start} is after today ({today}, UTC): no data exists "
            "for it yet; give a day up to today"
        )
    end = today if end is None or end > today else end
    if start is None and lookback_days:
        start = end - dt.timedelta(days=int(lookback_days) - 1)
    return (start.isoformat() if start else None, end.isoformat())


def end_date_notice(end_date: str | dt.date | None, end: str) -> str | None:
    """The line a run starts with when its ``end_date`` is after today, so that
    ``resolve_dates`` gave today (``end``) instead: the run builds up to today."""
    wanted = parse_config_date("end_date", end_date)
    if wanted is None or wanted.isoformat() <= end:
        return None
    return (
        f"end_date {wanted} is after today ({end}, UTC): data up to today only; until "
        "that day each run goes up to its own day, as with end_date unset"
    )


def feature_config_key(features: dict) -> str:
    """What the verdict of ``features.spec.validate_feature_config`` depends on: the checked
    keys of the block, the installed TA-Lib, and the checking code (the modules ``spec`` and
    ``microstructure`` of crypto_lakehouse.features)."""
    from importlib.metadata import version

    from crypto_lakehouse.features import spec

    checked = {k: features.get(k) for k in ("indicators", "microstructure")}
    digest = hashlib.sha256(json.dumps(checked, sort_keys=True, default=repr).encode())
    digest.update(version("ta-lib").encode())
    source = Path(spec.__file__)
    for code in (source, source.with_name("microstructure.py")):
        digest.update(code.read_bytes())
    return digest.hexdigest()[:32]


def validate_feature_config_once(features: dict, verdicts_dir: str, remember: bool) -> None:
    """``features.spec.validate_feature_config`` unless this very block passed it before (a
    verdict file in ``verdicts_dir``, the run directory's ``config_checks/``; written when
    ``remember``).

    For the workflow's main process: the check imports TA-Lib, which imports pandas and
    polars to wrap its functions (~0.5 s of every Snakemake start, docs/benchmarks.md,
    issue 11, eleventh part); a block that passed once passes again. The features jobs
    check the block they are given at their start in any case.
    """
    from crypto_lakehouse import io
    from crypto_lakehouse.features import spec

    verdict = Path(verdicts_dir) / f"{feature_config_key(features)}.ok"
    if verdict.exists():
        return
    spec.validate_feature_config(features)
    if remember:
        io.write_text(verdict, "")


def config_error(problems: list[str]) -> ConfigError:
    """Every problem of a configuration in one error, one line each (the form of every
    config check: ``configuration.check_user_config`` and ``check_config``)."""
    return ConfigError("invalid configuration:\n  " + "\n  ".join(problems))


def check_config(
    config: dict, verdicts_dir: str | None = None, remember_verdicts: bool = True
) -> None:
    """Checks beyond the JSON schema; raises ConfigError naming the key, with every
    problem at once (one line each, ``config_error``).

    The ``features`` block is checked here while ``features.enabled``; otherwise only when
    a features job is planned (``check_feature_config``, from the workflow's features
    rules): a run without features does not import TA-Lib for it (~0.5 s).

    ``verdicts_dir``: skip the ``features`` check for a block that passed it before
    (``validate_feature_config_once``; its verdicts are written only when
    ``remember_verdicts``)."""
    from crypto_lakehouse.intervals import check_base_interval, check_interval_trade_types
    from crypto_lakehouse.layout import TRADE_TYPES

    problems = folder_problems(config)
    if problems:  # the features verdict would be written below the data dir
        verdicts_dir = None
    interval_problem = check_base_interval(config["interval"])
    if interval_problem:
        problems.append(interval_problem)
    else:  # the targets are checked against the base interval
        spot_only = check_interval_trade_types(
            config["interval"], config.get("trade_types", TRADE_TYPES)
        )
        problems += [spot_only] if spot_only else []
        problems += _resample_problems(config)
    if features_enabled(config):  # else when a features job is planned (check_feature_config)
        problems += _feature_problems(config, verdicts_dir, remember_verdicts)
    try:
        resolve_dates(config.get("start_date"), config.get("end_date"), config.get("lookback_days"))
    except ConfigError as exc:
        problems.append(str(exc))
    problems += cluster_problems(config)
    if problems:
        raise config_error(problems)


def folder_problems(config: dict) -> list[str]:
    """``data_dir`` and ``run_dir`` (local ones) that name a file, or a path below a file:
    the run failed with a NotADirectoryError traceback about ``lakehouse/config_checks``
    that named no config key."""
    from crypto_lakehouse import storage

    problems = []
    for key in ("data_dir", "run_dir"):
        value = config.get(key)
        if not value or storage.is_remote(str(value)):
            continue
        path = Path(os.path.expanduser(str(value)))
        existing = next((p for p in (path, *path.parents) if p.exists()), None)
        if existing is not None and not existing.is_dir():
            where = "is a file" if existing == path else f"is below {existing}, a file"
            problems.append(f"config key '{key}': {value} {where}, not a folder")
    return problems


def unusable_folder(exc: OSError, data_dir: str, run_dir: str) -> str:
    """The one-line error of a start-up write below ``data_dir`` or ``run_dir`` that failed
    (a folder that cannot be created or written: no permission, a read-only file system,
    ``/proc``; an S3 store that does not answer or refuses): the key and the cause. It was a
    traceback from the features verdict, the run lock or the S3 lease, naming no key."""
    from crypto_lakehouse import storage

    if storage.is_remote(data_dir) and isinstance(exc, storage.StorageError):
        return (
            f"invalid configuration:\n  config key 'data_dir': {data_dir} cannot be used: "
            f"{exc} (check the bucket, storage.endpoint_url (or AWS_ENDPOINT_URL_S3 / "
            "AWS_ENDPOINT_URL), storage.addressing_style and "
            "the credentials; docs/storage.md)"
        )
    path = str(exc.filename) if getattr(exc, "filename", None) else ""

    def on_the_way(folder) -> bool:  # the path is the folder, below it, or one of its parents
        folder = str(folder).rstrip("/")
        return bool(path) and (path == folder or f"{path}/".startswith(f"{folder}/")
                               or f"{folder}/".startswith(f"{path.rstrip('/')}/"))  # fmt: skip

    own_run_dir = run_dir and not str(run_dir).startswith(f"{data_dir.rstrip('/')}/")
    key = "run_dir" if own_run_dir and on_the_way(run_dir) else "data_dir"
    folder = run_dir if key == "run_dir" else data_dir
    cause = f"{exc.strerror}: {path}" if exc.strerror and path else str(exc)
    return f"invalid configuration:\n  config key {key!r}: {folder} cannot be used ({cause})"


def _resample_problems(config: dict) -> list[str]:
    """One line per resample target that does not suit the base interval, named by its
    index in the config's list (``resample.targets[2]``), every such target at once.

    Before 2026-12-06 the targets were checked per trade type and only the first bad one of
    each was named, as ``resample target #0`` of that trade type's targets: the third
    entry of the config read as #0, and the next bad one showed only once it was fixed."""
    targets = config.get("resample", {}).get("targets", [])
    try:
        from crypto_lakehouse.resample import validate_targets
    except ImportError:  # resample not installed: nothing to validate against
        return []
    base = config["interval"]
    problems = _aggregation_problems(config)
    # The targets of the trade types in use: another's are never read (rules/common.smk
    # RESAMPLE_TARGETS); `--config trade_types='[spot]' interval=1h` was refused for the
    # default um_futures and cm_futures targets.
    from crypto_lakehouse.layout import TRADE_TYPES

    in_use = set(config.get("trade_types", TRADE_TYPES))
    seen: dict[tuple[str, str], int] = {}
    for i, t in enumerate(targets):
        if t["trade_type"] not in in_use:
            continue
        what = f"{t['trade_type']} {t['interval']} at offset_step {t['offset_step']}"
        try:
            validate_targets(
                [{"interval": t["interval"], "offset_step": t["offset_step"]}], base_interval=base
            )
        except ValueError as exc:
            reason = re.sub(r"^resample target #\d+: ", "", str(exc))
            problems.append(
                f"config key 'resample.targets[{i}]' ({what}): {reason} (the targets must "
                f"suit interval: {base}; give resample.targets for it, or [] to skip resampling)"
            )
        first = seen.setdefault((t["trade_type"], t["interval"]), i)
        if first != i:
            problems.append(
                f"config key 'resample.targets[{i}]' ({what}): {t['trade_type']} has a "
                f"{t['interval']} target already (resample.targets[{first}]); one per interval"
            )
    return problems


def _aggregation_problems(config: dict) -> list[str]:
    """``resample.aggregations`` entries for a column of the generated klines (at the base
    interval): those keep their legacy rule. Before 2026-12-06 such an entry passed the
    start-up checks and failed every resample job, after the downloads, symbol by symbol."""
    from crypto_lakehouse.resample.targets import reserved_columns

    aggregations = config.get("resample", {}).get("aggregations") or {}
    reserved = reserved_columns(config["interval"])
    return [
        f"config key 'resample.aggregations.{column}': {column} is a column of the generated "
        "klines, which keeps its legacy aggregation; resample.aggregations is for columns "
        f"added to them (not {', '.join(reserved)})"
        for column in aggregations
        if column in reserved
    ]


def features_enabled(config: dict) -> bool:
    """``features.enabled``: the features stage is part of target ``all``."""
    return bool(config.get("features", {}).get("enabled", True))


def check_feature_config(
    config: dict, verdicts_dir: str | None = None, remember_verdicts: bool = True
) -> None:
    """The ``features`` check of ``check_config`` on its own, as a ConfigError: for the
    features target (or a features job) asked for with ``features.enabled: false``, which
    ``check_config`` leaves out."""
    problems = _feature_problems(config, verdicts_dir, remember_verdicts)
    if problems:
        raise config_error(problems)


def _feature_problems(config: dict, verdicts_dir: str | None, remember: bool) -> list[str]:
    """The ``features`` block resolved against TA-Lib (a block that fails would fail every
    features job), and TA-Lib's absence named."""
    from importlib.metadata import PackageNotFoundError

    features = config.get("features", {})
    from crypto_lakehouse.features import spec

    try:
        if verdicts_dir is None:
            spec.validate_feature_config(features)
        else:
            validate_feature_config_once(features, verdicts_dir, remember)
    except spec.FeatureConfigError as exc:
        return [f"config key {exc}"]
    except (ImportError, PackageNotFoundError) as exc:
        return [
            f"config key 'features': the features need TA-Lib, which cannot be imported here "
            f"({exc}); install it (pip install ta-lib, pinned in requirements.lock), or set "
            "features.enabled: false and do not ask for the features target (docs/features.md)"
        ]
    return []


def check_cluster(config: dict) -> None:
    """``cluster_problems`` as a ConfigError."""
    problems = cluster_problems(config)
    if problems:
        raise config_error(problems)


def cluster_problems(config: dict) -> list[str]:
    """``cluster.launcher: srun`` runs jobs on nodes that see nothing of this host's disk:
    the data must be in a bucket the nodes reach themselves."""
    from crypto_lakehouse import storage

    cluster = config.get("cluster") or {}
    data_dir = str(config.get("data_dir", ""))
    if cluster.get("launcher", "local") == "srun" and not storage.is_remote(data_dir):
        return [
            f"config key 'cluster.launcher': srun runs the CPU jobs on nodes that share no "
            f"file system with this host, so data_dir must be an s3:// bucket (it is "
            f"{data_dir!r}); with a shared file system use launcher: local and "
            "profiles/slurm (docs/cluster.md)"
        ]
    return []


def date_range_notice(config: dict, start: str | None, end: str) -> str | None:
    """The lines a run starts with about its dates: when lookback_days (not the user's
    start_date) chose the first day (a config with only end_date would otherwise silently
    get a short window), and when an end_date after today was capped (``end_date_notice``)."""
    lines = []
    if config.get("start_date") is None and config.get("lookback_days"):
        lines.append(
            f"klines from {start} to {end} (lookback_days: {config['lookback_days']}; "
            "set start_date or lookback_days: null for the whole history)"
        )
    capped = end_date_notice(config.get("end_date"), end)
    if capped:
        lines.append(capped)
    return "\n".join(lines) or None


# The trade types whose aggTrades the agg_klines target builds candles of.
AGG_KLINES_MARKETS = datasets.AGG_KLINES_MARKETS


def agg_klines_notice(config: dict) -> str | None:
    """The first-lines notice of ``agg_klines.intervals`` that build nothing: no trade type
    in use that agg_klines builds (spot, um_futures) lists aggTrades in ``datasets``. Such a
    config ran without a word, its candles never built."""
    intervals = (config.get("agg_klines") or {}).get("intervals") or []
    selected = config.get("datasets") or {}
    if not intervals or any(
        t in AGG_KLINES_MARKETS and "aggTrades" in (selected.get(t) or [])
        for t in config.get("trade_types", ())
    ):
        return None
    return (
        f"agg_klines: intervals {', '.join(map(str, intervals))} build nothing: no trade type "
        f"of trade_types that agg_klines builds ({', '.join(AGG_KLINES_MARKETS)}) lists "
        "aggTrades in datasets (config keys agg_klines.intervals, datasets, trade_types)"
    )


def resample_skipped_notice(
    trade_types: list[str], resampled: list[str], leftovers: dict[str, list[str]] | None = None
) -> str:
    """The first-lines notice for trade types without resample targets; ``leftovers``: those
    of them still holding resampled files of their symbols (resampled_leftovers)."""
    leftovers = {t: files for t, files in (leftovers or {}).items() if files}
    skipped = [t for t in trade_types if t not in resampled and t not in leftovers]
    lines = []
    if skipped:
        lines.append(
            f"resample: no resample.targets entry for {', '.join(skipped)}; "
            "the resample stage skips it"
        )
    for t, files in leftovers.items():
        lines.append(
            f"resample: no resample.targets entry for {t}; its resample stage removes the "
            f"{len(files)} resampled file(s) of its symbols left by earlier targets "
            f"(e.g. results_data/{t}/resampled_klines/{files[0]}), then skips it"
        )
    return "\n".join(lines)


def resampled_leftovers(data_dir, trade_type: str, symbols: list[str] | str) -> list[str]:
    """Resampled files (``results_data/{T}/resampled_klines/{RI}/{OFFSET}/``) of the
    configured ``symbols`` (a list, or "all": every symbol's), as paths relative to the
    trade type's resampled folder, that this pipeline wrote (``resample.owned``: a legacy
    data dir's own resampled files are not the pipeline's to remove). A trade type whose
    resample targets were all removed from the config keeps running its resample stage
    while it has any, so that each symbol's job removes them instead of leaving them stale."""
    from crypto_lakehouse import layout
    from crypto_lakehouse.leftovers import segment_files_below
    from crypto_lakehouse.resample.owned import owned_leftovers

    root = layout.resampled_root(data_dir, trade_type)
    return owned_leftovers(data_dir, trade_type, segment_files_below([root], root, symbols))


def last_listed_symbols(config: dict, trade_type: str, run_dir: str) -> list[str] | str:
    """The configured symbols of a trade type (symbol_selection); for "all", those of the
    last run's kline listing index when it can be read (a symbol the legacy filters now drop
    is not the pipeline's to clean up), else "all"."""
    from crypto_lakehouse import io, layout

    selection = symbol_selection(config, trade_type)
    if selection != "all":
        return selection
    path = layout.run_listing_index_path(run_dir, trade_type, f"klines-{config['interval']}")
    try:
        index = io.read_json(path)
    except (OSError, ValueError):
        return "all"
    if not isinstance(index, dict) or not isinstance(index.get("symbols"), dict):
        return "all"
    return sorted(index["symbols"])


def no_resample_targets_message(trade_types: list[str]) -> str:
    return (
        "nothing to resample: config key 'resample.targets' has no entry for the trade types "
        f"in use ({', '.join(trade_types)}); add one, e.g. "
        "{trade_type: spot, interval: 1h, offset_step: 5m}"
    )


def active_stages(config: dict) -> list[str]:
    """The stages of target ``all``: every stage, ``features`` only while enabled."""
    enabled = features_enabled(config)
    return [s for s in STAGES if s != "features" or enabled]


def symbol_selection(config: dict, trade_type: str) -> list[str] | str:
    """The configured symbols of a trade type: a sorted list, or "all"."""
    sel = config.get("symbols", {}).get(trade_type, "all")
    return "all" if sel == "all" else sorted(set(sel))


@functools.lru_cache(maxsize=64)
def _load_index(path: str, mtime_ns: int) -> dict:
    with open(path) as fh:
        return json.load(fh)


def load_index(path: str | Path) -> dict:
    """A listing index (see crypto_lakehouse.archive.listing), cached per file version."""
    path = str(path)
    return _load_index(path, os.stat(path).st_mtime_ns)


def unreadable_index(path: str | Path) -> str | None:
    """Why the listing index at ``path`` cannot be planned from (torn by a crash with
    ``storage.fsync: false``, zeroed by a disk fault); None when it reads, or is missing."""
    try:
        index = load_index(path)
    except FileNotFoundError:
        return None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        return f"{type(exc).__name__}: {exc}"
    if not isinstance(index, dict) or not isinstance(index.get("symbols"), dict):
        return "no symbols in it"
    return None


def repair_index(path: str | Path) -> str | None:
    """Mend a listing index that cannot be read (``unreadable_index``), at planning, before
    its checkpoint is asked for; returns what was done (None: nothing to mend).

    The listing keeps a copy of every complete index beside its details (``_index.state``,
    crypto_lakehouse.archive.listing): when the copy reads and is not a failed listing's
    record, the index is written again from it, with the copy's time (nothing downstream
    reruns for it). Otherwise the index is removed: a run that lists writes it again (one
    whose plan needs it, a daily update, or ``--forcerun list_archive``)."""
    problem = unreadable_index(path)
    if problem is None:
        return None
    from crypto_lakehouse import io, layout
    from crypto_lakehouse.archive.listing import resume_record_path

    copy = resume_record_path(layout.listing_details_dir(path))
    try:
        text = copy.read_bytes()
        saved = json.loads(text)
    except (OSError, ValueError):
        saved = None
    if (
        isinstance(saved, dict)
        and isinstance(saved.get("symbols"), dict)
        and not saved.get("failed")
        and "failed_at_unix" not in saved
    ):
        io.write_record(path, text)
        written = os.stat(copy)
        os.utime(path, ns=(written.st_atime_ns, written.st_mtime_ns))
        return f"listing index {path} was unreadable ({problem}): written again from {copy}"
    os.remove(path)
    return (
        f"listing index {path} is unreadable ({problem}) and has no usable copy: removed; "
        "the next run that lists writes it again (a daily update, or --forcerun list_archive)"
    )


def listed_symbols(index_path: str | Path) -> list[str]:
    return sorted(load_index(index_path)["symbols"])


def listed_symbol_set(index_path: str | Path) -> frozenset[str]:
    """The kept symbols as a set (membership tests in per-job input functions)."""
    return _symbol_set(str(index_path), os.stat(index_path).st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _symbol_set(path: str, mtime_ns: int) -> frozenset[str]:
    return frozenset(_load_index(path, mtime_ns)["symbols"])


def symbol_digest(index_path: str | Path, symbol: str) -> str:
    """Digest of one symbol's remote files: a download job reruns only when it changes."""
    return load_index(index_path)["symbols"][symbol]["digest"]


def shard_files(index_path: str | Path, symbols: list[str]) -> int:
    """How many files the listing holds for a shard's symbols (a symbol whose listing
    failed counts none): the priority of its download job, so that with more download jobs
    than ``archive_http`` slots the large ones start first and the small ones wait (the
    longest first: a large job left waiting would end the stage late on its own)."""
    entries = load_index(index_path)["symbols"]
    return sum(int(entries.get(s, {}).get("n_files", 0)) for s in symbols)


def listing_errors(index_path: str | Path, symbols: list[str]) -> dict[str, str]:
    """{symbol: error} of those ``symbols`` whose listing failed (``run_listing`` with
    keep_going records them in the index's ``failed``)."""
    failed = load_index(index_path).get("failed") or {}
    return {s: failed[s] for s in symbols if s in failed}


def failure_time(paths, end_date=None, *, replaced: bool = False) -> float | None:
    """The time of the latest failure recorded in these files (listing indexes, exchangeInfo
    summaries: ``failed_at_unix``), or unless ``replaced``, of the failure a complete file
    written for ``end_date`` followed (``after_failure``: ``{failed_at_unix, end_date}``);
    None when there is none (or no file yet).

    A value of the rerun trigger of the job that writes them: each run after a failed
    request asks again, and the value stays the same once the answer is complete, so the
    run after the recovery asks nothing; from the next end date on, the complete files no
    longer count. ``replaced=True``: the failure the job's next files will follow."""
    latest = None
    for path in paths:
        try:
            record = load_index(path)
        except (OSError, ValueError):
            continue
        if not isinstance(record, dict):
            continue
        at = record.get("failed_at_unix")
        after = record.get("after_failure")
        if at is None and not replaced and isinstance(after, dict):
            if end_date is not None and after.get("end_date") == str(end_date):
                at = after.get("failed_at_unix")
        if at is not None:
            latest = float(at) if latest is None else max(latest, float(at))
    return latest


def exchange_info_kept(paths: dict[str, str | Path], asked_for: dict) -> list[str]:
    """The trade types whose complete exchangeInfo summary the ``exchange_info`` job keeps
    instead of asking again (``paths``: each trade type's summary, read before the job
    replaces them). Only when the job reruns because a request failed: a summary holds a
    failure recorded with ``asked_for`` (the run's end date and job arguments) equal to this
    run's; every summary beside it was then answered for the same end date and arguments
    (the job writes them together, or kept them under the same condition), so only the
    failed trade types are asked again. A new end date, other arguments, or a failure
    recorded before failures named their ``asked_for`` ask every trade type."""
    records = {}
    for trade_type, path in paths.items():
        try:
            record = load_index(path)
        except (OSError, ValueError):
            continue
        if isinstance(record, dict):
            records[trade_type] = record
    if not any(r.get("error") and r.get("asked_for") == asked_for for r in records.values()):
        return []
    return sorted(t for t, r in records.items() if not r.get("error") and "request_weight" in r)


def after_failure(failed_at: float | None, end_date) -> dict | None:
    """The record a complete file keeps of the failed one it replaces (``failure_time``)."""
    if failed_at is None:
        return None
    return {"failed_at_unix": failed_at, "end_date": None if end_date is None else str(end_date)}


def index_shards(index_path: str | Path, shards: int) -> dict[int, list[str]]:
    """The kept symbols of a listing index grouped by shard (``shards.group_by_shard``)."""
    return _index_shards(str(index_path), os.stat(index_path).st_mtime_ns, shards)


@functools.lru_cache(maxsize=256)
def _index_shards(path: str, mtime_ns: int, shards: int) -> dict[int, list[str]]:
    from crypto_lakehouse.shards import group_by_shard

    return group_by_shard(_load_index(path, mtime_ns)["symbols"], shards)


def auto_parallel(
    pin_path: str, *, cores: int | None, trade_types: int, main_process: bool, write: bool
) -> int:
    """How many shard jobs of one trade type a run can run at once, for ``shards: auto``:
    ``cores // trade_types`` for a run whose jobs run on this host (``--cores`` at most its
    CPUs), else 1 (a cluster run: ``--jobs`` or a large ``--cores`` are jobs in flight, and
    the listing alone sizes the shards there).

    The main process computes it and, when ``write`` (a real run), pins it at ``pin_path``;
    any other Snakemake process of the run (a SLURM job re-planning on its node, where its
    cores are ``--cores all`` of that node) reads the pin instead, so that every process
    plans the same shards. No pin (a run of an older version): 1, what the main process then
    planned."""
    from crypto_lakehouse.io import read_json, write_json_if_changed

    if not main_process:
        try:
            return max(1, int(read_json(pin_path)["parallel"]))
        except (OSError, ValueError, KeyError, TypeError):
            return 1
    cpus = os.cpu_count() or 1
    parallel = 1
    if cores is not None and 0 < cores <= cpus:
        parallel = max(1, cores // max(1, trade_types))
    if write:
        pin = {"parallel": parallel, "cores": cores, "trade_types": trade_types}
        write_json_if_changed(pin_path, pin)
    return parallel


def auto_shard_count(index_path: str | Path, parallel: int = 1) -> int:
    """``shards: auto`` for a trade type: from the number of symbols its kline listing keeps
    and the jobs of the trade type a local run can run at once (``shards.auto_shard_count``)."""
    from crypto_lakehouse.shards import auto_shard_count as count_for

    return count_for(len(listed_symbol_set(index_path)), parallel=parallel)


def shard_digest(index_path: str | Path, symbols: list[str], end_date=None) -> str:
    """Digest of the listing digests of a shard's symbols: a download shard reruns only
    when one of its symbols' remote files changed (or the shard gained or lost a symbol).

    An explicit ``end_date`` before a symbol's last listed day (``last_day``) is part of
    it: the listing holds files past the end date, so moving the end date forward brings
    files into range that no listing change announces. An end date on or after that day
    selects every listed file whatever its value, so a daily end date that moves past the
    archive's newest day reruns nothing by itself."""
    import hashlib

    entries = load_index(index_path)["symbols"]
    end = str(end_date) if end_date not in (None, "") else None
    h = hashlib.sha256()
    for symbol in sorted(symbols):
        entry = entries[symbol]
        last_day = entry.get("last_day")
        cut = f":{end}" if end is not None and (last_day is None or end < last_day) else ""
        h.update(f"{symbol}:{entry['digest']}{cut}\n".encode())
    return h.hexdigest()


def print_summaries(
    run_dir: str | Path, started_unix: float | None = None, listings: list | None = None
) -> None:
    """Last lines of a successful run: where the run summaries are and their headlines.

    A summary whose reports were all written before ``started_unix`` (the run's start;
    ``reports_written_unix``, else the summary's own ``written_at_unix``) describes jobs of
    an earlier run: a stage and trade type this run had nothing to do in (no new archive
    file this morning) keeps them, and its headline says so with the time they were
    written. Unmarked, a morning whose archive had not published yesterday's zips printed
    ``aws_download/spot: ... files_downloaded=2``, the figures of the day before."""
    import datetime as _dt

    from crypto_lakehouse.io import read_json
    from crypto_lakehouse.layout import run_summaries_dir
    from crypto_lakehouse.summary import headline, legacy_kept, legacy_kept_sentence

    root = Path(run_summaries_dir(str(run_dir)))
    paths = sorted(root.glob("*/*.json"))
    if not paths:
        return
    print(f"crypto_lakehouse run summaries in {root}:")
    resampled = []  # the resample summaries: legacy files they kept (summary.legacy_kept)
    for path in paths:
        try:
            summary = read_json(path, default=None)
        except ValueError as exc:  # torn: the report job removes it (report.records)
            print(f"  {path}: unreadable ({type(exc).__name__}: {exc})")
            continue
        if isinstance(summary, dict) and path.parent.name == "resample":
            resampled.append(summary)
        if isinstance(summary, dict):
            line = headline(summary)
            written = summary.get("reports_written_unix", summary.get("written_at_unix"))
            if (
                started_unix is not None
                and isinstance(written, (int, float))
                and written < int(started_unix)
            ):
                when = _dt.datetime.fromtimestamp(written, _dt.timezone.utc)
                line += f" (not rerun: from an earlier run, {when:%Y-%m-%d %H:%M} UTC)"
            print(f"  {line}")
    for line in not_listed_lines(run_dir, listings):
        print(f"  {line}")
    legacy = legacy_kept_sentence(legacy_kept(resampled))
    if legacy:  # one line, not one per file: the reports list the files
        print(f"  resample: {legacy}")


NAMES_SHOWN = 10  # symbols named in one closing line; more are counted


def not_listed_lines(run_dir: str | Path, listings: list | None = None) -> list[str]:
    """One line per kline listing index (``listing/{T}/klines-{I}.json``; ``listings``: the
    run's own, else every one in the run directory) whose configured symbols the archive does
    not list: a misspelt symbol gave a successful run whose closing lines did not name it
    (only a WARNING in the listing job's log, and the report page). And one per index whose
    configured symbols the archive lists without a file at the interval (an interval the
    symbol has no archive of: ``1s`` for futures): the run built nothing for them and ended
    as a good one, its headlines saying ``0 symbols``; with ``symbols: all``, only when no
    listed symbol has a file at the interval."""
    lines = []
    paths = (
        sorted(Path(run_dir).glob("listing/*/*.json"))
        if listings is None
        else [Path(p) for p in listings]
    )
    for path in paths:
        try:
            index = load_index(path)
        except (OSError, ValueError):
            continue  # torn: the next listing writes it again (repair_index)
        if not isinstance(index, dict) or index.get("dataset") != "klines":
            continue  # funding (REST has it) and other datasets: a symbol may lack them
        trade_type = path.parent.name
        missing = index.get("not_listed")
        if missing:
            lines.append(
                f"{trade_type} {path.stem}: configured symbols not in the archive "
                f"listing (config key symbols.{trade_type}): {', '.join(missing)}"
            )
        empty = index.get("no_files") or []
        selection = (index.get("request") or {}).get("symbols")
        if empty and (selection != "all" or not index.get("symbols")):
            interval = index.get("interval") or path.stem.partition("-")[2]
            names = ", ".join(empty[:NAMES_SHOWN])
            if len(empty) > NAMES_SHOWN:
                names += f", … ({len(empty)} in all)"
            lines.append(
                f"{trade_type} {path.stem}: configured symbols with no archive file at "
                f"interval {interval}, nothing built for them (config keys "
                f"symbols.{trade_type}, interval): {names}"
            )
    return lines


def retry_generation(shard_report) -> int:
    """The ``retry_generation`` a shard report records (0 without report or value): the
    rerun trigger of a shard whose job recorded failed symbols (crypto_lakehouse.shards).
    Planning asks twice per shard job (its ``retry`` param and its job JSON): one read."""
    try:
        mtime_ns = os.stat(shard_report).st_mtime_ns
    except OSError:
        return 0
    return _retry_generation(str(shard_report), mtime_ns)


@functools.lru_cache(maxsize=4096)
def _retry_generation(path: str, mtime_ns: int) -> int:
    try:
        with open(path, "rb") as f:
            report = json.load(f)
    except (OSError, ValueError):  # gone, or torn: the job reading it removes it (read_report)
        return 0
    value = report.get("retry_generation", 0) if isinstance(report, dict) else 0
    return value if isinstance(value, int) else 0
