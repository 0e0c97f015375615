"""The coverage table: per (trade type, symbol, UTC day), how many candles came from where.

Built from two records every run already leaves behind, never from the candles themselves
(reading the full universe's minutes would take the report tens of minutes):

- the provenance table of each symbol (``lakehouse/provenance/{T}/{I}/{SYM}.pqt``, written by
  ``api_download``): candles per day in the archive, in REST, and in both together;
- the footers of the generated files (``results_data/{T}/klines/{I}/[SPn_]{SYM}.pqt``): each
  segment's first candle and row count. A segment is contiguous on the interval grid (a
  gen_kline gate), so it covers ``[first, first + rows × step)``; the time between two
  segments of a symbol is the delisting gap gen_kline split it at.

Per day (``E`` = candles of a complete day, 1440 at 1m):

- ``minutes_archive`` = archive candles (zero-volume candles included);
- ``minutes_rest`` = candles only REST has (distinct union − archive): on a short archive day
  completed by REST, the archive keeps its minutes and REST adds the rest;
- ``minutes_filled`` = minutes inside a segment that no source has (gen_kline carried the
  close forward there; a zero-volume source candle is not counted: it was served);
- ``in_gap`` = every minute of the day lies between two segments;
- ``minutes_missing`` = minutes of the symbol's life (from its first candle to the end of
  ``end_date``, gap minutes excluded) that none of the above covers: the tail after the last
  candle, days REST answered empty, days not fetched yet;
- ``minutes_pending`` = the same uncovered minutes on a day that has not ended when the
  report runs (``now_ms``: today, with ``end_date`` unset): its archive cannot exist yet and
  the REST stage fetches complete days only, so they are not missing (yet); such a day's
  ``minutes_missing`` is 0.

So on a day fully inside the symbol's life the five counts add up to ``E``. Days run from the
first day with a candle to ``end_date``. Everything is computed on whole columns over all
symbols of a trade type at once.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from crypto_lakehouse import layout, storage
from crypto_lakehouse.generate.outputs import SUFFIX
from crypto_lakehouse.intervals import DAY_MS, candles_per_day, interval_ms

log = logging.getLogger(__name__)

COVERAGE_SCHEMA = pa.schema(
    [
        ("trade_type", pa.string()),
        ("symbol", pa.string()),
        ("day", pa.date32()),
        ("minutes_archive", pa.int32()),
        ("minutes_rest", pa.int32()),
        ("minutes_filled", pa.int32()),
        ("minutes_missing", pa.int32()),
        ("minutes_pending", pa.int32()),
        ("in_gap", pa.bool_()),
    ]
)

# Heatmap categories, in legend order; NO_DAY marks cells outside a symbol's days.
CATEGORIES = ("archive", "REST", "filled", "missing", "pending", "delisted gap")
PENDING = 4
GAP = 5
NO_DAY = 6
# The minute columns, in the order of the first categories.
MINUTE_COLUMNS = (
    "minutes_archive",
    "minutes_rest",
    "minutes_filled",
    "minutes_missing",
    "minutes_pending",
)

_SEGMENT_RE = re.compile(r"^(?:SP(\d+)_)?(.+)$")


def read_symbol_tables(
    folder: Path, columns: list[str], what: str, paths: list[Path] | None = None
) -> pa.Table:
    """The ``columns`` of every ``{SYM}.pqt`` in ``folder`` (or of ``paths``, files of it),
    concatenated, with a ``symbol`` column (the file's stem). One multi-threaded dataset
    scan; if a file is unreadable the files are read one by one and the unreadable ones are
    logged and left out (one bad symbol never stops the report)."""
    if paths is None:
        paths = storage.list_files(folder, recursive=False, suffix=SUFFIX)
    empty = pa.table({"symbol": pa.array([], pa.string())})
    if not paths:
        return empty
    fs, _ = storage.filesystem(folder)
    try:
        inner = [storage.filesystem(p)[1] for p in paths]
        return _scan_with_symbols(ds.dataset(inner, filesystem=fs, format="parquet"), columns)
    except (pa.ArrowInvalid, OSError) as exc:
        log.warning("%s: reading the files one by one (%s)", folder, exc)
    tables = []
    for path in paths:
        try:
            t = storage.read_parquet(path, columns=columns)
        except Exception as exc:  # any pyarrow/OS error: name the file, go on
            log.error(
                "%s %s unreadable, symbol left out: %s (README, 'Lost or damaged files': "
                "crypto-lakehouse verify --remove, then the forced run rebuilds it)",
                what,
                path,
                exc,
            )
            continue
        tables.append(t.append_column("symbol", pa.array([path.stem] * t.num_rows)))
    return pa.concat_tables(tables) if tables else empty


def _scan_with_symbols(dataset: ds.Dataset, columns: list[str]) -> pa.Table:
    """The dataset's ``columns`` in file order, with a ``symbol`` column (each row's file
    stem). The file of each row (``__filename``) is read batch by batch and only its stem
    kept: a whole scan's ``__filename`` column held every row's full path (3.4 M paths of
    ~65 bytes for 2,700 symbols × 2,000 days: ~0.2 GB, then the stems and the data).
    A scan batch comes from one file; one that did not would get each row's stem."""
    # "__filename" (the file of each row) is known to a column list, not to a projection
    # dict ("No match for FieldRef.Name(__filename)", pyarrow 26).
    batches, stems, counts = [], [], []
    for batch in dataset.to_batches(columns=[*columns, "__filename"]):
        if not batch.num_rows:
            continue
        names = batch.column("__filename")
        if len(pc.unique(names)) > 1:
            parts = pc.replace_substring_regex(names, r"^.*/|\.pqt$", "").to_pylist()
        else:
            parts = [re.sub(r"^.*/|\.pqt$", "", names[0].as_py())]
        stems.extend(parts)
        counts.append(1 if len(parts) > 1 else batch.num_rows)
        counts.extend([1] * (len(parts) - 1))
        batches.append(batch.drop_columns(["__filename"]))
    schema = dataset.schema
    if not batches:
        empty = pa.schema([schema.field(c) for c in columns]).empty_table()
        return empty.append_column("symbol", pa.array([], pa.string()))
    table = pa.Table.from_batches(batches)
    runs = np.repeat(np.arange(len(stems)), counts)
    return table.append_column("symbol", pa.array(stems, pa.string()).take(pa.array(runs)))


