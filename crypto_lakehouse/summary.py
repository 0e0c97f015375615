"""Run summaries: one machine-readable record per target and trade type.

``{run_dir}/summaries/{stage}/{trade_type}.json`` aggregates the per-symbol
stats files of that stage, found through the shard reports of its jobs (files, bytes,
seconds, retries, errors, quarantined files, ...) and the figures the reports carry (quality, freshness, accuracy). Counters are summed over
symbols (nested keys joined with dots); rates are recomputed from the sums, never summed.
See docs/summaries.md. Reads and writes go through crypto_lakehouse.storage: the records
are Snakemake's files in the run directory (local), but any path the job is given works.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from crypto_lakehouse.contracts import read_exchange_info
from crypto_lakehouse.layout import is_shard_report, stats_path_for
from crypto_lakehouse.storage import list_files, read_json, write_json

log = logging.getLogger(__name__)

# Stats lists that name problems: copied per symbol into "problems" when non-empty.
LIST_KEYS = ("errors", "warnings", "quarantined", "failed", "failures", "quality_failures")
# Counters shown in the headline line, when the stage has them.
HEADLINE_KEYS = (
    "files_total",
    "files_downloaded",
    "files_parsed",
    "files_written",
    "bytes",
    "csv_bytes",
    "rows.output",
    "rows_written",
    "candles",
    "requests",
    "weight",
    "http_429",
    "retries",
    "files_failed",
    "files_quarantined",
    "input_problems",  # gen_kline: input files left out (before 2026-12-06 not shown)
    "skipped_unchanged",
)


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _is_rate(key: str) -> bool:
    return key.endswith(("_per_s", "_per_min"))


def _flatten(stats: dict, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a stats record (rates left out), nested keys joined with dots."""
    flat: dict[str, float] = {}
    for key, value in stats.items():
        if _is_number(value) and not _is_rate(key):
            flat[f"{prefix}{key}"] = value
        elif isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
    return flat


def report_figures(report: dict) -> dict:
    """Quality (parse), freshness (REST), accuracy and gate results (gen_kline, resample)."""
    figures = {}
    quality = report.get("quality")
    if isinstance(quality, dict) and "score" in quality:
        figures["quality_score"] = quality["score"]
        figures["missing_rows"] = quality.get("missing_rows")
    for key in ("freshness_lag_minutes", "last_candle", "status"):
        if report.get(key) not in (None, "ok"):
            figures[key] = report[key]
    if report.get("missing_days"):
        figures["missing_day_ranges"] = len(report["missing_days"])
    for key in ("quarantined", "quality_failures", "failures", "input_problems"):
        if report.get(key):
            figures[key] = report[key]
    if report.get("funding_events_outside_segments"):
        figures["funding_events_outside_segments"] = report["funding_events_outside_segments"]
    return figures


def _newest_mtime(paths) -> float | None:
    """The newest modification time of the (local, run-directory) report files, or None."""
    times = []
    for path in paths:
        try:
            times.append(os.stat(path).st_mtime)  # seam: run directory
        except (OSError, TypeError, ValueError):
            continue
    return max(times) if times else None


