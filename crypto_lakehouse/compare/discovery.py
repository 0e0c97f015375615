"""Which files of two BHDS data dirs are compared, and how they pair up.

Files are matched by their path relative to the data dir. Generated kline files of one
symbol (``SYM.pqt`` and its ``SP{n}_SYM.pqt`` segments) are paired file by file when both
sides hold the same segment names; when the segmentation differs (a gap one side split at and
the other did not, Q1/Q2), the symbol's segments are compared together as one pair.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from crypto_lakehouse import storage
from crypto_lakehouse.intervals import BINANCE_INTERVALS, CALENDAR_INTERVALS
from crypto_lakehouse.layout import TRADE_TYPES

# File kinds, in report order.
KLINES = "klines"
RESAMPLED = "resampled_klines"
PARSED_KLINES = "parsed_klines"
PARSED_FUNDING = "parsed_funding"
KINDS = (KLINES, RESAMPLED, PARSED_KLINES, PARSED_FUNDING)

BHDS_FOLDERS = ("parsed_data", "results_data")
# What --interval may be: Binance's kline intervals but the calendar month, whose candles
# have no fixed length (the spacing check and the resampling windows need one).
KLINE_INTERVALS = tuple(i for i in BINANCE_INTERVALS if i not in CALENDAR_INTERVALS)
_SEGMENT_RE = re.compile(r"^SP(\d+)_(.+)$")


def interval_problem(interval: str) -> str | None:
    """None when klines of ``interval`` can be compared, else why not."""
    if interval in KLINE_INTERVALS:
        return None
    what = (
        "a calendar month, candles of no fixed length"
        if interval in CALENDAR_INTERVALS
        else "not a Binance kline interval"
    )
    return f"{interval!r} is {what}; valid values: {', '.join(KLINE_INTERVALS)}"


def symbol_of_result(name: str) -> str:
    """``SP0_BTCUSDT`` → ``BTCUSDT``; a plain name is its own symbol."""
    m = _SEGMENT_RE.match(name)
    return m.group(2) if m else name


@dataclass(frozen=True)
class Pair:
    """One unit of comparison: the files of each side (several when segments differ)."""

    label: str  # relative path (or path pattern of a segment group)
    kind: str
    trade_type: str
    symbol: str
    interval: str  # the file's own candle interval (RI for resampled files)
    legacy: tuple[str, ...] = ()  # relative paths
    ours: tuple[str, ...] = ()
    base_interval: str = "1m"


@dataclass
class Discovery:
    pairs: list[Pair] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # argument-level issues, each named


def layout_problem(root: Path, role: str) -> str | None:
    # On S3 a prefix "is" a directory when objects lie below it; listing a whole data dir
    # for that would be costly, so only its BHDS folders are looked at there.
    if not storage.is_remote(root) and not storage.is_dir(root):
        return f"{role} {root}: not a directory"
    if not any(storage.is_dir(root / f) for f in BHDS_FOLDERS):
        hint = ""
        if storage.is_dir(root / "binance_data"):  # legacy's $CRYPTO_BASE_DIR was given
            hint = f"; did you mean {root / 'binance_data'}?"
        return (
            f"{role} {root}: not a BHDS data dir "
            f"(neither parsed_data/ nor results_data/ in it){hint}"
        )
    return None


def _name_broken_links(folder: Path, depth: int, problems: list) -> None:
    """A symbolic link to a file or folder that does not exist (a volume not mounted, a
    moved target): listings leave it out, so its files would vanish from the comparison
    without a word (before 2026-12-06 they did). Named as a problem."""
    for link in storage.broken_links(folder, depth=depth, suffix=".pqt"):
        problems.append(
            (
                link,
                f"{link}: a symbolic link to {os.readlink(link)}, which does not exist: not compared",
            )  # seam: a local link the seam found
        )


def _pqt_files(folder: Path, depth: int, problems: list) -> list:
    """The ``.pqt`` files at most ``depth`` levels below ``folder``. A local folder that
    cannot be listed (no permission) is named in ``problems`` and its files left out, the
    rest still listed: before 2026-12-06 one unreadable symbol folder stopped the whole
    comparison ("cannot list the files to compare", nothing compared). A store that cannot
    be listed (s3://) still raises: nothing of it can be compared then."""
    try:
        found = storage.list_files(folder, recursive=depth > 1, suffix=".pqt")
    except OSError as exc:
        if storage.is_remote(folder):
            raise
        found = _pqt_files_by_folder(folder, depth, problems, exc)
    else:
        _name_broken_links(folder, depth, problems)
    return found


def _pqt_files_by_folder(folder: Path, depth: int, problems: list, error) -> list:
    """``_pqt_files`` one local folder at a time, naming the ones that cannot be listed."""
    try:
        found = list(storage.list_files(folder, recursive=False, suffix=".pqt"))
    except OSError as exc:
        problems.append(
            (
                folder,
                f"{folder}: cannot be listed ({exc.strerror or error}); its files are not "
                "compared (those of the other dir there show as only on that side)",
            )
        )
        return []
    _name_broken_links(folder, 1, problems)
    if depth > 1:
        for sub in storage.subdirs(folder):
            found.extend(_pqt_files(sub, depth - 1, problems))
    return found


def _rel(
    root: Path,
    folder: Path,
    depth: int,
    problems: list[str],
    middle: str | None = None,
    wanted: set[str] | None = None,
) -> set[str]:
    """Paths (relative to ``root``, posix) of the ``.pqt`` files ``depth`` levels below
    ``folder`` (1: directly in it), whose parent folder is named ``middle`` when given (the
    symbol folders are then the first level). A folder or link that cannot be read is a
    problem unless it belongs to a symbol left out by ``wanted`` (``--symbols``)."""
    found = set()
    listing_problems: list[tuple[Path, str]] = []
    files = _pqt_files(folder, depth, listing_problems)
    for path, message in listing_problems:
        parts = path.relative_to(folder).parts
        at = 0 if middle is not None else depth - 1  # where the symbol's name is
        if wanted is not None and len(parts) > at:
            name = parts[at][: -len(".pqt")] if parts[at].endswith(".pqt") else parts[at]
            if (name if middle is not None else symbol_of_result(name)) not in wanted:
                continue
        problems.append(message)
    for p in files:
        parts = p.relative_to(folder).parts
        if len(parts) == depth and (middle is None or parts[-2] == middle):
            found.add(p.relative_to(root).as_posix())
    return found


def _files_of(
    root: Path, trade_type: str, interval: str, problems, wanted=None
) -> dict[str, set[str]]:
    t = root / "results_data" / trade_type
    p = root / "parsed_data" / trade_type
    return {
        KLINES: _rel(root, t / "klines" / interval, 1, problems, wanted=wanted),
        RESAMPLED: _rel(root, t / "resampled_klines", 3, problems, wanted=wanted),
        PARSED_KLINES: _rel(root, p / "klines", 3, problems, middle=interval, wanted=wanted),
        PARSED_FUNDING: _rel(root, p / "funding", 1, problems, wanted=wanted),
    }


def _symbol_and_interval(kind: str, rel: str, interval: str) -> tuple[str, str]:
    parts = rel.split("/")
    stem = parts[-1][: -len(".pqt")]
    if kind == KLINES:
        return symbol_of_result(stem), interval
    if kind == RESAMPLED:
        return symbol_of_result(stem), parts[-3]
    if kind == PARSED_KLINES:
        return parts[-3], interval
    return stem, ""


def _keep_resampled_of_interval(lf: dict[str, set[str]], of: dict[str, set[str]]) -> None:
    """Drop the resampled files that were not made from the ``--interval`` klines.

    A resampled file has the name of the generated file it was made from
    (``resampled_klines/{RI}/{OFFSET}/{NAME}.pqt`` from ``klines/{I}/{NAME}.pqt``), and its
    comparison reads that file as its base (Q3). So a resampled file is compared when
    either dir holds a generated file of its name at ``--interval``: the resampled files of
    a dir built from 1m candles are compared with ``--interval 1m``, not with ``5m``."""
    base_names = {rel.rsplit("/", 1)[1] for rel in lf[KLINES] | of[KLINES]}
    for files in (lf, of):
        files[RESAMPLED] = {r for r in files[RESAMPLED] if r.rsplit("/", 1)[1] in base_names}


def _intervals(root: Path, trade_type: str) -> set[str]:
    return {p.name for p in storage.subdirs(root / "results_data" / trade_type / "klines")}


def discover(
    legacy: Path,
    ours: Path,
    *,
    interval: str = "1m",
    trade_types=TRADE_TYPES,
    symbols=None,
) -> Discovery:
    problem = interval_problem(interval)
    if problem:
        raise ValueError(f"interval {problem}")
    out = Discovery()
    unreadable = False
    for role, root in (("LEGACY_DIR", legacy), ("NEW_DIR", ours)):
        try:
            problem = layout_problem(root, role)
        except OSError as exc:
            # An s3:// dir the store refuses (credentials), a missing bucket, an endpoint that
            # does not answer: a problem naming the dir, as a missing local dir is, instead
            # of a traceback.
            problem = f"{role} {root}: cannot be read: {exc}"
            unreadable = True
        if problem:
            out.problems.append(problem)
    if unreadable:
        # Every file of the other side would be listed as "only on that side": noise.
        return out
    try:
        _find_pairs(out, legacy, ours, interval, trade_types, symbols)
        _name_other_layouts(out, legacy, ours)
    except OSError as exc:
        # The same from a listing below the dirs (a bucket that does not exist passes the
        # layout check: nothing lies below it).
        out.pairs.clear()
        out.problems.append(f"cannot list the files to compare: {exc}")
    return out


def _name_other_layouts(out: Discovery, legacy, ours) -> None:
    """A side of which no file was found but that holds ``.parquet`` files: the BHDS V2
    layout (2025-08: ``.parquet``, daily parsed files; docs/spec/legacy-behaviour.md §13.1),
    which compare does not read. Named, instead of every file of the other side showing
    as "only on that side" with no hint why."""
    for role, root, side in (("LEGACY_DIR", legacy, "legacy"), ("NEW_DIR", ours, "ours")):
        if any(getattr(pair, side) for pair in out.pairs):
            continue
        for folder in BHDS_FOLDERS:
            try:
                found = storage.list_files(root / folder, suffix=".parquet")
            except OSError:  # only a hint: a folder it cannot list is named elsewhere
                continue
            if found:
                out.problems.append(
                    f"{role} {root}: no .pqt file compared, but it holds .parquet files (e.g. {found[0]}): the "
                    "BHDS V2 layout (2025-08), which compare does not read; it compares V1 "
                    "data dirs (.pqt files)"
                )
                break


def _find_pairs(out: Discovery, legacy, ours, interval: str, trade_types, symbols) -> None:
    """The pairs of files to compare (into ``out``), and the problems found on the way."""
    wanted = set(symbols) if symbols else None
    held_symbols: set[str] = set()  # of every file listed, before the --symbols filter
    for trade_type in trade_types:
        held = {
            role: _intervals(root, trade_type)
            for role, root in (("legacy", legacy), ("ours", ours))
        }
        if (held["legacy"] or held["ours"]) and interval not in held["legacy"] | held["ours"]:
            # Named: the trade type would otherwise only be missing from the report.
            out.problems.append(
                f"neither dir holds results_data/{trade_type}/klines/{interval} (legacy holds "
                f"{', '.join(sorted(held['legacy'])) or 'no interval'}, ours "
                f"{', '.join(sorted(held['ours'])) or 'no interval'})"
            )
        for role, other in (("legacy", "ours"), ("ours", "legacy")):
            if held[role] and interval not in held[role] and interval in held[other]:
                root = legacy if role == "legacy" else ours
                out.problems.append(
                    f"{root / 'results_data' / trade_type / 'klines'}: holds intervals "
                    f"{sorted(held[role])}, not {interval} as the other dir does: mismatched "
                    "intervals"
                )
        lf = _files_of(legacy, trade_type, interval, out.problems, wanted)
        of = _files_of(ours, trade_type, interval, out.problems, wanted)
        _keep_resampled_of_interval(lf, of)
        for kind in KINDS:
            both = sorted(lf[kind] | of[kind])
            groups: dict[tuple[str, str], list[str]] = {}
            for rel in both:
                sym, ivl = _symbol_and_interval(kind, rel, interval)
                held_symbols.add(sym)
                if wanted is not None and sym not in wanted:
                    continue
                groups.setdefault((rel.rsplit("/", 1)[0], sym), []).append(rel)
            for (folder, sym), rels in sorted(groups.items()):
                ivl = _symbol_and_interval(kind, rels[0], interval)[1]
                l_names = tuple(r for r in rels if r in lf[kind])
                o_names = tuple(r for r in rels if r in of[kind])
                segmented = kind in (KLINES, RESAMPLED) and len(rels) > 1
                if segmented and set(l_names) != set(o_names) and l_names and o_names:
                    names = ",".join(r.rsplit("/", 1)[1][: -len(".pqt")] for r in rels)
                    out.pairs.append(
                        Pair(
                            f"{folder}/{{{names}}}.pqt",
                            kind,
                            trade_type,
                            sym,
                            ivl,
                            l_names,
                            o_names,
                            interval,
                        )
                    )
                    continue
                for rel in rels:
                    out.pairs.append(
                        Pair(
                            rel,
                            kind,
                            trade_type,
                            sym,
                            ivl,
                            (rel,) if rel in lf[kind] else (),
                            (rel,) if rel in of[kind] else (),
                            interval,
                        )
                    )
    if wanted is not None:
        # A requested symbol no file matched would otherwise vanish from the report, and a
        # comparison of nothing would pass.
        compared = {pair.symbol for pair in out.pairs}
        for sym in sorted(wanted - compared):
            out.problems.append(unmatched_symbol_problem(sym, held_symbols, trade_types, interval))
    if not out.pairs:
        # A comparison of nothing must never pass.
        out.problems.append(
            f"no files compared: neither dir holds a file of trade types "
            f"{', '.join(trade_types)} at interval {interval}"
            + (f" for symbols {', '.join(sorted(wanted))}" if wanted else "")
        )


def unmatched_symbol_problem(symbol: str, held_symbols, trade_types, interval: str) -> str:
    problem = (
        f"symbol {symbol}: no files in either dir "
        f"(trade types {', '.join(trade_types)}, interval {interval})"
    )
    if symbol != symbol.upper():
        # Binance symbols, and so every file name of a data dir, are upper case.
        problem += "; symbol names are upper case"
        if symbol.upper() in held_symbols:
            problem += f": did you mean {symbol.upper()}?"
    return problem
