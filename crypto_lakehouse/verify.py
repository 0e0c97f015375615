"""``crypto-lakehouse verify``: find the data files of a data dir that cannot be trusted.

Snakemake's outputs are the run's reports, so a data file damaged outside a run (a disk
fault, a copy stopped half-way, a file truncated by hand) goes unnoticed until a stage reads
it, and a file no stage reads again (an old generated file, a candle day from aggTrades) is
never noticed at all. This reads the footer of every Parquet file of the three data layers
(``parsed_data``, ``api_data``, ``results_data``) and of the per-symbol Parquet records
beside them (``lakehouse/provenance``, ``lakehouse/quality``: a damaged one left its symbol
out of the report's coverage and quality tables): a footer pyarrow cannot decode is the
mark of a file cut short or overwritten, the common damage. ``pages`` (opt-in: all their
bytes read) decodes every page as well: a page damaged inside the file does not decompress
or decode. (A flipped bit that still decodes goes unnoticed: the files carry no page
checksums.) ``zips``: every verified
archive zip of ``aws_data`` is hashed against its CHECKSUM as well (all of their bytes
read: opt-in).

Files deleted outside a run are named as well (``missing``): each symbol's state below
``lakehouse/state/`` names the files its last successful run held (parsed partitions and
funding files, the quality record, generated segments, resampled and feature files; the
REST klines' record of the archive days names the day provenance); one of them absent was
deleted by hand or lost, and no stage notices it before it runs again (a whole stage or
record folder deleted is noticed at the next start: ``crypto_lakehouse.data_presence``).

``remove``: the damaged Parquet files are deleted, and a damaged zip's ``.verified`` marker
(the zip stays, unverified: the download checks it again and fetches it anew). A run that
forces the downloads rebuilds every missing file of these layers (README, "Lost or damaged
files"), so the repair is one more command.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from crypto_lakehouse import datasets, layout, storage
from crypto_lakehouse.layout import relative_path
from crypto_lakehouse.parse import funding_written, wrote_funding_file, wrote_partition
from crypto_lakehouse.rest import archive_days

REPAIR_COMMAND = "snakemake --cores all --forcerun aws_download_shard"


@dataclass
class Verdict:
    data_dir: str
    checked: dict[str, int] = field(default_factory=dict)  # files per layer
    damaged: dict[str, str] = field(default_factory=dict)  # path below data_dir -> error
    unchecked: dict[str, str] = field(default_factory=dict)  # the storage failed: unknown
    missing: dict[str, str] = field(default_factory=dict)  # path below data_dir -> its record
    removed: list[str] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)  # damaged, not removed: why
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        """0: every file read; 1: damaged or missing files (removed or not) or files not
        checked."""
        return 1 if self.damaged or self.unchecked or self.missing else 0

    def as_dict(self) -> dict:
        return {
            "data_dir": self.data_dir,
            "checked": self.checked,
            "damaged": self.damaged,
            "unchecked": self.unchecked,
            "missing": self.missing,
            "removed": self.removed,
            "kept": self.kept,
            "seconds": self.seconds,
        }


def _read_problem(read, path, again: bool = True) -> tuple[str, str] | None:
    """None when ``read(path)`` succeeds; else ("damaged" | "unchecked", the error).

    A file that does not decode is read once more before it is called damaged: without
    --remove, verify holds no lock, and on S3 a run that replaces the object between two
    requests of one read (a footer longer than the first GET's 64 KiB; a size request and
    the footer read without the signed GETs) gives bytes of the new version where the old
    one's were expected (a good file then looked damaged)."""
    try:
        read(path)
    except Exception as exc:
        if storage.is_damaged_file_error(exc):
            if again:
                return _read_problem(read, path, again=False)
            return "damaged", f"{type(exc).__name__}: {exc}"
        if isinstance(exc, FileNotFoundError):
            return None  # removed since the listing: nothing to say about it
        return "unchecked", f"{type(exc).__name__}: {exc}"
    return None


def _footer_problem(path) -> tuple[str, str] | None:
    """The footer decodes (row count, row groups, schema): the common damage, a file cut
    short or overwritten, is found without reading the data."""
    return _read_problem(storage.parquet_metadata, path)