class _Records:
    """The reports and stats files a summary job reads. One that cannot be decoded (torn by
    a crash with ``storage.fsync: false``, zeroed by a disk fault) is removed and the job
    that writes it is made to rerun next time (``shards.repair_damaged_report``); it is
    named in ``damaged`` and the summary fails, as for a failed symbol. A missing symbol
    report or stats file reads as ``{}``, as before; a missing shard report (an input of
    the summary job, so it existed when the run started) was removed meanwhile by another
    job of the run that found it unreadable: the summary fails for it too. Written, the
    summary would be newer than everything it reads, and Snakemake does not rebuild a
    missing input of an output that is up to date: the report would never come back."""

    def __init__(self) -> None:
        self.damaged: list[str] = []
        self.shard_of: dict[str, str] = {}  # symbol report -> the shard report listing it
        self.done: set[str] = set()  # symbol reports their shard report lists as "ok"

    def read(self, path, of_report=None, *, required: bool = False) -> dict:
        """``path``: a report, or the stats file of the report ``of_report``; ``required``:
        a shard report (missing is damaged too)."""
        from crypto_lakehouse.layout import report_name
        from crypto_lakehouse.shards import DamagedInput, read_report, repair_damaged_report

        report = str(of_report or path)
        try:
            return read_report(path, report_name(report).split("/", 1)[0])
        except DamagedInput as exc:
            if not exc.missing:
                shard = self.shard_of.get(report)
                self.damaged.append(repair_damaged_report(exc, shard, Path(report).stem))
            elif required:
                self.damaged.append(
                    f"{exc}: removed during this run; the next run reruns the job that "
                    f"writes it ({exc.stage}), then this one"
                )
            elif report in self.done:
                # A symbol its job reported done, whose report is not where its shard report
                # says: its figures are left out of the totals. Said, not silent (the srun
                # launcher once returned shard reports naming the node's temporary folder,
                # and every CPU stage's totals were empty without a word).
                log.warning(
                    "%s, listed as done by %s: its figures are left out", exc, self.shard_of[report]
                )
            return {}

    def symbol_report_paths(self, report_paths: list[str]) -> tuple[list[str], float | None]:
        """Per-symbol report paths (a shard report, ``.../shards/N.json``, see
        crypto_lakehouse.shards, stands for the reports of its symbols; other paths are
        kept) and the summed ``seconds`` of the shard reports (None when there is none)."""
        from crypto_lakehouse.shards import symbol_reports

        paths: list[str] = []
        job_seconds: float | None = None
        for path in report_paths:
            if is_shard_report(path):
                shard = self.read(path, required=True)
                listed = symbol_reports(shard)
                self.shard_of.update((str(p), str(path)) for p in listed)
                self.done.update(
                    str(e["report"])
                    for e in shard.get("symbols", {}).values()
                    if isinstance(e, dict) and e.get("status") == "ok" and "report" in e
                )
                paths.extend(listed)
                job_seconds = (job_seconds or 0.0) + float(shard.get("seconds") or 0.0)
            else:
                paths.append(path)
        return paths, job_seconds


def _count_by_dataset(report_paths: list[str]) -> dict[str, int]:
    """Per-symbol reports by dataset tag (their folder: ``klines-1m``, ``funding``, ...)."""
    counts: dict[str, int] = {}
    for path in report_paths:
        tag = Path(path).parent.name
        counts[tag] = counts.get(tag, 0) + 1
    return dict(sorted(counts.items()))


def summarize(stage: str, trade_type: str, report_paths: list[str], records=None) -> dict:
    """Summary of a stage's per-symbol records; ``report_paths`` are per-symbol reports or
    shard reports (expanded to their symbols' reports)."""
    records = records or _Records()
    report_paths_given = list(report_paths)
    report_paths, job_seconds = records.symbol_report_paths(report_paths)
    totals: dict[str, float] = {}
    problems: dict[str, dict] = {}
    figures: dict[str, dict] = {}
    legacy_kept: dict[str, int] = {}
    for report_path in report_paths:
        report = records.read(report_path)
        stats = records.read(stats_path_for(report_path), of_report=report_path)
        name = f"{Path(report_path).parent.name}/{Path(report_path).stem}"
        for key, value in _flatten(stats).items():
            totals[key] = totals.get(key, 0) + value
        listed = {k: stats[k] for k in LIST_KEYS if stats.get(k)}
        if listed:
            problems[name] = listed
        picked = report_figures(report)
        if picked:
            figures[name] = picked
        for rel in report.get("kept") or ():  # resample: legacy files it does not own
            folder = rel.rsplit("/", 1)[0]
            legacy_kept[folder] = legacy_kept.get(folder, 0) + 1
    summary = {
        "stage": stage,
        "trade_type": trade_type,
        # A symbol has one report per dataset (klines and funding of a future): count names.
        "symbols": len({Path(p).stem for p in report_paths}),
        "reports_per_dataset": _count_by_dataset(report_paths),
        "totals": totals,
        "problems": problems,
        "figures": figures,
        "written_at_unix": int(time.time()),
    }
    if legacy_kept:
        summary["legacy_kept"] = dict(sorted(legacy_kept.items()))
    newest = _newest_mtime(report_paths_given)
    if newest is not None:
        # The stage's jobs that wrote these reports: a summary job rewrites every trade
        # type's summary when one of them changed, so its own time says nothing of them.
        summary["reports_written_unix"] = newest
    # A symbol whose date range selected no archive day has no score (None), not 0.
    scores = [f["quality_score"] for f in figures.values() if f.get("quality_score") is not None]
    if scores:
        summary["quality_score_min"] = min(scores)
        summary["quality_score_mean"] = sum(scores) / len(scores)
    lags = [f["freshness_lag_minutes"] for f in figures.values() if "freshness_lag_minutes" in f]
    if lags:
        summary["freshness_lag_minutes_max"] = max(lags)
    # The jobs' durations: a download job's symbols run at once, so their own seconds
    # overlap and their sum would understate the rate (by up to the symbols per shard).
    seconds = job_seconds or totals.get("seconds") or totals.get("seconds.total") or 0
    volume = totals.get("bytes") or totals.get("csv_bytes")
    if seconds and volume:
        summary["throughput_mb_s"] = volume / 1e6 / seconds
    files = (
        totals.get("files_downloaded") or totals.get("files_parsed") or totals.get("files_written")
    )
    if seconds and files:
        summary["throughput_files_s"] = files / seconds
    return summary


