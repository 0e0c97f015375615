"""Readers for the page's sections: quality records, quarantine, freshness, run summaries,
benchmark files and quality gates. Each returns a small frame or dict; the page only formats.

Benchmark files are found by globbing ``lakehouse/benchmarks/**/*.tsv`` and a job is named by
its path relative to that folder: the rules' grouping of symbols into jobs may change without
the report knowing it.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from crypto_lakehouse import layout, storage
from crypto_lakehouse import quality as quality_counts
from crypto_lakehouse.generate.outputs import SUFFIX
from crypto_lakehouse.intervals import DAY_MS
from crypto_lakehouse.report.coverage import read_symbol_tables

log = logging.getLogger(__name__)

from crypto_lakehouse.plan import STAGES  # noqa: E402

# Rule folders (below logs/ and benchmarks/) that belong to a stage of another name.
_STAGE_OF_FOLDER = {"list_archive": "aws_download", "exchange_info": "api_download"}
# The jobs of the `datasets` target (rules/datasets.smk; docs/datasets.md) have rows of their
# own in section 4: its listing and download jobs share the folders of list_archive and
# aws_download, its parse jobs that of aws_parse (one folder per rule's stage, then trade
# type, then dataset); a dataset folder other than the klines' and funding's is theirs.
# Before 2026-12-06 they were counted in the aws_download and aws_parse rows.
DATASET_STAGES = ("datasets_download", "datasets_parse", "agg_klines")
_DATASET_STAGE_OF = {
    "aws_download": "datasets_download",
    "aws_parse": "datasets_parse",
    "datasets": "datasets_parse",  # summaries/datasets/{T}: the parse summaries' job
}


def _benchmark_stage(parts: list[str]) -> str:
    """The section-4 row of a benchmark file (``parts``: its path below ``benchmarks/``)."""
    folder = parts[0]
    stage = parts[1] if folder == "summaries" and len(parts) > 1 else folder
    stage = _STAGE_OF_FOLDER.get(stage, stage)
    if stage == "datasets":
        return _DATASET_STAGE_OF[stage]
    # {stage}/{trade_type}/{dataset}/...: the kline listing (klines-{I}) and funding are the
    # main stages'; list_archive/run is the run's one listing job.
    if stage in ("aws_download", "aws_parse") and folder != "summaries" and len(parts) >= 3:
        dataset = parts[2]
        if not (dataset.startswith("klines-") or dataset == "funding"):
            return _DATASET_STAGE_OF[stage]
    return stage


# A node's figures count for a benchmark table when written during its job (clock skew
# between the node and the submit host does not matter: the launcher writes the file).
NODE_FIGURES_SLACK_S = 5.0
# Snakemake samples a job's processes when it starts, then every 0.5 s
# (snakemake.benchmark.BENCHMARK_INTERVAL_SHORT; every 30 s after the first 30 samples).
# A shorter job was sampled at its start only: its figures are those of the shell that
# starts the script (a few MB, 0.00 CPU seconds), or NA, or 0 (the process already gone).
FIRST_SAMPLE_S = 0.5
_QUALITY_COLUMNS = [*quality_counts.COUNT_COLUMNS, "score"]


# ---------------------------------------------------------------- quality
def quality_scores(data_dir, trade_types, interval: str) -> pd.DataFrame:
    """Per symbol: ``trade_type``, ``symbol``, ``score`` (mean day score, as the parse report),
    ``days``, ``days_without_rows`` and the sums of the quality record's counts."""
    frames = []
    for trade_type in trade_types:
        folder = layout.quality_dir(data_dir, trade_type, interval)
        paths = storage.list_files(folder, recursive=False, suffix=SUFFIX)
        # A few hundred symbols' records at a time (a file is one symbol's: each group's
        # sums see all its rows): memory one chunk's rows, not the universe's (2,700
        # symbols × 2,000 days: 3.4 M rows, ~0.3 GB held at once before 2026-12-07).
        for start in range(0, len(paths), QUALITY_FILES_AT_ONCE):
            chunk = paths[start : start + QUALITY_FILES_AT_ONCE]
            frame = _quality_sums(folder, chunk)
            if frame is not None:
                frame.insert(0, "trade_type", trade_type)
                frames.append(frame)
    if not frames:
        return pd.DataFrame(
            columns=[
                "trade_type",
                "symbol",
                "score",
                "days",
                "days_without_rows",
                *_QUALITY_COLUMNS[:-1],
            ]
        )
    return pd.concat(frames, ignore_index=True).sort_values(["trade_type", "symbol"])


