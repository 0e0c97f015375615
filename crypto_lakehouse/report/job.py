"""``run_report``: the ``report`` target's job (``docs/report.md``)."""

from __future__ import annotations

import logging
import shlex
import time as clock
from datetime import datetime, timezone

import pandas as pd

from crypto_lakehouse import layout, plan, storage
from crypto_lakehouse.intervals import DAY_MS, candles_per_day
from crypto_lakehouse.plan import STAGES
from crypto_lakehouse.provenance import day_number
from crypto_lakehouse.report import figures, page, records
from crypto_lakehouse.report.coverage import (
    MINUTE_COLUMNS,
    build_coverage,
    category_grid,
    read_segments,
    to_arrow,
)
from crypto_lakehouse.summary import legacy_kept, legacy_kept_sentence

log = logging.getLogger(__name__)

WORST_SYMBOLS = 20
SLOWEST_JOBS = 20
MAX_LISTED = 500  # rows of a long list (quarantine, stale symbols) shown on the page
NAMES_SHOWN = 20  # symbol names in a sentence


def _without_coverage(trade_type: str, absent: list[str]) -> str:
    """The sentence on the run's symbols that have no coverage row: without it a symbol
    that failed before any of its data was written showed nowhere but in the failure box."""
    if not absent:
        return ""
    names = ", ".join(absent[:NAMES_SHOWN])
    if len(absent) > NAMES_SHOWN:
        names += f", … ({len(absent) - NAMES_SHOWN} more)"
    return (
        f"<p>{len(absent)} symbol(s) of the run's {page.esc(trade_type)} listing have no "
        f"coverage row (no provenance record, no generated file): {page.esc(names)}. "
        "Section 3 lists them among the stale symbols with a reason.</p>"
    )


def verify_command(data_dir) -> str:
    """The ``verify --remove`` command line for ``data_dir``, as a user types it: the data dir
    and, for one on S3, the storage settings the run uses (``storage.settings``)."""
    words = ["crypto-lakehouse", "verify", storage.uri(data_dir), "--remove"]
    if storage.is_remote(data_dir):
        settings = storage.settings()
        for key in ("endpoint_url", "region"):
            if settings.get(key):
                words += [f"--{key.replace('_', '-')}", str(settings[key])]
        if settings.get("addressing_style") not in (None, storage.DEFAULTS["addressing_style"]):
            words += ["--addressing-style", str(settings["addressing_style"])]
    return " ".join(shlex.quote(w) for w in words)


def unreadable_reason(unreadable: str, kind: str, data_dir) -> str:
    """The stale-list reason of a symbol whose generated file cannot be read (``unreadable``:
    ``path: error``; ``kind``: ``coverage.unreadable_kind``). Only a damaged file is
    repaired by removing it; the other errors say nothing of the file (a permission, a full
    disk, a failing S3 request), and removing it would throw away a good file."""
    head = f"generated file unreadable ({unreadable})"
    if kind == "damaged":
        return (
            f"{head}: the file is damaged; `{verify_command(data_dir)}`, then a run with "
            "--forcerun aws_download_shard rebuilds it"
        )
    if kind == "machine":
        return (
            f"{head}: an error of the machine (permission, disk space, file handles or "
            "memory), not a damaged file: do not remove it; fix the cause and run the "
            "report again"
        )
    if kind == "missing":
        return f"{head}: the file went away while the report read it: run the report again"
    return (
        f"{head}: a storage error (e.g. a failing S3 request), not a damaged file: do not "
        "remove it; run the report again, and if it persists check the store"
    )