def _decode_every_page(path) -> None:
    """Every page of every column decoded (decompressed and its values read), one row group
    in memory at a time. On S3 the object is first copied to a local spool file: a failing
    request is then a StorageError (unchecked), never taken for damage."""
    import pyarrow.parquet as pq

    with storage.local_copy(path) as local:
        with pq.ParquetFile(local) as parquet:  # seam: a local file of storage.local_copy
            for group in range(parquet.metadata.num_row_groups):
                parquet.read_row_group(group)


def _pages_problem(path) -> tuple[str, str] | None:
    """The footer and every page decode (``--pages``): also a page damaged inside the
    file, which the footer alone does not show."""
    problem = _read_problem(_decode_every_page, path)
    if problem is not None and problem[0] == "damaged":
        return "damaged", f"{storage.uri(storage.data_path(path))}: {problem[1]}"
    return problem


def _zip_problem(item: tuple) -> tuple[str, str] | None:
    """None when a verified zip's SHA-256 is its CHECKSUM's; else ("damaged" | "unchecked",
    why)."""
    from crypto_lakehouse.archive.checksum import ChecksumFormatError, parse_checksum, sha256_file

    path, checksum_path = item
    try:
        expected = parse_checksum(storage.read_bytes(checksum_path), str(checksum_path)).sha256
        got = sha256_file(path)
    except ChecksumFormatError as exc:
        return "damaged", f"its CHECKSUM cannot be read: {exc}"
    except FileNotFoundError:
        return None  # removed since the listing
    except OSError as exc:
        kind = "unchecked" if isinstance(exc, storage.StorageError) else "damaged"
        return kind, f"{type(exc).__name__}: {exc}"
    if got != expected:
        return "damaged", f"SHA-256 {got} is not its CHECKSUM's {expected}"
    return None


def _verified_zips(directory):
    """(zip, its CHECKSUM) of every zip below ``directory`` with a ``.verified`` marker, one
    folder's listing at a time."""
    for _, group in itertools.groupby(storage.walk_files(directory), key=lambda p: p.parent):
        paths = list(group)
        names = {p.name for p in paths}
        for p in paths:
            if p.name.endswith(".zip") and p.name + layout.VERIFIED_SUFFIX in names:
                if p.name + layout.CHECKSUM_SUFFIX in names:
                    yield p, p.with_name(p.name + layout.CHECKSUM_SUFFIX)


# The archive datasets parsed into monthly partitions, as klines are (legacy BHDS wrote some).
_KLINE_LIKE = frozenset(name for name, d in datasets.REGISTRY.items() if d.has_interval)


def _written_by_the_pipeline(root, rel: str) -> bool:
    """Whether a damaged file is one the pipeline wrote and rebuilds. A parsed kline-like
    partition or funding file it did not write (a legacy BHDS ``parsed_data`` used in place)
    is never removed: the parse never overwrites it either, its rows may be nobody's to
    rebuild. REST and generated files are fetched or computed again, whoever wrote them."""
    parts = rel.split("/")
    if parts[0] != "parsed_data":
        return True
    if len(parts) == 4 and parts[2] == "funding":
        return wrote_funding_file(root, parts[1], parts[3].removesuffix(layout.PARQUET_SUFFIX))
    trade_type, name = parts[1:3]
    if len(parts) == 6 and name in _KLINE_LIKE:  # {T}/{dataset}/{SYM}/{interval}/{YYYYMM}.pqt
        symbol, interval = parts[3:5]
        return wrote_partition(root, trade_type, symbol, interval, root / rel, name)
    return True  # a tick dataset's or agg_klines' day: only this pipeline writes those


# The stages whose per-symbol state names the data files the symbol holds; the REST
# klines' record of the parsed archive days (one per symbol whose api_download run read
# parsed partitions: that run wrote the symbol's day provenance).
PROVENANCE_STATE = archive_days.RECORD_STAGE
MISSING_STAGES = ("aws_parse", "gen_kline", "resample", "features", PROVENANCE_STATE)
_WRITER = {PROVENANCE_STATE: "api_download"}  # the stage named in messages


