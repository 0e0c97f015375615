"""Derived files a configuration change leaves behind: found at planning, removed by a job.

Three changes stop every job from writing (and updating) files that earlier runs built, so
that loaders (``load_klines``, ``load_features``, the DuckDB views) would keep serving them
as if current:

- ``resample.targets`` of a trade type all removed: its resample shards still run while the
  configured symbols hold resampled files, and remove them (``plan.resampled_leftovers``);
- ``features.enabled: false`` (kind ``features``): the feature files of the configured
  symbols (``results_data/{T}/features/``, ``resampled_features/``, every interval) and their
  state records are removed by one ``remove_leftovers`` job per trade type;
- another base ``interval`` (kind ``interval``): the files the pipeline derived from the
  candles of another interval for the configured symbols (``results_data/{T}/klines/{I}/``,
  ``features/{I}/`` and those stages' state records) are removed by one ``remove_leftovers``
  job per trade type. Only symbols whose gen_kline state record at that interval says the
  pipeline built them: a legacy BHDS data dir's own ``results_data`` of another interval is
  not ours to delete. Archive, parsed and REST data of every interval stay, with their
  records (quality, provenance): they are the sources.

Finding them costs a folder scan (on S3 a LIST, paginated over every file of the folder),
which planning would pay at every Snakefile parse. ``checked`` pays it only when the run
directory has no record that the last scan, for the same key (data dir, interval, symbol
selection), found nothing; a trade type that gets resample targets (features enabled) again
drops its record (``forget``), so the scan runs again once they are removed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from crypto_lakehouse import io, layout, storage

log = logging.getLogger(__name__)

KINDS = ("resample", "features", "interval")
# The stages whose per-symbol state records (``lakehouse/state/{stage}/{T}/klines-{I}/``)
# describe files derived from the candles of one interval; removed with those files, so that
# a later return to that interval rebuilds them (a state record saying "unchanged" would
# otherwise vouch for files that are gone). The parse and REST records describe the sources.
DERIVED_STATE_STAGES = ("gen_kline", "gen_kline_resume", "resample", "resample_resume", "features")
# Their shard jobs run again when asked for (_forget_shards).
DERIVED_REPORT_STAGES = ("gen_kline", "resample", "features")


# ---------------------------------------------------------------- planning
def key(data_dir: str, interval: str, selection, listing_index: str | None = None) -> dict:
    """What a scan's verdict depends on: the data dir, the base interval and the symbol
    selection (a list, or "all": then the listing index's size and time, which change when
    the listing does)."""
    value: dict = {"data_dir": str(data_dir), "interval": interval}
    if selection == "all":
        try:
            st = os.stat(listing_index) if listing_index else None  # seam: run directory's index
        except OSError:
            st = None
        value["symbols"] = "all"
        value["listing"] = [st.st_size, st.st_mtime_ns] if st else None
    else:
        text = json.dumps(sorted(selection))
        value["symbols"] = hashlib.sha256(text.encode()).hexdigest()[:16]
    return value


def checked(
    run_dir: str,
    kind: str,
    trade_type: str,
    scan_key: dict,
    scan: Callable[[], list],
    remember: bool = True,
) -> list:
    """``scan()`` (the leftovers of ``kind`` for ``trade_type``), unless the run directory's
    record says that the last scan for ``scan_key`` found none; with ``remember``, a scan
    that finds none is recorded. A record of another key is removed first: a run with that
    key (another interval, other symbols) may write files the record's key must look at.
    The record is a cache of a fact about the data dir: a lost one costs a scan."""
    path = layout.leftovers_record_path(run_dir, kind, trade_type)
    try:
        record = io.read_json(path)
    except (OSError, ValueError):
        record = None
    if record == {"none_for": scan_key}:
        return []
    if record is not None and remember:
        forget(run_dir, kind, trade_type)
    try:
        found = scan()
    except OSError as exc:  # StorageError too: an unreachable store, refused credentials
        # Planning goes on (an offline dry run, a store down: the run's endpoint check
        # names it); nothing is recorded, so the next parse looks again.
        log.warning("leftovers of %s (%s) not looked for: %s", trade_type, kind, exc)
        print(
            f"crypto_lakehouse: {kind} leftovers of {trade_type} not looked for "
            f"(the next run looks again): {exc}",
            file=sys.stderr,
        )
        return []
    if not found and remember:
        try:
            io.write_json_if_changed(path, {"none_for": scan_key})
        except OSError as exc:  # a read-only run dir: the next parse scans again
            log.warning("leftovers record %s not written: %s", path, exc)
    return found


def forget(run_dir: str, kind: str, trade_type: str) -> None:
    """Files of ``kind`` may be written again (resample targets configured, features
    enabled or built): the next check scans."""
    path = layout.leftovers_record_path(run_dir, kind, trade_type)
    try:
        os.remove(path)  # seam: run directory
    except FileNotFoundError:
        pass


def plan_removal(run_dir: str, kind: str, trade_type: str) -> None:
    """Leftovers were found: the last ``remove_leftovers`` job's report goes, so that
    Snakemake runs the job again (its report of an earlier removal would look up to date)."""
    try:
        os.remove(layout.leftovers_report_path(run_dir, kind, trade_type))  # seam: run directory
    except FileNotFoundError:
        pass


def _wanted(symbols) -> set[str] | None:
    return None if symbols == "all" else set(symbols)


def segment_files_below(roots, base, symbols) -> list[str]:
    """The segment files (``SYM.pqt``, ``SPn_SYM.pqt``) of ``symbols`` (a list, or "all")
    anywhere below ``roots``, as paths relative to ``base``."""
    wanted = _wanted(symbols)
    found = []
    for root in roots:
        for path in storage.list_files(root, suffix=layout.SEGMENT_SUFFIX):
            named = layout.parse_segment_name(path.name)
            if named is not None and (wanted is None or named[0] in wanted):
                found.append(path.relative_to(base).as_posix())
    return found


def feature_files(data_dir, trade_type: str, symbols) -> list[str]:
    """Feature files of ``symbols`` (a list, or "all") at every interval, generated and
    resampled, as paths relative to ``results_data/{T}``."""
    roots = (
        layout.features_root(data_dir, trade_type),
        layout.resampled_features_root(data_dir, trade_type),
    )
    return segment_files_below(roots, roots[0].parent, symbols)


def _state_root(data_dir, stage: str, trade_type: str) -> Path:
    """``lakehouse/state/{stage}/{T}``: one ``{dataset}`` folder per dataset tag."""
    return layout.state_path(data_dir, stage, trade_type, "_", "_").parent.parent


def built_other_intervals(run_dir: str, trade_type: str, interval: str) -> bool:
    """Whether the run directory holds gen_kline reports of ``trade_type`` at another
    interval than ``interval``: a local look that spares the data dir's (on S3: a LIST,
    which an offline dry run cannot make) when this run directory never built another one."""
    root = Path(layout.stage_report_dir(run_dir, "gen_kline", trade_type, "_")).parent
    try:
        tags = [e.name for e in os.scandir(root) if e.is_dir()]  # seam: run directory
    except (FileNotFoundError, NotADirectoryError):
        return False
    return any(t.startswith("klines-") and t != f"klines-{interval}" for t in tags)


def other_interval_symbols(data_dir, trade_type: str, interval: str, symbols) -> list[str]:
    """``{I}/{SYM}`` of every symbol of ``symbols`` (a list, or "all") that the pipeline
    built at another interval ``I`` than ``interval`` (its gen_kline state record there)."""
    wanted = _wanted(symbols)
    root = _state_root(data_dir, "gen_kline", trade_type)
    found = []
    for tag in layout.subdir_names(root):
        if not tag.startswith("klines-") or tag == f"klines-{interval}":
            continue
        other = tag.removeprefix("klines-")
        for path in storage.list_files(root / tag, recursive=False, suffix=".json"):
            if layout.is_valid_symbol(path.stem) and (wanted is None or path.stem in wanted):
                found.append(f"{other}/{path.stem}")
    return sorted(found)


def notice(kind: str, trade_type: str, found: list, interval: str) -> str:
    """The run's first line about the leftovers that target ``all`` removes (rule
    ``remove_leftovers``). Printed whatever the targets: the Snakefile is read before
    Snakemake sets ``workflow.dag_settings`` (Snakemake 9), so it cannot tell them; before
    2026-12-07 it said "this run removes" under every target, ``features`` included, which
    removes nothing."""
    if kind == "features":
        return (
            f"features: features.enabled is false; target all removes the {len(found)} "
            f"feature file(s) of {trade_type}'s symbols that earlier runs built (e.g. "
            f"results_data/{trade_type}/{found[0]}), so that no loader serves them; "
            "another target leaves them"
        )
    intervals = sorted({f.split("/")[0] for f in found})
    return (
        f"interval: the base interval is {interval}; target all removes what earlier runs "
        f"derived from the {', '.join(intervals)} candles of {len(found)} {trade_type} "
        f"symbol interval(s) (e.g. {found[0]}: results_data/{trade_type}/klines/ and "
        "features/); their archive, parsed and REST data stay"
    )


# ---------------------------------------------------------------- the job
def _remove_segments(directories, symbol: str) -> list[Path]:
    from crypto_lakehouse.generate.outputs import remove_stale_in

    return remove_stale_in(directories, symbol, {})


def _remove_states(data_dir, trade_type: str, stages, symbol: str, tags=None) -> None:
    """The symbol's state records of ``stages`` at dataset ``tags`` (None: every klines tag)."""
    for stage in stages:
        root = _state_root(data_dir, stage, trade_type)
        names = tags
        if names is None:
            names = [t for t in layout.subdir_names(root) if t.startswith("klines-")]
        for tag in names:
            storage.delete(layout.state_path(data_dir, stage, trade_type, tag, symbol))