def legacy_kept(summaries) -> dict[str, int]:
    """The resampled files this pipeline did not write that the resample jobs kept (the
    reports' ``kept``: a legacy data dir's files at targets or offsets no longer
    configured), per folder (relative to the data dir), over the ``summaries``."""
    folders: dict[str, int] = {}
    for summary in summaries:
        for folder, n in (summary.get("legacy_kept") or {}).items():
            folders[folder] = folders.get(folder, 0) + int(n)
    return dict(sorted(folders.items()))


LEGACY_FOLDERS_SHOWN = 10


def legacy_kept_sentence(folders: dict[str, int]) -> str:
    """One sentence on ``legacy_kept``'s files (empty when none): how many, and where."""
    if not folders:
        return ""
    total = sum(folders.values())
    where = ", ".join(f"{f}/ ({n})" for f, n in list(folders.items())[:LEGACY_FOLDERS_SHOWN])
    if len(folders) > LEGACY_FOLDERS_SHOWN:
        where += f", … ({len(folders) - LEGACY_FOLDERS_SHOWN} more folders)"
    return (
        f"{total} legacy resampled file(s) at resample targets or offsets not configured are "
        f"kept, stale (no run updates them), read by the loaders with a warning: {where}; "
        "this pipeline did not write them and does not remove them: remove them, or "
        "configure those targets again"
    )


def _figure(value, digits: int = 6) -> str:
    """A headline figure: a whole number in full (``candles=3637441``; ``:g`` printed
    ``3.63744e+06``, six digits of it), any other to ``digits`` significant digits, or to
    the unit once it has more digits than that (``throughput_mb_s=1235``, not ``1.23e+03``)."""
    if float(value).is_integer() and abs(value) < 1e18:
        return str(int(value))
    if abs(float(f"{value:.{digits}g}")) < 10**digits:
        return f"{value:.{digits}g}"
    return f"{value:.0f}"


def headline(summary: dict) -> str:
    t = summary.get("totals", {})
    parts = [f"{summary['stage']}/{summary['trade_type']}: {summary['symbols']} symbols"]
    per_dataset = summary.get("reports_per_dataset") or {}
    if len(per_dataset) > 1:  # e.g. a future's klines and funding
        parts[0] += " (" + ", ".join(f"{tag} {n}" for tag, n in per_dataset.items()) + ")"
    for tag, entry in (summary.get("datasets") or {}).items():
        bad = entry.get("files_quarantined_download", 0) + entry.get("files_quarantined_parse", 0)
        days = f"days={_figure(entry.get('days', 0))}"
        if entry.get("days_empty") or entry.get("days_missing"):
            days += (f" (empty={_figure(entry.get('days_empty', 0))}"
                     f" missing={_figure(entry.get('days_missing', 0))})")  # fmt: skip
        parts.append(
            f"{tag}: rows={_figure(entry.get('rows', 0))} {days} quarantined={_figure(bad)}"
        )
    for key in HEADLINE_KEYS:
        if t.get(key):
            value = t[key]
            if key in ("bytes", "csv_bytes"):
                parts.append(f"{key.replace('bytes', 'MB')}={value / 1e6:.1f}")
            else:
                parts.append(f"{key}={_figure(value)}")
    for key in ("quality_score_min", "freshness_lag_minutes_max", "throughput_mb_s"):
        if key in summary:
            parts.append(f"{key}={_figure(summary[key], 3)}")
    if summary["problems"]:
        parts.append(f"symbols with problems={len(summary['problems'])}")
    if summary.get("exchange_info_error"):
        error = summary["exchange_info_error"]
        error = error if len(error) <= 200 else error[:197] + "..."
        parts.append(f"exchangeInfo failed (default weight limits used): {error}")
    return ", ".join(parts)