def _held_files(root, stage: str, trade_type: str, tag: str, symbol: str, state: dict) -> list:
    """The files (below ``root``) a symbol's ``state`` of ``stage`` says its last
    successful run held."""
    if stage == "gen_kline":
        return [s.get("file") for s in (state.get("report") or {}).get("segments", [])]
    if stage == "resample":
        return [o.get("file") for o in (state.get("report") or {}).get("outputs", [])]
    if stage == "features":
        return [o.get("file") for o in (state.get("section") or {}).get("outputs", [])]
    if stage == PROVENANCE_STATE:  # the day provenance record (layout.PARQUET_RECORDS)
        _, interval = datasets.split_tag(tag)
        return [relative_path(root, layout.provenance_path(root, trade_type, interval, symbol))]
    if tag == "funding":  # aws_parse
        written = funding_written(state)
        return (
            [relative_path(root, layout.parsed_funding_path(root, trade_type, symbol))]
            if written
            else []
        )
    entry, interval = datasets.split_tag(tag)
    if not entry.has_interval:  # a tick dataset's days: not recorded per file
        return []
    folder = layout.parsed_klines_dir(root, trade_type, symbol, interval, entry.name)
    months = state.get("partitions") or {}
    held = [relative_path(root, folder / f"{month}{layout.PARQUET_SUFFIX}") for month in months]
    if months and state.get("files"):  # its archives' days measured: the quality record
        quality = layout.quality_path(root, trade_type, interval, symbol, entry.name)
        held.append(relative_path(root, quality))
    return held


def _state_records(root):
    """``(stage, trade type, tag, symbol, state path)`` of every per-symbol state of
    ``MISSING_STAGES``."""
    for stage in MISSING_STAGES:
        base = layout.state_root(root, stage)
        for path in storage.walk_files(base, suffix=".json"):
            parts = relative_path(base, path).split("/")
            if len(parts) == 3:
                yield stage, parts[0], parts[1], parts[2].removesuffix(".json"), path


def _find_missing(root, verdict: "Verdict", pool, batch_size: int) -> None:
    """Every file a symbol's state names that its folder does not hold: one read per state
    (``batch_size`` at once through ``pool``, then dropped: a parse state names every zip
    of the symbol, ~0.2 MB for years of daily files), one listing per folder."""
    names: dict[str, set[str]] = {}

    def check(batch: list) -> None:
        states = pool.map(lambda r: storage.read_state(r[4]), batch)
        for (stage, trade_type, tag, symbol, path), state in zip(batch, states, strict=True):
            for rel in _held_files(root, stage, trade_type, tag, symbol, state):
                if not isinstance(rel, str) or not rel:
                    continue
                folder, _, name = rel.rpartition("/")
                if folder not in names:
                    names[folder] = storage.file_names(root / folder)
                if name not in names[folder]:
                    verdict.missing[rel] = (
                        f"held after the last {_WRITER.get(stage, stage)} run of {symbol} "
                        f"({relative_path(root, path)})"
                    )

    for batch in _batches(_state_records(root), batch_size):
        check(batch)


def _batches(items, size: int):
    """Lists of ``size`` items (``itertools.batched`` is Python 3.12)."""
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


# Footers in flight at most per worker: the paths are walked folder by folder, so memory
# stays bounded by the largest folder however many files the data dir holds.
BATCH_PER_JOB = 64


@contextlib.contextmanager
def _held(data_dir):
    """The data dir held as a run holds it (crypto_lakehouse.lock): a file a running job
    rewrites meanwhile must not be removed for a damage it no longer has. Raises
    ``lock.DataDirBusy`` naming the run that holds it."""
    from crypto_lakehouse import lock

    lock.acquire(data_dir)
    try:
        if storage.is_remote(data_dir):
            lock.take_lease(data_dir)
        yield
    finally:
        if storage.is_remote(data_dir):
            lock.release_lease(data_dir)
        lock.release(data_dir)


class NotADataDir(ValueError):
    """None of the data layers is below the folder given (a typo, or a layer's own folder)."""


def verify(
    data_dir, *, remove: bool = False, jobs: int = 8, zips: bool = False, pages: bool = False
) -> Verdict:
    """Read the footer of every Parquet file of the data layers (``jobs`` at once: on S3
    each is a request) or, with ``pages``, decode every page of them (all their bytes read)
    and, with ``zips``, hash every verified zip; ``remove`` deletes the
    damaged Parquet files and the damaged zips' markers, holding the data dir as a run does
    (raises ``lock.DataDirBusy`` while a run holds it). Raises ``NotADataDir`` when no layer
    is there: "0 files, 0 damaged" would pass a mistyped path for a sound data dir."""
    layers = (*layout.PARQUET_LAYERS, layout.ARCHIVE_LAYER)
    if not any(storage.is_dir(layout.layer_dir(data_dir, layer)) for layer in layers):
        raise NotADataDir(f"{data_dir}: not a data dir (none of {', '.join(layers)} below it)")
    with _held(data_dir) if remove else contextlib.nullcontext():
        return _verify(data_dir, remove=remove, jobs=jobs, zips=zips, pages=pages)


