"""Reading the pipeline's outputs without knowing the folder layout (docs/loading.md).

``load_klines`` returns one symbol's generated (or resampled) candles as a pandas or polars
frame, its gap segments (``SP0_SYM.pqt``, ``SP1_SYM.pqt``, …, ``SYM.pqt``) concatenated in time
order with a ``segment`` column; ``load_features`` does the same with its feature files.
``load_dataset`` / ``iter_dataset`` read one symbol's parsed aggTrades, trades, metrics or
price klines between two times, opening only the day (month) files of the range.
``duckdb_connect`` opens a DuckDB connection with one view per kind of file. Paths come from
``layout`` only.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import difflib
import json
import numbers
import re
import time
import warnings
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from crypto_lakehouse import datasets, intervals, layout, storage
from crypto_lakehouse.schema import TIME_TYPE

TIME = "candle_begin_time"
FUNDING_RATE = "funding_rate"
ENGINES = ("pandas", "polars", "arrow")
# How funding_rate comes back; see docs/loading.md "The funding_rate convention".
FUNDING_MODES = ("file", "nan", "zero")


class DataNotFoundError(LookupError):
    """The requested data is not in the data directory; the message says what is."""


class DataChangedError(RuntimeError):
    """A symbol's files kept changing while they were read (a run is writing them)."""


class StaleDataWarning(UserWarning):
    """Files were read that the pipeline records as not current (docs/loading.md, "Stale
    feature files" and "Kept legacy resampled files"); the subclass says which kind.
    ``warnings.simplefilter("error", StaleDataWarning)`` turns both into errors."""


class StaleDataError(RuntimeError):
    """``stale="raise"``: the files asked for include ones recorded as not current (the
    message names them, why, and what makes them current); the subclass says which kind."""


class StaleFeaturesWarning(StaleDataWarning):
    """Feature files were read whose last rebuild failed: they hold the features of an
    earlier version of their candle files (docs/loading.md, "Stale feature files").
    ``warnings.simplefilter("error", StaleFeaturesWarning)`` turns it into an error."""


class StaleFeaturesError(StaleDataError):
    """``stale="raise"``: the feature files asked for include stale ones (the message names
    them, their failure and how to rebuild them)."""


class LegacyResampledWarning(StaleDataWarning):
    """Resampled klines were read that the pipeline did not write: a legacy data dir's,
    at a target or offset the config does not list, which the resample runs keep as they
    are (docs/loading.md, "Kept legacy resampled files")."""


class LegacyResampledError(StaleDataError):
    """``stale="raise"``: the resampled klines asked for are kept legacy files."""


class LegacyUnownedWarning(StaleDataWarning):
    """Klines or features were read that no run of this pipeline wrote: their Parquet files
    lack the key-value metadata every one of its writers puts in (``PIPELINE_STAMP``). A
    legacy data dir's files of a symbol the config does not list (or no longer lists), or
    files copied in: no run updates them (docs/loading.md, "Files this pipeline did not
    write")."""


class LegacyUnownedError(StaleDataError):
    """``stale="raise"``: the klines or features asked for include files no run of this
    pipeline wrote."""


# What the loaders do with a file recorded as not current (docs/loading.md).
STALE_MODES = ("warn", "raise", "ignore")
# The kinds of records below ``layout.stale_features_root``.
FEATURES, RESAMPLED = "features", "resampled_klines"
# Files no run of the pipeline wrote (no record: told by the files' own metadata).
UNOWNED = "unowned"

# The key-value metadata key every file of a kind that the pipeline writes carries, since
# its first version: ``interval`` in the generated klines (generate.kline.segment_metadata)
# and the resampled ones (resample.job), ``indicators`` in the features (features.job). A
# legacy BHDS file has none (pandas' or pyarrow's schema only). The loaders read the
# footer anyway, so telling a file the pipeline did not write costs no request.
PIPELINE_STAMP = {"klines": b"interval", "features": b"indicators"}


# A read of a symbol's segment files that finds them changed (a run rewrote or removed one
# of them while it was read, or its segments overlap: a run is half-way through rewriting
# them) is done again, after these waits (seconds), then refused with DataChangedError.
READ_RETRY_WAITS = (0.2, 0.5, 1.0, 2.0)


def _names(values, limit: int = 20) -> str:
    values = list(values)
    if not values:
        return "none"
    shown = ", ".join(values[:limit])
    return shown if len(values) <= limit else f"{shown}, … ({len(values)} in all)"


def _unknown(what: str, value: str, present: list[str], where: Path) -> DataNotFoundError:
    close = difflib.get_close_matches(value, present, n=3)
    if not close and value.upper() != value:
        # Symbols, intervals and offsets are case-sensitive folder names: 'btcusdt' is far
        # from 'BTCUSDT' for difflib, but it is what was meant.
        close = [name for name in present if name.lower() == value.lower()]
        close = close or difflib.get_close_matches(value.upper(), present, n=3)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    return DataNotFoundError(
        f"no {what} {value!r} in {where}{hint} ({what}s present: {_names(present)})"
    )


def _check_trade_type(trade_type: str) -> None:
    if trade_type not in layout.TRADE_TYPES:
        raise ValueError(
            f"unknown trade type {trade_type!r}; expected one of {', '.join(layout.TRADE_TYPES)}"
        )


# Words pandas reads as the machine's local time (``pd.Timestamp("now")`` is the local wall
# clock, naive); as bounds they mean the current UTC instant and the start of the UTC day.
_NOW, _TODAY = "now", "today"


