"""Which of the stages' data folders a data dir held after its last run, and which of them
were deleted by hand since.

Snakemake's outputs are the run dir's shard reports; the data files are side effects in
``data_dir``. A folder deleted by hand (``rm -rf {data_dir}/results_data``, one trade type's
``parsed_data``, the resampled klines, a market's ``aws_data``, a dataset of the `datasets`
target, ``lakehouse/provenance``) left the reports in place, and the next run said "Nothing
to be done": the lakehouse stayed without those files. (A whole data dir wiped under a run
dir kept elsewhere is ``data_identity``'s.)

The run dir keeps a record of the stages' folders that held files when the last run that
ran jobs ended (``{run_dir}/data_folders.json``). At every start the main process checks
that each recorded folder is still there (locally a stat each; on S3 one LIST request each,
stopped at the first key, 16 at a time): a recorded folder that is gone was deleted by
hand. The shard reports of the stage and trade type (and dataset) that write it are
removed, and the stage's run summary of the trade type, so that Snakemake runs those jobs
again, and their later stages after them (their inputs are newer); the jobs rebuild the
files their symbols' last reports list and the data dir no longer holds (README, "Lost or
damaged files"); nothing else reruns. The run says so in one line. A dry run only says
what a real run would do (on S3 it sends no request and says nothing, as
``data_identity``).

The record is written when a run that ran jobs ends (success or failure: what the folders
hold then, so that a folder a job itself emptied is not taken for a deletion), and at a
start without one: the first start with this version adopts what the data dir holds. Such
a start still finds what was deleted before it where the run dir's summaries count the
files a stage's symbols hold (download, gen_kline, resample, features): a stage and trade
type whose summary counts files and none of whose folders is there reruns (so a data dir
wiped before its first run with this version is rebuilt: its downloads rerun, and every
later stage after them). Only the folders whose jobs have shard reports count there: a
start that also changes the base ``interval`` has the new interval's folders missing and
their jobs never run (they run anyway); that is no deletion. A parse or REST folder
deleted before that start is not found.

The folders are those of ``stage_folders``: the stages' data folders of targets ``all`` and
``datasets``, the folders of the Parquet records below ``lakehouse/`` (quality,
provenance) and of the records the loaders warn by (``lakehouse/stale_features/{T}``: stale
feature files, kept legacy resampled files), each with the jobs that write it. Only the folders are checked, not each
symbol's files: a symbol's files (or records) deleted inside a folder that is still there
are named by ``crypto-lakehouse verify`` (``Verdict.missing``), not at start (a check per
symbol and stage at every start: some 20,000 stats for the full universe, as many requests
on S3). A folder inside another one (a kline-layout dataset's quality records below the
klines' ``lakehouse/quality/{T}/{I}``) keeps the outer one there when only the outer one's
own files are deleted: verify names those.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from crypto_lakehouse import datasets, io, layout, storage

# The run summary of the `datasets` target's download and parse folders: the datasets
# summary of the trade type gathers their shard reports (rules/datasets.smk). The candles
# built from aggTrades have none (the target asks for their shard reports).
DATASETS_SUMMARY = "datasets"


@dataclass(frozen=True)
class Folder:
    """A data folder (``path`` below the data dir) and the jobs that write it: the shard
    jobs of ``stage`` for ``trade_type`` and ``dataset`` (a report tag; None for the REST
    stage, whose shard reports cover every dataset). ``summary``: the stage whose run
    summary of the trade type gathers those shard reports (the `datasets` target's
    folders: ``datasets``); None: ``stage``'s own."""

    path: str
    stage: str
    trade_type: str
    dataset: str | None
    summary: str | None = None

    @property
    def summary_stage(self) -> str:
        return self.summary or self.stage

    @property
    def jobs(self) -> str:
        """The jobs' name in messages: ``gen_kline spot/klines-1m``."""
        tail = f"/{self.dataset}" if self.dataset else ""
        return f"{self.stage} {self.trade_type}{tail}"


