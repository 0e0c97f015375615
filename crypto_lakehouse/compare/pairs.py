"""Compare one file pair: schema, rows on the common time range, rows on one side only,
per-column largest absolute and relative differences, each difference classified.

Memory is bounded by the pair: the key columns of both sides, plus one value column of each
side at a time (columns are read one by one from the Parquet files).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from crypto_lakehouse import storage
from crypto_lakehouse.compare import explain
from crypto_lakehouse.compare.discovery import KLINES, PARSED_FUNDING, PARSED_KLINES, Pair
from crypto_lakehouse.compare.model import (
    COLUMN_ONLY,
    COLUMN_ORDER,
    COLUMN_TYPE,
    DUPLICATE_ROWS,
    EQUAL,
    EXPLAINED,
    FILE_ONLY,
    INTERVAL,
    MAX_RANGES,
    ROW_ORDER,
    ROWS_ONLY,
    SEGMENTS,
    UNEXPLAINED,
    UNREADABLE,
    VALUES,
    WITHIN,
    Difference,
    PairResult,
    iso,
    plain,
)
from crypto_lakehouse.compare.times import epoch_ms
from crypto_lakehouse.intervals import interval_ms
from crypto_lakehouse.parse.validate import grid_offset


def tolerance_problem(value: float) -> str | None:
    """None for a usable absolute tolerance, else why not: a negative one would turn
    differences within tolerance into unexplained ones, NaN or infinity would pass every
    value difference."""
    if math.isfinite(value) and value >= 0:
        return None
    return f"{value!r} is not a tolerance: a finite number >= 0"


@dataclass(frozen=True)
class Options:
    price_tolerance: float = 1e-4
    funding_tolerance: float = 1e-6
    # Our run directory (config run_dir), where the listing indexes of Q15 and Q17 are;
    # None: the default one of our data dir (layout.default_run_dir).
    run_dir: str | None = None
    # The time window compared (``--start``/``--end``): rows whose key (candle_begin_time,
    # funding_time) is at or after ``start_ms`` and before ``end_ms``, in ms since the
    # epoch; None: unbounded on that side.
    start_ms: int | None = None
    end_ms: int | None = None

    def __post_init__(self):
        for option in fields(self):
            if not option.name.endswith("_tolerance"):
                continue
            problem = tolerance_problem(getattr(self, option.name))
            if problem:
                raise ValueError(f"{option.name}: {problem}")
        if self.start_ms is not None and self.end_ms is not None and self.start_ms >= self.end_ms:
            raise ValueError(f"start_ms {self.start_ms} is not before end_ms {self.end_ms}")

    @property
    def windowed(self) -> bool:
        return self.start_ms is not None or self.end_ms is not None

    def in_window(self, keys: np.ndarray) -> np.ndarray:
        """Which of ``keys`` (ms) lie in the window."""
        inside = np.ones(len(keys), dtype=bool)
        if self.start_ms is not None:
            inside &= keys >= self.start_ms
        if self.end_ms is not None:
            inside &= keys < self.end_ms
        return inside

    def tolerance(self, column: str) -> float:
        # The legacy author's thresholds (data_compare.py): 1e-6 on funding rates, 1e-4 on
        # every other value (prices, volumes, counts).
        return self.funding_tolerance if column == "funding_rate" else self.price_tolerance


class ReadError(Exception):
    """A file of a pair that cannot be compared: unreadable (``exc``), or readable but not
    comparable (``problem``: no key column, segment files with other columns)."""

    def __init__(self, path: Path, exc: Exception | None, side: str, problem: str = ""):
        super().__init__(
            f"{path}: {problem}"
            if problem
            else f"{path}: cannot read Parquet ({type(exc).__name__}: {exc})"
        )
        self.path, self.side = path, side


class Side:
    """The files of one side of a pair (several for a segment group), read column by column."""

    def __init__(self, name: str, root: Path, rels: tuple[str, ...]):
        self.name, self.root = name, root
        self.paths = [root / rel for rel in rels]
        self.files = []
        for path in self.paths:
            try:
                self.files.append(storage.parquet_file(path))
            except Exception as exc:  # a truncated file fails on its footer
                raise ReadError(path, exc, self.name) from exc
        self.schema = self.files[0].schema_arrow
        for path, f in zip(self.paths[1:], self.files[1:], strict=True):
            if f.schema_arrow.names != self.schema.names:
                raise ReadError(
                    path,
                    None,
                    name,
                    f"columns differ from {self.paths[0]}: {f.schema_arrow.names}"
                    f" against {self.schema.names}",
                )
        self.names = list(self.schema.names)
        self.rows_per_file = [f.metadata.num_rows for f in self.files]
        self.keep: np.ndarray | None = None  # row index of each distinct key (last occurrence)
        self._cache: dict[str, pa.ChunkedArray] = {}
        if sum(self.rows_per_file) <= WHOLE_TABLE_ROWS:
            # One read per file: per-column reads cost more than they save on small files.
            for path, f in zip(self.paths, self.files, strict=True):
                try:
                    table = f.read()
                except Exception as exc:
                    raise ReadError(path, exc, self.name) from exc
                for name in self.names:
                    self._cache.setdefault(name, []).extend(table.column(name).chunks)
            self._cache = {
                name: pa.chunked_array(chunks, type=self.schema.field(name).type)
                for name, chunks in self._cache.items()
            }

    def read(self, column: str) -> pa.ChunkedArray:
        if column in self._cache:
            return self._cache[column]
        chunks = []
        for path, f in zip(self.paths, self.files, strict=True):
            try:
                chunks.extend(f.read(columns=[column]).column(0).chunks)
            except Exception as exc:  # corrupt pages are found only when read
                raise ReadError(path, exc, self.name) from exc
        return pa.chunked_array(chunks, type=self.schema.field(column).type)

    def floats(self, column: str, rows: np.ndarray) -> np.ndarray:
        """Values as float64 at ``rows`` (nulls as NaN); a missing column reads as NaN.

        Only the explainers call this, for the rows of a difference, several times for the
        same few columns: those are kept once read. The comparison itself reads each column
        once (``read``), so a pair without differences holds no column beyond the one it
        compares (before 2026-12-06 five columns of each side were kept: a pair of
        3-million-row files peaked at 0.60 GB resident, now 0.40 GB)."""
        if column not in self.names:
            return np.full(len(rows), np.nan)
        arr = self._cache.get(column)
        if arr is None:
            arr = self.read(column)
            if column in _CACHED:
                self._cache[column] = arr
        return _as_float(arr.take(pa.array(rows)))

    def file_ranges(self, key: str) -> list[tuple[int, int]]:
        """(first, last) key of each file, for segment groups."""
        out, start = [], 0
        k = _as_int(self.read(key))
        for n in self.rows_per_file:
            if n:
                out.append((int(k[start : start + n].min()), int(k[start : start + n].max())))
            start += n
        return out


# Files of at most this many rows (both segments together) are read whole; larger ones
# column by column, so that memory stays at the keys plus one column pair.
WHOLE_TABLE_ROWS = 200_000
# Columns the explainers read again and again (``Side.floats``).
_CACHED = {"volume", "open", "low", "high"}


def _as_int(arr) -> np.ndarray:
    if pa.types.is_timestamp(arr.type) or pa.types.is_date(arr.type):
        arr = epoch_ms(arr)
    if arr.null_count:
        arr = pc.fill_null(arr, 0)
    return np.asarray(arr.to_numpy(), dtype=np.int64)


def _as_float(arr) -> np.ndarray:
    t = arr.type
    if pa.types.is_timestamp(t):
        arr = epoch_ms(arr)
    elif pa.types.is_boolean(t):
        arr = arr.cast(pa.int8())
    elif pa.types.is_string(t) or pa.types.is_large_string(t):
        arr = pc.cast(arr, pa.float64(), safe=False)
    out = arr.cast(pa.float64()).to_numpy()
    if isinstance(out, pa.ChunkedArray):
        out = out.to_numpy()
    return np.asarray(out, dtype=np.float64)


def _numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_timestamp(t)


def _distinct_last(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row of the last occurrence of each distinct key, in key order; and the dropped rows."""
    order = np.argsort(keys, kind="stable")
    sk = keys[order]
    last = np.ones(len(sk), dtype=bool)
    last[:-1] = sk[1:] != sk[:-1]
    return order[last], order[~last]