def _utc_stamp(value, name: str):
    """A time bound as a UTC pandas Timestamp (nanoseconds); naive times are UTC, ``"now"``
    is the current instant, ``"today"`` 00:00 UTC of the current UTC day (whatever the
    machine's time zone); None is no bound.

    Numbers and NaT are refused: pandas reads an int as nanoseconds since 1970 (epoch
    milliseconds 1704153600000 become 00:28 on 1970-01-01) and ``""`` as NaT, and either
    would bound the rows silently wrong (a NaT start keeps every row, a NaT end none)."""
    if value is None:
        return None
    import numbers

    import pandas as pd

    if isinstance(value, numbers.Number):  # int, float, numpy numbers (bool too)
        raise ValueError(
            f"{name}={value!r} is a number, which does not say its unit; pass a time: "
            f"pd.Timestamp({value!r}, unit='ms') for epoch milliseconds (unit='s' for "
            "seconds), or an ISO string such as '2024-01-02' or '2024-01-02T00:00Z'"
        )
    if isinstance(value, str) and value in (_NOW, _TODAY):
        now = pd.Timestamp.now(tz="UTC")
        return now if value == _NOW else now.normalize()
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError, OverflowError) as exc:
        raise ValueError(f"{name}={value!r} is not a time ({exc})") from None
    if stamp is pd.NaT:
        raise ValueError(
            f"{name}={value!r} is not a time (pandas reads it as NaT); pass None for no bound"
        )
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _ms_scalar(stamp) -> pa.Scalar | None:
    """A UTC Timestamp rounded **up** to the millisecond, in the files' time type: candle
    times are whole milliseconds, so for a bound b between two of them ``t >= b`` and
    ``t < b`` hold exactly when they hold for the next millisecond (rounding down would let
    a start bound take a candle before it and an end bound drop one before it)."""
    if stamp is None:
        return None
    return pa.scalar(-(-stamp.value // 1_000_000), pa.int64()).cast(TIME_TYPE)


def _bounds(start, end):
    """The UTC bounds (None: no bound), checked: start before end."""
    lo, hi = _utc_stamp(start, "start"), _utc_stamp(end, "end")
    if lo is not None and hi is not None and lo >= hi:
        raise ValueError(f"start={start!r} is not before end={end!r}")
    return lo, hi


def time_filter(start=None, end=None, column: str = TIME) -> ds.Expression | None:
    """``start <= column < end`` (``candle_begin_time`` by default; either bound optional)
    as a dataset filter, so Parquet row groups outside the range are skipped by their
    statistics."""
    lo, hi = _bounds(start, end)
    expr = None
    if lo is not None:
        expr = ds.field(column) >= _ms_scalar(lo)
    if hi is not None:
        cond = ds.field(column) < _ms_scalar(hi)
        expr = cond if expr is None else expr & cond
    return expr


def _data_dir(data_dir):
    """A local data dir (``~`` expanded) or an ``s3://`` one (crypto_lakehouse.storage)."""
    if storage.is_remote(data_dir):
        return storage.data_path(data_dir)
    return Path(data_dir).expanduser()


# The files each loader reads, per kind: the layout functions of the generated-klines
# folders (``root``, ``dir`` by interval) and of the resampled ones (by interval and offset),
# and the names the errors give them.
_KINDS = {
    "klines": {
        "root": layout.results_klines_root,
        "dir": layout.results_klines_dir,
        "resampled_root": layout.resampled_root,
        "resampled_dir": layout.resampled_dir,
        "names": ("generated klines", "resampled klines"),
    },
    "features": {
        "root": layout.features_root,
        "dir": layout.features_dir,
        "resampled_root": layout.resampled_features_root,
        "resampled_dir": layout.resampled_features_dir,
        "names": ("features", "resampled features"),
    },
}


def _zero_offset(present: list[str]) -> str:
    """The folder of the zero window offset among ``present``: ``0m``, or the ``0h`` /
    ``0d`` that a target with an offset_step in hours or days writes (legacy naming,
    ``f"{0 * n}{unit}"``: resample/targets.py); ``0m`` when there is none (the error then
    lists the offsets present)."""
    if "0m" in present:
        return "0m"
    zeros = [name for name in present if re.fullmatch(r"0[a-z]+", name)]
    return zeros[0] if len(zeros) == 1 else "0m"


def _offset_folder(offset: str, present: list[str]) -> str:
    """The folder among ``present`` of the window offset ``offset``: its own name, or the one
    folder of the same length in another unit (the resample stage names offsets in its
    offset_step's unit: ``offset="0m"`` or ``"60m"`` of a target at 1h steps are the folders
    ``0h`` and ``1h``). ``offset`` unchanged when no folder matches (the caller's error then
    lists the offsets present)."""
    if offset in present:
        return offset
    length = intervals.duration_ms(offset)
    same = [n for n in present if length is not None and intervals.duration_ms(n) == length]
    return same[0] if len(same) == 1 else offset


def segment_files_of(
    kind: str,
    data_dir,
    trade_type: str,
    symbol: str,
    interval: str = "1m",
    resample=None,
    offset=None,
) -> list[Path]:
    """The symbol's segment files of ``kind`` (``klines`` or ``features``) in time order,
    from the generated files' ``interval`` folder or, with ``resample``, the resampled
    files' ``{resample}/{offset}`` folder (``offset`` None: the zero offset, ``0m``, or
    ``0h``/``0d`` for a target whose offset_step is in hours or days); DataNotFoundError
    names what exists. An ``offset`` without ``resample`` is a ValueError: it was ignored,
    and the generated 1m candles came back for what was meant as resampled ones."""
    if resample is None and offset is not None:
        raise ValueError(
            f"offset={offset!r} is the window offset of resampled files: give resample= "
            f"too (e.g. resample='1h', offset={offset!r}); without resample the generated "
            "candles are read, which have no offset"
        )
    data_dir = _data_dir(data_dir)
    _check_trade_type(trade_type)
    paths = _KINDS[kind]
    root_of = paths["root"] if resample is None else paths["resampled_root"]
    if not storage.is_dir(root_of(data_dir, trade_type)):
        what = paths["names"][resample is not None]
        present = [t for t in layout.TRADE_TYPES if storage.is_dir(root_of(data_dir, t))]
        if not present and not storage.is_remote(data_dir) and not storage.is_dir(data_dir):
            raise _no_view_files(data_dir)  # "data dir … does not exist", as duckdb_connect
        if not present and storage.is_remote(data_dir) and not layout.subdir_names(data_dir):
            raise _no_view_files(data_dir)  # an empty prefix: a typo, or a missing bucket
        hint = ""
        # None: no hint (a trade type has them, or S3); [] (an empty folder) still asks.
        folders = None if present or storage.is_remote(data_dir) else layout.subdir_names(data_dir)
        if folders is not None and "results_data" not in folders:
            hint = (
                f"; folders in {data_dir}: {_names(folders)}: is it the "
                "pipeline's data_dir (data/binance_data by default)?"
            )
        elif folders and resample is not None:
            # A data dir (its results_data/ is there) whose runs resampled nothing: asking
            # whether it was the data dir sent the reader the wrong way.
            hint = "; no run resampled anything here: config key resample.targets (docs/config.md)"
        elif folders and kind == "features":
            hint = "; no run built features here: config key features.enabled (docs/features.md)"
        raise DataNotFoundError(
            f"no {what} of {trade_type} in {data_dir} ({root_of(data_dir, trade_type)} "
            f"does not exist; trade types with {what}: {_names(present)}{hint})"
        )
    root = root_of(data_dir, trade_type)
    if resample is None:
        if interval not in layout.subdir_names(root):
            error = _unknown("interval", interval, layout.subdir_names(root), root)
            resampled = paths["resampled_root"](data_dir, trade_type)
            if storage.is_dir(resampled) and interval in layout.subdir_names(resampled):
                error = DataNotFoundError(
                    f"{error}; {interval} is a resampled interval: pass "
                    f"resample={interval!r} (and offset=, default the zero offset '0m')"
                )
            raise error
        directory = paths["dir"](data_dir, trade_type, interval)
    else:
        if resample not in layout.subdir_names(root):
            raise _unknown("resample interval", resample, layout.subdir_names(root), root)
        present = layout.subdir_names(root / resample)
        if offset is None:
            offset = _zero_offset(present)
        offset = _offset_folder(offset, present)
        if offset not in present:
            raise _unknown("offset", offset, present, root / resample)
        directory = paths["resampled_dir"](data_dir, trade_type, resample, offset)
    files = layout.segment_files(directory, symbol)
    if not files:
        raise _unknown("symbol", symbol, layout.segment_symbols(directory), directory)
    return files


def read_segments_table(files: list[Path], start=None, end=None, stamp: bytes | None = None,
                        unstamped: list | None = None) -> pa.Table:  # fmt: skip
    """The segment files concatenated (time order kept), with an int32 ``segment`` column:
    0 for the oldest segment file, n-1 for ``SYM.pqt``. ``unstamped`` (a list) gets the
    files whose metadata lacks the key ``stamp`` (``PIPELINE_STAMP``): from the footers
    the read takes anyway."""
    expr = time_filter(start, end)
    tables = []
    for number, path in enumerate(files):
        fs, inner = storage.filesystem(path)  # on S3: ranged GETs of the row groups kept
        table = ds.dataset(inner, filesystem=fs, format="parquet").to_table(filter=expr)
        if unstamped is not None and stamp not in (table.schema.metadata or {}):
            unstamped.append(path)
        segment = pa.array([number] * table.num_rows, pa.int32())
        tables.append(table.append_column("segment", segment))
    return pa.concat_tables(tables, promote_options="default")


def apply_funding_mode(table: pa.Table, mode: str, resampled: bool) -> pa.Table:
    """``file``: as stored. ``nan``: null where no funding was settled, in generated klines
    too (where the file stores 0.0): there, every stored 0.0, so also a candle whose settled
    funding sums to exactly 0.0 (one 0.0 event; at 12h/1d events that cancel out), which the
    file cannot tell from one without funding (docs/loading.md, "The ``funding_rate``
    convention"). ``zero``: 0.0 there, in resampled klines too (where the file stores null).
    Only ``funding_rate`` changes; ``funding_price``/``funding_time`` of resampled files stay
    null, they have no neutral value."""
    if mode not in FUNDING_MODES:
        raise ValueError(f"funding={mode!r}; expected one of {', '.join(FUNDING_MODES)}")
    if mode == "file" or FUNDING_RATE not in table.column_names:
        return table
    rate = table.column(FUNDING_RATE)
    if mode == "nan" and not resampled:
        rate = pc.if_else(pc.equal(rate, 0.0), pa.scalar(None, pa.float64()), rate)
    elif mode == "zero" and resampled:
        rate = pc.fill_null(rate, 0.0)
    index = table.column_names.index(FUNDING_RATE)
    return table.set_column(index, FUNDING_RATE, rate)


@contextlib.contextmanager
def _naming_the_repair(data_dir) -> Iterator[None]:
    """An error reading a damaged file (it names the file) also says how to repair it."""
    try:
        yield
    except Exception as exc:
        if not storage.is_damaged_file_error(exc):
            raise
        raise type(exc)(
            f"{exc} (a damaged file: `crypto-lakehouse verify {data_dir} --remove` removes "
            "it, then a run with --forcerun aws_download_shard rebuilds it; README, "
            '"Lost or damaged files")'
        ) from exc


def _check_engine(engine: str) -> None:
    """``engine`` is known and, for polars, importable (before any file is read)."""
    if engine not in ENGINES:
        raise ValueError(f"engine={engine!r}; expected one of {', '.join(ENGINES)}")
    if engine == "polars":
        try:
            import polars  # noqa: F401
        except ImportError:
            raise ImportError(
                "engine='polars' needs polars: pip install polars "
                "(or pip install 'crypto_lakehouse[analysis]')"
            ) from None


def _frame(table: pa.Table, engine: str):
    if engine == "polars":
        import polars as pl

        return pl.from_arrow(table)
    if engine == "arrow":
        return table
    return table.to_pandas()


def load_klines(
    data_dir,
    trade_type: str,
    symbol: str,
    interval: str = "1m",
    start=None,
    end=None,
    resample: str | None = None,
    offset: str | None = None,
    engine: str = "pandas",
    funding: str = "file",
    stale: str = "warn",
):
    """One symbol's klines as a pandas or polars DataFrame, or a pyarrow Table (``engine``).

    ``interval`` selects ``results_data/{T}/klines/{interval}``; with ``resample`` (e.g.
    ``"1h"``) the resampled files ``results_data/{T}/resampled_klines/{resample}/{offset}``
    are read instead (``offset`` default the zero offset ``0m``, or ``0h``/``0d``; an
    offset without ``resample`` is a ValueError). ``start`` (inclusive) and ``end`` (exclusive) bound
    ``candle_begin_time``; strings, datetimes and pandas Timestamps are accepted, naive ones
    are UTC, ``"now"``/``"today"`` are the current UTC instant/day, a bound finer than a
    millisecond is rounded up, None is no bound; numbers (epoch ms? s?) and NaT raise
    ValueError. ``funding``
    is one of ``file``, ``nan``, ``zero`` (docs/loading.md).

    ``stale``: what to do when files read are files the pipeline did not write (their
    candles can stop at the legacy run's date): with ``resample``, resampled files kept from
    a legacy data dir at a target or offset the config does not list (the resample runs'
    record: ``LegacyResampledWarning``); any other file no run of the pipeline wrote (a
    legacy data dir's files of a symbol the config does not list: its Parquet metadata
    tells, ``LegacyUnownedWarning``). ``"warn"`` (default) a warning naming them;
    ``"raise"`` ``LegacyResampledError`` / ``LegacyUnownedError``; ``"ignore"`` nothing.
    Without ``resample`` no record is looked up (the metadata is in the footers read).
    """
    _check_engine(engine)
    _check_stale_mode(stale)
    if funding not in FUNDING_MODES:
        raise ValueError(f"funding={funding!r}; expected one of {', '.join(FUNDING_MODES)}")
    read: list[Path] = []
    unstamped: list[Path] = []
    table = _segments_table("klines", data_dir, trade_type, symbol, interval, resample, offset,
                            start, end, read, unstamped)  # fmt: skip
    if stale != "ignore":
        found = {}
        if resample is not None:
            found = stale_files_among(data_dir, trade_type, symbol, read, kind=RESAMPLED)
            _tell_stale(found, stale, stacklevel=3, kind=RESAMPLED)
        # The files no run wrote that no record names (a kept file's record says more).
        unowned = {str(p): {} for p in unstamped if str(p) not in found}
        _tell_stale(unowned, stale, stacklevel=3, kind=UNOWNED)
    table = apply_funding_mode(table, funding, resampled=resample is not None)
    return _frame(table, engine)


def load_features(
    data_dir,
    trade_type: str,
    symbol: str,
    interval: str = "1m",
    start=None,
    end=None,
    resample: str | None = None,
    offset: str | None = None,
    engine: str = "pandas",
    stale: str = "warn",
):
    """One symbol's features as a pandas or polars DataFrame or a pyarrow Table
    (``engine``), as ``load_klines`` reads
    its candles: the segment files of ``results_data/{T}/features/{interval}`` (with
    ``resample``: ``results_data/{T}/resampled_features/{resample}/{offset}``) in time
    order with their ``segment`` number, ``start`` (inclusive) and ``end`` (exclusive)
    bounding ``candle_begin_time`` (docs/loading.md, docs/features.md).

    ``stale``: what to do when a file read is stale (its last rebuild failed, so it holds
    the features of an earlier version of its candle file): ``"warn"`` (default) a
    ``StaleFeaturesWarning`` naming the files, the failure and how to rebuild them;
    ``"raise"`` ``StaleFeaturesError`` instead; ``"ignore"`` nothing. Feature files no run
    of the pipeline wrote (their metadata tells) get ``LegacyUnownedWarning`` (or
    ``LegacyUnownedError``) the same way."""
    _check_engine(engine)
    _check_stale_mode(stale)
    read: list[Path] = []
    unstamped: list[Path] = []
    table = _segments_table("features", data_dir, trade_type, symbol, interval, resample,
                            offset, start, end, read, unstamped)  # fmt: skip
    if stale != "ignore":
        _tell_stale(stale_files_among(data_dir, trade_type, symbol, read), stale, stacklevel=3)
        _tell_stale({str(p): {} for p in unstamped}, stale, stacklevel=3, kind=UNOWNED)
    return _frame(table, engine)


def _check_stale_mode(stale: str) -> None:
    if stale not in STALE_MODES:
        raise ValueError(f"stale={stale!r}; expected one of {', '.join(STALE_MODES)}")


def stale_records(data_dir, trade_type: str | None = None, symbol: str | None = None):
    """The files recorded as not current below ``layout.stale_features_root``, by kind:
    ``{FEATURES: {path relative to data_dir: {"failure", "failed_at"}}, RESAMPLED: {path:
    {"reason", "recorded_at"}}}`` (``layout.stale_features_path``: feature files whose
    rebuild failed; ``layout.stale_resampled_path``: legacy resampled files the resample
    runs keep). Of one symbol (one listing of its record folder, usually absent: on S3 one
    request, for both kinds), or of every symbol (one recursive listing). A record that
    cannot be read is skipped: it only ever adds a warning."""
    root = storage.data_path(_data_dir(data_dir))
    if symbol is not None:
        folder = layout.stale_features_dir(root, trade_type, symbol)
        paths = storage.list_files(folder, recursive=False, suffix=".json")
    else:
        paths = storage.list_files(layout.stale_features_root(root), suffix=".json")
    out: dict[str, dict[str, dict]] = {FEATURES: {}, RESAMPLED: {}}
    for path in paths:
        try:
            record = json.loads(storage.read_bytes(path))
            files = record["files"]
            for rel, cause in files.items():
                if path.name == layout.STALE_RESAMPLED_NAME:
                    out[RESAMPLED][rel] = {
                        "reason": cause,
                        "recorded_at": record.get("recorded_at"),
                    }
                else:
                    out[FEATURES][rel] = {"failure": cause, "failed_at": record.get("failed_at")}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue  # removed since the listing, or not a record of ours
    return out


def stale_feature_records(data_dir, trade_type: str | None = None, symbol: str | None = None):
    """The stale feature files the features builds recorded (``layout.stale_features_path``)
    as ``{path relative to data_dir: {"failure", "failed_at"}}`` (``stale_records``)."""
    return stale_records(data_dir, trade_type, symbol)[FEATURES]


def stale_files_among(data_dir, trade_type: str, symbol: str, files: list,
                      kind: str = FEATURES) -> dict[str, dict]:  # fmt: skip
    """Of ``files`` (feature files of ``symbol`` below ``data_dir``, or its resampled
    klines with ``kind`` RESAMPLED), those recorded as not current, by their path."""
    records = stale_records(data_dir, trade_type, symbol)[kind]
    if not records:
        return {}
    root = storage.data_path(_data_dir(data_dir))
    out = {}
    for path in files:
        rel = path.relative_to(root).as_posix()
        if rel in records:
            out[str(path)] = records[rel]
    return out


def _tell_stale(found: dict[str, dict], mode: str, stacklevel: int, views: bool = False,
                kind: str = FEATURES) -> None:  # fmt: skip
    """The warning (``mode`` "warn") or error ("raise") of ``kind`` naming the files of
    ``found`` (``stale_files_among``); nothing when none. ``views``: said of
    duckdb_connect's views rather than of a loader."""
    if not found:
        return
    message_of, error, warning = {
        FEATURES: (_stale_features_message, StaleFeaturesError, StaleFeaturesWarning),
        RESAMPLED: (_legacy_resampled_message, LegacyResampledError, LegacyResampledWarning),
        UNOWNED: (_unowned_message, LegacyUnownedError, LegacyUnownedWarning),
    }[kind]
    message = message_of(found, views)
    if mode == "raise":
        raise error(message)
    warnings.warn(message, warning, stacklevel=stacklevel)


def _first_files(found: dict[str, dict], describe=lambda path, info: path) -> str:
    """The first five files of ``found``, each as ``describe(path, info)`` says, and how
    many more: the list every stale-data message starts with."""
    listed = "; ".join(describe(path, info) for path, info in list(found.items())[:5])
    return listed + (f"; and {len(found) - 5} more" if len(found) > 5 else "")


def _stale_features_message(found: dict[str, dict], views: bool) -> str:
    listed = _first_files(
        found,
        lambda path, info: (
            f"{path} (its rebuild failed at "
            f"{info.get('failed_at') or 'an earlier run'}: {info['failure']})"
        ),
    )
    return (
        f"stale feature files: {listed}. Each was kept as the last good features "
        "build wrote it: it holds the features of an earlier version of its candle file "
        "(it can lack the newest candles, or have the columns of earlier feature settings), "
        + (
            "and the views features/resampled_features hold it: the table stale_features "
            "lists these files with the views' path columns, to leave them out of a query. "
            if views
            else "so its rows need not line up with load_klines'. "
        )
        + "A features run that succeeds rebuilds it (fix the failure, then run the "
        "workflow's features or all target). stale='ignore' goes on without this warning, "
        "stale='raise' refuses it (docs/loading.md, \"Stale feature files\")."
    )


def _legacy_resampled_message(found: dict[str, dict], views: bool) -> str:
    listed = _first_files(
        found,
        lambda path, info: (
            f"{path} (recorded by the resample run of "
            f"{info.get('recorded_at') or 'an earlier run'})"
        ),
    )
    return (
        f"legacy resampled files: {listed}. This pipeline did not write them: they "
        "are a legacy data dir's, at a target or offset the config does not list, and the "
        "resample runs leave them as they are, so their candles can stop at the legacy "
        "run's last date or carry what the legacy code computed differently, "
        + (
            "and the view resampled_klines holds them: the table stale_resampled_klines "
            "lists them with the view's path columns, to leave them out of a query. "
            if views
            else "not the candles of the current base files. "
        )
        + "To have the pipeline build them, add the target and offset to the config's "
        "resample targets and run the workflow (it then replaces them); if they are not "
        "wanted, remove them. stale='ignore' goes on without this warning, stale='raise' "
        'refuses them (docs/loading.md, "Kept legacy resampled files").'
    )


def _unowned_message(found: dict[str, dict], views: bool = False) -> str:
    return (
        f"files this pipeline did not write: {_first_files(found)}. None of its runs wrote them "
        "(their Parquet metadata lacks what every file it writes carries): a legacy data "
        "dir's files of a symbol the config does not list (or no longer lists), or files "
        "copied in. No run updates them, so their candles can stop at the legacy run's "
        "last date or carry what the legacy code computed differently"
        + (
            ", and the views hold them: the table unowned_files lists them with the views' "
            "path columns, to leave them out of a query. "
            if views
            else ". "
        )
        + "To have the "
        "pipeline build them, add the symbol to the config's symbols (for resampled files "
        "also their target and offset to resample.targets) and run the workflow (it then "
        "replaces them); if they are not wanted, remove them. stale='ignore' goes on "
        "without this warning, stale='raise' refuses them (docs/loading.md, \"Files this "
        'pipeline did not write").'
    )


def _segments_table(kind, data_dir, trade_type, symbol, interval, resample, offset, start, end,
                    read_files: list | None = None, unstamped: list | None = None):  # fmt: skip
    """The symbol's segment files of ``kind`` (``segment_files_of``) read as one table
    between the bounds, a damaged file's error naming the repair.

    A run may write the files while they are read (docs/loading.md, "Reading while a run
    writes"): the read is kept only if the symbol's files (names and versions: size and
    mtime locally, size and ETag on S3) are the same after it as before it, and its
    segments do not overlap in time; otherwise it is done again (``READ_RETRY_WAITS``),
    then DataChangedError. ``read_files`` (a list) gets the files the table was read from,
    ``unstamped`` (a list) those of them no run of the pipeline wrote (``PIPELINE_STAMP``)."""
    files = segment_files_of(kind, data_dir, trade_type, symbol, interval, resample, offset)
    directory = files[0].parent

    def read(paths):
        if read_files is not None:
            read_files[:] = paths
        if unstamped is not None:
            unstamped.clear()  # a read done again tells again
        return read_segments_table(paths, start, end, PIPELINE_STAMP[kind], unstamped)

    return _read_unchanged(
        files,
        listing=lambda: layout.segment_files(directory, symbol),
        read=read,
        data_dir=data_dir,
        what=f"{symbol} in {directory}",
        check=lambda table, paths: overlapping_segments(table, paths, strict=resample is None),
        empty_ok=False,
    )


def overlapping_segments(table: pa.Table, files: list[Path], strict: bool = True) -> str:
    """Why the rows read from consecutive segment files overlap in time ("" when they do
    not). Segments never overlap in a finished run (a gap separates them); a run that
    splits, merges or renumbers a symbol's segments writes them one after the other, so a
    reader in between sees an old and a new one covering the same times. ``strict``: a
    segment starts after the previous one's last row (generated candles); otherwise at or
    after it (a resampled window may hold the last minutes before a gap and the first
    after it)."""
    if len(files) < 2 or table.num_rows == 0:
        return ""
    segment = table.column("segment")
    times = table.column(TIME)
    first = pc.min_max(times.filter(pc.equal(segment, 0)))
    previous = (0, first["max"])
    for number in range(1, len(files)):
        bounds = pc.min_max(times.filter(pc.equal(segment, number)))
        if not bounds["min"].is_valid:
            continue
        last_number, last = previous
        if last.is_valid and (
            bounds["min"].value <= last.value if strict else bounds["min"].value < last.value
        ):
            return (
                f"segment {files[number].name} starts at {bounds['min']} before "
                f"{files[last_number].name} ends ({last})"
            )
        previous = (number, bounds["max"])
    return ""


# ---------------------------------------------------------------- the parsed datasets
# The datasets of the ``datasets`` target the loaders read (docs/datasets.md): tick datasets
# in one file per UTC day, the price klines in one file per month and interval.
TICK_DATASETS = tuple(d.name for d in datasets.REGISTRY.values() if d.partition == "day")
PRICE_KLINE_DATASETS = (
    datasets.MARK_PRICE_KLINES.name,
    datasets.INDEX_PRICE_KLINES.name,
    datasets.PREMIUM_INDEX_KLINES.name,
)
LOADABLE_DATASETS = TICK_DATASETS + PRICE_KLINE_DATASETS


def _check_dataset(dataset: str, trade_type: str) -> datasets.Dataset:
    """The registry entry of a dataset the loaders read, published on ``trade_type``."""
    _check_trade_type(trade_type)
    if dataset not in LOADABLE_DATASETS:
        hint = ""
        if dataset in ("klines", "funding"):
            hint = f"; {dataset} are read with load_klines (and the funding view)"
        close = difflib.get_close_matches(dataset, LOADABLE_DATASETS, n=3)
        if close and not hint:
            hint = f"; did you mean {' or '.join(close)}?"
        raise ValueError(
            f"unknown dataset {dataset!r}{hint} (datasets load_dataset reads: "
            f"{', '.join(LOADABLE_DATASETS)})"
        )
    entry = datasets.get(dataset)
    entry.check_market(trade_type)  # metrics on spot: "exists only for futures"
    return entry


def dataset_time_column(dataset: str) -> str:
    """The time column of a loadable dataset (``transact_time``, ``time``, ``create_time``;
    ``candle_begin_time`` for the price klines)."""
    entry = datasets.get(dataset)
    return entry.time_column if entry.partition == "day" else TIME


def _partition_span(name: str, partition: str, end_labels: bool) -> tuple[int, int]:
    """[first ms, last ms] a partition file may hold: its UTC day or month; a day of a
    dataset with end labels (metrics) also the next day's 00:00:00 (docs/datasets.md)."""
    if partition == "day":
        first = dt.datetime.strptime(name, "%Y%m%d").replace(tzinfo=dt.UTC)
        after = first + dt.timedelta(days=1)
    else:
        first = dt.datetime.strptime(name, "%Y%m").replace(tzinfo=dt.UTC)
        after = (first + dt.timedelta(days=32)).replace(day=1)
    lo, hi = int(first.timestamp() * 1000), int(after.timestamp() * 1000)
    return lo, hi if end_labels else hi - 1


def dataset_files_of(data_dir, trade_type: str, dataset: str, symbol: str,
                     interval: str | None = None, start=None, end=None) -> list[Path]:  # fmt: skip
    """The partition files of one symbol's parsed ``dataset`` that may hold a row in
    ``[start, end)``, in time order: day files ``parsed_data/{T}/{dataset}/{SYM}/{YYYYMMDD}.pqt``
    (aggTrades, trades, metrics) or month files ``parsed_data/{T}/{dataset}/{SYM}/{I}/{YYYYMM}.pqt``
    (mark/index/premium price klines, ``interval`` required). The choice is made on the
    file names (one listing of the symbol's folder): no other file is opened. Unknown trade
    type, dataset, symbol or interval: an error naming what exists."""
    entry = _check_dataset(dataset, trade_type)
    lo, hi = _bounds(start, end)
    data_dir = _data_dir(data_dir)
    root = layout.parsed_dataset_root(data_dir, trade_type, dataset)
    # Its symbol folders: one delimited listing (on S3 never a listing of every day file).
    symbols = layout.subdir_names(root)
    if not symbols:
        if not storage.is_remote(data_dir) and not storage.is_dir(data_dir):
            raise _no_view_files(data_dir)
        if storage.is_remote(data_dir) and not layout.subdir_names(data_dir):
            raise _no_view_files(data_dir)  # a missing bucket, or a prefix with no object
        present = [t for t in entry.markets
                   if layout.subdir_names(layout.parsed_dataset_root(data_dir, t, dataset))]  # fmt: skip
        parsed = layout.parsed_root(data_dir, trade_type)
        others = [n for n in layout.subdir_names(parsed) if n in LOADABLE_DATASETS]
        raise DataNotFoundError(
            f"no {dataset} of {trade_type} in {data_dir} (no symbol folder in {root}; trade types "
            f"with {dataset}: {_names(present)}; datasets parsed for {trade_type}: "
            f"{_names(others)}; the datasets target writes them, docs/datasets.md)"
        )
    if symbol not in symbols:
        raise _unknown("symbol", symbol, symbols, root)
    if entry.partition == "day":
        if interval is not None:
            raise ValueError(f"interval={interval!r}: {dataset} has no interval (one file per day)")
        directory = layout.parsed_day_dir(data_dir, trade_type, dataset, symbol)
    else:
        if interval is None:
            raise ValueError(f"{dataset} needs interval= (e.g. interval='1m')")
        folder = layout.parsed_klines_dir(data_dir, trade_type, symbol, "_", dataset).parent
        intervals = layout.subdir_names(folder)
        if interval not in intervals:
            raise _unknown("interval", interval, intervals, folder)
        directory = layout.parsed_klines_dir(data_dir, trade_type, symbol, interval, dataset)
    lo_ms = None if lo is None else _ms_scalar(lo).value
    hi_ms = None if hi is None else _ms_scalar(hi).value
    files = []
    for path in storage.list_files(directory, recursive=False, suffix=layout.PARQUET_SUFFIX):
        name = layout.parse_partition_name(path.name, entry.partition)
        if name is None:
            continue
        first, last = _partition_span(name, entry.partition, entry.end_labels)
        if (hi_ms is None or first < hi_ms) and (lo_ms is None or last >= lo_ms):
            files.append((name, path))
    return [path for _, path in sorted(files)]


def _dataset_schema(entry: datasets.Dataset, trade_type: str, files: list[Path]) -> pa.Schema:
    """The schema of the dataset's files (the first file's), or the parser's when none."""
    if files:
        return storage.parquet_metadata(files[0]).schema.to_arrow_schema().remove_metadata()
    if entry.partition == "day":
        from crypto_lakehouse.parse.ticks import arrow_schema

        return arrow_schema(entry, trade_type)
    from crypto_lakehouse.schema import KLINE_SCHEMA

    return KLINE_SCHEMA


def _checked_columns(columns, schema: pa.Schema, dataset: str) -> list[str] | None:
    if columns is None:
        return None
    columns = [columns] if isinstance(columns, str) else list(columns)
    for name in columns:
        if name not in schema.names:
            close = difflib.get_close_matches(name, schema.names, n=3)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            raise ValueError(
                f"no column {name!r} in {dataset}{hint} (columns: {', '.join(schema.names)})"
            )
    return columns


def _dataset_scan(data_dir, trade_type, dataset, symbol, interval, start, end, columns):
    """(files, filter, columns, schema) of one load: the files of the range, the time
    filter on the dataset's time column, the columns checked."""
    files = dataset_files_of(data_dir, trade_type, dataset, symbol, interval, start, end)
    entry = datasets.get(dataset)
    expr = time_filter(start, end, dataset_time_column(dataset))
    with _naming_the_repair(data_dir):
        schema = _dataset_schema(entry, trade_type, files)
    return files, expr, _checked_columns(columns, schema, dataset), schema


def _read_file(path: Path, expr, columns, schema: pa.Schema) -> pa.Table:
    fs, inner = storage.filesystem(path)  # on S3: ranged GETs of the row groups kept
    dataset = ds.dataset(inner, filesystem=fs, format="parquet", schema=schema)
    return dataset.to_table(filter=expr, columns=columns)


def load_dataset(
    data_dir,
    trade_type: str,
    dataset: str,
    symbol: str,
    start=None,
    end=None,
    interval: str | None = None,
    columns=None,
    engine: str = "pandas",
):
    """One symbol's parsed ``dataset`` (aggTrades, trades, metrics; markPriceKlines,
    indexPriceKlines, premiumIndexKlines with ``interval``) as a pandas DataFrame, a
    polars one or a pyarrow Table (``engine``), rows in file order (time order).

    ``start`` (inclusive) and ``end`` (exclusive) bound the dataset's time column
    (``dataset_time_column``) as in ``load_klines``. Only the day (or month) files that
    may hold a row of the range are opened, and in them only the row groups that do
    (statistics); ``columns`` reads only those columns. Memory: the rows asked for; for
    more than fits, ``iter_dataset`` gives them one file at a time, or with ``batch_rows``
    in frames of at most that many rows (docs/loading.md)."""
    _check_engine(engine)

    def listing():
        return dataset_files_of(data_dir, trade_type, dataset, symbol, interval, start, end)

    def read(files):
        # The schema (the first file's footer) is read in the same pass as the rows: both
        # are reads of files a run may be replacing.
        schema = _dataset_schema(entry, trade_type, files)
        wanted = _checked_columns(columns, schema, dataset)
        if not files:
            table = schema.empty_table()
            return table.select(wanted) if wanted is not None else table
        fs, _ = storage.filesystem(files[0])
        inner = [storage.filesystem(p)[1] for p in files]
        scan = ds.dataset(inner, filesystem=fs, format="parquet", schema=schema)
        return scan.to_table(filter=expr, columns=wanted)

    files = listing()  # unknown names raise here, naming what exists
    entry = datasets.get(dataset)
    expr = time_filter(start, end, dataset_time_column(dataset))
    table = _read_unchanged(files, listing, read, data_dir, f"{symbol} {dataset}")
    return _frame(table, engine)


def _read_unchanged(files, listing, read, data_dir, what: str, check=None, empty_ok=True):
    """``read(files)``, kept only if ``listing()`` gives the same files with the same
    versions afterwards (names and versions: size and mtime locally, size and ETag on S3)
    and ``check(table, files)`` finds no problem ("" when none; ``_segments_table``: the
    segments overlap). A run rewrites the current month's price klines file and a symbol's
    segments, and on S3 a file replaced during its read gives bytes of two versions.
    Otherwise read again after each of ``READ_RETRY_WAITS``, then DataChangedError. An
    error of a file that did not change is raised as it is (a damaged file names its
    repair). ``empty_ok``: an empty listing is an answer (no file of the range any more);
    else the last files are read again (a symbol's segments are never all gone: a read of
    them says what changed)."""
    problem = ""
    for wait in (*READ_RETRY_WAITS, None):
        before = storage.identities(files, by_listing=False)
        error = table = None
        try:
            table = read(files)
        except (OSError, pa.ArrowException) as exc:  # judged once the versions are known
            error = exc
        now = listing()
        if now == files and storage.identities(files, by_listing=False) == before:
            if error is not None:
                with _naming_the_repair(data_dir):  # the files did not change: a real error
                    raise error
            problem = check(table, files) if check is not None else ""
            if not problem:
                return table
        else:
            problem = f"{_names(p.name for p in files)} changed while they were read"
        if wait is None:
            break
        time.sleep(wait)
        files = now if now or empty_ok else files
    raise DataChangedError(
        f"{what}: {problem}, still after {len(READ_RETRY_WAITS) + 1} reads over a few "
        "seconds: a run is writing this data dir (for an s3:// data dir its lease "
        "lakehouse/run.lease.json names it). Read again once it has finished "
        '(docs/loading.md, "Reading while a run writes").'
    )


def iter_dataset(
    data_dir,
    trade_type: str,
    dataset: str,
    symbol: str,
    start=None,
    end=None,
    interval: str | None = None,
    columns=None,
    engine: str = "pandas",
    batch_rows: int | None = None,
) -> Iterator:
    """``load_dataset`` one file at a time: a frame per day file (tick datasets) or month
    file (price klines) that holds rows of the range, in time order. Memory: one file's
    rows of the range (a day of trades: 20 M aggregate trades are ~2 GB in pandas),
    whatever the range. ``batch_rows=N``: frames of at most N rows instead (a file's rows
    in order, never two files in one frame), read from the file a row group at a time, so
    that memory is bounded by N whatever a day holds. The arguments are checked before the
    first frame."""
    _check_engine(engine)
    if batch_rows is not None:
        # Any integer (a numpy one too, e.g. a count computed with numpy), not a bool.
        if isinstance(batch_rows, bool) or not isinstance(batch_rows, numbers.Integral):
            raise ValueError(f"batch_rows={batch_rows!r}: a number of rows ≥ 1, or None")
        batch_rows = int(batch_rows)
        if batch_rows < 1:
            raise ValueError(f"batch_rows={batch_rows!r}: a number of rows ≥ 1, or None")
    files, expr, columns, schema = _dataset_scan(data_dir, trade_type, dataset, symbol,
                                                 interval, start, end, columns)  # fmt: skip

    def frames():
        for path in files:
            if batch_rows is not None:
                for table in _file_chunks(path, expr, columns, schema, batch_rows, data_dir):
                    yield _frame(table, engine)
                continue
            with _naming_the_repair(data_dir):
                table = _read_file(path, expr, columns, schema)
            if table.num_rows:
                yield _frame(table, engine)

    return frames()


def _file_chunks(path: Path, expr, columns, schema: pa.Schema, rows: int, data_dir):
    """One file's rows of the filter as tables of ``rows`` rows (the last one fewer), read
    one row group at a time (the row groups outside the filter skipped by their
    statistics): in memory one row group (the parser writes one per 8 MB CSV block, at most
    1 Mi rows: pyarrow's limit) and the chunk being filled, whatever the file holds. (A
    scanner's ``to_batches`` reads ahead on its own threads: measured 120–360 MB for chunks
    of 100,000 rows, growing with the file.)"""
    fs, inner = storage.filesystem(path)
    with _naming_the_repair(data_dir):
        fragment = next(
            ds.dataset(inner, filesystem=fs, format="parquet", schema=schema).get_fragments()
        )
        groups = fragment.split_by_row_group(expr, schema=schema)
    held: list[pa.Table] = []
    count = 0
    for group in [*groups, None]:
        if group is not None:
            with _naming_the_repair(data_dir):  # a damaged row group raises here, named
                table = group.to_table(schema=schema, filter=expr, columns=columns)
            if not table.num_rows:
                continue
            held.append(table)
            count += table.num_rows
        while count >= rows or (group is None and count):
            table = pa.concat_tables(held)
            yield table.slice(0, rows)
            held, count = [table.slice(rows)], max(count - rows, 0)


# ---------------------------------------------------------------------------- DuckDB
# Path tails that the views parse with regexp_extract on DuckDB's `filename` column. A filter
# on a column derived from `filename` alone lets DuckDB skip the other files unread.
_SEG = r"(?:SP([0-9]+)_)?([A-Z0-9_]+)\.pqt$"
VIEW_PATTERNS = {
    "klines": (r"/results_data/([a-z_]+)/klines/([^/]+)/" + _SEG,
               ("trade_type", "interval", "segment_sp", "symbol")),
    "resampled_klines": (r"/results_data/([a-z_]+)/resampled_klines/([^/]+)/([^/]+)/" + _SEG,
                         ("trade_type", "interval", "offset", "segment_sp", "symbol")),
    # A feature file has its candle file's name (docs/features.md): the same path columns.
    "features": (r"/results_data/([a-z_]+)/features/([^/]+)/" + _SEG,
                 ("trade_type", "interval", "segment_sp", "symbol")),
    "resampled_features": (
        r"/results_data/([a-z_]+)/resampled_features/([^/]+)/([^/]+)/" + _SEG,
        ("trade_type", "interval", "offset", "segment_sp", "symbol")),
    "quality": (r"/lakehouse/quality/([a-z_]+)/([^/]+)/([A-Z0-9_]+)\.pqt$",
                ("trade_type", "interval", "symbol")),
    "provenance": (r"/lakehouse/provenance/([a-z_]+)/([^/]+)/([A-Z0-9_]+)\.pqt$",
                   ("trade_type", "interval", "symbol")),
    "funding": (r"/(parsed_data|api_data)/([a-z_]+)/(?:funding|funding_rate)/([A-Z0-9_]+)\.pqt$",
                ("source", "trade_type", "symbol")),
}  # fmt: skip
# The parsed datasets of the ``datasets`` target: one view each, a ``day`` (tick datasets)
# or ``month`` (price klines) column from the file name, so that a filter on it reads only
# the files of those days (docs/loading.md).
DATASET_VIEWS = {
    "agg_trades": datasets.AGG_TRADES.name,
    "trades": datasets.TRADES.name,
    "metrics": datasets.METRICS.name,
    "mark_price_klines": datasets.MARK_PRICE_KLINES.name,
    "index_price_klines": datasets.INDEX_PRICE_KLINES.name,
    "premium_index_klines": datasets.PREMIUM_INDEX_KLINES.name,
}
for _view, _dataset in DATASET_VIEWS.items():
    if datasets.get(_dataset).partition == "day":
        VIEW_PATTERNS[_view] = (rf"/parsed_data/([a-z_]+)/{_dataset}/([A-Z0-9_]+)/([0-9]{{8}})\.pqt$",
                                ("trade_type", "symbol", "day"))  # fmt: skip
    else:
        VIEW_PATTERNS[_view] = (
            rf"/parsed_data/([a-z_]+)/{_dataset}/([A-Z0-9_]+)/([^/]+)/([0-9]{{6}})\.pqt$",
            ("trade_type", "symbol", "interval", "month"))  # fmt: skip


def view_files(data_dir) -> dict[str, list[Path]]:
    """Every file each view reads, found through ``layout`` (temporary files excluded)."""
    # Absolute: the views parse path tails that start with "/".
    data_dir = _data_dir(data_dir)
    if not storage.is_remote(data_dir):
        data_dir = data_dir.absolute()
    out: dict[str, list[Path]] = {name: [] for name in VIEW_PATTERNS}
    for tt in layout.TRADE_TYPES:
        klines_root = layout.results_klines_root(data_dir, tt)
        for iv in layout.subdir_names(klines_root):
            out["klines"] += _segment_files_in(layout.results_klines_dir(data_dir, tt, iv))
        resampled_root = layout.resampled_root(data_dir, tt)
        for ri in layout.subdir_names(resampled_root):
            for off in layout.subdir_names(resampled_root / ri):
                out["resampled_klines"] += _segment_files_in(
                    layout.resampled_dir(data_dir, tt, ri, off)
                )
        for iv in layout.subdir_names(layout.features_root(data_dir, tt)):
            out["features"] += _segment_files_in(layout.features_dir(data_dir, tt, iv))
        resampled_features_root = layout.resampled_features_root(data_dir, tt)
        for ri in layout.subdir_names(resampled_features_root):
            for off in layout.subdir_names(resampled_features_root / ri):
                out["resampled_features"] += _segment_files_in(
                    layout.resampled_features_dir(data_dir, tt, ri, off)
                )
        for view, dir_of in (
            ("quality", layout.quality_dir),
            ("provenance", layout.provenance_dir),
        ):
            root = dir_of(data_dir, tt, "_").parent
            for iv in layout.subdir_names(root):
                out[view] += _symbol_files_in(dir_of(data_dir, tt, iv))
        out["funding"] += _symbol_files_in(layout.parsed_funding_dir(data_dir, tt))
        out["funding"] += _symbol_files_in(layout.api_funding_dir(data_dir, tt))
        for view, dataset in DATASET_VIEWS.items():
            if tt not in datasets.get(dataset).markets:
                continue
            # One recursive listing of the dataset's folder; the view's pattern keeps the
            # partition files (no temporary or foreign file).
            pattern = re.compile(VIEW_PATTERNS[view][0])
            root = layout.parsed_dataset_root(data_dir, tt, dataset)
            found = storage.list_files(root, recursive=True, suffix=layout.PARQUET_SUFFIX)
            out[view] += [p for p in found if pattern.search(str(p))]
    return out


def _segment_files_in(directory: Path) -> list[Path]:
    return [p for files in layout.segment_files_by_symbol(directory).values() for p in files]


def _symbol_files_in(directory: Path) -> list[Path]:
    return [
        p
        for p in storage.list_files(directory, recursive=False, suffix=layout.SEGMENT_SUFFIX)
        if layout.is_valid_symbol(p.stem)
    ]


def _sql_list(paths: list[Path]) -> str:
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"


def schema_groups(paths: list[Path], stamp: bytes | None = None,
                  unstamped: list | None = None) -> list[list[Path]]:  # fmt: skip
    """The files grouped by identical Arrow schema (names and types), in first-seen order.

    Spot klines have no ``funding_rate``, futures klines may; VWAP is optional. DuckDB's
    ``union_by_name`` would read every file's footer each time a query is planned; one scan
    per schema needs only the first file's, and files pruned by a filter are never opened.
    """
    return [group for _, group in _schema_groups(paths, stamp, unstamped)]


# Footers read at once on S3 (duckdb_connect), and how many paths are handed to the threads
# at a time (each batch's schemas are folded into the groups before the next is read).
FOOTERS_AT_ONCE = 32
FOOTER_BATCH = 1024


def _schema_of(path) -> tuple[tuple, pa.Schema]:
    schema = storage.parquet_metadata(path).schema.to_arrow_schema()
    return tuple((f.name, str(f.type)) for f in schema), schema


def _schema_groups(paths: list[Path], stamp: bytes | None = None,
                   unstamped: list | None = None) -> list[tuple[pa.Schema, list[Path]]]:  # fmt: skip
    """The files by schema, in first-seen order. On S3 each footer is a round trip or two:
    they are read ``FOOTERS_AT_ONCE`` at a time (one after the other, a connection over
    2,000 objects took 94 s at 20 ms of latency, 5.3 s on loopback). ``unstamped`` (a
    list, with ``stamp``) gets the files whose footer lacks the metadata key ``stamp``
    (``PIPELINE_STAMP``): no run of the pipeline wrote them."""
    groups: dict[tuple, tuple[pa.Schema, list[Path]]] = {}
    remote = bool(paths) and storage.is_remote(paths[0])
    step = FOOTER_BATCH if remote else max(len(paths), 1)
    for batch in (paths[i : i + step] for i in range(0, len(paths), step)):
        found = (
            storage.concurrently(_schema_of, batch, at_once=FOOTERS_AT_ONCE)
            if remote
            else map(_schema_of, batch)
        )
        for path, (key, schema) in zip(batch, found, strict=True):
            groups.setdefault(key, (schema.remove_metadata(), []))[1].append(path)
            if stamp is not None and unstamped is not None and stamp not in (schema.metadata or {}):
                unstamped.append(path)
    return list(groups.values())


def _nan_option(con) -> str:
    """``, can_have_nan = true`` for ``read_parquet`` when this DuckDB knows the option.

    Parquet statistics leave NaN out of min/max (the format's rule; pyarrow writes no NaN
    count), and DuckDB 2 then takes a float column for NaN-free: it folds ``isnan(x)`` to
    false and ``NOT isnan(x)`` to true, so over the feature files (NaN in every warm-up row)
    ``WHERE NOT isnan(rsi_14)`` kept the NaN rows and ``avg(…)`` of them was NaN
    (duckdb/duckdb#25521). The option makes DuckDB assume NaN may be present; it costs only
    the row-group pruning of an open upper bound on a float column (``close > x``), not the
    pruning on times or on the path columns. A DuckDB without the option (before 1.3)
    reads the files as it does (older versions had the same fault, duckdb/duckdb#7803)."""
    row = con.execute(
        "SELECT parameters FROM duckdb_functions() WHERE function_name = 'read_parquet' LIMIT 1"
    ).fetchone()
    return ", can_have_nan = true" if row and "can_have_nan" in row[0] else ""


def _view_groups(name: str, paths: list[Path], unstamped: list | None = None):
    """(schema, files) per scan of a view. The files of a parsed dataset share their trade
    type's schema (the parser's): grouped by trade type from the path, one footer read per
    group, never one per file (a dataset has a file per symbol and day). The other views:
    by the schema in every file's footer (``schema_groups``)."""
    if name not in DATASET_VIEWS:
        return _schema_groups(paths, _view_stamp(name), unstamped)
    by_type: dict[str, list[Path]] = {}
    for path in paths:
        by_type.setdefault(re.search(VIEW_PATTERNS[name][0], str(path)).group(1), []).append(path)
    return [
        (storage.parquet_metadata(group[0]).schema.to_arrow_schema().remove_metadata(), group)
        for group in by_type.values()
    ]


def _scan_sql(paths: list[Path], options: str = "", stamp: bytes | None = None,
              unstamped: list | None = None) -> str:  # fmt: skip
    """One ``read_parquet`` per schema, united by column name (NULL where a file lacks one);
    ``options`` are added to each ``read_parquet`` call (``_nan_option``)."""
    scans = [
        f"SELECT * FROM read_parquet({_sql_list(group)}, filename = true{options})"
        for group in schema_groups(paths, stamp, unstamped)
    ]
    return "(" + " UNION ALL BY NAME ".join(scans) + ")"


def _path_column_sql(pattern: str, index: int, col: str) -> str:
    """The SQL of one column a view derives from ``filename`` (group ``index`` of
    ``pattern``). A filter on it is evaluated on the file names: the other files are never
    opened."""
    expr = f"regexp_extract(filename, '{pattern}', {index})"
    if col == "segment_sp":
        expr = f"TRY_CAST(NULLIF({expr}, '') AS INTEGER)"
    elif col == "source":
        expr = f"CASE {expr} WHEN 'parsed_data' THEN 'archive' ELSE 'rest' END"
    elif col in ("day", "month"):
        # YYYYMMDD (YYYYMM) → DATE through a regexp_replace and a cast: DuckDB pushes a
        # filter on that into the file list (files of other days are never opened); a
        # strptime() of the same text is not pushed down (measured, DuckDB 2.0.1).
        ymd = (
            r"'(\d{4})(\d{2})(\d{2})', '\1-\2-\3'"
            if col == "day"
            else r"'(\d{4})(\d{2})', '\1-\2-01'"
        )
        expr = f"TRY_CAST(regexp_replace({expr}, {ymd}) AS DATE)"
    return f'{expr} AS "{col}"'


def _dataset_view_sql(name: str, paths: list[Path], options: str = "") -> str:
    """A parsed dataset's view: one ``read_parquet`` per trade type and symbol, whose
    ``trade_type`` and ``symbol`` are constants, united by name (spot's extra column is
    NULL elsewhere). A filter on the symbol drops the other symbols' scans when the query
    is planned, and their file lists are never matched: on 30,000 day files (30 symbols)
    a one-symbol one-day count took 0.12 s, 2.6 s with one list of all files
    (benchmarks/bench_loading_datasets.py, docs/loading.md). ``day`` (``month``) comes from the file name, so that a filter on
    it opens only those days' files. metrics files hold a ``symbol`` column of their own:
    the path's replaces it."""
    pattern, columns = VIEW_PATTERNS[name]
    groups: dict[tuple[str, str], list[Path]] = {}
    for path in paths:
        found = re.search(pattern, str(path))
        groups.setdefault((found.group(1), found.group(2)), []).append(path)
    derived = [
        _path_column_sql(pattern, i, col)
        for i, col in enumerate(columns, start=1)
        if col not in ("trade_type", "symbol")
    ]
    excluded = "filename, symbol" if _has_symbol(name) else "filename"
    scans = [
        f"SELECT '{trade_type}' AS trade_type, '{symbol}' AS symbol, {', '.join(derived)}, "
        f"* EXCLUDE ({excluded}) FROM read_parquet({_sql_list(group)}, filename = true{options})"
        for (trade_type, symbol), group in sorted(groups.items())
    ]
    return " UNION ALL BY NAME ".join(scans)


def _view_stamp(name: str) -> bytes | None:
    """The metadata key the pipeline puts in the files of view ``name`` (None: a view whose
    files are not told apart, ``PIPELINE_STAMP``)."""
    kind = {"klines": "klines", "resampled_klines": "klines", "features": "features",
            "resampled_features": "features"}.get(name)  # fmt: skip
    return PIPELINE_STAMP.get(kind)


def _view_sql(name: str, paths: list[Path], options: str = "",
              unstamped: list | None = None) -> str:  # fmt: skip
    """``unstamped`` (a list) gets the view's files no run of the pipeline wrote, from the
    footers read for the view's schemas."""
    if name in DATASET_VIEWS:
        return _dataset_view_sql(name, paths, options)
    pattern, columns = VIEW_PATTERNS[name]
    derived = [_path_column_sql(pattern, i, col) for i, col in enumerate(columns, start=1)]
    scan = _scan_sql(paths, options, _view_stamp(name), unstamped)
    if "segment_sp" not in columns:
        return f"SELECT {', '.join(derived)}, * EXCLUDE (filename) FROM {scan}"
    # The latest segment is the plain SYM.pqt; its number (the count of SPn_ files beside
    # it) comes from a small table, the older ones carry theirs in the name.
    keep = ", ".join(f'"{c}"' for c in columns if c != "segment_sp")
    return (
        f"SELECT {keep}, CAST(coalesce(segment_sp, latest.segment) AS INTEGER) AS segment, "
        f"* EXCLUDE (filename, segment_sp, file, segment, {keep}) FROM ("
        f"SELECT {', '.join(derived)}, * FROM {scan}) d "
        f"LEFT JOIN _lakehouse_latest_segment latest ON d.filename = latest.file"
    )


def _has_symbol(view: str) -> bool:
    """Whether the files of a dataset view have a ``symbol`` column (metrics)."""
    entry = datasets.get(DATASET_VIEWS[view])
    return any("symbol" in entry.columns_for(t) for t in entry.markets)


def _latest_segments(files: dict[str, list[Path]]) -> list[tuple[str, int]]:
    """``(file, segment number)`` of each latest segment (the plain ``SYM.pqt``): the
    count of the older segment files just before it (files come grouped per folder and
    symbol in time order, the latest last)."""
    latest = []
    for name, (_, columns) in VIEW_PATTERNS.items():
        if "segment_sp" not in columns:
            continue
        older, group = 0, None
        for path in files[name]:
            symbol, sp = layout.parse_segment_name(path.name)
            if (path.parent, symbol) != group:
                older, group = 0, (path.parent, symbol)
            if sp is None:
                latest.append((str(path), older))
            else:
                older += 1
    return latest


def _empty_prefix(where) -> str:
    """Why an ``s3://`` data dir holds no object at all: its bucket does not exist, or the
    prefix is not one the bucket has (a typo?: the closest prefixes next to it are named)."""
    if not storage.is_remote(where):
        return "no file below it"
    if not storage.bucket_exists(where):
        return (
            f"the bucket {where.bucket!r} does not exist (or is not visible with these credentials)"
        )
    parent = where.parent
    beside = layout.subdir_names(parent)
    close = difflib.get_close_matches(where.name, beside, n=3, cutoff=0.6)
    guess = f"did you mean {' or '.join(str(parent / c) for c in close)}? " if close else ""
    where_listed = f"in {parent}" if getattr(parent, "key", "") else "in the bucket"
    return f"no object below it ({guess}prefixes {where_listed}: {_names(beside)})"


def _no_view_files(data_dir) -> DataNotFoundError:
    """Why ``data_dir`` gives no view at all: it is absent (a typo, a relative path from
    another folder) or holds none of the folders the views read (a parent or a sibling of
    the data dir, or no run has written anything yet)."""
    where = _data_dir(data_dir)
    if not storage.is_remote(where) and not storage.is_dir(where):
        state = "is not a folder" if storage.exists(where) else "does not exist"
        # The absolute path too: a relative one may have been meant from another folder.
        shown = where if where.is_absolute() else f"{where} ({where.absolute()})"
        return DataNotFoundError(f"data dir {shown} {state}")
    present = layout.subdir_names(where)  # on S3 one delimited listing, not every key below
    if not present and storage.is_remote(where):
        return DataNotFoundError(f"no lakehouse data in {where}: {_empty_prefix(where)}")
    return DataNotFoundError(
        f"no lakehouse data in {where}: no file in results_data/, in the funding and "
        "dataset folders of parsed_data/, in api_data/, in lakehouse/quality or "
        "lakehouse/provenance (folders "
        f"present: {_names(present)}); is it the pipeline's data_dir (data/binance_data by "
        "default)? (docs/loading.md)"
    )


def duckdb_connect(data_dir, database: str = ":memory:", stale: str = "warn"):
    """A DuckDB connection with views ``klines``, ``resampled_klines``, ``features``,
    ``resampled_features``, ``funding``, ``quality``, ``provenance`` and the parsed
    datasets' ``agg_trades``, ``trades``, ``metrics``, ``mark_price_klines``,
    ``index_price_klines``, ``premium_index_klines`` (``DATASET_VIEWS``) over the files
    present now (a new file needs a new connection). A view with no file yet is not
    created; ``lakehouse_views`` lists the views and their file counts. DataNotFoundError
    when no view has a file (``data_dir`` absent, or not a data dir). Columns derived from
    the path come first (``trade_type``, ``interval``, ``offset``, ``symbol``, ``segment``,
    ``source``); ``offset`` is a reserved word in DuckDB: write it ``"offset"``. The
    connection's ``TimeZone`` is UTC, whatever the machine's.

    An ``s3://`` data dir gives the same views over pyarrow datasets on the bucket (the
    seam's file system and credentials; DuckDB's own S3 reader, httpfs, is not needed).

    The views do not leave out stale feature files (their last rebuild failed) nor kept
    legacy resampled files (written by a legacy run, at a target or offset the config does
    not list): the tables ``stale_features`` and ``stale_resampled_klines`` list those the
    views hold, with the views' path columns to exclude them by (one listing of the
    records for both); ``stale`` says what connecting does when there are some: ``"warn"``
    (default: a ``StaleFeaturesWarning``, a ``LegacyResampledWarning``), ``"raise"``
    (``StaleFeaturesError`` or ``LegacyResampledError``) or ``"ignore"``. Nor do they leave
    out the files no run of the pipeline wrote (a legacy data dir's files of a symbol the
    config does not list: their footers, read for the views' schemas, tell): the table
    ``unowned_files`` lists them, and ``stale`` says what connecting does
    (``LegacyUnownedWarning``, ``LegacyUnownedError``)."""
    import duckdb

    _check_stale_mode(stale)
    if storage.is_remote(data_dir) and not layout.subdir_names(_data_dir(data_dir)):
        # A missing bucket or a prefix with nothing below it: said as such, before the
        # delimited listings of view_files (which a missing bucket answers with NoSuchBucket).
        raise _no_view_files(data_dir)
    files = view_files(data_dir)
    if not any(files.values()):  # a connection without views would fail at its first query
        raise _no_view_files(data_dir)
    con = duckdb.connect(database)
    # Candle times are UTC instants (TIMESTAMPTZ): with the machine's time zone, DuckDB's
    # default, date_trunc('day', …), strftime and the returned datetimes were local ones.
    con.execute("SET TimeZone = 'UTC'")
    con.execute("CREATE TEMP TABLE lakehouse_views (view VARCHAR, files BIGINT)")
    for name, paths in files.items():
        con.execute("INSERT INTO lakehouse_views VALUES (?, ?)", (name, len(paths)))
    latest = _latest_segments(files)
    try:
        kept = _stale_tables(con, data_dir, files, dict(latest), stale)
    except StaleDataError:
        con.close()
        raise
    unowned: dict[str, list] = {}  # per view, its files no run wrote (from their footers)
    with _naming_the_repair(data_dir):  # the views' footers are read below
        if storage.is_remote(data_dir):
            _register_dataset_views(con, files, dict(latest), unowned)
        else:
            con.execute("SET parquet_metadata_cache = true")  # footers read once per connection
            con.execute(
                "CREATE TEMP TABLE _lakehouse_latest_segment (file VARCHAR, segment INTEGER)"
            )
            # One row per symbol and view (~20,000 for the full universe): executemany
            # took ~0.17 ms a row, 3.3 s of a connection for 20,000.
            _insert_rows(con, "_lakehouse_latest_segment", latest)
            options = _nan_option(con)
            for name, paths in files.items():
                if paths:
                    sql = _view_sql(name, paths, options, unowned.setdefault(name, []))
                    con.execute(f"CREATE TEMP VIEW {name} AS {sql}")
    try:
        _unowned_table(con, unowned, dict(latest), kept, stale)
    except StaleDataError:
        con.close()
        raise
    return con


def _insert_rows(con, table: str, rows: list[tuple]) -> None:
    """``rows`` into ``table`` through one Arrow table: DuckDB's ``executemany`` takes about
    0.2-1 ms a row (1,000 files no run wrote made a connection 0.8 s slower; a legacy
    data dir of 2,000 symbols has some 28,000)."""
    if not rows:
        return
    arrow = pa.table(
        {f"c{i}": pa.array(column) for i, column in enumerate(zip(*rows, strict=True))}
    )
    con.register("_lakehouse_rows", arrow)
    try:
        con.execute(f"INSERT INTO {table} SELECT * FROM _lakehouse_rows")
    finally:
        con.unregister("_lakehouse_rows")


UNOWNED_COLUMNS = (
    'view VARCHAR, trade_type VARCHAR, interval VARCHAR, "offset" VARCHAR, '
    "symbol VARCHAR, segment INTEGER, file VARCHAR"
)


def _unowned_table(con, unowned: dict[str, list], latest: dict, kept: set[str], mode: str):
    """The table ``unowned_files``: the files of the views klines, resampled_klines,
    features and resampled_features no run of the pipeline wrote (their footers, read for
    the views' schemas, lack ``PIPELINE_STAMP``), with the views' path columns, but those
    ``stale_resampled_klines`` names already (``kept``); then ``mode`` (``_tell_stale``)."""
    con.execute(f"CREATE TEMP TABLE unowned_files ({UNOWNED_COLUMNS})")
    rows, found = [], {}
    for view, paths in unowned.items():
        for path in paths:
            if str(path) in kept:
                continue
            values = _path_values(view, path, latest)
            rows.append((view, values["trade_type"], values["interval"], values.get("offset"),
                         values["symbol"], values["segment"], str(path)))  # fmt: skip
            found[str(path)] = {}
    if rows:
        _insert_rows(con, "unowned_files", rows)
    if mode != "ignore":
        _tell_stale(found, mode, stacklevel=4, views=True, kind=UNOWNED)  # duckdb_connect's caller


STALE_FEATURES_COLUMNS = (
    'view VARCHAR, trade_type VARCHAR, interval VARCHAR, "offset" VARCHAR, '
    "symbol VARCHAR, segment INTEGER, file VARCHAR, failure VARCHAR, failed_at TIMESTAMPTZ"
)
STALE_RESAMPLED_COLUMNS = (
    'view VARCHAR, trade_type VARCHAR, interval VARCHAR, "offset" VARCHAR, '
    "symbol VARCHAR, segment INTEGER, file VARCHAR, reason VARCHAR, recorded_at TIMESTAMPTZ"
)
# Per kind of record: its table, its columns, the views whose files it can name, and the
# keys of a record's cause and time.
_STALE_TABLES = {
    FEATURES: ("stale_features", STALE_FEATURES_COLUMNS, ("features", "resampled_features"),
               "failure", "failed_at"),
    RESAMPLED: ("stale_resampled_klines", STALE_RESAMPLED_COLUMNS, ("resampled_klines",),
                "reason", "recorded_at"),
}  # fmt: skip


def _stale_tables(con, data_dir, files: dict[str, list], latest: dict, mode: str):
    """The tables ``stale_features`` (the files of the views ``features`` and
    ``resampled_features`` recorded stale) and ``stale_resampled_klines`` (the files of the
    view ``resampled_klines`` kept from a legacy data dir), from one recursive listing of
    the records (``stale_records``, usually empty), with the views' path columns
    (``"offset"`` NULL for ``features``); then ``mode`` (``_tell_stale``) per kind. Records
    of files the views do not hold (removed since) are left out. Returns the files of
    ``stale_resampled_klines``."""
    for table, columns, *_ in _STALE_TABLES.values():
        con.execute(f"CREATE TEMP TABLE {table} ({columns})")
    records = stale_records(data_dir)
    kept: set[str] = set()  # the files stale_resampled_klines lists (returned)
    if not any(records.values()):
        return kept
    root = storage.data_path(_data_dir(data_dir))
    if not storage.is_remote(root):
        root = root.absolute()  # view_files' paths are absolute
    for kind, (table, _columns, views, cause, when) in _STALE_TABLES.items():
        rows, found = [], {}
        for view in views:
            for path in files[view] if records[kind] else ():
                info = records[kind].get(path.relative_to(root).as_posix())
                if info is None:
                    continue
                values = _path_values(view, path, latest)
                at = None
                with contextlib.suppress(AttributeError, TypeError, ValueError):
                    at = dt.datetime.fromisoformat(info[when].replace("Z", "+00:00"))
                rows.append((view, values["trade_type"], values["interval"], values.get("offset"),
                             values["symbol"], values["segment"], str(path), info[cause],
                             at))  # fmt: skip
                found[str(path)] = info
        if kind == RESAMPLED:
            kept.update(found)
        if rows:
            _insert_rows(con, table, rows)
        if mode != "ignore":
            # stacklevel: the caller of duckdb_connect.
            _tell_stale(found, mode, stacklevel=4, views=True, kind=kind)
    return kept


# ---------------------------------------------------------------- views on object storage
def _path_values(name: str, path, latest: dict[str, int]) -> dict:
    """The columns a view derives from a file's path (as ``_view_sql`` does in SQL), in
    the view's order: ``segment`` from ``SPn_`` or, for the latest file, ``latest``."""
    pattern, columns = VIEW_PATTERNS[name]
    values = dict(zip(columns, re.search(pattern, str(path)).groups(), strict=True))
    if "segment_sp" in values:
        sp = values.pop("segment_sp")
        values["segment"] = int(sp) if sp else latest[str(path)]
    if "source" in values:
        values["source"] = "archive" if values["source"] == "parsed_data" else "rest"
    for col, fmt in (("day", "%Y%m%d"), ("month", "%Y%m")):
        if col in values:
            values[col] = dt.datetime.strptime(values[col], fmt).date()
    return values


def _view_dataset(name: str, file_schema: pa.Schema, paths: list, latest: dict[str, int]):
    """One pyarrow dataset over files of one schema; the path-derived columns are each
    file's partition values (constant per file: a filter on them skips whole files)."""
    import functools
    import operator

    values = [_path_values(name, p, latest) for p in paths]
    types = {"segment": pa.int32(), "day": pa.date32(), "month": pa.date32()}
    derived = [pa.field(c, types.get(c, pa.string())) for c in values[0]]
    schema = pa.schema(derived + [f for f in file_schema if f.name not in values[0]])
    partitions = [
        functools.reduce(
            operator.and_, (ds.field(f.name) == pa.scalar(v[f.name], f.type) for f in derived)
        )
        for v in values
    ]
    fs, _ = storage.filesystem(paths[0])
    return ds.FileSystemDataset.from_paths(
        [storage.filesystem(p)[1] for p in paths],
        schema=schema,
        format=ds.ParquetFileFormat(),
        filesystem=fs,
        partitions=partitions,
    )


def _register_dataset_views(con, files: dict[str, list], latest: dict[str, int],
                            unowned: dict[str, list]) -> None:  # fmt: skip
    """The views of an S3 data dir: per view one registered dataset per file schema,
    united by column name (NULL where a schema lacks a column), as on a local dir.
    ``unowned`` gets per view its files no run of the pipeline wrote."""
    for name, paths in files.items():
        if not paths:
            continue
        scans = []
        for i, (file_schema, group) in enumerate(_view_groups(name, paths,
                                                              unowned.setdefault(name, []))):  # fmt: skip
            table = f"_lakehouse_{name}_{i}"
            con.register(table, _view_dataset(name, file_schema, group, latest))
            scans.append(f"SELECT * FROM {table}")
        con.execute(f"CREATE TEMP VIEW {name} AS {' UNION ALL BY NAME '.join(scans)}")
