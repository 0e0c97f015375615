"""Explanations: one entry per section of ``docs/differences-from-bhds.md``.

A difference is *explained* only when the data shows the documented cause, never because of
a symbol's name alone: e.g. rows only on our side that lie after legacy's last archived day
and whose days our provenance table records as REST (Q9), or an ``avg_price_1m`` whose legacy
value is exactly legacy's coins-per-contract ratio clipped to ``[low, high]`` (Q3).
Sections that change nothing in the compared files are listed with the reason, so that a
difference can never be explained by them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow as pa

from crypto_lakehouse import layout, storage
from crypto_lakehouse.archive.symbols import LEVERAGE_SUFFIXES
from crypto_lakehouse.compare.discovery import (
    KLINES,
    PARSED_FUNDING,
    PARSED_KLINES,
    RESAMPLED,
    Pair,
    symbol_of_result,
)
from crypto_lakehouse.compare.times import epoch_ms
from crypto_lakehouse.intervals import DAY_MS, interval_ms
from crypto_lakehouse.parse.validate import grid_offset


@dataclass(frozen=True)
class Fix:
    id: str  # section id in docs/differences-from-bhds.md
    title: str
    detected: str  # what in the compared files is explained, decided from which data


FIXES = {
    f.id: f
    for f in (
        Fix(
            "Q1",
            "No REST batch lost to the weight back-off",
            "rows only on our side inside legacy's time range, on days our provenance table "
            "records as REST (or mixed) and for which legacy's api_data holds no day file",
        ),
        Fix(
            "Q2",
            "Gap times in time order",
            "legacy segment files that overlap in time while ours do not: the repeated rows, "
            "and legacy's filled rows inside a gap where our segments split",
        ),
        Fix(
            "Q3",
            "COIN-M VWAP",
            "cm avg_price values where legacy holds its own quote_volume / volume (coins per "
            "contract) clipped to [low, high] and ours lies in [low, high]; in resampled files "
            "where both sides hold their 1m value of the window's first minute",
        ),
        Fix(
            "Q4",
            "Funding joined after the gap fill",
            "funding that legacy has as 0 (null when resampled) at a zero-volume minute where "
            "ours holds the rate of a source funding event of that hour",
        ),
        Fix(
            "Q5",
            "REST funding without archive funding",
            "funding columns only on our side for a symbol without parsed archive funding on "
            "either side and with REST funding events in the file's time range",
        ),
        Fix("Q6", "VWAP column name (kept)", "kept: no difference expected"),
        Fix(
            "Q7",
            "Output trimmed to the first and last traded minute (kept)",
            "kept: no difference expected",
        ),
        Fix(
            "Q8",
            "Re-published archives: re-download, re-verify, re-parse",
            "not detected: the compared files keep no trace of which archive version was "
            "parsed (compare aws_data checksums by hand)",
        ),
        Fix(
            "Q9",
            "Recent tail from REST; the archive replaces it later",
            "rows only on our side after legacy's last row whose days after legacy's last "
            "archived day our provenance table records as REST (or mixed); zero-volume fill "
            "rows leading to them",
        ),
        Fix("Q10", "Single-entry listing pages", "legacy crashed: nothing to compare"),
        Fix("Q11", "Empty symbol list", "legacy crashed leaving empty folders: no file differs"),
        Fix("Q12", "HTTP 429, 418, 403 and 5xx", "legacy aborted a command: not file specific"),
        Fix(
            "Q13",
            "Funding parse: verified archives only, de-duplicated, no stale file",
            "repeated funding_time rows in legacy's parsed funding while ours has none",
        ),
        Fix("Q14", "Monthly partition bounds (kept)", "kept: no difference at 1m"),
        Fix(
            "Q15",
            "SYRUP and JUP are not leveraged tokens",
            "spot files only on our side of a symbol of which legacy holds no file at all, "
            "that legacy's leveraged-token rule drops and our listing kept",
        ),
        Fix("Q16", "Stablecoin-base USDⓈ-M perpetuals (kept)", "kept: no difference expected"),
        Fix(
            "Q17",
            "COIN-M names with two `_` are skipped",
            "cm files only on our side when legacy holds no cm klines at all and our cm "
            "listing filtered out a name with two underscores (the name that crashed legacy)",
        ),
        Fix("Q18", "Incremental outputs per symbol", "same files as a full rebuild"),
        Fix(
            "Q19",
            "`funding_rate` only for symbols with funding (kept)",
            "kept: no difference expected",
        ),
        Fix(
            "Q20",
            "Failures: transient ones fail the job, permanent defects are quarantined",
            "legacy's missing archive days were filled by its own REST step: no file differs",
        ),
        Fix(
            "off-grid",
            "Candles opening off the interval grid are floored onto it",
            "rows whose interval holds a candle that legacy's parsed_data has off the interval "
            "grid (legacy's grid join dropped it, our parse floors it onto the grid); in "
            "parsed_data, legacy's off-grid rows whose floor our file holds, and ours there",
        ),
        Fix(
            "resample-targets",
            "Resample targets are validated up front",
            "legacy wrote nothing for invalid targets; we refuse them: nothing to compare",
        ),
        Fix(
            "quality-gates",
            "Quality gates and validation (additions)",
            "checks only: no file differs",
        ),
    )
}

REST_SOURCES = ("rest", "mixed")


def note_of(fix_id: str | None) -> str:
    if not fix_id:
        return ""
    f = FIXES[fix_id]
    return f"{f.id} {f.title}: {f.detected}"


# ---------------------------------------------------------------- data read from the dirs
def _floor_day(ms):
    return np.asarray(ms, dtype=np.int64) // DAY_MS


@lru_cache(maxsize=32)
def legacy_archive_end_ms(root: str, trade_type: str, symbol: str, interval: str) -> int | None:
    """End (exclusive, ms) of the last archived day in a dir's parsed_data, or None."""
    folder = layout.parsed_klines_dir(root, trade_type, symbol, interval)
    files = storage.list_files(folder, recursive=False, suffix=".pqt")
    for path in reversed(files):
        try:
            t = storage.read_parquet(path, columns=["candle_begin_time"]).column(0)
        except Exception:
            return None
        if len(t):
            last = int(epoch_ms(t).to_numpy().max())
            return (last // DAY_MS + 1) * DAY_MS
    return None


@lru_cache(maxsize=32)
def provenance_rest_days(root: str, trade_type: str, interval: str, symbol: str) -> np.ndarray:
    """Day numbers our provenance table records as REST or mixed (empty when none)."""
    path = layout.provenance_path(root, trade_type, interval, symbol)
    try:
        t = storage.read_parquet(path, columns=["day", "source"])
    except Exception:
        return np.empty(0, dtype=np.int64)
    days = t.column("day").cast(pa.int32()).to_numpy().astype(np.int64)
    source = t.column("source").to_numpy(zero_copy_only=False).astype(str)
    return np.sort(days[np.isin(source, REST_SOURCES)])


@lru_cache(maxsize=32)
def api_kline_days(root: str, trade_type: str, symbol: str, interval: str) -> np.ndarray:
    d = layout.api_klines_dir(root, trade_type, symbol, interval)
    days = [
        np.datetime64(f"{p.stem[:4]}-{p.stem[4:6]}-{p.stem[6:8]}").astype("datetime64[D]")
        for p in storage.list_files(d, recursive=False, suffix=".pqt")
        if len(p.stem) == 8 and p.stem.isdigit()
    ]
    return np.sort(np.array(days, dtype="datetime64[D]").astype(np.int64))


@lru_cache(maxsize=32)
def funding_events(root: str, trade_type: str, symbol: str) -> tuple[np.ndarray, np.ndarray]:
    """Source funding events of a dir (archive then REST, REST wins on the same hour)."""
    times, rates = [], []
    for path in (
        layout.parsed_funding_path(root, trade_type, symbol),
        layout.api_funding_path(root, trade_type, symbol),
    ):
        try:
            t = storage.read_parquet(path, columns=["candle_begin_time", "funding_rate"])
        except Exception:
            continue
        times.append(epoch_ms(t.column(0)).to_numpy())
        rates.append(t.column(1).to_numpy())
    if not times:
        return np.empty(0, dtype=np.int64), np.empty(0)
    t, r = np.concatenate(times), np.concatenate(rates)
    rev = np.argsort(t[::-1], kind="stable")  # first of the reversed = last occurrence
    t_rev, r_rev = t[::-1][rev], r[::-1][rev]
    first = np.r_[True, t_rev[1:] != t_rev[:-1]]
    return t_rev[first], r_rev[first]


@lru_cache(maxsize=8)
def legacy_off_grid(root: str, trade_type: str, symbol: str, interval: str):
    """Times (ms, sorted) of the candles a dir's parsed_data holds off the interval grid
    (Binance's spot files of 2018-02-08: ``…:14.789``), and their floors onto the grid."""
    step = interval_ms(interval)
    folder = layout.parsed_klines_dir(root, trade_type, symbol, interval)
    found = []
    try:
        paths = storage.list_files(folder, recursive=False, suffix=".pqt")
    except OSError:  # unlistable: no evidence (discovery names such a folder)
        paths = []
    for path in paths:
        try:
            t = epoch_ms(storage.read_parquet(path, columns=["candle_begin_time"]).column(0))
        except Exception:
            continue
        t = t.to_numpy()
        found.append(t[grid_offset(t, step) != 0])
    times = np.sort(np.concatenate(found)) if found else np.empty(0, dtype=np.int64)
    return times, times - grid_offset(times, step)


def _off_grid(view, side: str, times: np.ndarray) -> np.ndarray:
    """Rows explained by candles legacy parsed off the grid: on legacy's side in parsed_data,
    the off-grid rows whose floor our file holds; elsewhere, rows whose interval holds the
    floor of one."""
    pair = view.pair
    off, floors = legacy_off_grid(
        str(view.legacy_root), pair.trade_type, pair.symbol, pair.base_interval
    )
    if not off.size or not len(times):
        return np.zeros(len(times), dtype=bool)
    if side == "legacy":
        if pair.kind != PARSED_KLINES:
            return np.zeros(len(times), dtype=bool)
        floored = times - grid_offset(times, interval_ms(pair.base_interval))
        return np.isin(times, off) & np.isin(floored, view.okeys_all)
    floors = np.sort(floors)
    i = np.searchsorted(floors, times)
    return (i < floors.size) & (
        floors[np.minimum(i, floors.size - 1)] < times + max(view.span_ms, 1)
    )


@lru_cache(maxsize=1)
def base_klines(root: str, rels: tuple[str, ...], base_interval: str, columns: tuple[str, ...]):
    """The generated base-interval files a set of resampled files came from, as one table
    sorted by time (None when absent)."""
    parts = []
    for rel in rels:
        p = rel.split("/")  # results_data/T/resampled_klines/RI/OFF/NAME.pqt
        path = storage.join(root, "results_data", p[1], "klines", base_interval, p[-1])
        try:
            names = storage.parquet_metadata(path).schema.to_arrow_schema().names
            parts.append(storage.read_parquet(path, columns=[c for c in columns if c in names]))
        except Exception:
            return None
    if not parts:
        return None
    t = pa.concat_tables(parts, promote_options="default")
    return t.sort_by("candle_begin_time")


def _lookup(table, times: np.ndarray, column: str):
    """Values of ``column`` at ``times`` (NaN when the minute or the column is absent)."""
    out = np.full(len(times), np.nan)
    if table is None or column not in table.column_names:
        return out
    k = epoch_ms(table.column("candle_begin_time")).to_numpy()
    pos = np.minimum(np.searchsorted(k, times), max(len(k) - 1, 0))
    found = (k[pos] == times) if len(k) else np.zeros(len(times), dtype=bool)
    col = table.column(column)
    if pa.types.is_timestamp(col.type):
        col = epoch_ms(col)
    vals = col.cast(pa.float64()).to_numpy()
    out[found] = vals[pos[found]]
    return out


def clear_caches() -> None:
    """Forget what was read from the dirs (a new comparison may see changed files)."""
    for fn in (
        legacy_archive_end_ms,
        provenance_rest_days,
        api_kline_days,
        funding_events,
        legacy_off_grid,
        base_klines,
        parsed_archive_sha,
        file_sha256,
        result_symbols,
        listing_indexes,
    ):
        fn.cache_clear()


# ---------------------------------------------------------------- files only on one side
def explain_file_only(
    pair: Pair, side: str, legacy_root: Path, our_root: Path, run_dir: str | None = None
):
    """``run_dir``: our run directory (config ``run_dir``; None: the default of our dir)."""
    if side != "ours":
        return None, ""
    run = layout.default_run_dir(str(our_root)) if run_dir is None else str(run_dir)
    if pair.trade_type == "spot" and _q15(pair, legacy_root, run):
        return "Q15", note_of("Q15")
    if pair.trade_type == "cm_futures" and _q17(legacy_root, run):
        return "Q17", note_of("Q17")
    return None, ""


@lru_cache(maxsize=8)
def result_symbols(root: str, trade_type: str) -> frozenset[str]:
    """Symbols with any generated or resampled file in a dir (listed once per comparison)."""
    results = storage.join(root, "results_data", trade_type)
    return frozenset(symbol_of_result(p.stem) for p in storage.list_files(results, suffix=".pqt"))


def _legacy_has_symbol(legacy_root: Path, trade_type: str, symbol: str) -> bool:
    if storage.exists(legacy_root / "parsed_data" / trade_type / "klines" / symbol):
        return True
    return symbol in result_symbols(str(legacy_root), trade_type)


@lru_cache(maxsize=8)
def listing_indexes(run_dir: str, trade_type: str) -> tuple[dict, ...]:
    """Our kline listing indexes of a trade type (read once per comparison), in our run
    directory (a local folder, also for an s3:// data dir: docs/storage.md)."""
    out = []
    folder = layout.run_listing_dir(run_dir, trade_type)
    for path in storage.list_files(folder, recursive=False, suffix=".json"):
        if not path.name.startswith("klines-"):
            continue
        try:
            out.append(json.loads(storage.read_text(path)))
        except (OSError, ValueError):
            continue
    return tuple(out)


def _q15(pair: Pair, legacy_root: Path, run_dir: str) -> bool:
    if _legacy_has_symbol(legacy_root, pair.trade_type, pair.symbol):
        return False
    if not pair.symbol.endswith("USDT"):
        return False
    base = pair.symbol[: -len("USDT")]
    # legacy's rule (spec §2.3): a base ending like a leveraged token is dropped, JUP excepted
    if not (base.endswith(LEVERAGE_SUFFIXES) and base != "JUP"):
        return False
    return any(pair.symbol in idx.get("symbols", {}) for idx in listing_indexes(run_dir, "spot"))


def _q17(legacy_root: Path, run_dir: str) -> bool:
    legacy_cm = legacy_root / "parsed_data" / "cm_futures" / "klines"
    if storage.is_dir(legacy_cm) if storage.is_remote(legacy_cm) else storage.file_names(legacy_cm):
        return False  # (locally: any entry, file or folder, as legacy's own check)
    return any(
        entry.get("name", "").count("_") >= 2
        for idx in listing_indexes(run_dir, "cm_futures")
        for entry in idx.get("filtered_out", [])
    )


# ---------------------------------------------------------------- columns on one side
FUNDING_COLUMNS = ("funding_rate", "funding_price", "funding_time")


def explain_column_only(view, side: str, column: str):
    pair = view.pair
    if (
        side == "ours"
        and column in FUNDING_COLUMNS
        and pair.kind in (KLINES, RESAMPLED)
        and pair.trade_type in layout.FUTURES_TRADE_TYPES
    ):
        lroot, oroot = str(view.legacy_root), str(view.our_root)
        if not storage.exists(
            layout.parsed_funding_path(lroot, pair.trade_type, pair.symbol)
        ) and not storage.exists(layout.parsed_funding_path(oroot, pair.trade_type, pair.symbol)):
            times, _ = funding_events(oroot, pair.trade_type, pair.symbol)
            k = view.okeys_all
            if k.size and ((times >= k.min()) & (times < k.max() + view.span_ms)).any():
                return "Q5", note_of("Q5")
    return None, ""


# ---------------------------------------------------------------- repeated keys
def _overlapping(ranges) -> bool:
    r = sorted(ranges)
    return any(b[0] <= a[1] for a, b in zip(r, r[1:], strict=False))


def explain_duplicates(view, side: str, rows: np.ndarray):
    pair = view.pair
    other = view.o_dups if side == "legacy" else view.l_dups
    if side != "legacy" or other.size:
        return None, ""
    if pair.kind == PARSED_FUNDING:
        return "Q13", note_of("Q13")
    if pair.kind in (KLINES, RESAMPLED) and _q2_segments(view):
        return "Q2", note_of("Q2")
    return None, ""


def _q2_segments(view) -> bool:
    """Legacy's segment files overlap in time, ours do not."""
    if len(view.legacy.paths) < 2:
        return False
    lr = view.legacy.file_ranges(view.key)
    orng = view.ours.file_ranges(view.key)
    return _overlapping(lr) and not _overlapping(orng)


# ---------------------------------------------------------------- rows on one side
def explain_rows_only(view, side: str, rows: np.ndarray, run_ids: np.ndarray) -> np.ndarray:
    """Fix id per row ("" when unexplained); rows are positions in that side's files."""
    out = np.full(len(rows), "", dtype=object)
    pair = view.pair
    if pair.kind not in (KLINES, RESAMPLED, PARSED_KLINES):
        return out
    if pair.kind == PARSED_KLINES:
        pass  # parsed partitions: only off-grid candles and re-published archives (below)
    elif side == "ours":
        _rest_rows(view, rows, run_ids, out)
    elif _q2_segments(view):
        t = view.lkeys_all[rows]
        ranges = view.ours.file_ranges(view.key)
        inside = np.zeros(len(t), dtype=bool)
        for a, b in ranges:
            inside |= (t >= a) & (t <= b)
        lo, hi = min(a for a, _ in ranges), max(b for _, b in ranges)
        ok = ~inside & (t > lo) & (t < hi)
        if pair.kind == KLINES:
            ok &= view.legacy.floats("volume", rows) == 0
        out[ok] = "Q2"
    rest = out == ""
    if rest.any():
        out[rest & _off_grid(view, side, view.keys(side)[rows])] = "off-grid"
    rest = out == ""
    if rest.any():
        out[rest & _q8(view, view.keys(side)[rows])] = "Q8"
    return out


def _rest_rows(view, rows, run_ids, out) -> None:
    """Q9 (recent tail) and Q1 (lost REST batch) for runs of rows only on our side."""
    pair = view.pair
    base = pair.base_interval
    oroot, lroot = str(view.our_root), str(view.legacy_root)
    rest_days = provenance_rest_days(oroot, pair.trade_type, base, pair.symbol)
    archive_end = legacy_archive_end_ms(lroot, pair.trade_type, pair.symbol, base)
    if rest_days.size == 0 or archive_end is None or view.lkeys_all.size == 0:
        return
    t = view.okeys_all[rows]
    span = view.span_ms
    d0, d1 = _floor_day(t), _floor_day(t + span - 1)
    row_rest = np.isin(d0, rest_days) | np.isin(d1, rest_days)
    filled = np.zeros(len(t), dtype=bool)
    if pair.kind == KLINES:  # zero-volume rows our fill re-created next to the REST rows
        filled = view.ours.floats("volume", rows) == 0
    lfirst, llast = int(view.lkeys_all.min()), int(view.lkeys_all.max())
    starts = np.flatnonzero(np.r_[True, run_ids[1:] != run_ids[:-1]])

    def per_run(mask_all, mask_any):
        all_ok = np.logical_and.reduceat(mask_all, starts)
        any_ok = np.logical_or.reduceat(mask_any, starts)
        return np.repeat(all_ok & any_ok, np.diff(np.r_[starts, len(t)]))

    tail = (t > llast) & ((row_rest & (t + span > archive_end)) | filled)
    q9 = per_run(tail, row_rest & (t + span > archive_end))
    legacy_api = api_kline_days(lroot, pair.trade_type, pair.symbol, base)
    lost = row_rest & ~np.isin(d0, legacy_api) & ~np.isin(d1, legacy_api)
    inner = (t > lfirst) & (t < llast) & (lost | filled)
    q1 = per_run(inner, lost)
    out[q9] = "Q9"
    out[q1 & ~q9] = "Q1"


# ---------------------------------------------------------------- values on common rows
def explain_values(view, column: str, bad: np.ndarray) -> np.ndarray:
    """Fix id per differing common row ("" when unexplained)."""
    out = np.full(len(bad), "", dtype=object)
    pair = view.pair
    if pair.trade_type == "cm_futures" and column.startswith("avg_price_"):
        out[_q3(view, column, bad)] = "Q3"
    elif column in FUNDING_COLUMNS and pair.trade_type in layout.FUTURES_TRADE_TYPES:
        out[_q4(view, column, bad)] = "Q4"
    rest = out == ""
    if rest.any() and pair.kind in (KLINES, RESAMPLED, PARSED_KLINES):
        out[rest & _off_grid(view, "common", view.common_times[bad])] = "off-grid"
    rest = out == ""
    if rest.any() and pair.kind in (KLINES, RESAMPLED, PARSED_KLINES):
        out[rest & _q8(view, view.common_times[bad])] = "Q8"
    return out


@lru_cache(maxsize=4)
def parsed_archive_sha(root: str, trade_type: str, interval: str, symbol: str) -> dict:
    """Archive key → SHA-256 of the version our aws_parse read (its private state)."""
    path = layout.state_path(root, "aws_parse", trade_type, f"klines-{interval}", symbol)
    try:
        return json.loads(storage.read_text(path)).get("files", {})
    except (OSError, ValueError):
        return {}


@lru_cache(maxsize=256)
def file_sha256(path: str) -> str | None:
    try:
        return storage.sha256(path)
    except OSError:
        return None


def _q8(view, times: np.ndarray) -> np.ndarray:
    """Rows on days whose archive legacy holds in another version than the one we parsed."""
    pair = view.pair
    base = pair.base_interval
    ours = parsed_archive_sha(str(view.our_root), pair.trade_type, base, pair.symbol)
    out = np.zeros(len(times), dtype=bool)
    if not ours or not len(times):
        return out
    span = max(view.span_ms, 1)
    first_day, last_day = _floor_day(times), _floor_day(times + span - 1)
    republished = []
    for d in np.unique(np.concatenate([first_day, last_day])):
        day = str(np.datetime64(int(d), "D"))
        keys = (
            layout.daily_kline_key(pair.trade_type, pair.symbol, base, day),
            layout.monthly_kline_key(pair.trade_type, pair.symbol, base, day[:7]),
        )
        for key in keys:
            legacy_sha = file_sha256(str(layout.aws_path(view.legacy_root, key)))
            if key in ours and legacy_sha is not None and legacy_sha != ours[key]:
                republished.append(d)
                break
    if republished:
        out = np.isin(first_day, republished) | np.isin(last_day, republished)
    return out


def _legacy_vwap(vol, quote, open_, low, high):
    """Legacy's avg_price for every market (spec §8.2): quote_volume / volume, open when
    there is no volume, clipped to [low, high]."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(vol > 0, quote / vol, open_)
    return np.minimum(np.maximum(ratio, low), high)


def _q3(view, column, bad):
    tol = view.options.price_tolerance
    lrows, orows = view.l_common[bad], view.o_common[bad]
    leg, our = view.legacy, view.ours
    lv, ov = leg.floats(column, lrows), our.floats(column, orows)
    if view.pair.kind == KLINES:
        expected = _legacy_vwap(
            *(leg.floats(c, lrows) for c in ("volume", "quote_volume", "open", "low", "high"))
        )
        inside = (ov >= our.floats("low", orows) - tol) & (ov <= our.floats("high", orows) + tol)
        return (np.abs(lv - expected) <= tol) & inside
    if view.pair.kind != RESAMPLED:
        return np.zeros(len(bad), dtype=bool)
    t = view.common_times[bad]
    cols = ("candle_begin_time", column, "volume", "quote_volume", "open", "low", "high")
    lb = base_klines(str(view.legacy_root), view.pair.legacy, view.pair.base_interval, cols)
    ob = base_klines(str(view.our_root), view.pair.ours, view.pair.base_interval, cols)
    l_first, o_first = _lookup(lb, t, column), _lookup(ob, t, column)
    expected = _legacy_vwap(
        *(_lookup(lb, t, c) for c in ("volume", "quote_volume", "open", "low", "high"))
    )
    return (
        (np.abs(lv - l_first) <= tol)
        & (np.abs(ov - o_first) <= tol)
        & (np.abs(l_first - expected) <= tol)
    )


def _q4(view, column, bad):
    ftol = view.options.funding_tolerance
    lrows, orows = view.l_common[bad], view.o_common[bad]
    leg, our = view.legacy, view.ours
    times, rates = funding_events(str(view.our_root), view.pair.trade_type, view.pair.symbol)
    if view.pair.kind == KLINES and column == "funding_rate":
        t = view.common_times[bad]
        pos = np.minimum(np.searchsorted(times, t), max(len(times) - 1, 0))
        has_event = (times[pos] == t) if len(times) else np.zeros(len(t), dtype=bool)
        ov = our.floats(column, orows)
        event_rate = np.where(has_event, rates[pos] if len(rates) else np.nan, np.nan)
        return (
            (leg.floats(column, lrows) == 0)
            & (our.floats("volume", orows) == 0)
            & has_event
            & (np.abs(ov - event_rate) <= ftol)
        )
    if view.pair.kind != RESAMPLED:
        return np.zeros(len(bad), dtype=bool)
    minute = our.floats("funding_time", orows)
    ok = np.isnan(leg.floats(column, lrows)) & ~np.isnan(minute)
    m = np.where(ok, minute, 0).astype(np.int64)
    cols = ("candle_begin_time", "volume", "funding_rate")
    lb = base_klines(str(view.legacy_root), view.pair.legacy, view.pair.base_interval, cols)
    ob = base_klines(str(view.our_root), view.pair.ours, view.pair.base_interval, cols)
    o_rate = _lookup(ob, m, "funding_rate")
    return (
        ok
        & (_lookup(ob, m, "volume") == 0)
        & (np.abs(o_rate) > 0)
        & (_lookup(lb, m, "funding_rate") == 0)
        & np.isin(m, times)
    )