# Quality records (one file per symbol) read and summed at a time by ``quality_scores``.
QUALITY_FILES_AT_ONCE = 256


def _quality_sums(folder, paths) -> pd.DataFrame | None:
    """Per symbol of ``paths``: the sums of the counts, the mean score and the days."""
    t = read_symbol_tables(folder, _QUALITY_COLUMNS, "quality record", paths=paths)
    if t.num_rows == 0:
        return None
    t = t.append_column("no_rows", pc.cast(pc.equal(t.column("rows"), 0), pa.int64()))
    sums = [(c, "sum") for c in (*_QUALITY_COLUMNS[:-1], "no_rows")]
    grouped = t.group_by("symbol").aggregate([*sums, ("score", "mean"), ("score", "count")])
    return grouped.to_pandas().rename(
        columns={
            **{f"{c}_sum": c for c in _QUALITY_COLUMNS[:-1]},
            "no_rows_sum": "days_without_rows",
            "score_mean": "score",
            "score_count": "days",
        }
    )


def quality_reasons(scores: pd.DataFrame) -> pd.Series:
    """Why a symbol scores below 1, from the components of the score (docs/quality.md)."""
    expected = scores["expected_rows"].clip(lower=1)
    rows = scores["rows"].clip(lower=1)
    missing = 100 * scores["missing_rows"] / expected
    zero = 100 * scores["zero_volume_rows"] / rows
    parts = [
        np.where(
            scores["missing_rows"] > 0,
            missing.map("{:.1f}% of candles missing".format)
            + scores["days_without_rows"].map(
                lambda d: f" ({d} day{'' if d == 1 else 's'} without rows)" if d else ""
            ),
            "",
        ),
        np.where(
            scores["ohlc_violations"] > 0,
            scores["ohlc_violations"].map("{} OHLC violations".format),
            "",
        ),
        np.where(
            scores["taker_violations"] > 0,
            scores["taker_violations"].map("{} taker-volume violations".format),
            "",
        ),
        np.where(
            scores["zero_volume_rows"] > 0, zero.map("{:.1f}% zero-volume candles".format), ""
        ),
    ]
    joined = pd.Series(
        ["; ".join(p for p in row if p) for row in zip(*parts, strict=True)], index=scores.index
    )
    return joined.replace("", "no defect found")


def quarantined_files(data_dir, reasons_read: int | None = None) -> pd.DataFrame:
    """Every quarantined archive (``key``) with the reason written next to it, but those
    verified in ``aws_data`` again: the archive re-published its file, and the new one was
    downloaded and verified (a parse that refuses it moves it to quarantine again, marker
    removed). Their old copy stays under lakehouse/quarantine/ for inspection; before, the
    page listed them as quarantined for good. ``reasons_read``: read the reasons of the
    first so many keys only (the page shows MAX_LISTED), the others' reason None: each is a
    request on S3, and thousands of them made the report's time grow with the quarantine."""
    root = layout.quarantine_dir(data_dir)
    rows = []
    verified_in: dict[str, set[str]] = {}  # folder of keys -> its file names (one listing)
    for path in storage.list_files(root, suffix=".reason"):  # local folder or S3 prefix
        key = path.relative_to(root).as_posix()[: -len(".reason")]
        folder, _, name = key.rpartition("/")
        if folder not in verified_in:
            verified_in[folder] = storage.file_names(layout.aws_path(data_dir, folder))
        if {name, name + layout.VERIFIED_SUFFIX} <= verified_in[folder]:
            continue
        if reasons_read is not None and len(rows) >= reasons_read:
            rows.append((key, None))
            continue
        try:
            reason = storage.read_bytes(path).decode(errors="replace").strip()
        except OSError as exc:
            reason = f"(reason unreadable: {exc})"
        rows.append((key, reason))
    return pd.DataFrame(rows, columns=["key", "reason"])