def read_provenance(data_dir, trade_type: str, interval: str) -> pd.DataFrame:
    """Every symbol's provenance rows: ``symbol``, ``day`` (day number), ``archive_rows``,
    ``rows``."""
    folder = layout.provenance_dir(data_dir, trade_type, interval)
    t = read_symbol_tables(folder, ["day", "archive_rows", "rows"], "provenance")
    if t.num_rows == 0:
        return pd.DataFrame(
            {
                "symbol": pd.Series(dtype=str),
                "day": pd.Series(dtype=np.int64),
                "archive_rows": pd.Series(dtype=np.int64),
                "rows": pd.Series(dtype=np.int64),
            }
        )
    return pd.DataFrame(
        {
            "symbol": t.column("symbol").to_pandas(),
            "day": t.column("day").cast(pa.int32()).to_numpy().astype(np.int64),
            "archive_rows": t.column("archive_rows").to_numpy(),
            "rows": t.column("rows").to_numpy(),
        }
    )


def _first_time_ms(meta: pq.FileMetaData, column: int) -> int | None:
    """Smallest candle time from the row-group statistics (None when they are absent)."""
    lows = []
    for i in range(meta.num_row_groups):
        stats = meta.row_group(i).column(column).statistics
        if stats is None or not stats.has_min_max:
            return None
        lows.append(stats.min)
    if not lows:
        return None
    first = min(lows)
    if isinstance(first, pd.Timestamp | np.datetime64) or hasattr(first, "timestamp"):
        return int(pd.Timestamp(first).value // 1_000_000)
    return int(first)


def read_segments(data_dir, trade_type: str, interval: str) -> pd.DataFrame:
    """One row per generated segment file: ``symbol``, ``first_ms``, ``end_ms`` (exclusive)
    and ``gates`` (the file's ``quality_gates`` metadata: the gen_kline gates it passed).
    The files that cannot be read are left out, and named per symbol in
    ``attrs["unreadable"]`` (``{symbol: "path: error"}``), for the page to say so, with
    what the error is in ``attrs["unreadable_kind"]`` (``{symbol: kind}``, ``unreadable_kind``):
    only a ``"damaged"`` file is repaired by removing it."""
    folder = layout.results_klines_dir(data_dir, trade_type, interval)
    step = interval_ms(interval)
    rows = []
    unreadable: dict[str, str] = {}
    kinds: dict[str, str] = {}
    for path in storage.list_files(folder, recursive=False, suffix=SUFFIX):
        symbol = _SEGMENT_RE.match(path.stem).group(2)
        try:
            meta = storage.parquet_metadata(path)
            column = meta.schema.to_arrow_schema().get_field_index("candle_begin_time")
            first = _first_time_ms(meta, column)
            if first is None and meta.num_rows:
                time = storage.read_parquet(path, columns=["candle_begin_time"]).column(0)
                first = int(time.cast(pa.int64()).to_numpy().min())
        except Exception as exc:  # any pyarrow/OS error: name the file, go on
            log.error("generated file %s unreadable, left out of the coverage: %s", path, exc)
            if symbol not in unreadable:
                unreadable[symbol] = str(exc) if str(path) in str(exc) else f"{path}: {exc}"
                kinds[symbol] = unreadable_kind(exc)
            continue
        if meta.num_rows and first is not None:
            gates = (meta.metadata or {}).get(b"quality_gates", b"{}").decode()
            rows.append((symbol, first, first + meta.num_rows * step, gates))
    frame = pd.DataFrame(rows, columns=["symbol", "first_ms", "end_ms", "gates"]).astype(
        {"first_ms": np.int64, "end_ms": np.int64}
    )
    frame.attrs["unreadable"] = unreadable
    frame.attrs["unreadable_kind"] = kinds
    return frame


def unreadable_kind(exc: BaseException) -> str:
    """What a failed read of a generated file says: ``"damaged"`` (the file's bytes do not
    decode: removing it and rebuilding repairs it), ``"machine"`` (no permission, a full
    disk, no file handle or memory: ``storage.is_machine_error``; the file may be fine),
    ``"missing"`` (gone since it was listed) or ``"storage"`` (a failing storage request,
    e.g. a transient S3 error: the file may be fine)."""
    if storage.is_machine_error(exc):
        return "machine"
    if isinstance(exc, FileNotFoundError):
        return "missing"
    if storage.is_damaged_file_error(exc):
        return "damaged"
    return "storage"


def _minutes_per_day(
    codes: np.ndarray, start_ms: np.ndarray, end_ms: np.ndarray, step: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candles of ``[start, end)`` intervals per (code, day) as three arrays: the intervals are
    cut at UTC midnights (one entry per day they touch) without a loop over days."""
    keep = end_ms > start_ms
    codes, start_ms, end_ms = codes[keep], start_ms[keep], end_ms[keep]
    first_day = start_ms // DAY_MS
    last_day = (end_ms - 1) // DAY_MS
    n_days = last_day - first_day + 1
    owner = np.repeat(np.arange(len(codes)), n_days)
    offset = np.arange(len(owner)) - np.repeat(np.cumsum(n_days) - n_days, n_days)
    day = first_day[owner] + offset
    lo = np.maximum(start_ms[owner], day * DAY_MS)
    hi = np.minimum(end_ms[owner], (day + 1) * DAY_MS)
    return codes[owner], day, (hi - lo) // step


def coverage_table(
    provenance: pd.DataFrame,
    segments: pd.DataFrame,
    *,
    trade_type: str,
    interval: str,
    end_day: int,
    now_ms: int | None = None,
) -> pd.DataFrame:
    """The coverage rows of one trade type (see the module docstring), sorted by symbol, day.

    ``provenance``: ``symbol``, ``day`` (day number), ``archive_rows``, ``rows``;
    ``segments``: ``symbol``, ``first_ms``, ``end_ms`` (exclusive). ``end_day``: day number of
    ``end_date``. ``now_ms``: the time of the report (ms); the uncovered minutes of a day that
    ends after it are pending, not missing (None: every day has ended).
    """
    step = interval_ms(interval)
    per_day = candles_per_day(interval)
    prov = provenance[provenance["day"] <= end_day]
    # Symbols as integer codes (hashing in C: no Python object per row).
    symbols = sorted(set(pd.unique(prov["symbol"])) | set(pd.unique(segments["symbol"])))
    p_code = pd.Categorical(prov["symbol"], categories=symbols).codes.astype(np.int64)
    s_code = pd.Categorical(segments["symbol"], categories=symbols).codes.astype(np.int64)
    s_first = segments["first_ms"].to_numpy(np.int64)
    s_end = segments["end_ms"].to_numpy(np.int64)

    # The symbol's life starts at its first candle: the first traded minute (a segment's
    # start) when it lies on the first day any source has a candle, else (only untraded
    # candles that day, or no generated file) the start of that day: the provenance counts
    # days, not minutes.
    n = len(symbols)
    never = np.iinfo(np.int64).max
    first_traded = np.full(n, never, dtype=np.int64)
    np.minimum.at(first_traded, s_code, s_first)
    first_row_day = np.full(n, never // DAY_MS, dtype=np.int64)
    has_rows = prov["rows"].to_numpy() > 0
    np.minimum.at(first_row_day, p_code[has_rows], prov["day"].to_numpy(np.int64)[has_rows])
    life_start = np.where(
        first_traded // DAY_MS <= first_row_day, first_traded, first_row_day * DAY_MS
    )
    alive = life_start < never // DAY_MS * DAY_MS
    first_day = np.where(alive, life_start // DAY_MS, end_day + 1)

    # Gaps: between consecutive segments of a symbol.
    order = np.lexsort((s_first, s_code))
    g_code, g_first, g_end = s_code[order], s_first[order], s_end[order]
    same = g_code[1:] == g_code[:-1]
    gap_code, gap_start, gap_end = g_code[1:][same], g_end[:-1][same], g_first[1:][same]

    # Every (symbol, day) from the first day to end_day.
    n_days = np.maximum(end_day - first_day + 1, 0)
    code = np.repeat(np.arange(n), n_days)
    day = first_day[code] + (np.arange(len(code)) - np.repeat(np.cumsum(n_days) - n_days, n_days))
    row_offset = np.cumsum(n_days) - n_days  # row of each symbol's first day

    def scatter(codes: np.ndarray, days: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Per-row sums of values given by (code, day); days outside the rows are dropped."""
        inside = (days >= first_day[codes]) & (days <= end_day)
        rows = row_offset[codes[inside]] + days[inside] - first_day[codes[inside]]
        return np.bincount(rows, weights=values[inside], minlength=len(code)).astype(np.int64)

    p_day = prov["day"].to_numpy(np.int64)
    archive = scatter(p_code, p_day, prov["archive_rows"].to_numpy(np.int64))
    union = scatter(p_code, p_day, prov["rows"].to_numpy(np.int64))
    rest = np.maximum(union - archive, 0)
    span = scatter(*_minutes_per_day(s_code, s_first, s_end, step))
    gap = scatter(*_minutes_per_day(gap_code, gap_start, gap_end, step))
    before_life = scatter(
        *_minutes_per_day(np.arange(n)[alive], first_day[alive] * DAY_MS, life_start[alive], step)
    )
    filled = np.maximum(span - np.minimum(union, span), 0)
    life = per_day - gap - before_life
    missing = np.maximum(life - archive - rest - filled, 0)
    not_over = (day + 1) * DAY_MS > now_ms if now_ms is not None else np.zeros(len(day), bool)
    pending = np.where(not_over, missing, 0)
    missing = np.where(not_over, 0, missing)
    return pd.DataFrame(
        {
            "trade_type": pd.Categorical.from_codes(np.zeros(len(code), np.int8), [trade_type]),
            "symbol": pd.Categorical.from_codes(code, symbols),
            "day": day,
            "minutes_archive": archive.astype(np.int32),
            "minutes_rest": rest.astype(np.int32),
            "minutes_filled": filled.astype(np.int32),
            "minutes_missing": missing.astype(np.int32),
            "minutes_pending": pending.astype(np.int32),
            "in_gap": gap >= per_day,
        }
    )


def build_coverage(
    data_dir, trade_types, interval: str, end_day: int, now_ms: int | None = None
) -> pd.DataFrame:
    """The coverage rows of every trade type (day as a day number); ``now_ms``: the time of
    the report (``coverage_table``)."""
    frames = [
        coverage_table(
            read_provenance(data_dir, t, interval),
            read_segments(data_dir, t, interval),
            trade_type=t,
            interval=interval,
            end_day=end_day,
            now_ms=now_ms,
        )
        for t in trade_types
    ]
    if not frames:
        return pd.DataFrame({f.name: [] for f in COVERAGE_SCHEMA})
    return pd.concat(frames, ignore_index=True)


def _strings(column: pd.Series) -> pa.Array:
    """A (categorical) string column as an Arrow string array, without a Python str per row."""
    return pa.array(column.astype("category")).cast(pa.string())


def to_arrow(coverage: pd.DataFrame) -> pa.Table:
    """The coverage rows with ``day`` as a date (the ``coverage.parquet`` schema)."""
    return pa.table(
        {
            "trade_type": _strings(coverage["trade_type"]),
            "symbol": _strings(coverage["symbol"]),
            "day": pa.array(coverage["day"].to_numpy(np.int32), pa.int32()).cast(pa.date32()),
            **{
                name: pa.array(coverage[name].to_numpy(np.int32), pa.int32())
                for name in MINUTE_COLUMNS
            },
            "in_gap": pa.array(coverage["in_gap"].to_numpy(bool), pa.bool_()),
        },
        schema=COVERAGE_SCHEMA,
    )


def category_grid(coverage: pd.DataFrame) -> tuple[np.ndarray, list[str], int]:
    """The heatmap of one trade type: a (symbols × days) array of category codes (index into
    ``CATEGORIES``; ``NO_DAY`` outside a symbol's days), the symbols (sorted by first day,
    then name) and the day number of column 0. A day's category is its largest minute count
    (ties: the earlier category), or the gap."""
    if coverage.empty:
        return np.empty((0, 0), np.uint8), [], 0
    codes, names = pd.factorize(coverage["symbol"])
    day = coverage["day"].to_numpy(np.int64)
    first = np.full(len(names), np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first, codes, day)
    order = np.lexsort((np.asarray(names, dtype=str), first))  # by first day, then name
    symbols = [str(names[i]) for i in order]
    row_of = np.empty(len(names), dtype=np.int64)
    row_of[order] = np.arange(len(names))
    day0 = int(day.min())
    width = int(day.max()) - day0 + 1
    counts = coverage[list(MINUTE_COLUMNS)].to_numpy()
    category = counts.argmax(axis=1).astype(np.uint8)
    category[coverage["in_gap"].to_numpy(bool)] = GAP
    grid = np.full((len(symbols), width), NO_DAY, dtype=np.uint8)
    grid[row_of[codes], day - day0] = category
    return grid, symbols, day0