def stage_folders(
    data_dir,
    trade_types,
    interval: str,
    *,
    resample_intervals: dict[str, list[str]],
    features: bool,
    use_monthly_klines: bool = True,
    extra_datasets: dict[str, list[str]] | None = None,
    agg_klines_intervals: dict[str, list[str]] | None = None,
) -> list[Folder]:
    """The folders the stages write for this config: what the record is made of (those
    that hold files). Per trade type, of target ``all``: the archive's kline (and funding)
    folders, the parsed ones, the REST ones, the generated klines, each resample target
    interval's folder, the features' folders, the records of stale and kept files the loaders
    warn by (``layout.stale_features_root``, of the resample and features stages), and the
    Parquet records below ``lakehouse/``
    (``layout.PARQUET_RECORDS``: the klines' quality record, written by aws_parse, and the
    day provenance, written by api_download: each stage rebuilds its record when it runs,
    as it rebuilds its data files). Of target ``datasets`` (``extra_datasets``: the tags
    beyond klines and funding per trade type; ``agg_klines_intervals``): each dataset's
    archive folders, its parsed folder (a kline-layout one's quality record), and the
    candles built from aggTrades."""
    klines = f"klines-{interval}"
    found: list[Folder] = []

    def add(path, stage, trade_type, dataset, summary=None) -> None:
        found.append(
            Folder(layout.relative_path(data_dir, path), stage, trade_type, dataset, summary)
        )

    def add_archive(trade_type, entry, tag, summary=None) -> None:
        for period in entry.read_periods(use_monthly_klines):
            prefix = layout.archive_symbols_prefix(trade_type, entry.name, period)
            add(layout.aws_path(data_dir, prefix), "aws_download", trade_type, tag, summary)

    for t in trade_types:
        funding = t in datasets.FUNDING.markets
        add_archive(t, datasets.KLINES, klines)
        if funding:
            prefix = layout.funding_symbols_prefix(t)
            add(layout.aws_path(data_dir, prefix), "aws_download", t, "funding")
        add(layout.parsed_dataset_root(data_dir, t, "klines"), "aws_parse", t, klines)
        add(layout.quality_dir(data_dir, t, interval), "aws_parse", t, klines)
        if funding:
            add(layout.parsed_funding_dir(data_dir, t), "aws_parse", t, "funding")
        add(layout.api_klines_root(data_dir, t), "api_download", t, None)
        add(layout.provenance_dir(data_dir, t, interval), "api_download", t, None)
        if funding:
            add(layout.api_funding_dir(data_dir, t), "api_download", t, None)
        add(layout.results_klines_dir(data_dir, t, interval), "gen_kline", t, klines)
        for ri in resample_intervals.get(t, []):
            add(layout.resampled_root(data_dir, t) / ri, "resample", t, klines)
        if features:
            add(layout.features_dir(data_dir, t, interval), "features", t, klines)
            for ri in resample_intervals.get(t, []):
                add(layout.resampled_features_root(data_dir, t) / ri, "features", t, klines)
        # The records the loaders warn by (stale feature files, kept legacy resampled
        # files): one folder, written by both stages, so listed once for each; deleted by
        # hand, both run again and write the records of the files still stale or kept.
        stale_records = layout.stale_features_root(data_dir, t)
        if resample_intervals.get(t):
            add(stale_records, "resample", t, klines)
        if features:
            add(stale_records, "features", t, klines)
        for tag in (extra_datasets or {}).get(t, []):
            entry, tag_interval = datasets.split_tag(tag)
            add_archive(t, entry, tag, DATASETS_SUMMARY)
            add(layout.parsed_dataset_root(data_dir, t, entry.name), "aws_parse", t, tag,
                DATASETS_SUMMARY)  # fmt: skip
            if tag_interval:  # a kline-layout dataset's quality record
                quality = layout.quality_path(data_dir, t, tag_interval, "_", entry.name).parent
                add(quality, "aws_parse", t, tag, DATASETS_SUMMARY)
        for i in (agg_klines_intervals or {}).get(t, []):
            tag = f"{datasets.AGG_TRADES.name}-{i}"  # the agg_klines reports' tag
            add(layout.agg_klines_root(data_dir, t), "agg_klines", t, tag)
    return found