def _runs(positions: np.ndarray) -> np.ndarray:
    """Run id of each position, a run being consecutive positions."""
    if positions.size == 0:
        return positions
    return np.concatenate(([0], np.cumsum(np.diff(positions) != 1)))


def _ranges(times: np.ndarray, run_ids: np.ndarray) -> list[list]:
    if times.size == 0:
        return []
    starts = np.flatnonzero(np.r_[True, run_ids[1:] != run_ids[:-1]])
    ends = np.r_[starts[1:], times.size] - 1
    return [
        [iso(times[a]), iso(times[b]), int(b - a + 1)]
        for a, b in zip(starts[:MAX_RANGES], ends[:MAX_RANGES], strict=True)
    ]


class PairView:
    """Both sides of a pair aligned on their key, for the comparison and the explainers."""

    def __init__(self, pair: Pair, legacy_root: Path, our_root: Path, options: Options):
        self.pair, self.options = pair, options
        self.legacy_root, self.our_root = legacy_root, our_root
        self.legacy = Side("legacy", legacy_root, pair.legacy)
        self.ours = Side("ours", our_root, pair.ours)
        self.key = (
            "funding_time"
            if pair.kind == PARSED_FUNDING and "funding_time" in self.legacy.names
            else "candle_begin_time"
        )
        self.span_ms = interval_ms(pair.interval) if pair.interval else 0
        for side in (self.legacy, self.ours):
            if self.key not in side.names:
                raise ReadError(
                    side.paths[0], None, side.name, f"no {self.key} column (columns: {side.names})"
                )
        self.lkeys_all = _as_int(self.legacy.read(self.key))
        self.okeys_all = _as_int(self.ours.read(self.key))
        # Rows outside the window (Options.start_ms/end_ms) are left out of every row and
        # value comparison, as if neither file held them.
        window = options.windowed
        lin = options.in_window(self.lkeys_all) if window else None
        oin = options.in_window(self.okeys_all) if window else None
        self.legacy_rows = int(lin.sum()) if window else len(self.lkeys_all)
        self.our_rows = int(oin.sum()) if window else len(self.okeys_all)
        if (
            not window
            and np.array_equal(self.lkeys_all, self.okeys_all)
            and _strictly_increasing(self.lkeys_all)
        ):
            n = len(self.lkeys_all)
            self.legacy.keep = self.ours.keep = np.arange(n)
            self.l_dups = self.o_dups = np.empty(0, dtype=np.int64)
            self.l_common = self.o_common = np.arange(n)
            self.l_only_pos = self.o_only_pos = np.empty(0, dtype=np.int64)
        else:
            self.legacy.keep, self.l_dups = _distinct_last(self.lkeys_all)
            self.ours.keep, self.o_dups = _distinct_last(self.okeys_all)
            if window:
                self.legacy.keep = self.legacy.keep[lin[self.legacy.keep]]
                self.l_dups = self.l_dups[lin[self.l_dups]]
                self.ours.keep = self.ours.keep[oin[self.ours.keep]]
                self.o_dups = self.o_dups[oin[self.o_dups]]
            ul, uo = self.lkeys_all[self.legacy.keep], self.okeys_all[self.ours.keep]
            pos = np.minimum(np.searchsorted(uo, ul), max(len(uo) - 1, 0))
            match = (uo[pos] == ul) if len(uo) else np.zeros(len(ul), dtype=bool)
            self.l_common = self.legacy.keep[match]
            self.o_common = self.ours.keep[pos[match]]
            seen = np.zeros(len(uo), dtype=bool)
            seen[pos[match]] = True
            self.l_only_pos = np.flatnonzero(~match)
            self.o_only_pos = np.flatnonzero(~seen)
        self.common_times = self.lkeys_all[self.l_common]
        n = len(self.l_common)
        # The common rows are every row of both files in stored order: no gather needed.
        self.identity = (
            n == len(self.lkeys_all) == len(self.okeys_all)
            and (n == 0 or (self.l_common[-1] == n - 1 and self.o_common[-1] == n - 1))
            and _strictly_increasing(self.l_common)
            and _strictly_increasing(self.o_common)
        )

    def side(self, name: str) -> Side:
        return self.legacy if name == "legacy" else self.ours

    def keys(self, name: str) -> np.ndarray:
        return self.lkeys_all if name == "legacy" else self.okeys_all


