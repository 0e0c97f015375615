"""Listing the archive bucket (S3 ListObjects v1) and the ``list_archive`` checkpoint.

Request: ``{listing_url}?delimiter=/&prefix=<dir>/[&marker=<m>]``. The XML is parsed with
``xml.etree`` and element names are matched without their namespace (S3 answers with the
default namespace ``http://s3.amazonaws.com/doc/2006-03-01/``, test servers may not). A page
with a single ``Contents`` or ``CommonPrefixes`` is just a list of one (quirk Q10 fixed).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import threading
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import requests

from crypto_lakehouse import datasets, layout, plan, storage
from crypto_lakehouse.archive import http
from crypto_lakehouse.archive.symbols import filter_symbols, validate_names

log = logging.getLogger(__name__)


class ListingError(Exception):
    """A listing response that is not a usable ListBucketResult, or a failed listing."""


@dataclass(frozen=True)
class FileEntry:
    key: str
    size: int
    last_modified: str
    etag: str

    def to_dict(self) -> dict:
        # Not dataclasses.asdict: it deep-copies each field, a tenth of a daily listing's
        # CPU with every file of a long history written back to the details.
        return {
            "key": self.key,
            "size": self.size,
            "last_modified": self.last_modified,
            "etag": self.etag,
        }


@dataclass(frozen=True)
class ListingPage:
    dirs: list[str]  # CommonPrefixes/Prefix, with their trailing "/"
    files: list[FileEntry]  # Contents
    is_truncated: bool
    next_marker: str | None


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child_text(elem: ET.Element, name: str) -> str | None:
    for child in elem:
        if _local(child.tag) == name:
            return child.text or ""
    return None


def parse_listing_page(xml_bytes: bytes, source: str = "listing") -> ListingPage:
    """Parse one ListBucketResult page; ``source`` names the request in errors."""
    try:
        root = ET.fromstring(xml_bytes)
    except ET.ParseError as exc:
        raise ListingError(f"{source}: response is not XML ({exc})") from None
    if _local(root.tag) != "ListBucketResult":
        detail = _child_text(root, "Message") or _child_text(root, "Code") or ""
        raise ListingError(f"{source}: expected ListBucketResult, got {_local(root.tag)} {detail}")
    dirs: list[str] = []
    files: list[FileEntry] = []
    is_truncated = False
    next_marker = None
    for elem in root:
        name = _local(elem.tag)
        if name == "CommonPrefixes":
            prefix = _child_text(elem, "Prefix")
            if prefix:
                dirs.append(prefix)
        elif name == "Contents":
            key = _child_text(elem, "Key")
            size = _child_text(elem, "Size")
            if not key or size is None or not size.strip().isdigit():
                raise ListingError(f"{source}: Contents entry without Key or integer Size: {key!r}")
            files.append(
                FileEntry(
                    key=key,
                    size=int(size),
                    last_modified=(_child_text(elem, "LastModified") or "").strip(),
                    etag=(_child_text(elem, "ETag") or "").strip(),
                )
            )
        elif name == "IsTruncated":
            is_truncated = (elem.text or "").strip().lower() == "true"
        elif name == "NextMarker":
            next_marker = (elem.text or "").strip() or None
    return ListingPage(dirs, files, is_truncated, next_marker)


def list_prefix(
    session: requests.Session,
    listing_url: str,
    prefix: str,
    *,
    timeout_s: float = 15.0,
    max_retries: int = 5,
    on_retry=None,
    start_after: str | None = None,
) -> tuple[list[str], list[FileEntry]]:
    """All sub-directories and files directly below ``prefix``, following pagination; with
    ``start_after``, only those whose key is greater (the first request's ``marker``).

    The next marker is ``NextMarker``, or else the greatest Key/Prefix of the page (S3 only
    sends NextMarker with a delimiter; keys come in lexicographic order).
    """
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    dirs: list[str] = []
    files: list[FileEntry] = []
    marker: str | None = start_after
    while True:
        params = {"delimiter": "/", "prefix": prefix}
        if marker is not None:
            params["marker"] = marker
        source = f"listing of {prefix!r}" + (f" after {marker!r}" if marker else "")
        body = http.get_with_retries(
            session,
            listing_url,
            params=params,
            timeout_s=timeout_s,
            max_retries=max_retries,
            on_retry=on_retry,
        )
        page = parse_listing_page(body, source)
        dirs.extend(page.dirs)
        files.extend(page.files)
        if not page.is_truncated:
            break
        candidates = [x for x in (page.dirs[-1:] + [f.key for f in page.files[-1:]])]
        next_marker = page.next_marker or (max(candidates) if candidates else None)
        if next_marker is None or (marker is not None and next_marker <= marker):
            raise ListingError(f"{source}: truncated page without a usable next marker")
        marker = next_marker
    return sorted(set(dirs)), sorted(set(files), key=lambda f: f.key)


def list_dirs(session, listing_url: str, prefix: str, **kwargs) -> list[str]:
    return list_prefix(session, listing_url, prefix, **kwargs)[0]


def list_files(session, listing_url: str, prefix: str, **kwargs) -> list[FileEntry]:
    return list_prefix(session, listing_url, prefix, **kwargs)[1]


def dir_names(prefixes: list[str], parent: str) -> list[str]:
    """``data/spot/daily/klines/BTCUSDT/`` below ``data/spot/daily/klines/`` -> ``BTCUSDT``."""
    names = []
    for p in prefixes:
        if p.startswith(parent):
            name = p[len(parent) :].rstrip("/")
            if name:
                names.append(name)
    return names


def dataset_dirs(
    trade_type: str, dataset: str, interval: str | None, include_monthly: bool
) -> tuple[str, callable]:
    """(prefix listing the symbols, function symbol -> prefixes listing its files), from the
    dataset registry."""
    if trade_type not in layout.TRADE_TYPES:
        raise ValueError(f"unknown trade type {trade_type!r}; expected {layout.TRADE_TYPES}")
    entry = datasets.get(dataset)
    if entry.has_interval and not interval:
        raise ValueError(f"dataset {entry.name!r} needs an interval")
    symbols_prefix = layout.archive_symbols_prefix(trade_type, entry.name)

    def symbol_dirs(symbol: str) -> list[str]:
        return layout.archive_dir_keys(trade_type, entry.name, symbol, interval, include_monthly)

    return symbols_prefix, symbol_dirs


def listing_request(
    *, trade_type, dataset, interval, symbols, listing_url, include_monthly, end_date
) -> dict:
    """What an index answers: every argument that changes its content, and the end date
    it was listed for (the workflow lists again when the end date changes)."""
    return {
        "trade_type": trade_type,
        "dataset": dataset,
        "interval": interval if datasets.get(dataset).has_interval else None,
        "include_monthly": bool(include_monthly) and datasets.get(dataset).monthly_optional,
        "symbols": symbols if symbols == "all" else sorted(set(symbols)),
        "listing_url": listing_url,
        "end_date": end_date,
    }


def run_listing(
    *,
    trade_type: str,
    dataset: str,
    interval: str | None,
    symbols,
    listing_url: str,
    out_index,
    details_dir,
    include_monthly: bool = False,
    concurrency: int = 16,
    timeout_s: float = 15.0,
    max_retries: int = 5,
    end_date: str | None = None,
    full_listing_every_days: int = 0,
    keep_going: bool = False,
) -> dict:
    """List one trade type's symbols and their files; write the index and detail files.

    A page that cannot be listed after the retries fails its symbol (the symbol-folder
    listing: every symbol). Without ``keep_going`` (``crypto_lakehouse plan``) nothing is
    written and ``ListingError`` names every failed prefix. With it (the ``list_archive``
    checkpoint) the index is written with the failed symbols in ``failed`` ({symbol:
    error}; each also in ``symbols`` with digest ``listing-failed``, its details file left
    as it was) and, when the symbol folders could not be listed, the error in ``error``;
    their download fails with that error, every other symbol goes on, and the next run
    lists again (``plan.failure_time``). The symbols a failed folder listing fails: the
    configured list, or for "all" those of the previous index.

    The index records the ``request`` it answers (``listing_request``; ``end_date`` is the run's resolved end date), so that
    ``crypto_lakehouse plan`` can tell whether it is fresh.

    With ``full_listing_every_days`` N > 0, a symbol already in the previous index of the
    same request, listed for an earlier end date, is listed only after the last key known
    in each of its folders (the archive grows at the end of each folder's key order),
    unless the last full listing is N or more days older than ``end_date``
    (``previous_listing``). The index records the end date of its last full listing as
    ``full_listing``.
    """
    started = time.monotonic()
    symbols_prefix, symbol_dirs = dataset_dirs(trade_type, dataset, interval, include_monthly)
    what = f"{trade_type} {dataset}" + (
        f" {interval}" if datasets.get(dataset).has_interval else ""
    )
    retries = 0
    retry_lock = threading.Lock()

    def count_retry(exc):
        nonlocal retries
        with retry_lock:
            retries += 1
        log.info("retrying after %s", exc)

    kwargs = dict(timeout_s=timeout_s, max_retries=max_retries, on_retry=count_retry)
    explicit = symbols != "all"
    if explicit:
        if isinstance(symbols, str):
            raise ValueError(f"symbols must be a list of names or 'all', got {symbols!r}")
        valid, refused = validate_names(symbols)
    request = listing_request(
        trade_type=trade_type,
        dataset=dataset,
        interval=interval,
        symbols=symbols,
        listing_url=listing_url,
        include_monthly=include_monthly,
        end_date=end_date,
    )
    known, full_listing = previous_listing(details_dir, request, full_listing_every_days)

    # Request slots of the listing: the symbol-folder listing holds one while it runs.
    slots = threading.BoundedSemaphore(max(1, concurrency))

    def list_symbol_folders() -> list[str]:
        session = http.new_session(concurrency, base_url=listing_url)
        try:
            return dir_names(
                list_dirs(session, listing_url, symbols_prefix, **kwargs), symbols_prefix
            )
        finally:
            session.close()
            slots.release()

    # Configured symbols: their own folders are listed while the listing of the symbol
    # folders is on the way, not after it (one round trip to the archive less, more where
    # that listing has several pages: 1,000 symbol folders per page), sharing the listing's
    # ``concurrency`` request slots with it, so that no more requests are in flight than
    # before. A configured symbol the archive does not list is dropped afterwards with its
    # (empty) folder listing. With "all" the symbols are known only from that listing.
    overlap = explicit and concurrency > 1
    root_error = None
    early = None
    slots.acquire()
    with ThreadPoolExecutor(max_workers=1) as root_pool:
        root = root_pool.submit(list_symbol_folders)
        if overlap:
            early = _list_symbol_files(
                valid, symbol_dirs, listing_url, concurrency, kwargs, known, slots
            )
        try:
            listed = root.result()
        except (http.ArchiveHTTPError, ListingError) as exc:
            root_error = f"cannot list symbols below {symbols_prefix}: {exc}"
            if not keep_going:
                raise ListingError(f"{what}: {root_error}") from exc
            log.error("%s: %s", what, root_error)

    if root_error is not None:
        return _write_failed_listing(
            what, root_error, symbols, out_index, details_dir, started,
            trade_type=trade_type, dataset=dataset, interval=interval,
            include_monthly=include_monthly, listing_url=listing_url, end_date=end_date,
        )  # fmt: skip

    not_listed: list[str] = []
    filtered_out: list[dict] = []
    if explicit:
        listed_set = set(listed)
        kept = [s for s in valid if s in listed_set]
        not_listed = [s for s in valid if s not in listed_set]
        if early is None:  # one request at a time: after the symbol folders, as listed
            early = _list_symbol_files(kept, symbol_dirs, listing_url, 1, kwargs, known)
        files_of, refused_of, failures = early
        failures = {s: err for s, err in failures.items() if s in listed_set}
    else:
        valid, refused = validate_names(listed)
        kept, filtered_out = filter_symbols(trade_type, valid)
        files_of, refused_of, failures = _list_symbol_files(
            kept, symbol_dirs, listing_url, concurrency, kwargs, known
        )
    for item in refused:
        log.warning("%s: refused symbol name %r: %s", what, item["name"], item["reason"])
    if not_listed:
        log.warning("%s: configured symbols not in the archive listing: %s", what, not_listed)

    n_incremental = sum(1 for sym in kept if sym in known)
    if n_incremental == 0:
        full_listing = end_date  # every kept symbol was listed from its folders' first key
    if failures and not keep_going:
        lines = "\n".join(f"  {sym}: {err}" for sym, err in sorted(failures.items()))
        raise ListingError(
            f"{what}: listing failed for {len(failures)} of {len(kept)} symbols after "
            f"{max_retries} retries; nothing written:\n{lines}"
        )
    failed = {
        sym: f"listing failed after {max_retries} retries: {err}"
        for sym, err in sorted(failures.items())
    }
    for sym, message in failed.items():
        log.error("%s %s: %s", what, sym, message)

    details_dir = storage.data_path(details_dir)
    storage.ensure_dir(details_dir)
    index_symbols: dict[str, dict] = {}
    no_files: list[str] = []
    for sym in kept:
        if sym in failed:
            index_symbols[sym] = _failed_entry(failed[sym])
            continue
        entries = [f.to_dict() for f in files_of[sym]]
        if not entries:
            no_files.append(sym)
            continue
        path = details_dir / f"{sym}.json"
        text = storage.json_text(entries)
        storage.write_json_text_if_changed(path, text)
        # The digest of the text just stored (or found unchanged): no read back.
        digest = hashlib.sha256(text.encode()).hexdigest()
        index_symbols[sym] = {
            "digest": digest,
            "n_files": len(entries),
            # Bytes of its zips (the listing's Size): what a first parse of the symbol works
            # through; the SLURM runtime of its parse job grows with it (docs/cluster.md).
            "bytes": sum(e["size"] for e in entries if e["key"].endswith(".zip")),
            "last_day": last_covered_day(entries),
        }
    # file_names: one listdir where the folder is local (list_files would import pyarrow,
    # ~0.1 s of this job's start, for it).
    for name in sorted(storage.file_names(details_dir)):
        if name.endswith(".json") and name[: -len(".json")] not in index_symbols:
            storage.delete(details_dir / name)
            log.info("%s: removed details of %s (no longer kept)", what, name[: -len(".json")])
    if no_files:
        log.info("%s: %d symbols have no files for this dataset: %s", what, len(no_files), no_files)
    refused_files = [r for sym in kept for r in refused_of.get(sym, [])]
    for item in refused_files:
        log.warning("%s: refused listed file %r: %s", what, item["key"], item["reason"])

    index = _index_record(
        request,
        index_symbols,
        refused=refused,
        refused_files=refused_files,
        filtered_out=filtered_out,
        not_listed=not_listed,
        no_files=no_files,
        full_listing=full_listing,
    )
    if failed:
        index.update(failed=failed, error=None, failed_at_unix=time.time())
    elif keep_going:
        # The first complete listing after a failed one names it (plan.failure_time).
        previous = _previous_failure(details_dir)
        if previous is not None:
            index["after_failure"] = plan.after_failure(previous, end_date)
    storage.write_json_if_changed(out_index, index)
    # Snakemake removes a checkpoint's outputs before it runs again: the next listing resumes
    # from this copy, beside the details it vouches for.
    storage.write_json_if_changed(resume_record_path(details_dir), index)
    if not index_symbols:
        log.warning("%s: no symbols to download (empty index written)", what)
    n_files = sum(v["n_files"] for v in index_symbols.values())
    seconds = time.monotonic() - started
    log.info(
        "%s: %d listed, %d kept (%d after their last known key), %d files, %d retries, %.1f s",
        what, len(listed), len(index_symbols), n_incremental, n_files, retries, seconds,
    )  # fmt: skip
    return {
        "n_listed": len(listed),
        "n_kept": len(index_symbols),
        "n_incremental": n_incremental,
        "n_refused": len(refused),
        "n_refused_files": len(refused_files),
        "n_filtered_out": len(filtered_out),
        "n_not_listed": len(not_listed),
        "n_files": n_files,
        "retries": retries,
        "n_failed": len(failed),
        "seconds": round(seconds, 3),
    }


def _index_record(
    request: dict,
    symbols: dict,
    *,
    full_listing,
    refused=(),
    refused_files=(),
    filtered_out=(),
    not_listed=(),
    no_files=(),
) -> dict:
    """A listing index: the ``request`` it answers (its trade type, dataset, interval and
    monthly choice repeated at the top), the kept ``symbols`` and what was left out."""
    return {
        "request": request,
        **{k: request[k] for k in ("trade_type", "dataset", "interval", "include_monthly")},
        "symbols": symbols,
        "refused": list(refused),
        "refused_files": list(refused_files),  # listed keys that are not the dataset's names
        "filtered_out": list(filtered_out),
        "not_listed": list(not_listed),
        "no_files": list(no_files),
        # End date of the last listing of every kept symbol from its folders' first key.
        "full_listing": full_listing,
    }


LISTING_FAILED_DIGEST = "listing-failed"


def _failed_entry(error: str) -> dict:
    """The index entry of a symbol whose listing failed (``run_listing`` with keep_going)."""
    return {"digest": LISTING_FAILED_DIGEST, "n_files": 0, "last_day": None, "error": error}


def _write_failed_listing(
    what, error, symbols, out_index, details_dir, started, **request_args
) -> dict:
    """The index of a listing whose symbol folders could not be listed: every symbol it
    would have listed fails with ``error``. Those are the configured ones, or for "all" the
    symbols of the previous index (none on a first listing: then only ``error`` and the
    stage's summary tell). Details files and the previous index kept for the next listing
    are left as they were."""
    if symbols == "all":
        try:
            previous = storage.read_json(resume_record_path(details_dir), default=None) or {}
        except (OSError, ValueError):
            previous = {}
        carried = sorted((previous.get("symbols") or {}) if isinstance(previous, dict) else {})
    else:
        carried, _ = validate_names(symbols)
    index = _index_record(
        listing_request(symbols=symbols, **request_args),
        {sym: _failed_entry(error) for sym in carried},
        full_listing=None,
    )
    index.update(
        failed={sym: error for sym in carried}, error=f"{what}: {error}", failed_at_unix=time.time()
    )
    storage.write_json(out_index, index)
    _remember_failure(details_dir, index["failed_at_unix"])
    seconds = time.monotonic() - started
    log.error("%s: %d symbols fail with it (%.1f s)", what, len(carried), seconds)
    return {"n_listed": 0, "n_kept": len(carried), "n_failed": len(carried), "error": error}


def relist_symbol(details_path, symbol: str, reason: BaseException) -> None:
    """A symbol's listing details that a download found unreadable: removed, and its
    listing index marks the symbol failed (``failed``, ``failed_at_unix``), a changed
    refresh value for the listing checkpoint (``plan.failure_time``), so the next run lists
    again; the symbol, its details gone, is listed in full. Without this the download
    failed at every run until the next end date."""
    storage.delete(details_path)
    index_path = layout.listing_index_of_details(details_path)
    with _INDEX_LOCK:  # symbols of one download job run at once
        try:
            index = storage.read_json(index_path, default=None)
        except ValueError:
            index = None  # torn too: planning mends it (plan.repair_index)
        if not isinstance(index, dict):
            return
        failed = index.get("failed") if isinstance(index.get("failed"), dict) else {}
        failed[symbol] = f"listing details unreadable ({type(reason).__name__}: {reason})"
        index.update(failed=failed, failed_at_unix=time.time())
        storage.write_json(index_path, index)
        _remember_failure(storage.data_path(details_path).parent, index["failed_at_unix"])


_INDEX_LOCK = threading.Lock()


def _remember_failure(details_dir, failed_at_unix: float) -> None:
    """The previous index stays the one the next listing resumes from; it learns when a
    listing failed, so the complete index that follows names that failure
    (``after_failure``, ``_previous_failure``) and the run after it does not list again."""
    record = resume_record_path(details_dir)
    try:
        kept = storage.read_json(record, default=None)
    except (OSError, ValueError):  # unreadable: the next listing is a full one anyway
        kept = None
    kept = kept if isinstance(kept, dict) else {}
    storage.ensure_dir(storage.data_path(details_dir))
    storage.write_json(record, dict(kept, failed_at_unix=failed_at_unix))


def _previous_failure(details_dir) -> float | None:
    """When the listing this one replaces failed (the resume record's ``failed_at_unix``)."""
    try:
        previous = storage.read_json(resume_record_path(details_dir), default=None)
    except (OSError, ValueError):
        return None
    if isinstance(previous, dict) and previous.get("failed_at_unix") is not None:
        return float(previous["failed_at_unix"])
    return None


def key_refusal(key: str, prefix: str, symbol: str) -> str | None:
    """Why a key listed below ``prefix`` is not an archive of ``symbol`` there; None if it is.

    Keys are data from the server: only the dataset's exact file names are accepted, with a
    real calendar date, so a name such as ``..BTCUSDT-1m-2024-01-01.zip``, one with ``%``
    or ``/`` in it, or a file of another symbol never reaches the download or the counts.
    """
    if not key.startswith(prefix) or "/" in key[len(prefix) :]:
        return f"not directly in the listed folder {prefix}"
    name = key[len(prefix) :]
    pattern = layout.archive_name_re(prefix, symbol)
    m = pattern.match(name) if pattern else None
    if m is None:
        return f"name {name!r} is not this dataset's pattern {pattern.pattern if pattern else ''}"
    date = m.group("date")
    try:
        datetime.date.fromisoformat(date if len(date) == 10 else f"{date}-01")
    except ValueError:
        return f"name {name!r}: {date} is not a calendar date"
    return None


@dataclass(frozen=True)
class KnownFiles:
    """What the previous listing found for a symbol: its accepted files, and the refused
    keys (the whole previous list: ``below`` keeps those of one folder)."""

    files: list[FileEntry]
    refused: list[dict]

    def below(self, prefix: str) -> tuple[list[FileEntry], list[dict], str | None]:
        """The known files and refused keys directly in folder ``prefix``, and the greatest
        of their keys (where a listing of that folder resumes; None: list it whole)."""
        files = [f for f in self.files if _directly_in(f.key, prefix)]
        refused = [r for r in self.refused if _directly_in(r["key"], prefix)]
        keys = [f.key for f in files] + [r["key"] for r in refused]
        return files, refused, max(keys) if keys else None


def _directly_in(key: str, prefix: str) -> bool:
    return key.startswith(prefix) and "/" not in key[len(prefix) :]


def _days_between(earlier: str, later: str) -> int | None:
    try:
        return (datetime.date.fromisoformat(later) - datetime.date.fromisoformat(earlier)).days
    except (TypeError, ValueError):
        return None


# The previous index, kept in the details folder (not a ``.json`` name: never taken for a
# symbol's details).
RESUME_RECORD = "_index.state"


def resume_record_path(details_dir):
    return storage.data_path(details_dir) / RESUME_RECORD


def last_covered_day(entries: list[dict]) -> str | None:
    """The last day any of a symbol's listed zips covers (ISO), from the key names. With an
    explicit ``end_date`` before it, the download shard's rerun trigger holds the end date
    (``plan.shard_digest``): moving it forward brings files listed earlier into range."""
    from crypto_lakehouse.archive.selection import key_period

    last = None
    for entry in entries:
        key = entry["key"]
        if not key.endswith(".zip"):
            continue
        try:
            day = key_period(key).last_day
        except ValueError:  # refused elsewhere; never downloaded
            continue
        if last is None or day > last:
            last = day
    return last.isoformat() if last else None


def previous_listing(
    details_dir, request: dict, full_listing_every_days: int
) -> tuple[dict[str, KnownFiles], str | None]:
    """The symbols a listing may resume from their last known keys, and the end date of
    the last full listing (None when there is nothing to resume from).

    Resuming is safe for what the archive adds after a folder's last key (new days and
    months sort last). A file changed or inserted before that key is only seen by a full
    listing: one is made unless the previous index (``resume_record_path``) answers the
    same request for an earlier end date (a listing again for the same end date, such as
    ``--forcerun list_archive``, is a full one) and its ``full_listing`` is less than
    ``full_listing_every_days`` days before the request's end date. A symbol whose detail
    file does not match the digest in the previous index is listed whole.
    """
    if full_listing_every_days <= 0 or not request.get("end_date"):
        return {}, None
    record = resume_record_path(details_dir)
    try:
        previous = storage.read_json(record)
    except (OSError, ValueError) as exc:  # unreadable: list everything again
        log.warning("previous listing %s unreadable (%s): listing in full", record, exc)
        return {}, None
    if not isinstance(previous, dict) or not isinstance(previous.get("request"), dict):
        return {}, None
    other = {k: v for k, v in previous["request"].items() if k != "end_date"}
    if other != {k: v for k, v in request.items() if k != "end_date"}:
        return {}, None
    if not str(previous["request"].get("end_date") or "") < request["end_date"]:
        return {}, None
    full_listing = previous.get("full_listing")
    age = _days_between(full_listing, request["end_date"])
    if age is None or not 0 <= age < full_listing_every_days:
        return {}, None
    # KnownFiles.below takes each folder's own from the whole list.
    refused = [r for r in previous.get("refused_files") or [] if isinstance(r, dict) and "key" in r]
    details_dir = storage.data_path(details_dir)
    known: dict[str, KnownFiles] = {}
    for sym, entry in (previous.get("symbols") or {}).items():
        try:
            text = storage.read_bytes(details_dir / f"{sym}.json")
            if hashlib.sha256(text).hexdigest() != entry.get("digest"):
                log.info("%s: details do not match the previous index: listed in full", sym)
                continue
            files = [FileEntry(**e) for e in json.loads(text)]
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            log.info("%s: previous details unusable (%s): listed in full", sym, exc)
            continue
        known[sym] = KnownFiles(files, refused)
    return known, full_listing


def _list_symbol_files(
    symbols, symbol_dirs, listing_url, concurrency, kwargs, known=None, slots=None
):
    """List every symbol's directories on a thread pool; a symbol in ``known`` only after
    the last known key of each folder (``previous_listing``), its known files kept. With
    ``slots`` (a semaphore shared with another listing) a symbol is listed while it holds
    one.

    Returns (files_of, refused_of, failures): the accepted files and the refused keys with
    their reasons, per symbol.
    """
    known = known or {}
    sessions = http.ThreadSessions(listing_url)
    files_of: dict[str, list[FileEntry]] = {}
    refused_of: dict[str, list[dict]] = {}
    failures: dict[str, str] = {}

    def one(symbol: str) -> tuple[list[FileEntry], list[dict]]:
        if slots is not None:
            with slots:
                return listed_files(symbol)
        return listed_files(symbol)

    def listed_files(symbol: str) -> tuple[list[FileEntry], list[dict]]:
        session = sessions.get()
        out: list[FileEntry] = []
        refused: list[dict] = []
        for prefix in symbol_dirs(symbol):
            start_after = None
            if symbol in known:
                kept_files, kept_refused, start_after = known[symbol].below(prefix)
                out.extend(kept_files)
                refused.extend(kept_refused)
            listed = list_files(session, listing_url, prefix, start_after=start_after, **kwargs)
            for entry in listed:
                reason = key_refusal(entry.key, prefix, symbol)
                if reason is None:
                    out.append(entry)
                else:
                    refused.append({"key": entry.key, "reason": reason})
        return sorted(out, key=lambda f: f.key), sorted(refused, key=lambda r: r["key"])

    try:
        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            futures = {sym: pool.submit(one, sym) for sym in symbols}
            for sym, fut in futures.items():
                try:
                    files_of[sym], refused_of[sym] = fut.result()
                except (http.ArchiveHTTPError, ListingError) as exc:
                    failures[sym] = str(exc)
    finally:
        sessions.close()
    return files_of, refused_of, failures


def run_listings(*, listings: list[dict]) -> dict:
    """The ``list_archive`` checkpoint: every (trade type, dataset) listing of a run in one
    process, concurrently (each is ``run_listing`` with its own arguments and index).

    One job instead of one per listing: one process start and one DAG update per run. A
    symbol (or a dataset's symbol folders) that cannot be listed after the retries is
    recorded as failed in its index (``run_listing`` with ``keep_going``): the job ends
    successfully for the others' sake, the download of each failed symbol fails with the
    listing's error, and the next run lists again (``plan.failure_time``). Any other error
    (a bad argument, a write that fails) fails the job after every listing ended, naming
    each on its error line.
    """
    results: dict[str, dict] = {}  # by index path
    failures: list[Exception] = []
    with ThreadPoolExecutor(max_workers=max(1, len(listings))) as pool:
        futures = [
            (str(a["out_index"]), pool.submit(run_listing, **a, keep_going=True)) for a in listings
        ]
        for index, fut in futures:
            try:
                results[index] = fut.result()
            except Exception as exc:  # reported below, after every listing ended
                failures.append(exc)
                log.error("listing of %s failed", index, exc_info=exc)
    if failures:
        # One line (the console's failure report shows a job's last error line); each
        # message starts with what failed ("spot klines 1m: ..."); the log has them whole.
        causes = "; ".join(_one_line(exc) for exc in failures)
        raise ListingError(f"{len(failures)} of {len(listings)} listings failed: {causes}")
    n_failed = sum(r.get("n_failed", 0) for r in results.values())
    if n_failed or any(r.get("error") for r in results.values()):
        log.error(
            "%d symbol listings failed (above); their downloads fail with the error and the "
            "next run lists them again",
            n_failed,
        )
    return results


def _one_line(exc: Exception, limit: int = 300) -> str:
    text = " ".join(line.strip() for line in str(exc).splitlines())
    return text if len(text) <= limit else text[: limit - 3] + "..."