def _present(data_dir, folders: list[Folder]) -> list[bool]:
    """Whether each folder is there (locally a stat each; on S3 one LIST each, stopped at
    the first key, ``storage.HEADS_AT_ONCE`` at a time: 36 folders, three trade types with
    two resample targets, took ~60 ms on a local SeaweedFS, all 36 at once no less)."""
    root = storage.data_path(data_dir)
    paths = [root / f.path for f in folders]
    return storage.concurrently(storage.is_dir, paths, storage.at_once(data_dir))


# The record's version: 2 since the record folders and the `datasets` folders are in it
# (2026-12-07), 3 since the loaders' records (``lakehouse/stale_features/{T}``) are. A
# record of an earlier version is checked, then adopted again at that start: it never
# named those folders, and a run dir whose runs have nothing to do would otherwise keep
# it, and never notice one of them deleted.
RECORD_VERSION = 3


def _read_record(run_dir: str) -> tuple[list[str], bool] | None:
    """The recorded folders, and whether the record is of ``RECORD_VERSION``; None when
    there is none."""
    try:
        record = io.read_json(layout.data_folders_record_path(run_dir))
    except (OSError, ValueError):  # torn or foreign: as none (adopted again)
        return None
    if not isinstance(record, dict) or not isinstance(record.get("folders"), list):
        return None
    folders = [f for f in record["folders"] if isinstance(f, str)]
    return folders, record.get("version") == RECORD_VERSION


def record(data_dir, run_dir: str, folders: list[Folder]) -> None:
    """Record the folders that hold files now (a run that ran jobs ends). Raises OSError
    when the S3 store does not answer."""
    present = _present(data_dir, folders)
    held = sorted({f.path for f, here in zip(folders, present, strict=True) if here})
    io.write_json(
        layout.data_folders_record_path(run_dir),
        {"version": RECORD_VERSION, "data_dir": storage.uri(data_dir), "folders": held},
    )


def shard_reports_dir(run_dir: str, folder: Folder, stage: str | None = None) -> str:
    """The folder of the shard reports of the jobs that write ``folder`` (of ``stage``'s
    jobs of the same trade type and dataset)."""
    if folder.dataset is None:
        return str(Path(layout.api_shard_report_path(run_dir, folder.trade_type, "0")).parent)
    stage = stage or folder.stage
    report = layout.shard_report_path(run_dir, stage, folder.trade_type, folder.dataset, "0")
    return str(Path(report).parent)


def _removed_report_dirs(run_dir: str, folder: Folder) -> list[str]:
    """The shard report folders removed for ``folder``: its jobs'; for a `datasets`
    archive folder its parse jobs' as well. No summary or target asks for the `datasets`
    download reports (the datasets summary reads them as params): Snakemake took their
    parse jobs, whose reports were there, as up to date, and never ran the downloads
    (checked on the emulator)."""
    dirs = [shard_reports_dir(run_dir, folder)]
    if folder.summary == DATASETS_SUMMARY and folder.stage == "aws_download":
        dirs.append(shard_reports_dir(run_dir, folder, "aws_parse"))
    return dirs


def _remove_reports(run_dir: str, folder: Folder) -> None:
    """The shard reports of the jobs that write ``folder`` and their stage's run summary
    of the trade type. Without the summary Snakemake took the summary job as up to date and
    never looked at its missing inputs (their shard reports): the listing checkpoint's
    dependants are evaluated again only for jobs that run."""
    storage.delete(layout.run_summary_path(run_dir, folder.summary_stage, folder.trade_type))
    for directory in _removed_report_dirs(run_dir, folder):
        for name in storage.file_names(directory):  # none when the folder is absent
            if name.endswith(".json"):
                storage.delete(Path(directory, name))


# The stages whose run summary of a trade type counts the files its symbols hold
# (``totals``), and how: what a start without a record believes of the data dir.
_HELD_TOTALS = {
    "aws_download": ("files_held",),
    "gen_kline": ("files_held",),
    "resample": ("files_held",),
    # written, tail-built or kept: every feature file a symbol holds
    "features": ("files_by_mode.full", "files_by_mode.tail", "files_by_mode.kept"),
}