def _strictly_increasing(k: np.ndarray) -> bool:
    return bool(k.size < 2 or (np.diff(k) > 0).all())


def _rows_in_window(pair: Pair, side: str, root: Path, options: Options) -> bool:
    """Whether the files of ``side`` of a one-sided pair hold a row in the window (True
    when they cannot be read: the file-only difference is reported as without a window)."""
    try:
        files = Side(side, root, pair.legacy if side == "legacy" else pair.ours)
        key = "funding_time" if "funding_time" in files.names else "candle_begin_time"
        return bool(options.in_window(_as_int(files.read(key))).any())
    except Exception:
        return True


def compare_pair(
    pair: Pair, legacy_root: Path, our_root: Path, options: Options
) -> PairResult | None:
    """Compare one pair; never raises for bad data (it becomes an unexplained difference).
    None: with a window (``Options.start_ms``/``end_ms``), neither side holds a row in it
    (the pair is not compared at all)."""
    result = PairResult(
        pair.label, pair.kind, pair.trade_type, pair.symbol, list(pair.legacy), list(pair.ours)
    )
    if not pair.legacy or not pair.ours:
        if options.windowed and not _rows_in_window(
            pair,
            "legacy" if pair.legacy else "ours",
            legacy_root if pair.legacy else our_root,
            options,
        ):
            return None
        side = "legacy" if pair.legacy else "ours"
        fix, note = explain.explain_file_only(pair, side, legacy_root, our_root, options.run_dir)
        missing = "ours" if side == "legacy" else "legacy"
        result.differences.append(
            Difference(
                pair.label,
                FILE_ONLY,
                EXPLAINED if fix else UNEXPLAINED,
                side=side,
                fix=fix,
                note=note or f"no such file on the {missing} side",
            )
        )
        return result
    try:
        view = PairView(pair, legacy_root, our_root, options)
        if options.windowed and not (view.legacy_rows or view.our_rows):
            return None
        _compare(view, result)
    except ReadError as exc:
        result.differences.append(
            Difference(
                pair.label,
                UNREADABLE,
                UNEXPLAINED,
                note=str(exc),
                side=exc.side,
            )
        )
    except Exception as exc:  # data we did not foresee: report it, go on with the others
        files = ", ".join(str(legacy_root / r) for r in pair.legacy)
        files += " vs " + ", ".join(str(our_root / r) for r in pair.ours)
        result.differences.append(
            Difference(
                pair.label,
                UNREADABLE,
                UNEXPLAINED,
                note=f"{files}: comparison failed ({type(exc).__name__}: {exc})",
            )
        )
    return result