def _coverage_section(
    coverage: pd.DataFrame,
    trade_types,
    interval: str,
    out: dict,
    run_symbols: dict[str, dict[str, str | None]],
) -> str:
    parts = []
    per_day = candles_per_day(interval)
    totals = []
    for trade_type in trade_types:
        mine = coverage[coverage["trade_type"] == trade_type]
        absent = sorted(set(run_symbols.get(trade_type, {})) - set(mine["symbol"]))
        if mine.empty:
            parts.append(f'<h3>{page.esc(trade_type)}</h3><p class="empty">no symbol-days</p>')
            parts.append(_without_coverage(trade_type, absent))
            continue
        grid, symbols, day0 = category_grid(mine)
        png = figures.heatmap(grid, symbols, day0, f"{trade_type}: dominant source per day")
        name = f"coverage_{trade_type}"
        out[name] = png
        parts.append(f"<h3>{page.esc(trade_type)}</h3>")
        parts.append(
            page.figure(
                png,
                f"coverage heatmap of {trade_type}",
                f"{page.count(len(symbols), 'symbol')} (rows, sorted by first day) × "
                f"{page.count(grid.shape[1], 'day')}; a cell's colour is the source "
                f"of most of the day's {per_day} candles (grey: the day lies in a delisting gap; "
                "pending: a day not over when the report ran, whose candles no source can "
                "have yet).",
                name,
            )
        )
        parts.append(_without_coverage(trade_type, absent))
        minutes = mine[list(MINUTE_COLUMNS)].sum()
        whole = max(int(minutes.sum()), 1)
        totals.append(
            {
                "trade type": trade_type,
                "symbols": len(symbols),
                "symbol-days": len(mine),
                "archive %": 100 * minutes["minutes_archive"] / whole,
                "REST %": 100 * minutes["minutes_rest"] / whole,
                "filled %": 100 * minutes["minutes_filled"] / whole,
                "missing %": 100 * minutes["minutes_missing"] / whole,
                "pending %": 100 * minutes["minutes_pending"] / whole,
                "days in a gap": int(mine["in_gap"].sum()),
            }
        )
    summary = page.table(
        pd.DataFrame(totals),
        numeric=(
            "symbols",
            "symbol-days",
            "archive %",
            "REST %",
            "filled %",
            "missing %",
            "pending %",
            "days in a gap",
        ),
        empty="no coverage: no provenance records or generated files found",
    )
    intro = (
        "<p>Per symbol and UTC day, where the candles come from "
        "(<code>coverage.parquet</code> next to this page holds the minute counts). "
        "Shares are of all candle-minutes of the trade type; pending: the candles of a day "
        "that had not ended when this page was written (today, with end_date unset), which "
        "no archive or REST answer can hold yet: the run after that day fetches them.</p>"
    )
    return intro + summary + "".join(parts)


def _quality_section(data_dir, trade_types, interval: str, out: dict) -> str:
    scores = records.quality_scores(data_dir, trade_types, interval)
    by_type = {
        t: scores.loc[scores["trade_type"] == t, "score"].to_numpy(float) for t in trade_types
    }
    png = figures.score_histogram({t: v for t, v in by_type.items() if len(v)})
    out["quality_scores"] = png
    body = [
        page.figure(
            png,
            "distribution of symbol quality scores",
            f"{page.count(len(scores), 'symbol')}; score = completeness × validity × liveliness, "
            "mean over "
            "the days from the symbol's first to its last archived day, a day without archive "
            "rows scoring 0 (docs/quality.md).",
            "quality_scores",
        ),
        f"<h3>The {WORST_SYMBOLS} worst symbols</h3>",
    ]
    worst = scores.sort_values(["score", "trade_type", "symbol"]).head(WORST_SYMBOLS)
    worst = worst.assign(reasons=records.quality_reasons(worst))
    body.append(
        page.table(
            worst[["trade_type", "symbol", "score", "days", "reasons"]],
            numeric=("score", "days"),
            empty="no quality records",
        )
    )
    quarantined = records.quarantined_files(data_dir, reasons_read=MAX_LISTED)
    body.append(f"<h3>Quarantined files ({len(quarantined)})</h3>")
    body.append(page.table(quarantined.head(MAX_LISTED), empty="no file was quarantined"))
    if len(quarantined) > MAX_LISTED:
        body.append(
            f"<p>… and {len(quarantined) - MAX_LISTED} more under lakehouse/quarantine/.</p>"
        )
    return "".join(body)