class SymbolsFailed(RuntimeError):
    """Symbols of a stage failed in shard jobs that ended successfully for the others'
    sake (crypto_lakehouse.shards): the stage's summary is not written, so the run fails
    and names them; the next run reruns their shards."""


def failed_symbols(report_paths, records=None) -> list[str]:
    """``"{name}: {error}"`` for each symbol the given shard reports do not record as done:
    failed, not run, or skipped because an earlier stage did not finish it (that stage's
    summary names the cause; this one fails too, since its stage is incomplete)."""
    from crypto_lakehouse.shards import NOT_DONE

    found = []
    for path in report_paths:
        if not is_shard_report(path):
            continue
        shard = (records or _Records()).read(path)
        for name, entry in (shard.get("symbols") or {}).items():
            if entry.get("status") in NOT_DONE:
                found.append(f"{name}: {entry.get('error', entry.get('status'))}")
    return found


# The failure line of a summary names up to this many symbols and this many characters
# (each symbol's error can carry its upstream error: shards.UPSTREAM_ERROR_CHARS).
SHOWN_FAILED_SYMBOLS, SHOWN_FAILED_CHARS = 10, 2000


def failed_listings(index_paths) -> list[str]:
    """The errors of listings whose symbol folders could not be listed (``error`` of a
    listing index written by the ``list_archive`` checkpoint). Their symbols, when the
    listing knew any, fail in the download; with none (a first listing of "all") this is
    the only trace, so the download's summary fails with it."""
    errors = []
    for path in index_paths:
        index = read_json(path, default={}) or {}
        if isinstance(index, dict) and index.get("error"):
            errors.append(str(index["error"]))
    return errors


# How a summary says that all its failed symbols were skipped for an earlier stage's failure
# (each entry "SYM: not done upstream (…)"): the end of a failed run lists such summaries on
# one line after the failures that held them back (crypto_lakehouse.failures).
HELD_BACK = "held back by an earlier stage"


def _shown(items: list[str]) -> str:
    """Up to SHOWN_FAILED_SYMBOLS items within SHOWN_FAILED_CHARS, then how many more."""
    parts: list[str] = []
    for item in items[:SHOWN_FAILED_SYMBOLS]:
        if parts and sum(len(x) + 2 for x in parts) + len(item) > SHOWN_FAILED_CHARS:
            break
        parts.append(item)
    rest = len(items) - len(parts)
    return "; ".join(parts) + (f"; and {rest} more" if rest else "")


def _raise_for_failed(
    stage: str,
    trade_type: str,
    failed: list[str],
    listing_errors: list[str] = (),
    damaged: list[str] = (),
) -> None:
    """``damaged``: the records of this stage the summary could not read (``_Records``)."""
    if not (failed or listing_errors or damaged):
        return
    from crypto_lakehouse.shards import UPSTREAM_REASON_START

    listed = "".join(f" listing failed: {e};" for e in listing_errors)
    records = (
        f" {len(damaged)} record(s) unreadable, rebuilt by the next run: {_shown(damaged)};"
        if damaged
        else ""
    )
    held_back = (
        not listing_errors
        and not damaged
        and all(item.partition(": ")[2].startswith(UPSTREAM_REASON_START) for item in failed)
    )
    if failed:
        symbols = (
            f" {len(failed)} symbol(s) "
            f"{HELD_BACK if held_back else 'not done'}, retried by the next run: {_shown(failed)}"
        )
    else:
        symbols = " the next run lists again" if listing_errors else ""
    raise SymbolsFailed(f"{stage} {trade_type}:{listed}{records}{symbols}".rstrip(";"))