def _compare(view: PairView, result: PairResult) -> None:
    pair, diffs = view.pair, result.differences
    lnames, onames = view.legacy.names, view.ours.names
    result.legacy_rows, result.our_rows = view.legacy_rows, view.our_rows
    result.common_rows = len(view.l_common)
    _check_interval(view, diffs)
    _check_order(view, diffs)
    # ---- schema
    for side, mine, other in (("legacy", lnames, onames), ("ours", onames, lnames)):
        for col in (c for c in mine if c not in other):
            fix, note = explain.explain_column_only(view, side, col)
            diffs.append(
                Difference(
                    pair.label,
                    COLUMN_ONLY,
                    EXPLAINED if fix else UNEXPLAINED,
                    side=side,
                    column=col,
                    fix=fix,
                    note=note or f"column only on the {side} side",
                )
            )
    shared = [c for c in lnames if c in onames]
    if shared != [c for c in onames if c in lnames]:
        diffs.append(
            Difference(
                pair.label, COLUMN_ORDER, UNEXPLAINED, note=f"legacy order {lnames}, ours {onames}"
            )
        )
    for col in shared:
        lt, ot = view.legacy.schema.field(col).type, view.ours.schema.field(col).type
        if lt != ot:
            diffs.append(
                Difference(
                    pair.label,
                    COLUMN_TYPE,
                    UNEXPLAINED,
                    column=col,
                    legacy_value=str(lt),
                    our_value=str(ot),
                    note=f"type {lt} on the legacy side, {ot} on ours",
                )
            )
    # ---- rows
    for side, dups in (("legacy", view.l_dups), ("ours", view.o_dups)):
        if dups.size:
            t = view.keys(side)[dups]
            fix, note = explain.explain_duplicates(view, side, dups)
            diffs.append(
                Difference(
                    pair.label,
                    DUPLICATE_ROWS,
                    EXPLAINED if fix else UNEXPLAINED,
                    side=side,
                    count=int(dups.size),
                    first_time=iso(t.min()),
                    fix=fix,
                    note=note or "repeated key; the last row is compared",
                )
            )
    for side, pos in (("legacy", view.l_only_pos), ("ours", view.o_only_pos)):
        if pos.size:
            _rows_only(view, side, pos, diffs)
    # ---- values on the common rows, one column at a time
    for col in shared:
        if col == view.key:
            continue
        _compare_column(view, col, result)
    if pair.kind in (KLINES, "resampled_klines") and len(pair.legacy) + len(pair.ours) > 2:
        _segments(view, diffs)