def _verify(data_dir, *, remove: bool, jobs: int, zips: bool, pages: bool) -> Verdict:
    started = time.monotonic()
    root = storage.data_path(data_dir)
    verdict = Verdict(data_dir=str(data_dir))
    jobs = max(1, jobs)

    def check(problem_of, batch: list) -> None:
        for item, problem in zip(batch, pool.map(problem_of, batch), strict=True):
            if problem is not None:
                kind, error = problem
                path = item[0] if isinstance(item, tuple) else item
                getattr(verdict, kind)[relative_path(root, path)] = error

    def check_all(layer: str, items, problem_of) -> None:
        verdict.checked[layer] = 0
        for batch in _batches(items, BATCH_PER_JOB * jobs):
            verdict.checked[layer] += len(batch)
            check(problem_of, batch)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        folders = {layer: layout.layer_dir(root, layer) for layer in layout.PARQUET_LAYERS}
        for layer, folder in {**folders, **layout.parquet_record_dirs(root)}.items():
            parquet_files = storage.walk_files(folder, suffix=layout.PARQUET_SUFFIX)
            check_all(layer, parquet_files, _pages_problem if pages else _footer_problem)
        if zips:
            archive = layout.layer_dir(root, layout.ARCHIVE_LAYER)
            check_all(layout.ARCHIVE_LAYER, _verified_zips(archive), _zip_problem)
        _find_missing(root, verdict, pool, BATCH_PER_JOB * jobs)
    if remove:
        for rel in verdict.damaged:
            if not _written_by_the_pipeline(root, rel):
                verdict.kept[rel] = "not written by this pipeline (a file used in place?)"
                continue
            if rel.endswith(".zip"):  # unverified, it is checked and fetched again
                rel += layout.VERIFIED_SUFFIX
            storage.delete(root / rel)
            verdict.removed.append(rel)
    verdict.seconds = round(time.monotonic() - started, 3)
    return verdict


def render(verdict: Verdict) -> str:
    total = sum(verdict.checked.values())
    layers = ", ".join(f"{layer} {n}" for layer, n in verdict.checked.items())
    lines = [
        f"verify {verdict.data_dir}: {total} file(s) read in {verdict.seconds:.1f} s "
        f"({layers}); {len(verdict.damaged)} damaged"
        + (f", {len(verdict.missing)} missing" if verdict.missing else "")
    ]
    if verdict.damaged:
        lines.append(
            "damaged (a Parquet footer or page that cannot be read, a zip not its CHECKSUM):"
        )
        lines += [f"  {rel}: {error}" for rel, error in verdict.damaged.items()]
    if verdict.missing:
        lines.append(
            f"missing ({len(verdict.missing)}: a symbol's record names them, deleted outside a "
            f"run; rebuild them with: {REPAIR_COMMAND} (and the config of the run that "
            "wrote them)):"
        )
        lines += [f"  {rel}: {why}" for rel, why in verdict.missing.items()]
    if verdict.unchecked:
        lines.append(
            "not checked (the storage failed, or the machine: no permission, no room; run again):"
        )
        lines += [f"  {rel}: {error}" for rel, error in verdict.unchecked.items()]
    if verdict.kept:
        lines.append("not removed (move them away yourself; the parse then rebuilds them):")
        lines += [f"  {rel}: {why}" for rel, why in verdict.kept.items()]
    if verdict.removed:
        lines.append(
            f"removed {len(verdict.removed)} file(s) (of a zip: its .verified marker); "
            f"rebuild them with: {REPAIR_COMMAND} "
            "(and the config of the run that wrote them)"
        )
    elif verdict.damaged:
        lines.append(
            f"to repair: run this command again with --remove, then {REPAIR_COMMAND} "
            "(and the config of the run that wrote them)"
        )
    return "\n".join(lines) + "\n"