def run_summary(
    *, stage: str, trade_type: str, summary: str, reports=(), listings=(), exchange_info=None
) -> dict:
    """``listings``: the trade type's listing indexes (the download's summary), whose
    failures fail it too. ``exchange_info``: its exchangeInfo summary (the REST stage's): a
    failed request, after which the REST jobs used the default weight limits, is recorded
    as ``exchange_info_error`` and shown in the headline (it fails nothing)."""
    report_paths = [str(p) for p in reports]
    records = _Records()
    failed = failed_symbols(report_paths, records)
    result = summarize(stage, trade_type, report_paths, records)
    _raise_for_failed(stage, trade_type, failed, failed_listings(listings), records.damaged)
    info = read_exchange_info(exchange_info) if exchange_info else None
    if isinstance(info, dict) and info.get("error"):
        result["exchange_info_error"] = str(info["error"])
    write_json(summary, result)
    log.info("%s (summary: %s)", headline(result), summary)
    return result


def run_summaries(*, summaries: list[dict]) -> list[dict]:
    """Rule ``summarize``: ``run_summary`` for every trade type of a stage, in one job; a
    trade type with failed symbols fails the job after the others are summarized (every
    failure named at once). Snakemake then removes the job's outputs; the run's ``onerror``
    writes those of the trade types that finished again (``summaries_after_failure``)."""
    results, errors = [], []
    for s in summaries:
        try:
            results.append(run_summary(**s))
        except SymbolsFailed as exc:
            errors.append(str(exc))
    if errors:
        raise SymbolsFailed(" | ".join(errors))
    return results


def summaries_after_failure(summaries: list[dict]) -> str:
    """The ``onerror`` end of a failed run: ``run_summary`` for each trade type of
    ``summaries`` (the arguments of the stages' summary jobs, ``run_summaries``) whose
    summary is missing or older than one of its shard reports, and that finished. One job
    writes a stage's summaries of every trade type, so when it fails for one trade type
    Snakemake removes them all; a stage whose job did not run at all (a shard of one trade
    type failed as a whole: a ban) has none of this run. Written here, the trade types that
    finished keep theirs (the report page and the next run's headlines show them); one with
    failed symbols, or records this run did not complete, gets none: its failure is in the
    run's failure list. Returns a line for the console; never raises (the run has failed
    already; its failure report stays the message)."""
    written, failed = [], []
    for s in summaries:
        name = f"{s['stage']}/{s['trade_type']}"
        try:
            reports = [str(p) for p in s.get("reports") or ()]
            mtime = _newest_mtime([s["summary"]])
            newest = _newest_mtime(reports)
            if mtime is not None and (newest is None or newest <= mtime):
                continue  # written by this run's job, or up to date with its reports
            run_summary(**s)
            written.append(name)
        except SymbolsFailed:
            failed.append(name)
        except Exception as exc:  # a courtesy: say why, do not mask the run's failure
            failed.append(f"{name} ({type(exc).__name__}: {exc})")
    if not written:
        return ""
    line = (
        "crypto_lakehouse: summaries of the trade types that finished, written after the "
        f"failure: {', '.join(written)}"
    )
    return line + (f" (none for {', '.join(failed)}: see the failures above)" if failed else "")


# ------------------------------------------------------------------ archive datasets
def _tick_day_rows(report: dict) -> dict[str, int]:
    """{YYYYMMDD: rows} of a tick parse report; a daily file wins over its month's file,
    as in the parsed output (monthly keys are applied first)."""
    day_rows: dict[str, int] = {}
    files = report.get("files") or {}
    for key in sorted(files, key=lambda k: ("/daily/" in k, k)):
        day_rows.update(files[key].get("days") or {})
    return day_rows


def _tick_day_figures(day_rows: dict[str, int]) -> dict[str, int]:
    """``days_empty``: days whose zip was published without a row (a day file with no
    row); ``days_missing``: days between the symbol's first and last day with no day file
    at all (no zip, or its zip quarantined). A day before the first or after the last one is
    not counted: the archive's listing, not this record, says when a symbol trades."""
    import numpy as np

    if not day_rows:
        return {"days_empty": 0, "days_missing": 0}
    days = np.array([np.datetime64(f"{d[:4]}-{d[4:6]}-{d[6:]}", "D") for d in day_rows])
    span = int((days.max() - days.min()).astype(int)) + 1
    return {
        "days_empty": sum(1 for n in day_rows.values() if n == 0),
        "days_missing": span - len(day_rows),
    }