def _check_interval(view: PairView, diffs: list) -> None:
    """A kline file whose candles are not spaced by the interval of its path: the nearest
    two candles of distinct grid slots are not one interval apart, or two candles share a
    slot. Slots, not times: a candle opening off the grid (legacy's parsed_data of Binance's
    spot files of 2018-02-08, ``…:14.789``) lies in its slot and is no other interval (it is
    a row difference, explained as ``off-grid``); before 2026-12-06 its 45 s and 74 s distances
    to its neighbours were 'mismatched intervals'."""
    if view.pair.kind not in (KLINES, PARSED_KLINES) or not view.span_ms:
        return
    span = view.span_ms
    for side in (view.legacy, view.ours) if not view.identity else (view.legacy,):
        k = view.keys(side.name)[side.keep]  # distinct keys in key order
        off = grid_offset(k, span)
        # (slots computed only when a candle is off the grid: a 3M-row pair holds no more)
        step = np.diff(k - off) if off.any() else np.diff(k)
        del off
        if step.size and int(step.min()) != span:  # 0: two candles in one slot
            step = np.diff(k)
            diffs.append(
                Difference(
                    view.pair.label,
                    INTERVAL,
                    UNEXPLAINED,
                    side=side.name,
                    note=f"{side.paths[0]}: candles {int(step.min()) // 1000} s apart, not "
                    f"{view.pair.interval} as its path says: mismatched intervals",
                )
            )