# ---------------------------------------------------------------- the run's symbols
def run_symbols(index_path) -> dict[str, str | None]:
    """The symbols the run asked for at a trade type's kline listing index (the rule's
    ``kline_listings``), each with what the listing says against it: None for a kept symbol
    (its candles are the later stages' work), else why it has no data: its listing failed,
    it is configured but not in the archive, or the archive has no file of the interval.
    Symbols the listing filtered out (symbols: all) were not asked for. A missing or
    unreadable index (a listing that failed before writing one) gives {}, with a warning."""
    try:
        index = storage.read_json(index_path)
    except (OSError, ValueError) as exc:
        log.warning("listing index %s unreadable, its symbols left out: %s", index_path, exc)
        return {}
    if not isinstance(index, dict) or not isinstance(index.get("symbols"), dict):
        if index is not None:
            log.warning("listing index %s has no symbols; left out", index_path)
        return {}
    failed = index.get("failed") if isinstance(index.get("failed"), dict) else {}
    found: dict[str, str | None] = {}
    for symbol in index["symbols"]:
        error = failed.get(symbol)
        if error is None:
            found[symbol] = None
        else:
            error = str(error)[:300]
            found[symbol] = (
                error if error.startswith("listing failed") else f"listing failed: {error}"
            )
    for symbol in index.get("not_listed") or ():
        found.setdefault(symbol, "not in the archive listing")
    for symbol in index.get("no_files") or ():
        found.setdefault(symbol, "no archive file of the interval listed")
    return found


# The note of a symbol the archive holds no file of in the run's dates (download_notes).
NO_ARCHIVE_FILE = "no archive file in the date range"