def _freshness_section(
    segments: dict[str, pd.DataFrame],
    coverage: pd.DataFrame,
    trade_types,
    end_day: int,
    end_date: str,
    stale_after_hours: float,
    out: dict,
    run_symbols: dict[str, dict[str, str | None]],
    run_dir=None,
    interval: str = "1m",
    data_dir=None,
) -> str:
    frames = []
    for t in trade_types:
        # The run's symbols too, not only those with records: a symbol that failed before
        # any data was written has neither provenance (coverage) nor a generated file.
        symbols = set(coverage.loc[coverage["trade_type"] == t, "symbol"])
        symbols |= set(run_symbols.get(t, {}))
        frames.append(records.freshness(segments[t], symbols, end_day, t))
    fresh = pd.concat(frames, ignore_index=True)
    lags = {
        t: fresh.loc[
            (fresh["trade_type"] == t) & fresh["lag_minutes"].notna(), "lag_minutes"
        ].to_numpy(float)
        for t in trade_types
    }
    png = figures.lag_histogram({t: v for t, v in lags.items() if len(v)}, stale_after_hours)
    out["freshness"] = png
    limit = stale_after_hours * 60
    stale = fresh[fresh["lag_minutes"].isna() | (fresh["lag_minutes"] > limit)]
    # Two lists, each cut at MAX_LISTED on its own: with `symbols: all` hundreds of delisted
    # symbols have no candle in the run's dates, and one list cut at MAX_LISTED would hide
    # either them or the lagging symbols behind them.
    without = stale[stale["lag_minutes"].isna()]
    lagging = stale[stale["lag_minutes"].notna()].sort_values(
        ["trade_type", "lag_minutes"], ascending=[True, False]
    )

    # A symbol the listing kept, without candles: its download report may say why.
    downloads = {}
    for t in trade_types:
        names = without.loc[without["trade_type"] == t, "symbol"]
        if run_dir is not None and len(names):
            downloads[t] = records.download_notes(run_dir, t, interval, names)

    def reason(row) -> str:
        if not pd.isna(row.lag_minutes):
            lag = f"lag over {stale_after_hours:g} h"
            listed = run_symbols.get(row.trade_type)
            if listed and row.symbol not in listed:  # e.g. removed from config `symbols`
                return f"{lag} (not among this run's symbols: its files are from earlier runs)"
            return lag
        attrs = segments[row.trade_type].attrs
        unreadable = attrs.get("unreadable", {}).get(row.symbol)
        if unreadable:  # a file there, that cannot be read: not "no candles"
            kind = attrs.get("unreadable_kind", {}).get(row.symbol, "")
            return unreadable_reason(unreadable, kind, data_dir)
        note = run_symbols.get(row.trade_type, {}).get(row.symbol)
        note = note or downloads.get(row.trade_type, {}).get(row.symbol)
        return "no generated candles" + (f" ({note})" if note else "")

    def shown(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.assign(
            last_candle_close=frame["last_candle_close"].map(
                lambda t: "–" if pd.isna(t) else t.strftime("%Y-%m-%d %H:%M")
            ),
            lag_days=frame["lag_minutes"] / 1440,
            reason=[reason(row) for row in frame.itertuples(index=False)],
        )[["trade_type", "symbol", "last_candle_close", "lag_minutes", "lag_days", "reason"]]

    missing = shown(without)
    # What needs a look first: a symbol without any archive file in the run's dates (every
    # delisted symbol under `symbols: all`) is expected, so it goes after the others.
    expected = missing["reason"].astype(str).str.endswith(f"({records.NO_ARCHIVE_FILE})")
    missing = missing.assign(expected=expected.to_numpy()).sort_values(
        ["trade_type", "expected", "symbol"]
    )[missing.columns]
    counts = (
        fresh.assign(stale=fresh.index.isin(stale.index))
        .groupby("trade_type")
        .agg(
            symbols=("symbol", "size"),
            stale=("stale", "sum"),
            max_lag_minutes=("lag_minutes", "max"),
            past_end_date=("past_end_date", "sum"),
        )
        .reset_index()
        .rename(columns={"past_end_date": "past end_date"})
    )
    past = int(fresh["past_end_date"].sum())
    past_note = (
        f"<p>{page.count(past, 'symbol')} with candles after the end of end_date "
        f"({page.esc(end_date)}; an earlier run with a later end_date wrote them, e.g. "
        f"{page.esc(', '.join(fresh.loc[fresh['past_end_date'], 'symbol'].head(NAMES_SHOWN)))}): "
        "data past end_date, counted as lag 0 (up to date).</p>"
        if past
        else ""
    )
    body = [
        f"<p>Lag of each symbol's last candle behind the end of end_date ({page.esc(end_date)}), "
        "for every symbol of the run's kline listings and every symbol with records; "
        f"stale: more than {stale_after_hours:g} hours (config <code>report.stale_after_hours</code>), "
        "or no generated candles.</p>",
        page.table(counts, numeric=("symbols", "stale", "max_lag_minutes", "past end_date")),
        past_note,
        page.figure(png, "distribution of freshness lags", "Lag per symbol, in days.", "freshness"),
        f"<h3>Stale symbols ({len(stale)})</h3>",
        f"<h4>Without generated candles ({len(missing)}; {int(expected.sum())} of them without "
        f"any archive file in the run's dates, listed last)</h4>",
        page.table(
            missing.head(MAX_LISTED),
            numeric=("lag_minutes", "lag_days"),
            empty="every symbol has generated candles",
        ),
        f"<h4>Lagging more than {stale_after_hours:g} h ({len(lagging)})</h4>",
        page.table(
            shown(lagging).head(MAX_LISTED),
            numeric=("lag_minutes", "lag_days"),
            empty="no symbol lags",
        ),
    ]
    return "".join(body)


def _run_section(
    run_dir, summaries: dict, out: dict, off=(), expected=None, started_unix=None
) -> str:
    benchmarks = records.read_benchmarks(run_dir)
    stages = records.stage_table(summaries, benchmarks, off, expected)
    # The figure leaves out the stages not in this run: empty bars read as 0 s.
    drawn = stages[~stages["stage"].isin(off)]
    png = figures.stage_bars(
        list(drawn["stage"]),
        list(drawn["wall_s"].astype(float)),
        list(drawn["job_seconds"].astype(float)),
    )
    out["stages"] = png
    mine, earlier = records.run_jobs(benchmarks, off, started_unix)
    slowest = mine.sort_values("seconds", ascending=False).head(SLOWEST_JOBS)
    slowest = slowest.assign(
        ended=pd.to_datetime(slowest["end_unix"], unit="s", utc=True).dt.strftime("%Y-%m-%d %H:%M")
    )
    # The run directory's folders, where they are (an s3:// data dir or a configured run_dir
    # keeps them outside the data dir: the page named lakehouse/… there too).
    summaries_dir = layout.run_summaries_dir(str(run_dir))
    benchmarks_dir = layout.run_benchmarks_dir(str(run_dir))
    body = [
        f"<p>Per stage, from the run summaries ({page.esc(summaries_dir)}/) and the Snakemake "
        f"benchmark files ({page.esc(benchmarks_dir)}/): summaries are the trade types whose "
        "summary the stage has (<code>none</code>: no trade type of it finished, so symbols "
        "and files are not known; <code>spot, um_futures; none: cm_futures</code>: the trade "
        "types after <code>none:</code> did not finish, the figures are of the others; "
        "<code>off</code>: the config leaves the stage out of this run, "
        "features.enabled false or no resample.targets); symbols are summed over the trade types; jobs are the "
        "stage's benchmark files (listing and summaries included); wall time is the time "
        "during which at least one of them ran (jobs of earlier runs counted without the "
        "time between runs); job seconds are the jobs' own durations summed; "
        "files are the archives downloaded or adopted by this run (aws_download), parsed archives "
        "(aws_parse), REST days and funding pages fetched (api_download), files written "
        "(gen_kline, resample), and for features the feature files of the symbols it "
        "built: one per generated and resampled candle file of each symbol whose inputs "
        "changed, its files left as they were included; a symbol skipped as unchanged "
        "counts none.</p>",
        page.table(
            stages.rename(
                columns={"wall_s": "wall s", "job_seconds": "job s", "mb": "MB", "mb_per_s": "MB/s"}
            ),
            numeric=(
                "symbols",
                "jobs",
                "wall s",
                "job s",
                "files",
                "MB",
                "MB/s",
                "retries",
                "http_429",
            ),
        ),
        page.figure(
            png, "time per stage", "Wall time and the jobs' own seconds per stage.", "stages"
        ),
        f"<h3>The {SLOWEST_JOBS} slowest jobs"
        + (" of this run" if started_unix is not None else "")
        + "</h3>",
        _earlier_jobs_note(earlier, off, started_unix),
        "<p>max_rss_mb and cpu_time as Snakemake's benchmark measured them; – : not "
        f"measured. Snakemake samples a job at its start, then every {records.FIRST_SAMPLE_S:g} s: "
        "a shorter job was sampled before its script ran (the table says NA, 0 or the "
        "figures of the shell that starts it).</p>",
        page.table(
            slowest[["job", "stage", "seconds", "max_rss_mb", "cpu_time", "ended"]].rename(
                columns={"ended": "ended (UTC)"}
            ),
            numeric=("seconds", "max_rss_mb", "cpu_time"),
            empty="no job of this run has a benchmark file"
            if len(benchmarks)
            else f"no benchmark files ({benchmarks_dir}/)",
        ),
    ]
    return "".join(body)


def _earlier_jobs_note(earlier: pd.DataFrame, off, started_unix) -> str:
    """The sentence on the benchmark files left out of the slowest-jobs table
    (``records.run_jobs``): jobs of the stages the config leaves out, and jobs of earlier
    runs (ended before this run started), which this run did not rerun."""
    if not len(earlier):
        return ""
    is_off = earlier["stage"].isin(off)
    parts = []
    if (~is_off).any():
        last = pd.to_datetime(earlier.loc[~is_off, "end_unix"].max(), unit="s")
        started = pd.to_datetime(started_unix, unit="s")
        parts.append(
            f"{page.count(int((~is_off).sum()), 'job')} of earlier runs, which this run "
            f"(started {started:%Y-%m-%d %H:%M} UTC) did not rerun: their outputs were up "
            f"to date (the latest ended {last:%Y-%m-%d %H:%M} UTC)"
        )
    if is_off.any():
        names = ", ".join(sorted(set(earlier.loc[is_off, "stage"])))
        parts.append(
            f"{page.count(int(is_off.sum()), 'job')} of stages this run leaves out "
            f"({page.esc(names)}), from the runs that had them"
        )
    return "<p>Left out of this table: " + "; ".join(parts) + ".</p>"


def _checks_section(segments: dict[str, pd.DataFrame], summaries: dict, run_dir=".") -> str:
    frames = [s.assign(trade_type=t) for t, s in segments.items()]
    all_segments = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    gates = records.gate_counts(all_segments, summaries)
    failures = records.failure_messages(summaries)
    body = [
        "<p>gen_kline gates (contiguous grid, unique minutes, OHLC, VWAP in range, funding "
        "events) as recorded in each generated file; resample accuracy validation (volume sums "
        "and high/low against the source minutes) of every resampled file, counted over the "
        "files held (checked when written; kept by later runs while unchanged). A file failing "
        "a check is not kept and its job fails.</p>",
        page.table(gates, numeric=("passed", "failed"), empty="no generated files"),
    ]
    # Legacy resampled files at targets no longer configured: kept (not this pipeline's to
    # remove), never updated, read by the loaders; before, only the symbols' resample
    # reports named them (their `kept`).
    legacy = legacy_kept([s for (stage, _), s in summaries.items() if stage == "resample"])
    if legacy:
        body.append(
            f"<h3>Stale legacy resampled files ({sum(legacy.values())})</h3>"
            f"<p>{page.esc(legacy_kept_sentence(legacy))}.</p>"
        )
    body += [
        f"<h3>Failures ({len(failures)})</h3>",
    ]
    if failures:
        # Cut at MAX_LISTED as the page's other long lists: a failure common to every symbol
        # of `symbols: all` (a gate, say) listed thousands of lines, the page growing with
        # the universe.
        shown = failures[:MAX_LISTED]
        body.append("<ul>" + "".join(f"<li>{page.esc(m)}</li>" for m in shown) + "</ul>")
        if len(failures) > MAX_LISTED:
            folder = layout.run_summaries_dir(str(run_dir))
            body.append(
                f"<p>… and {len(failures) - MAX_LISTED} more in the summaries' problems "
                f"({page.esc(folder)}/).</p>"
            )
    else:
        body.append('<p class="empty">none</p>')
    return "".join(body)


def _datasets_section(dataset_summaries: dict, run_dir) -> str:
    """The archive datasets beyond klines and funding (target ``datasets``,
    docs/datasets.md): per trade type and dataset what its summary counted. The summaries'
    folder is named where it is, in the run directory (an s3:// data dir keeps it outside
    the data dir: the page said lakehouse/summaries/datasets/ there too)."""
    folder = f"{layout.run_summaries_dir(str(run_dir))}/datasets"
    table = records.dataset_table(dataset_summaries)
    shown = table.rename(
        columns={
            "days_empty": "days without rows",
            "days_missing": "days missing",
            "files_verified": "files verified",
            "files_quarantined_download": "quarantined (download)",
            "files_quarantined_parse": "quarantined (parse)",
            "quality_score_min": "quality score min",
            "symbols_with_problems": "symbols with problems",
        }
    )
    return (
        "<p>Datasets built by the <code>datasets</code> target (config <code>datasets</code>; "
        f"docs/datasets.md), from its run summaries ({page.esc(folder)}/): symbols "
        "parsed, rows and UTC days in the parsed files (a day in a monthly and a daily zip "
        "counted once), of these the days whose archive holds no row (a header only), the "
        "days missing between a symbol's first and last day (no file, or quarantined), "
        "archives verified, quarantined by the download (checksum, size) and "
        "by the parse (the line and the reason: section 2's quarantined files); the lowest "
        "symbol quality score of the kline-layout datasets (their volumes are 0, so at most "
        "0.5). Their jobs have their own rows in section 4 (datasets_download: listing and "
        "download; datasets_parse: parse and summaries; agg_klines).</p>"
        + page.table(
            shown,
            numeric=(
                "symbols",
                "rows",
                "days",
                "days without rows",
                "days missing",
                "files verified",
                "quarantined (download)",
                "quarantined (parse)",
                "quality score min",
                "symbols with problems",
            ),
            empty="no datasets summary: no dataset beyond klines and funding is configured, "
            "or the datasets target has not run",
        )
    )


def render_report(
    *,
    data_dir,
    coverage: pd.DataFrame,
    segments: dict[str, pd.DataFrame],
    interval: str,
    trade_types: list[str],
    end_date: str,
    stale_after_hours: float,
    seconds: dict[str, float] | None = None,
    run_dir=None,
    failures: list[str] | None = None,
    failed_jobs: int = 0,
    kline_listings: dict[str, str] | None = None,
    stages: dict[str, list[str]] | None = None,
    started_unix: float | None = None,
) -> tuple[str, dict[str, bytes]]:
    """The page's HTML and its figures (PNG bytes by name) for a coverage table and the
    generated segments; the data records are read below ``data_dir``, the run's summaries
    and benchmark tables in ``run_dir`` (default: ``layout.default_run_dir(data_dir)``), the
    run's symbols from its kline listing indexes ``kline_listings`` (by trade type); the
    run's stages and their trade types from ``stages`` (None: every stage's summaries found
    in the run dir, also those an earlier run left of a stage this run's config leaves out);
    ``started_unix``: the run's start, before which a benchmark file's job is an earlier
    run's (left out of the slowest jobs, ``records.run_jobs``; None: not known)."""
    run_dir = layout.default_run_dir(str(data_dir)) if run_dir is None else run_dir
    seconds = {} if seconds is None else seconds
    tick = clock.perf_counter()

    def lap(name: str) -> None:
        nonlocal tick
        now = clock.perf_counter()
        seconds[name] = round(now - tick, 3)
        tick = now

    end_day = day_number(end_date)
    summary_records = records.run_summaries(records.read_summaries(run_dir, trade_types), stages)
    off = frozenset() if stages is None else frozenset(s for s in STAGES if not stages.get(s))
    listings = kline_listings or {}
    run_symbols = {t: records.run_symbols(listings[t]) for t in trade_types if t in listings}
    pngs: dict[str, bytes] = {}
    sections = [
        page.section(
            1, "Coverage", _coverage_section(coverage, trade_types, interval, pngs, run_symbols)
        )
    ]
    lap("coverage_section")
    sections.append(
        page.section(2, "Quality", _quality_section(data_dir, trade_types, interval, pngs))
    )
    lap("quality_section")
    sections.append(
        page.section(
            3,
            "Freshness",
            _freshness_section(
                segments,
                coverage,
                trade_types,
                end_day,
                end_date,
                stale_after_hours,
                pngs,
                run_symbols,
                run_dir,
                interval,
                data_dir,
            ),
        )
    )
    sections.append(
        page.section(
            4,
            "The run",
            _run_section(run_dir, summary_records, pngs, off, stages, started_unix),
        )
    )
    sections.append(page.section(5, "Checks", _checks_section(segments, summary_records, run_dir)))
    dataset_summaries = records.read_summaries(run_dir, trade_types, stages=("datasets",))
    sections.append(page.section(6, "Datasets", _datasets_section(dataset_summaries, run_dir)))
    lap("other_sections")
    written = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    html_text = page.page(
        "crypto_lakehouse report",
        f"data_dir {storage.uri(data_dir)} · interval {interval} · trade types {', '.join(trade_types)} "
        f"· end_date {end_date} · written {written}",
        sections,
        alert=page.failure_alert(failures, failed_jobs) if failures is not None else "",
    )
    return html_text, pngs


def report_now_ms() -> int:
    """The time (ms) by which the coverage calls a day over: now, but never past the end of
    the planning's today (``plan.today_utc``: ``CRYPTO_LAKEHOUSE_TODAY`` when a run replays
    an earlier morning, whose own day had not ended for its stages)."""
    today = day_number(plan.today_utc().isoformat())
    return min(int(clock.time() * 1000), (today + 1) * DAY_MS - 1)


def run_report(
    *,
    data_dir,
    interval: str,
    trade_types: list[str],
    end_date: str,
    stale_after_hours: float,
    index,
    coverage,
    figures_dir,
    summaries=(),
    datasets=(),
    run_dir=None,
    failures: list[str] | None = None,
    failed_jobs: int = 0,
    kline_listings: dict[str, str] | None = None,
    now_ms: int | None = None,
    stages: dict[str, list[str]] | None = None,
    started_unix: float | None = None,
) -> dict:
    """Write ``coverage.parquet``, the figures (PNG, also for Snakemake's report) and the
    page ``index.html``. ``summaries`` (the stages') and ``datasets`` (the datasets
    target's, section 6) are the rule's inputs, read from their folder (the run dir:
    ``run_dir``, given only when not ``{data_dir}/lakehouse``). ``failures``: the
    lines on the ``failed_jobs`` jobs of a failed run (``report_after_failure``), shown at
    the top. ``kline_listings``: the run's kline listing index of each trade type, whose
    symbols the freshness section lists even when they have no records (none given: only
    the symbols with records). ``stages``: the run's stages with their trade types (the
    rule's; a stage the config leaves out shows as off in section 4, not as a failed
    summary, and an earlier run's summaries of it are not shown). ``now_ms``: the time the coverage calls a day over by
    (default: ``report_now_ms``), before it its uncovered candles are pending, not missing.
    ``started_unix``: the run's start (the Snakefile's ``RUN_STARTED_UNIX``): the slowest
    jobs are those that ended after it."""
    started = clock.perf_counter()
    now_ms = report_now_ms() if now_ms is None else now_ms
    table = build_coverage(data_dir, trade_types, interval, day_number(end_date), now_ms)
    storage.write_parquet(coverage, to_arrow(table))
    segments = {t: read_segments(data_dir, t, interval) for t in trade_types}
    seconds = {"coverage": round(clock.perf_counter() - started, 3)}
    html_text, pngs = render_report(
        data_dir=data_dir,
        coverage=table,
        segments=segments,
        interval=interval,
        trade_types=trade_types,
        end_date=end_date,
        stale_after_hours=stale_after_hours,
        seconds=seconds,
        run_dir=run_dir,
        failures=failures,
        failed_jobs=failed_jobs,
        kline_listings=kline_listings,
        stages=stages,
        started_unix=started_unix,
    )
    figures_dir = storage.data_path(figures_dir)
    for name, png in pngs.items():
        storage.write_bytes(figures_dir / f"{name}.png", png)
    storage.write_text(index, html_text)
    seconds["total"] = round(clock.perf_counter() - started, 3)
    stats = {
        "coverage_rows": len(table),
        "figures": len(pngs),
        "page_bytes": len(html_text.encode()),
        "seconds": seconds,
    }
    log.info(
        "report: %s (%d coverage rows, %d figures, %.1f MB) in %.1f s %s",
        index,
        len(table),
        len(pngs),
        stats["page_bytes"] / 1e6,
        seconds["total"],
        seconds,
    )
    return stats


def report_after_failure(failures: list[str], failed_jobs: int, **report_args) -> str:
    """The ``onerror`` end of a failed run of ``all`` or ``report``: the report is one of
    the run's last jobs, so a failed run never reached it and the page would still show the
    last complete run. Written here with the failed jobs at the top (``failures``) and
    whatever the data dir and the run's summaries hold (``failures``: the lines of
    ``failures.failure_lines`` on the ``failed_jobs`` jobs). Returns a line for the console;
    never raises (the run has failed already; its failure report stays the message)."""
    try:
        run_report(**report_args, failures=failures, failed_jobs=failed_jobs)
    except Exception as exc:  # the page is a courtesy here: say why, do not mask the failure
        return f"crypto_lakehouse: the report of the failed run could not be written: {exc}"
    return f"crypto_lakehouse: report of the failed run: {report_args['index']}"