def _check_order(view: PairView, diffs: list) -> None:
    """A file whose rows are not in ascending key order (legacy and we write them sorted;
    code that takes the last row as the latest relies on it). Rows are matched by key, so
    before 2026-12-06 a file in another order compared as equal."""
    for side in (view.legacy, view.ours):
        keys, start = view.keys(side.name), 0
        for path, n in zip(side.paths, side.rows_per_file, strict=True):
            k = keys[start : start + n]
            start += n
            back = np.flatnonzero(np.diff(k) < 0)
            if back.size:
                i = int(back[0]) + 1
                diffs.append(
                    Difference(
                        view.pair.label,
                        ROW_ORDER,
                        UNEXPLAINED,
                        side=side.name,
                        count=int(back.size),
                        first_time=iso(k[i]),
                        note=f"{path}: rows not in ascending {view.key} order: row {i} "
                        f"({iso(k[i])}) follows {iso(k[i - 1])}; {back.size} such step(s)",
                    )
                )


def _rows_only(view: PairView, side: str, pos: np.ndarray, diffs: list) -> None:
    rows = view.side(side).keep[pos]
    times = view.keys(side)[rows]
    run_ids = _runs(pos)
    fixes = explain.explain_rows_only(view, side, rows, run_ids)
    for fix in dict.fromkeys(fixes):
        sel = fixes == fix
        label = fix or None
        diffs.append(
            Difference(
                view.pair.label,
                ROWS_ONLY,
                EXPLAINED if label else UNEXPLAINED,
                side=side,
                count=int(sel.sum()),
                first_time=iso(times[sel][0]),
                ranges=_ranges(times[sel], run_ids[sel]),
                fix=label,
                note=explain.note_of(label) if label else f"rows only on the {side} side",
            )
        )


BLOCK = 1 << 15  # rows per block of the arithmetic: temporaries stay in the CPU cache


def _numeric_differences(a: np.ndarray, b: np.ndarray, tol: float):
    """Absolute and relative differences and the rows beyond ``tol``; NaN (null) equals NaN
    and differs from any number. Computed block by block into the output arrays: the
    columns may hold millions of rows, and cache-sized blocks make each pass cheap."""
    n = a.size
    absd, reld, bad = np.empty(n), np.empty(n), np.empty(n, dtype=bool)
    t1, t2 = np.empty(min(n, BLOCK)), np.empty(min(n, BLOCK))
    tiny = np.finfo(np.float64).tiny
    any_nan = False
    with np.errstate(invalid="ignore", divide="ignore"):
        for lo in range(0, n, BLOCK):
            hi = min(lo + BLOCK, n)
            m = hi - lo
            x, y, d, r, u, v = a[lo:hi], b[lo:hi], absd[lo:hi], reld[lo:hi], t1[:m], t2[:m]
            np.subtract(x, y, out=d)
            np.abs(d, out=d)
            np.abs(x, out=u)
            np.abs(y, out=v)
            np.maximum(u, v, out=u)
            np.maximum(u, tiny, out=u)  # 0 / 0 → 0
            np.divide(d, u, out=r)
            np.greater(d, tol, out=bad[lo:hi])
            any_nan = any_nan or bool(np.isnan(r.max()))
        if any_nan:  # nulls read as NaN: equal when both are null, a difference otherwise
            an, bn = np.isnan(a), np.isnan(b)
            either = an | bn
            absd[either] = 0.0
            reld[either] = 0.0
            bad |= an != bn
    return absd, reld, bad