def download_notes(run_dir, trade_type: str, interval: str, symbols) -> dict[str, str]:
    """Why a symbol the listing kept has no candles, from its download report (run
    directory): the archive holds no file of it in the run's dates (a symbol delisted before
    ``start_date``, or listed after ``end_date``: ``symbols: all`` with ``lookback_days`` lists
    every delisted one), or every file it downloaded was quarantined; or that its download
    failed in this run (the aws_download shard reports). Symbols with neither (their download
    never ran) get nothing."""
    from crypto_lakehouse import layout

    notes = {}
    wanted = set(symbols)
    # This run's failed downloads, from the shard reports (a failed symbol writes no report
    # of its own): one failed zip holds the whole symbol back from the later stages.
    folder = layout.stage_report_dir(str(run_dir), "aws_download", trade_type, f"klines-{interval}")
    shards = Path(folder) / "shards"
    for shard in sorted(shards.glob("*.json")) if shards.is_dir() else ():
        try:
            entries = json.loads(shard.read_text()).get("symbols") or {}
        except (OSError, ValueError, AttributeError):
            continue
        for symbol, entry in entries.items():
            if symbol in wanted and isinstance(entry, dict) and entry.get("status") == "failed":
                # The error's lines joined: its first one often only says how many files.
                error = " ".join(line.strip() for line in str(entry.get("error", "")).splitlines())
                notes[symbol] = "its download failed" + (f": {error[:300]}" if error else "")
    for symbol in symbols:
        if symbol in notes:
            continue
        path = layout.stage_report_path(
            str(run_dir), "aws_download", trade_type, f"klines-{interval}", symbol
        )
        try:
            report = json.loads(Path(path).read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(report, dict) or report.get("files") != {}:
            continue
        if report.get("quarantined"):
            notes[symbol] = f"all {len(report['quarantined'])} archive file(s) quarantined"
        else:
            notes[symbol] = NO_ARCHIVE_FILE
    return notes


# ---------------------------------------------------------------- freshness
def freshness(segments: pd.DataFrame, symbols, end_day: int, trade_type: str) -> pd.DataFrame:
    """Lag of each symbol's last candle behind the end of ``end_date`` (minutes), from the
    generated segments (``end_ms`` exclusive = close of the last candle). ``symbols`` lists
    the symbols of the trade type; those without a generated file get no lag (NaN).

    A symbol whose candles go past the end of ``end_date`` (a run with a later end_date
    wrote them, then ``end_date`` moved back) is up to date: lag 0, ``past_end_date`` True.
    Before, its lag was negative (``-1440`` for a day past), a figure that means nothing."""
    last_end = segments.groupby("symbol")["end_ms"].max() if len(segments) else pd.Series()
    frame = pd.DataFrame({"symbol": sorted(set(symbols) | set(last_end.index))})
    end = frame["symbol"].map(last_end)
    horizon = (end_day + 1) * DAY_MS
    frame["last_candle_close"] = pd.to_datetime(end, unit="ms", utc=True)
    frame["lag_minutes"] = ((horizon - end) // 60_000).clip(lower=0)
    frame["past_end_date"] = (end > horizon).to_numpy()
    frame.insert(0, "trade_type", trade_type)
    return frame


# ---------------------------------------------------------------- the run
def read_summaries(run_dir, trade_types, stages=STAGES) -> dict[tuple[str, str], dict]:
    """``{(stage, trade_type): summary}`` for the summaries that exist in the run dir
    (``stages``: the pipeline's stages; ``("datasets",)`` for the datasets target's).

    A summary that cannot be read (torn by a crash with ``storage.fsync: false``, zeroed by
    a disk fault) is removed, so that the next run writes it again, and raised as
    ``DamagedInput`` naming it, after the others are read: the report fails as for a failed
    job (the page of the failed run then shows the stage without its summary). Before, the
    report failed at every run with a bare JSONDecodeError, since nothing rewrote it."""
    from crypto_lakehouse.shards import DamagedInput, read_report, repair_damaged_report

    found, damaged = {}, []
    for stage in stages:
        for trade_type in trade_types:
            path = layout.run_summary_path(str(run_dir), stage, trade_type)
            try:
                found[(stage, trade_type)] = read_report(path, f"the {stage} summary job")
            except DamagedInput as exc:
                if not exc.missing:
                    repair_damaged_report(exc)
                    damaged.append(exc)
    if damaged:
        damaged[0].args = ("; ".join(str(exc) for exc in damaged),)
        raise damaged[0]
    return found


def _node_figures(table: Path, seconds: float, end: float) -> dict | None:
    """The figures a node sent for the job of this benchmark table (``layout.node_figures_path``,
    written by the launcher just before the job ended), or None: no such file, or one left
    by an earlier run of the job (written before this job started), or unreadable."""
    path = table.with_name(table.name.removesuffix(".tsv") + ".node.json")
    try:
        written = os.stat(path).st_mtime
        if not end - seconds - NODE_FIGURES_SLACK_S <= written <= end + NODE_FIGURES_SLACK_S:
            return None
        figures = json.loads(path.read_text())
        float(figures["cpu_time"]), float(figures["max_rss"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("node figures %s skipped: %s", path, exc)
        return None
    return figures


def _measured(value: float, seconds: float) -> float:
    """A benchmark table's memory or CPU figure, NaN where Snakemake did not measure the
    job (``FIRST_SAMPLE_S``): NA, a job shorter than its first sample, or 0 (no running
    Python job has zero memory, nor zero CPU seconds at the table's two decimals)."""
    if math.isnan(value) or value <= 0 or seconds < FIRST_SAMPLE_S:
        return math.nan
    return value


def read_benchmarks(run_dir) -> pd.DataFrame:
    """One row per benchmark file: ``job`` (path below ``benchmarks/`` without ``.tsv``),
    ``stage``, ``seconds``, ``max_rss_mb``, ``cpu_time``, ``end_unix`` (the file's mtime: the
    job's end). A file that is not a Snakemake benchmark table is skipped with a warning.
    Memory and CPU are NaN where the table did not measure them (``_measured``). For a job
    launched on a node (``cluster.launcher: srun``) memory and CPU are the node's
    (``_node_figures``, measured by the launcher however short the job), the wall time
    Snakemake's; so are those of a job the run's job server forked (the job process wrote
    its child's figures there: crypto_lakehouse.job_server)."""
    root = Path(layout.run_benchmarks_dir(str(run_dir)))
    rows = []
    for path in sorted(root.rglob("*.tsv")) if root.is_dir() else []:
        rel = path.relative_to(root).with_suffix("").as_posix()
        parts = rel.split("/")
        stage = _benchmark_stage(parts)
        try:
            table = pd.read_csv(path, sep="\t")
            seconds = float(table["s"].iloc[-1])
            rss = pd.to_numeric(table.get("max_rss", pd.Series([np.nan])), errors="coerce")
            cpu = pd.to_numeric(table.get("cpu_time", pd.Series([np.nan])), errors="coerce")
            end = os.stat(path).st_mtime
        except Exception as exc:  # malformed or vanished file: name it, go on
            log.warning("benchmark file %s skipped: %s", path, exc)
            continue
        rss, cpu = _measured(float(rss.iloc[-1]), seconds), _measured(float(cpu.iloc[-1]), seconds)
        node = _node_figures(path, seconds, end)
        if node is not None:  # a job launched on a node: the table measured the launcher
            rss, cpu = float(node["max_rss"]), float(node["cpu_time"])
        rows.append((rel, stage, seconds, rss, cpu, end))
    return pd.DataFrame(
        rows, columns=["job", "stage", "seconds", "max_rss_mb", "cpu_time", "end_unix"]
    )


def run_jobs(
    benchmarks: pd.DataFrame, off=(), started_unix: float | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The benchmark rows of this run's jobs, and the others: the benchmark folder keeps
    each job's latest run, so it also holds the files of stages the config now leaves out
    (``off``: features disabled since, say) and, with the run's start ``started_unix``
    known, those of jobs that ended before it (earlier runs': this run did not rerun them).
    Without ``started_unix`` every job of the stages in the run counts as this run's."""
    if not len(benchmarks):
        return benchmarks, benchmarks
    other = benchmarks["stage"].isin(off)
    if started_unix is not None:
        other |= benchmarks["end_unix"] < float(started_unix)
    return benchmarks[~other], benchmarks[other]


def _total(totals: dict, *keys: str) -> float:
    return float(sum(totals.get(k, 0) or 0 for k in keys))


def busy_seconds(starts, ends) -> float:
    """Length of the union of the intervals [start, end): the time at least one of them ran.
    Benchmark files of one stage may come from different runs (a forced rerun of its
    summaries, a failed shard rerun the next day): the span from the first start to the last
    end would count the days between."""
    order = np.argsort(np.asarray(starts, dtype=float), kind="stable")
    start = np.asarray(starts, dtype=float)[order]
    end = np.asarray(ends, dtype=float)[order]
    reach = np.maximum.accumulate(end)  # the latest end so far
    # A job that starts after everything before it ended opens a new busy interval.
    opens = np.r_[True, start[1:] > reach[:-1]]
    first = np.flatnonzero(opens)
    last = np.r_[first[1:] - 1, len(start) - 1]
    return float(np.sum(reach[last] - start[first]))


# Why a stage is not in a run (``run_summaries``): the config leaves it out.
_STAGE_OFF = {"features": "features.enabled: false", "resample": "no resample.targets"}


def stage_off(stage: str) -> str:
    """The section-4 ``summaries`` cell of a stage the run's config leaves out."""
    return f"off ({_STAGE_OFF.get(stage, 'not in this run')})"


def run_summaries(
    summaries: dict[tuple[str, str], dict], stages: dict[str, list[str]] | None
) -> dict[tuple[str, str], dict]:
    """The summaries of this run's stages and trade types (``stages``: the report rule's,
    ``{stage: trade types}``; None: all found). A stage the config leaves out (features
    with ``features.enabled: false``, resample of a trade type without targets) keeps the
    summaries of an earlier run that had it: they are not this run's."""
    if stages is None:
        return summaries
    return {(st, t): s for (st, t), s in summaries.items() if t in stages.get(st, ())}


def stage_table(
    summaries: dict[tuple[str, str], dict],
    benchmarks: pd.DataFrame,
    off: tuple[str, ...] | frozenset[str] = (),
    expected: dict[str, list[str]] | None = None,
) -> pd.DataFrame:
    """Per stage: the trade types summarized (with ``expected``, the run's trade types per
    stage: also those without a summary, ``spot, um_futures; none: cm_futures``: they did
    not finish the stage), symbols (from the summaries); jobs, wall time
    (``busy_seconds`` of the jobs) and the jobs' own seconds summed, from the benchmark
    files; files, bytes, throughput (bytes over the symbols' work seconds), retries, REST
    429s (from the summaries). A stage without any summary has None there, not 0: no
    trade type of it finished, so nothing is known of its symbols.
    A stage in ``off`` is not in this run (the config leaves it out): its row says so
    (``stage_off``) and shows nothing else; its benchmark files are earlier runs'. Before
    2026-12-06 such a row said "none", as for a summary job that failed."""
    rows = []
    # The datasets target's rows (DATASET_STAGES) only when it ran jobs: its symbols and
    # files are in section 6 (its own summaries), so these rows show jobs and times only.
    ran = set(benchmarks["stage"]) if len(benchmarks) else set()
    for stage in (*STAGES, *(s for s in DATASET_STAGES if s in ran)):
        if stage in off:
            rows.append(
                {
                    "stage": stage,
                    "summaries": stage_off(stage),
                    "symbols": None,
                    "jobs": None,
                    "wall_s": None,
                    "job_seconds": None,
                    **dict.fromkeys(("files", "mb", "mb_per_s", "retries", "http_429")),
                }
            )
            continue
        jobs = benchmarks[benchmarks["stage"] == stage] if len(benchmarks) else benchmarks
        found = [t for (st, t) in summaries if st == stage]
        missing = [t for t in (expected or {}).get(stage, ()) if t not in found]
        row = {
            "stage": stage,
            "summaries": "section 6"
            if stage in DATASET_STAGES
            else ", ".join(found) + f"; none: {', '.join(missing)}"
            if found and missing
            else ", ".join(found) or "none",
            "symbols": None,
            "jobs": len(jobs),
            "wall_s": busy_seconds(jobs["end_unix"] - jobs["seconds"], jobs["end_unix"])
            if len(jobs)
            else None,
            "job_seconds": float(jobs["seconds"].sum()) if len(jobs) else None,
            **dict.fromkeys(("files", "mb", "mb_per_s", "retries", "http_429")),
        }
        rows.append(row)
        picked = [s for (st, _), s in summaries.items() if st == stage]
        if not picked:
            continue
        totals: dict[str, float] = {}
        for s in picked:
            for k, v in s.get("totals", {}).items():
                totals[k] = totals.get(k, 0) + v
        # The symbols' own work seconds (their stats): 0 for symbols skipped as unchanged.
        work_seconds = _total(totals, "seconds") or _total(totals, "seconds.total")
        # The files the stage worked on in this run, as for the other stages: the archives
        # downloaded or adopted, not those already verified (files_up_to_date), which
        # made a daily update's row read as thousands of files beside a few MB.
        files = (
            _total(totals, "files_downloaded", "files_adopted")
            if stage == "aws_download"
            else _total(totals, "files_parsed")
            if stage == "aws_parse"
            else _total(totals, "days_fetched", "pages")
            if stage == "api_download"
            else _total(totals, "files_written")
        )
        volume = _total(totals, "bytes", "csv_bytes")
        # Only the download (archive bytes) and the parse (CSV bytes) count bytes: the other
        # stages show "–", not 0 MB, beside the files they wrote.
        counted = any(k in totals for k in ("bytes", "csv_bytes"))
        row.update(
            symbols=int(sum(s.get("symbols", 0) for s in picked)),
            files=files,
            mb=volume / 1e6 if counted else None,
            mb_per_s=volume / 1e6 / work_seconds if work_seconds and volume else None,
            retries=_total(totals, "retries"),
            http_429=_total(totals, "http_429"),
        )
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- gates and accuracy
def gate_counts(segments: pd.DataFrame, summaries: dict[tuple[str, str], dict]) -> pd.DataFrame:
    """Per trade type and check: files passed and failures, for the gen_kline gates (the
    ``quality_gates`` each generated file records) and the resample accuracy validation
    (every resampled file held passed it when written; failures are the jobs' messages)."""
    rows = []
    trade_types = sorted({t for _, t in summaries} | set(segments.get("trade_type", [])))
    for trade_type in trade_types:
        gen = summaries.get(("gen_kline", trade_type), {})
        gen_failed = sum(
            len(p.get("quality_failures", [])) for p in gen.get("problems", {}).values()
        )
        mine = segments[segments["trade_type"] == trade_type] if len(segments) else segments
        passed: dict[str, int] = {}
        for text in mine.get("gates", []):
            for gate, result in json.loads(text or "{}").items():
                passed[gate] = passed.get(gate, 0) + 1 if result else passed.get(gate, 0)
        for gate, n in sorted(passed.items()):
            rows.append(("gen_kline", trade_type, gate, n, None))
        rows.append(("gen_kline", trade_type, "all gates (files)", len(mine), gen_failed))
        res = summaries.get(("resample", trade_type))
        if res is not None:
            res_failed = sum(len(p.get("failures", [])) for p in res.get("problems", {}).values())
            totals = res.get("totals", {})
            # Every file a symbol holds passed the validation when it was written (a failing
            # one is not kept): the held files, kept or written by the last run. Summaries
            # from before `files_held` count the files written by the last run only.
            held = int(totals.get("files_held", totals.get("files_written", 0)))
            rows.append(("resample", trade_type, "volume sums, high/low (files)", held, res_failed))
    return pd.DataFrame(rows, columns=["stage", "trade_type", "check", "passed", "failed"])


def failure_messages(summaries: dict[tuple[str, str], dict]) -> list[str]:
    out = []
    for (stage, trade_type), s in sorted(summaries.items()):
        for job, problems in sorted(s.get("problems", {}).items()):
            for key in ("quality_failures", "failures"):
                for message in problems.get(key, []):
                    out.append(f"{stage}/{trade_type} {job}: {message}")
    return out


# ---------------------------------------------------------------- the datasets target
DATASET_COLUMNS = ("symbols", "rows", "days", "days_empty", "days_missing", "files_verified",
                   "files_quarantined_download", "files_quarantined_parse",
                   "quality_score_min")  # fmt: skip


def dataset_table(summaries: dict[tuple[str, str], dict]) -> pd.DataFrame:
    """One row per (trade type, dataset tag) of the ``datasets`` summaries
    (``summary.summarize_datasets``): symbols, rows, days, files verified and quarantined,
    the kline-layout datasets' lowest quality score (None for the others)."""
    rows = [
        {"trade_type": trade_type, "dataset": tag,
         **{c: figures.get(c) for c in DATASET_COLUMNS},
         "symbols_with_problems": sum(
             1 for key in (summary.get("problems") or {}) if key.split("/", 1)[0] == tag
         )}
        for (_, trade_type), summary in sorted(summaries.items())
        for tag, figures in sorted((summary.get("datasets") or {}).items())
    ]  # fmt: skip
    columns = ["trade_type", "dataset", *DATASET_COLUMNS, "symbols_with_problems"]
    return pd.DataFrame(rows, columns=columns)