def _summary_says_held(run_dir: str, stage: str, trade_type: str) -> bool:
    try:
        summary = io.read_json(layout.run_summary_path(run_dir, stage, trade_type))
    except (OSError, ValueError):
        return False
    totals = summary.get("totals") if isinstance(summary, dict) else None
    if not isinstance(totals, dict):
        return False
    held = [totals.get(key) for key in _HELD_TOTALS[stage]]
    return sum(n for n in held if isinstance(n, (int, float))) > 0


def _has_reports(run_dir: str, folder: Folder) -> bool:
    """Whether the jobs that write ``folder`` have shard reports: jobs that never ran for
    it (this start changed the base ``interval``: ``klines-1h`` reports, the summary counting
    the ``1m`` files) run anyway, and their folder's absence says nothing of a deletion.
    One listing of a local folder."""
    return any(
        name.endswith(".json") for name in storage.file_names(shard_reports_dir(run_dir, folder))
    )


def _gone_without_a_record(data_dir, run_dir: str, folders: list[Folder]) -> list[Folder]:
    """A start without a record (the first with this version, or after a wipe of the
    whole data dir that ``data_identity`` could not see: it too had no record): the
    folders of each stage and trade type whose run summary says its symbols hold files and
    none of whose folders is there, among the folders whose jobs have shard reports. One
    read of a summary each, and the folders' checks.

    A summary counts the files of every interval its trade type's jobs wrote: without the
    reports' condition, the first start after the upgrade that also changed the base
    ``interval`` said the new interval's folders were "deleted by hand?" (and removed the
    summary), though nothing was deleted and the jobs ran for the config change anyway."""
    groups: dict[tuple[str, str], list[Folder]] = {}
    for f in folders:
        if f.stage in _HELD_TOTALS and f.summary_stage == f.stage and _has_reports(run_dir, f):
            groups.setdefault((f.stage, f.trade_type), []).append(f)
    said = [g for key, g in groups.items() if _summary_says_held(run_dir, *key)]
    candidates = [f for g in said for f in g]
    if not candidates:
        return []
    here = dict(zip(candidates, _present(data_dir, candidates), strict=True))
    return [f for g in said if not any(here[f] for f in g) for f in g]


def check(data_dir, run_dir: str, folders: list[Folder], *, dry_run: bool) -> str | None:
    """Compare the recorded folders (of this config's ``folders``) with the data dir and
    act (see the module); returns the one line to print, or None. Raises OSError when the
    S3 store does not answer."""
    if dry_run and storage.is_remote(data_dir):
        return None  # a dry run sends the bucket no request (planning works offline)
    recorded = _read_record(run_dir)
    if recorded is None:  # the first start with this version: adopt what is there
        gone = _gone_without_a_record(data_dir, run_dir, folders)
        if not dry_run:
            record(data_dir, run_dir, folders)
        why = "none of the folders the run dir's summaries say hold files is there"
    else:
        wanted = set(recorded[0])
        checked = [f for f in folders if f.path in wanted]
        present = _present(data_dir, checked) if checked else []
        gone = [f for f, here in zip(checked, present, strict=True) if not here]
        if not recorded[1] and not dry_run:  # an older record: adopt the folders it lacks
            record(data_dir, run_dir, folders)
        why = "folder(s) that held files after the last run are gone"
    if not gone:
        return None
    jobs = list(dict.fromkeys(f.jobs for f in gone))
    paths = list(dict.fromkeys(f.path for f in gone))
    shown = ", ".join(paths[:6]) + (f", … ({len(paths)} in all)" if len(paths) > 6 else "")
    action = "a real run reruns" if dry_run else "their reports removed: this run reruns"
    message = (
        f"data dir {storage.uri(data_dir)}: {why} ({shown}), deleted by hand? {action} "
        f"{', '.join(jobs)} to rebuild them, and the later stages after them"
    )
    if not dry_run:
        for folder in gone:
            _remove_reports(run_dir, folder)
    return message