def _compare_column(view: PairView, col: str, result: PairResult) -> None:
    pair, opts = view.pair, view.options
    tol = opts.tolerance(col)
    lt, ot = view.legacy.schema.field(col).type, view.ours.schema.field(col).type
    la, oa = view.legacy.read(col), view.ours.read(col)
    if not view.identity:
        la, oa = la.take(pa.array(view.l_common)), oa.take(pa.array(view.o_common))
    if lt == ot and la.equals(oa):  # exactly equal (nulls included): no arithmetic needed
        result.columns[col] = {"status": EQUAL, "max_abs": 0.0, "max_rel": 0.0}
        return
    if _numeric(lt) and _numeric(ot):
        a, b = _as_float(la), _as_float(oa)
        if pa.types.is_timestamp(lt) or pa.types.is_timestamp(ot):
            tol = 0.0
        absd, reld, bad = _numeric_differences(a, b, tol)
    else:  # other types: equality of the text forms
        a = b = None
        la_s, oa_s = pc.cast(la, pa.string()), pc.cast(oa, pa.string())
        eq = pc.fill_null(pc.equal(la_s, oa_s), False).to_numpy(zero_copy_only=False)
        both_null = pc.is_null(la_s).to_numpy(zero_copy_only=False) & pc.is_null(oa_s).to_numpy(
            zero_copy_only=False
        )
        bad = ~(eq | both_null)
        absd = reld = np.zeros(len(bad))
    max_abs = float(absd.max()) if absd.size else 0.0
    max_rel = float(reld.max()) if reld.size else 0.0
    n_bad = int(np.count_nonzero(bad))
    status = EQUAL if max_abs == 0 and n_bad == 0 else (WITHIN if n_bad == 0 else UNEXPLAINED)
    entry = {"status": status, "max_abs": max_abs, "max_rel": max_rel}
    result.columns[col] = entry
    times = view.common_times

    def values(mask):
        i = int(np.argmax(mask))  # the first True
        if a is None:
            return plain(la[i].as_py()), plain(oa[i].as_py()), i
        return plain(a[i]), plain(b[i]), i

    if status == WITHIN:
        nz = absd > 0
        lv, ov, i = values(nz)
        result.differences.append(
            Difference(
                pair.label,
                VALUES,
                WITHIN,
                column=col,
                count=int(np.count_nonzero(nz)),
                first_time=iso(times[i]),
                legacy_value=lv,
                our_value=ov,
                max_abs=max_abs,
                max_rel=max_rel,
                note=f"all within {tol:g}",
            )
        )
        return
    if n_bad == 0:
        return
    bad_idx = np.flatnonzero(bad)
    fixes = explain.explain_values(view, col, bad_idx)
    classes = set()
    for fix in dict.fromkeys(fixes):
        sel = bad_idx[fixes == fix]
        mask = np.zeros(len(bad), dtype=bool)
        mask[sel] = True
        lv, ov, i = values(mask)
        label = fix or None
        classes.add(EXPLAINED if label else UNEXPLAINED)
        result.differences.append(
            Difference(
                pair.label,
                VALUES,
                EXPLAINED if label else UNEXPLAINED,
                column=col,
                count=int(sel.size),
                first_time=iso(times[i]),
                legacy_value=lv,
                our_value=ov,
                max_abs=float(absd[sel].max()),
                max_rel=float(reld[sel].max()),
                fix=label,
                note=explain.note_of(label) if label else f"differs by more than {tol:g}",
            )
        )
    entry["status"] = UNEXPLAINED if UNEXPLAINED in classes else EXPLAINED


def _segments(view: PairView, diffs: list) -> None:
    """Segment names that differ: explained when every row difference is."""
    lnames = [p.name for p in view.legacy.paths]
    onames = [p.name for p in view.ours.paths]
    if sorted(lnames) == sorted(onames):
        return
    row_diffs = [d for d in diffs if d.kind in (ROWS_ONLY, DUPLICATE_ROWS)]
    fixes = {d.fix for d in row_diffs}
    ok = bool(row_diffs) and None not in fixes
    fix = sorted(fixes)[0] if ok else None
    diffs.append(
        Difference(
            view.pair.label,
            SEGMENTS,
            EXPLAINED if ok else UNEXPLAINED,
            fix=fix,
            legacy_value=lnames,
            our_value=onames,
            note=(
                f"segment files legacy {lnames}, ours {onames}; "
                + (
                    f"split where the row differences are ({fix})"
                    if ok
                    else "not accounted for by explained row differences"
                )
            ),
        )
    )