def _forget_shards(run_dir: str, stage: str, trade_type: str, dataset: str) -> None:
    """A stage's shard reports (Snakemake's outputs) in the run directory, so that its
    shard jobs run again when asked for (``snakemake features``, features enabled again,
    the interval back): the data files are no Snakemake outputs, and Snakemake took the
    removed ones for up to date while the shard reports were there. (A touched rerun stamp
    would not do: Snakemake compares a small input's checksum, not only its time.)"""
    folder = Path(layout.stage_report_dir(run_dir, stage, trade_type, dataset)) / "shards"
    for shard_report in sorted(folder.glob("*.json")):  # seam: run directory
        shard_report.unlink(missing_ok=True)  # seam: run directory


def remove_leftovers(
    *,
    kind: str,
    trade_type: str,
    data_dir,
    found: list[str],
    run_dir: str | None = None,
    report: str,
) -> dict:
    """Rule ``remove_leftovers``: remove the leftovers ``found`` at planning (``kind``
    ``features``: the symbols with feature files; ``interval``: ``{I}/{SYM}``) and write
    ``report`` (what was removed, per symbol; each file also in the log). Each symbol's files are found again
    here (whatever the symbol holds now). One symbol's failure never stops the others; the
    job fails at the end naming them."""
    if kind not in ("features", "interval"):
        raise ValueError(f"unknown leftovers kind {kind!r}")
    data = storage.data_path(data_dir)
    removed: dict[str, list[str]] = {}
    failures: list[str] = []

    def rel(p: Path) -> str:
        return p.relative_to(data).as_posix()

    if kind == "features":
        by_symbol = sorted(set(found))
        folders = storage.subdirs(layout.features_root(data, trade_type), depth=1)
        folders += storage.subdirs(layout.resampled_features_root(data, trade_type), depth=2)
        for symbol in by_symbol:
            try:
                gone = _remove_segments(folders, symbol)
                _remove_states(data, trade_type, ("features",), symbol)
                removed[symbol] = sorted(rel(p) for p in gone)
            except Exception as exc:  # one broken symbol never stops the others
                log.error("features leftovers of %s %s: %s", trade_type, symbol, exc)
                failures.append(f"{symbol}: {exc}")
        if run_dir is not None:
            # The stage's summary too: with it there, Snakemake skips the shard jobs whose
            # reports are gone (it does not rebuild missing intermediate files of a summary
            # that is up to date). This run has no features stage: nothing else writes it.
            root = Path(layout.stage_report_dir(run_dir, "features", trade_type, "_")).parent
            for dataset in sorted(p.name for p in root.glob("klines-*")):  # seam: run directory
                _forget_shards(run_dir, "features", trade_type, dataset)
            summary = Path(layout.run_summary_path(run_dir, "features", trade_type))
            summary.unlink(missing_ok=True)  # seam: run directory
    else:
        for item in sorted(found):
            other, symbol = item.split("/", 1)
            try:
                folders = [
                    layout.results_klines_dir(data, trade_type, other),
                    layout.features_dir(data, trade_type, other),
                ]
                gone = _remove_segments(folders, symbol)
                # The state record last: a failure above leaves it, and the next run retries.
                _remove_states(
                    data, trade_type, DERIVED_STATE_STAGES, symbol, tags=[f"klines-{other}"]
                )
                removed[item] = sorted(rel(p) for p in gone)
            except Exception as exc:  # one broken symbol never stops the others
                log.error("interval leftovers %s %s: %s", trade_type, item, exc)
                failures.append(f"{item}: {exc}")
        if run_dir is not None:
            for other in sorted({item.split("/", 1)[0] for item in found}):
                # (The stages' summaries, this run's, list the current interval's shard
                # reports: back at this interval, their set of inputs changed, and they rerun.)
                for stage in DERIVED_REPORT_STAGES:
                    _forget_shards(run_dir, stage, trade_type, f"klines-{other}")
    for name, files in removed.items():
        for f in files:
            log.info("removed %s (%s)", f, name)
    total = sum(len(v) for v in removed.values())
    log.info("%s leftovers of %s: %d file(s) removed", kind, trade_type, total)
    io.write_json(
        report,
        {
            "kind": kind,
            "trade_type": trade_type,
            "removed": removed,
            "files_removed": total,
            "failures": failures,
        },
    )
    if failures:
        raise RuntimeError(
            f"{kind} leftovers of {trade_type}: {len(failures)} failed: " + "; ".join(failures)
        )
    return {"files_removed": total}