def dataset_symbol_figures(parse_report: dict, download_report: dict) -> dict:
    """One symbol's quality figures for one archive dataset: rows and days parsed (tick
    datasets: of these the days without a row; every dataset: the days missing between
    the first and the last), files
    verified, files quarantined by the download (checksum, size) and by the parse
    (validation: ids, times, prices, quantities), and the kline quality score if any."""
    download_bad = set(download_report.get("quarantined") or {})
    parse_bad = {k: v for k, v in (parse_report.get("quarantined") or {}).items()}
    # A zip the parse quarantined is listed by the next download report too (archive.sync:
    # not fetched again); the parse report names its own (before 2026-12-07 such a zip
    # counted as quarantined by the download from the next run on). A report written
    # before then has no such list: the keys the download does not list are the parse's.
    if "quarantined_by_parse" in parse_report:
        parse_own = set(parse_report["quarantined_by_parse"])
    else:
        parse_own = set(parse_bad) - download_bad
    if "partitions" in parse_report:  # kline-layout datasets (markPriceKlines, ...)
        rows = sum(int(p.get("rows", 0)) for p in parse_report["partitions"].values())
        quality = parse_report.get("quality") or {}
        # The quality record has a row for every day from the first to the last, those
        # without a candle included (a quarantined or absent daily file): the days parsed
        # are the others, as for the tick datasets.
        without = int(quality.get("days_without_rows") or 0)
        figures = {"rows": rows, "days": int(quality.get("days") or 0) - without,
                   "days_missing": without}  # fmt: skip
    else:
        day_rows = _tick_day_rows(parse_report)
        quality = {}
        figures = {"rows": sum(day_rows.values()), "days": len(day_rows),
                   **_tick_day_figures(day_rows)}  # fmt: skip
    figures |= {
        "files_verified": len(download_report.get("files") or {}),
        "files_quarantined_download": len(download_bad - parse_own),
        "files_quarantined_parse": len(parse_own),
    }
    if quality.get("score") is not None:
        figures["quality_score"] = quality["score"]
    return figures


def summarize_datasets(
    trade_type: str, parse_reports: list[str], download_dirs: dict, records=None
) -> dict:
    """Run summary of the archive datasets beyond klines/funding for one trade type.

    ``parse_reports``: the parse shard reports (or per-symbol reports) of every dataset;
    ``download_dirs``: {dataset tag: directory of its per-symbol download reports}."""
    per_dataset: dict[str, dict] = {}
    totals: dict[str, float] = {}
    problems: dict[str, dict] = {}
    records = records or _Records()
    paths, _ = records.symbol_report_paths(parse_reports)
    for folder in download_dirs.values():  # which shard lists each download report
        shards = list_files(Path(folder) / "shards", recursive=False, suffix=".json")
        records.symbol_report_paths([str(p) for p in shards])
    for path in paths:
        report = records.read(path)
        tag, symbol = Path(path).parent.name, Path(path).stem
        download = {}
        if tag in download_dirs:
            download = records.read(Path(download_dirs[tag]) / f"{symbol}.json")
        figures = dataset_symbol_figures(report, download)
        entry = per_dataset.setdefault(tag, {"symbols": 0, "scores": []})
        entry["symbols"] += 1
        score = figures.pop("quality_score", None)
        if score is not None:
            entry["scores"].append(score)
        for key, value in figures.items():
            entry[key] = entry.get(key, 0) + value
            totals[f"{tag}.{key}"] = totals.get(f"{tag}.{key}", 0) + value
        if report.get("quarantined"):
            problems[f"{tag}/{symbol}"] = {"quarantined": report["quarantined"]}
    for entry in per_dataset.values():
        scores = entry.pop("scores")
        if scores:
            entry["quality_score_min"] = min(scores)
    return {
        "stage": "datasets",
        "trade_type": trade_type,
        "symbols": len({Path(p).stem for p in paths}),
        "datasets": dict(sorted(per_dataset.items())),
        "totals": totals,
        "problems": problems,
        "figures": {},
        "written_at_unix": int(time.time()),
    }


def run_dataset_summary(
    *, trade_type: str, summary: str, download_dirs: dict, parse_reports=(), listings=()
) -> dict:
    """``listings``: the listing indexes of the trade type's datasets (``run_summary``)."""
    records = _Records()
    failed = failed_symbols(parse_reports, records)
    result = summarize_datasets(trade_type, [str(p) for p in parse_reports], download_dirs, records)
    _raise_for_failed("datasets", trade_type, failed, failed_listings(listings), records.damaged)
    write_json(summary, result)
    log.info("%s (summary: %s)", headline(result), summary)
    return result
